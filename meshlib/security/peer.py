"""The serving side: who is calling, and an allow-list of callers.

``peer_identity(x)`` returns the verified SPIFFE ID of the client behind
``x``, or None when there is no client certificate with one:

- a gRPC servicer context (sync or asyncio): its ``auth_context()``;
- an ``ssl.SSLSocket`` / ``ssl.SSLObject``, or an ``http.server`` request
  handler (its ``connection``);
- a WSGI environ: ``gunicorn.socket`` (gunicorn), or ``SSL_CLIENT_CERT`` (PEM,
  the mod_ssl / nginx convention);
- an ASGI scope with the ASGI TLS extension
  (``scope["extensions"]["tls"]["client_cert_chain"]``, hypercorn and others).

The certificate there was verified by the TLS server (``mesh.server_ssl_context()``
requires one signed by the trust bundle); this reads its one URI SAN.
"""

from __future__ import annotations

import ssl
from typing import Any, Awaitable, Callable, Iterable

from .spiffe_id import IdMatcher, PeerIdentityError, spiffe_id_of

__all__ = ["peer_identity", "peer_certificate", "AllowList"]


def _der_from_pem(pem: bytes | str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii") if isinstance(pem, bytes) else pem)


def peer_certificate(obj: Any) -> bytes | None:
    """The client's certificate (DER) behind a request object, or None."""
    if isinstance(obj, (ssl.SSLSocket, ssl.SSLObject)):
        return obj.getpeercert(True)
    auth = getattr(obj, "auth_context", None)
    if callable(auth):
        pems = auth().get("x509_pem_cert") or []
        return _der_from_pem(pems[0]) if pems else None
    conn = getattr(obj, "connection", None)
    if isinstance(conn, ssl.SSLSocket):  # http.server.BaseHTTPRequestHandler
        return conn.getpeercert(True)
    if isinstance(obj, dict):
        if obj.get("type") in ("http", "websocket"):  # ASGI scope
            tls = (obj.get("extensions") or {}).get("tls") or {}
            chain = tls.get("client_cert_chain") or []
            return _der_from_pem(chain[0]) if chain else None
        sock = obj.get("gunicorn.socket")
        if isinstance(sock, ssl.SSLSocket):
            return sock.getpeercert(True)
        pem = obj.get("SSL_CLIENT_CERT")
        if pem:
            return _der_from_pem(pem)
        return None
    raise TypeError(f"peer_identity() takes a gRPC servicer context, a WSGI environ, an ASGI scope, an SSL socket or an http.server handler, not {type(obj).__name__}")


def peer_identity(obj: Any) -> str | None:
    """The caller's SPIFFE ID, or None (no client certificate, or not an
    X.509-SVID: no URI SAN, or more than one)."""
    der = peer_certificate(obj)
    if not der:
        return None
    try:
        return spiffe_id_of(der)
    except ValueError:
        return None


class AllowList:
    """Callers allowed to use a server: exact SPIFFE IDs or trust domains
    (``spiffe://example.org`` allows any ID in it). Everyone else gets 403
    (HTTP) or ``PERMISSION_DENIED`` (gRPC)."""

    def __init__(self, callers: Iterable[str] = (), *, any_verified: bool = False) -> None:
        self.matcher = IdMatcher.of(callers)
        #: Let in any caller whose verified certificate carries a SPIFFE ID.
        self.any_verified = any_verified

    def allows(self, spiffe_id: str | None) -> bool:
        return spiffe_id is not None and (self.any_verified or self.matcher.accepts(spiffe_id))

    def admits(self, obj: Any) -> bool:
        """True if the caller behind ``obj`` (anything :func:`peer_identity` takes) is on the list."""
        return self.allows(peer_identity(obj))

    def check(self, obj: Any) -> str:
        """The caller's SPIFFE ID, or ``PeerIdentityError`` if not allowed."""
        der = peer_certificate(obj)
        if self.any_verified:
            return IdMatcher(frozenset(), frozenset()).check_der(der, side="client") if not der else _spiffe_or_refuse(der)
        return self.matcher.check_der(der, side="client")

    def wsgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """WSGI middleware: 403 for callers not on the list."""

        def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if not self.admits(environ):
                body = b"forbidden: caller identity not allowed\n"
                start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                return [body]
            return app(environ, start_response)

        return guarded

    def asgi(self, app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """ASGI middleware: 403 for callers not on the list (HTTP scopes; a
        websocket is closed with 1008 before it is accepted)."""

        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") in ("http", "websocket") and not self.admits(scope):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"forbidden: caller identity not allowed\n"
                await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return guarded

    def grpc_interceptor(self, *, aio: bool = False) -> Any:
        """A server interceptor answering ``PERMISSION_DENIED`` to other callers
        (``grpc.server(..., interceptors=[allow.grpc_interceptor()])``)."""
        from ._grpc_allow import aio_interceptor, sync_interceptor

        return aio_interceptor(self) if aio else sync_interceptor(self)

    def __repr__(self) -> str:
        return f"<AllowList {'any verified SPIFFE ID' if self.any_verified else self.matcher.describe()}>"


def _spiffe_or_refuse(der: bytes) -> str:
    try:
        return spiffe_id_of(der)
    except ValueError as exc:
        raise PeerIdentityError("a verified SPIFFE ID", f"no valid SPIFFE ID ({exc})", side="client") from None


