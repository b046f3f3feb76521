"""Active health checks over the mesh's TLS.

A service whose ``TLS_MODE`` is ``tls`` or ``mtls`` is checked the way it is
called: the HTTP probe makes the same verifying handshake (service name as
SNI, DNS name or SPIFFE ID checked, the workload certificate presented) before
its ``GET``; the gRPC probe uses the service's channel credentials after the
same SPIFFE ID pre-check as its channels. A probe that cannot verify the
endpoint fails: an endpoint is never called healthy over plaintext.
"""

from __future__ import annotations

import http.client
import socket
from typing import TYPE_CHECKING, Any

from ..endpoint import Endpoint

if TYPE_CHECKING:  # pragma: no cover
    from ..health import HealthCheckConfig, Probe
    from .client import ClientTls

__all__ = ["tls_probe"]


def tls_probe(tls: "ClientTls", protocol: str) -> "Probe":
    """The probe for ``tls``'s service and its ``health_check_protocol``."""
    if protocol == "grpc":
        return lambda endpoint, cfg: _grpc(tls, endpoint, cfg)
    return lambda endpoint, cfg: _http(tls, endpoint, cfg)


def _http(tls: "ClientTls", endpoint: Endpoint, cfg: "HealthCheckConfig") -> bool:
    from ..health.probes import http_probe

    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=cfg.timeout)
    try:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=cfg.timeout)
    except OSError:
        return False
    try:
        conn.sock = tls.ssl_context().wrap_socket(raw, server_hostname=tls.service)
    except OSError:  # the handshake or the identity check failed
        raw.close()
        return False
    return http_probe(endpoint, cfg, tls.service, conn)


def _grpc(tls: "ClientTls", endpoint: Endpoint, cfg: "HealthCheckConfig") -> bool:
    from ..health.grpc_probe import GrpcHealthProbe

    g = tls.grpc()
    try:
        name = g.target_name(endpoint.address, cfg.timeout)
    except OSError:  # PeerIdentityError included
        return False
    options: Any = (("grpc.ssl_target_name_override", name), ("grpc.default_authority", tls.service))
    return GrpcHealthProbe(g.credentials(), options=options)(endpoint, cfg)
