"""The Mesh's mutual-TLS side (docs/security.md): how calls to a service are
protected, and the serving-side helpers built from the same workload identity.
A mixin of :class:`meshlib.Mesh`, kept apart so each module holds one concern."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .core.cluster import Cluster
from .errors import MeshError
from .health import Probe
from .security import AllowList, ClientTls

if TYPE_CHECKING:  # pragma: no cover
    import ssl

    import grpc

__all__ = ["SecurityMixin"]


class SecurityMixin:
    """Needs ``self.config``, ``self._tls`` (a ``TlsProvider``), ``self._tls_by_service`` and ``self.cluster``."""

    config: Any
    _tls: Any
    _tls_by_service: dict[str, ClientTls | None]
    cluster: Callable[[str], Cluster]

    def _tls_probe(self, name: str) -> Probe | None:
        """Health checks of a TLS_MODE tls/mtls service go over the same TLS."""
        cfg = self.config.service(name)
        tls = self._tls.for_service(name, cfg.tls_mode, cfg.tls_spiffe_ids)
        if tls is None:
            return None
        from .security.health import tls_probe

        return tls_probe(tls, cfg.health_check.protocol)

    def tls(self, cluster: Cluster) -> ClientTls | None:
        """How calls to ``cluster`` are protected (None: ``TLS_MODE`` off, the URL decides)."""
        try:
            return self._tls_by_service[cluster.name]
        except KeyError:
            cfg = cluster.config
            found = self._tls_by_service[cluster.name] = self._tls.for_service(cluster.name, cfg.tls_mode, cfg.tls_spiffe_ids)
            return found

    def server_ssl_context(self, *, require_client_cert: bool = True) -> "ssl.SSLContext":
        """An ``ssl.SSLContext`` for serving (uvicorn, hypercorn, gunicorn,
        ``http.server``) with the workload identity, requiring client
        certificates signed by the trust bundle; each new connection uses the
        identity current then, so rotation needs no restart. See docs/security.md."""
        return self._tls.server_ssl_context(require_client_cert=require_client_cert)  # type: ignore[no-any-return]

    def grpc_server_credentials(self, *, require_client_auth: bool = True) -> "grpc.ServerCredentials":
        """``grpc.ServerCredentials`` with the workload identity, requiring
        client certificates, following every rotation (for ``server.add_secure_port``)."""
        return self._tls.grpc_server_credentials(require_client_auth=require_client_auth)

    def grpc_credentials(self, name: str) -> "grpc.ChannelCredentials | None":
        """For a channel of your own (with :meth:`grpc_interceptors`): channel
        credentials from ``name``'s TLS mode (None when it is off) that follow
        rotation: each channel made from them presents the identity current
        when it is made. A channel keeps its certificate for its whole life
        (grpcio cannot change a client channel's), so make a new channel after
        a rotation: ``creds.on_rotation(callback)`` says when, ``creds.generation``
        which. grpcio checks only host names, so for a service with
        ``TLS_SPIFFE_IDS`` this refuses (MeshError): use :meth:`grpc_channel`,
        which checks SPIFFE IDs before a channel is used."""
        tls = self.tls(self.cluster(name))
        if tls is None:
            return None
        if tls.matcher:
            raise MeshError(f"service {name!r} has TLS_SPIFFE_IDS, which grpcio cannot check on a channel of your own; "
                            "use mesh.grpc_channel(name) (docs/security.md)")  # fmt: skip
        return tls.grpc().rotating()

    def allowed_callers(self) -> AllowList:
        """The serving-side allow-list of ``MESHLIB_ALLOWED_CALLERS`` (any verified
        caller when empty): ``.wsgi(app)``, ``.asgi(app)``, ``.grpc_interceptor()``,
        ``.check(request)``."""
        callers = self.config.tls.allowed_callers
        return AllowList(callers, any_verified=not callers)
