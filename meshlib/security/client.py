"""The mesh's TLS side: one identity source, and per service how calls are
carried (``TLS_MODE``) and which server identities are accepted
(``TLS_SPIFFE_IDS``).

``TlsProvider`` is made once per Mesh from :class:`TlsSettings`; adapters ask
it for a service's :class:`ClientTls` and, per connection, for the current
``ssl.SSLContext`` (or gRPC credentials). Contexts are cached per identity
generation: after a rotation the next connection gets a new context, and
because connection pools are keyed by it, connections made under the old
certificate are never handed out again (they drain and close).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError
from .contexts import MeshSSLContext, RotatingServerContext, client_context
from .identity import Identity
from .sources import FileIdentitySource, IdentitySource
from .spiffe_id import IdMatcher

__all__ = ["TLS_MODES", "TlsSettings", "ClientTls", "TlsProvider", "make_source"]

TLS_MODES = ("off", "tls", "mtls")


@dataclass(frozen=True)
class TlsSettings:
    """The global TLS keys (``MESHLIB_TLS_*``, the Workload API socket, ``ALLOWED_CALLERS``)."""

    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    spiffe_endpoint_socket: str = ""
    tls_watch_interval: float = 1.0
    spiffe_timeout: float = 5.0
    allowed_callers: tuple[str, ...] = ()


def make_source(settings: TlsSettings, *, now: Callable[[], float] = time.time) -> IdentitySource | None:
    """The identity source the settings name (files win over nothing; the
    Workload API and files together are a ConfigError), or None."""
    socket = settings.spiffe_endpoint_socket
    if socket and (settings.tls_cert or settings.tls_key):
        raise ConfigError("MESHLIB_SPIFFE_ENDPOINT_SOCKET", socket, "either the Workload API or MESHLIB_TLS_CERT/KEY files, not both")
    if socket:
        from .workload import SpiffeIdentitySource

        return SpiffeIdentitySource(socket, timeout=settings.spiffe_timeout, now=now)
    if settings.tls_cert or settings.tls_key:
        return FileIdentitySource(settings.tls_cert, settings.tls_key, settings.tls_ca, interval=settings.tls_watch_interval, now=now)
    return None


class ClientTls:
    """How one service's calls are protected. ``mode`` is ``tls`` or ``mtls``."""

    def __init__(self, service: str, mode: str, matcher: IdMatcher, provider: "TlsProvider") -> None:
        self.service = service
        self.mode = mode
        self.matcher = matcher
        self.present = mode == "mtls"
        self._provider = provider
        self._lock = threading.Lock()
        self._source = provider.source
        self._fixed = provider._bundle_only
        #: (identity, its context, urllib3 pool keywords), rebuilt when the identity changes.
        self._ctx: tuple[Identity | None, MeshSSLContext, dict[str, Any]] | None = None
        self._grpc: Any = None

    def identity(self) -> Identity | None:
        src = self._source
        return src._identity if src is not None else self._fixed  # a plain read: this is on every call's path

    @property
    def generation(self) -> int:
        ident = self.identity()
        return ident.generation if ident is not None else 0

    def ssl_context(self) -> MeshSSLContext:
        """The context for a new connection now: after a rotation, a new one."""
        ident = self.identity()
        built = self._ctx
        if built is None or built[0] is not ident:
            with self._lock:
                built = self._ctx
                if built is None or built[0] is not ident:
                    ctx = client_context(ident, present=self.present, matcher=self.matcher or None)
                    built = self._ctx = (ident, ctx, {"ssl_context": ctx, "assert_hostname": False})
        return built[1]

    def pool_kwargs(self) -> dict[str, Any]:
        """urllib3 pool keywords for a new connection now: the current context
        (so pools, keyed by it, change with the identity) and no hostname
        match of urllib3's own (the context checks the DNS name or SPIFFE ID)."""
        built = self._ctx
        if built is None or built[0] is not self.identity():
            self.ssl_context()
            built = self._ctx
        return built[2]  # type: ignore[index]

    def grpc(self) -> Any:
        """The gRPC side (``meshlib.security.grpc_tls.GrpcTls``), made on first use."""
        g = self._grpc
        if g is None:
            from .grpc_tls import GrpcTls

            with self._lock:
                if self._grpc is None:
                    self._grpc = GrpcTls(self)
                g = self._grpc
        return g

    def __repr__(self) -> str:
        return f"<ClientTls {self.service} {self.mode} expects {self.matcher.describe() if self.matcher else 'the DNS name ' + self.service}>"


