"""``ssl.SSLContext`` objects built from an :class:`Identity`.

Client contexts verify the server's chain against the trust bundle and then
either its DNS name (the service name, as before) or its SPIFFE ID: the check
runs inside the handshake (``do_handshake`` of the context's socket and
memory-BIO classes), so a mismatch fails the handshake before one byte of the
request is written, for blocking sockets (requests, urllib3, httpx) and for
asyncio/anyio memory BIOs (httpx async) alike.

The server context asks every client for a certificate and re-reads the
identity on each handshake (its ``sni_callback`` swaps in the current
generation's context), so a rotated certificate or bundle serves the next
connection without restarting the server.

The key reaches OpenSSL through an anonymous in-memory file (``memfd``) where
the platform has one, else a private temporary file removed at once.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from typing import Any, Callable, Iterator

from .identity import Identity
from .spiffe_id import IdMatcher

__all__ = ["MeshSSLContext", "client_context", "server_context", "RotatingServerContext"]


class _CheckedSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        try:
            self.context.peer_check(self.getpeercert(True))  # type: ignore[attr-defined]
        except BaseException:
            self.close()
            raise


class _CheckedObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        self.context.peer_check(self.getpeercert(True))  # type: ignore[attr-defined]


def _no_check(der: bytes | None) -> None:
    return None


_VERIFY_MODE = ssl.SSLContext.verify_mode
_CHECK_HOSTNAME = ssl.SSLContext.check_hostname


class MeshSSLContext(ssl.SSLContext):
    """An SSLContext whose sockets and memory BIOs run ``peer_check(der)``
    after the handshake; ``peer_check`` raises to refuse the peer.

    Once :meth:`freeze` is called it no longer changes: HTTP clients handed a
    context adjust it (urllib3 sets ``verify_mode`` and ``check_hostname``
    from its own arguments, requests adds its CA bundle and ``cert=`` files);
    for a mesh-TLS service those changes are ignored, so verification can
    only stay what the mesh set, never become weaker."""

    sslsocket_class = _CheckedSocket
    sslobject_class = _CheckedObject
    peer_check: Callable[[bytes | None], Any] = staticmethod(_no_check)
    generation: int = 0
    _frozen = False

    def freeze(self) -> "MeshSSLContext":
        self._frozen = True
        return self

    @property  # type: ignore[override]
    def verify_mode(self) -> ssl.VerifyMode:
        return _VERIFY_MODE.__get__(self, type(self))  # type: ignore[attr-defined,no-any-return]

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        if not self._frozen:
            _VERIFY_MODE.__set__(self, value)  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def check_hostname(self) -> bool:
        return _CHECK_HOSTNAME.__get__(self, type(self))  # type: ignore[attr-defined,no-any-return]

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        if not self._frozen:
            _CHECK_HOSTNAME.__set__(self, value)  # type: ignore[attr-defined]

    def load_verify_locations(self, *args: Any, **kwargs: Any) -> None:
        if not self._frozen:
            super().load_verify_locations(*args, **kwargs)

    def load_cert_chain(self, *args: Any, **kwargs: Any) -> None:
        if not self._frozen:
            super().load_cert_chain(*args, **kwargs)

    def load_default_certs(self, *args: Any, **kwargs: Any) -> None:
        if not self._frozen:
            super().load_default_certs(*args, **kwargs)


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("meshlib-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meshlib-tls-") as d:  # pragma: no cover - non-Linux
        path = os.path.join(d, "material.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path


def load_chain(ctx: ssl.SSLContext, identity: Identity) -> None:
    """Give ``ctx`` the identity's chain and key, without writing the key to disk."""
    with _pem_file(identity.chain_pem) as cert, _pem_file(identity.key_pem) as key:
        ctx.load_cert_chain(cert, key)


def client_context(identity: Identity | None, *, present: bool, matcher: IdMatcher | None) -> MeshSSLContext:
    """A client context: trust ``identity``'s bundle (the system's without
    one), present its certificate if ``present``, and check the server's
    SPIFFE ID with ``matcher`` (else its DNS name, as ``https://`` does)."""
    ctx = MeshSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        ctx.load_verify_locations(cadata=identity.bundle_pem.decode("ascii"))
        ctx.generation = identity.generation
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if present and identity is not None:
        load_chain(ctx, identity)
    if matcher:
        ctx.check_hostname = False
        ctx.peer_check = matcher.check_der  # type: ignore[assignment]
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx.freeze()


def server_context(identity: Identity, *, require_client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_chain(ctx, identity)
    ctx.load_verify_locations(cadata=identity.bundle_pem.decode("ascii"))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


class RotatingServerContext:
    """The server side of rotation: ``context`` is handed to a server once;
    each handshake switches to the context of the identity current then."""

    def __init__(self, current: Callable[[], Identity], *, require_client_cert: bool = True) -> None:
        self._current = current
        self._require = require_client_cert
        self._built: tuple[int, ssl.SSLContext] | None = None
        self.context = self._for(current())
        self.context.sni_callback = self._switch

    def _for(self, identity: Identity) -> ssl.SSLContext:
        built = self._built
        if built is None or built[0] != identity.generation:
            ctx = server_context(identity, require_client_cert=self._require)
            built = self._built = (identity.generation, ctx)
        return built[1]

    def _switch(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        target = self._for(self._current())
        if target is not sslobj.context:
            sslobj.context = target
        return None