class TlsProvider:
    """The Mesh's identity and every service's :class:`ClientTls`."""

    def __init__(self, settings: TlsSettings, *, source: IdentitySource | None = None, now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.source = source if source is not None else make_source(settings, now=now)
        self._bundle_only: Identity | None = None
        if self.source is None and settings.tls_ca:
            self._bundle_only = _bundle_identity(settings.tls_ca)
        self._services: dict[tuple[str, str, tuple[str, ...]], ClientTls] = {}
        self._lock = threading.Lock()
        self._server: RotatingServerContext | None = None

    def identity(self) -> Identity | None:
        src = self.source
        return src.current() if src is not None else self._bundle_only

    def for_service(self, service: str, mode: str, spiffe_ids: tuple[str, ...] = ()) -> ClientTls | None:
        """None for ``off``; a ConfigError for ``mtls`` without an identity."""
        if mode == "off":
            return None
        key = (service, mode, spiffe_ids)
        found = self._services.get(key)
        if found is None:
            if mode == "mtls" and self.source is None:
                setting = "MESHLIB_TLS_MODE" if service == "*" else f"MESHLIB_SERVICES__{service.upper().replace('-', '_')}__TLS_MODE"
                raise ConfigError(setting, mode,
                                  "off or tls, unless a workload identity is set (MESHLIB_TLS_CERT/KEY/CA or MESHLIB_SPIFFE_ENDPOINT_SOCKET)")  # fmt: skip
            with self._lock:
                found = self._services.setdefault(key, ClientTls(service, mode, IdMatcher.of(spiffe_ids), self))
        return found

    def _require_source(self, what: str) -> IdentitySource:
        if self.source is None:
            raise ConfigError("MESHLIB_TLS_CERT", "", f"a workload identity for {what} (MESHLIB_TLS_CERT/KEY/CA or MESHLIB_SPIFFE_ENDPOINT_SOCKET)")
        return self.source

    def server_ssl_context(self, *, require_client_cert: bool = True) -> Any:
        source = self._require_source("mesh.server_ssl_context()")
        if not require_client_cert:
            return RotatingServerContext(source.current, require_client_cert=False).context
        with self._lock:
            if self._server is None:
                self._server = RotatingServerContext(source.current)
            return self._server.context

    def grpc_server_credentials(self, *, require_client_auth: bool = True) -> Any:
        from .grpc_tls import server_credentials

        return server_credentials(self._require_source("mesh.grpc_server_credentials()"), require_client_auth=require_client_auth)

    def status(self) -> dict[str, Any]:
        if self.source is None:
            return {"source": "none", "trust": "MESHLIB_TLS_CA" if self._bundle_only is not None else "system"}
        return self.source.status()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def _bundle_identity(path: str) -> Identity:
    """A trust bundle with no certificate of our own (``tls`` mode, MESHLIB_TLS_CA only)."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            data = f.read()
        certs = x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as exc:
        raise ConfigError("MESHLIB_TLS_CA", path, "a readable PEM trust bundle", detail=type(exc).__name__) from None
    from cryptography.hazmat.primitives import serialization

    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return Identity(chain_pem=b"", key_pem=b"", bundle_pem=bundle, spiffe_id="", serial=0, not_after=float("inf"), sha256="", source="ca")
