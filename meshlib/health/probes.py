"""Health probes, registered by name: ``health_check_protocol`` names one.

A probe is ``probe(endpoint, config) -> bool`` (True: the endpoint passes).
Each registered name maps to a factory that makes a service's probe from the
service name; the factory runs when the service's checker is built (at
start-up), so a probe whose library is missing fails there, not in a
background thread. ``http`` and ``grpc`` are built in; the ``grpc`` module
is imported only when a service asks for it (grpcio is an optional extra).
"""

from __future__ import annotations

import http.client
from typing import TYPE_CHECKING, Callable

from ..endpoint import Endpoint

if TYPE_CHECKING:
    from .checker import HealthCheckConfig

__all__ = ["Probe", "ProbeFactory", "register_probe", "probe_names", "make_probe", "http_probe"]

Probe = Callable[[Endpoint, "HealthCheckConfig"], bool]
#: Makes a service's probe from the service's name.
ProbeFactory = Callable[[str], Probe]

_FACTORIES: dict[str, ProbeFactory] = {}


def register_probe(name: str, factory: ProbeFactory) -> None:
    """Make ``health_check_protocol=<name>`` use ``factory(service)``'s probe."""
    _FACTORIES[name] = factory


def probe_names() -> tuple[str, ...]:
    """The accepted ``health_check_protocol`` values, in registration order."""
    return tuple(_FACTORIES)


def make_probe(protocol: str, service: str) -> Probe:
    """The probe ``protocol`` names, for ``service``; ``KeyError`` if none is registered."""
    return _FACTORIES[protocol](service)


def http_probe(endpoint: Endpoint, cfg: "HealthCheckConfig", host_header: str = "") -> bool:
    """One HTTP health check: True if ``GET path`` answers an expected status in time."""
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=cfg.timeout)
    try:
        conn.request("GET", cfg.path, headers={"Host": host_header or endpoint.address, "User-Agent": "meshlib-health-check", "Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status in cfg.expected_statuses
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _http(service: str) -> Probe:
    """``GET health_check_path`` with the service name as ``Host`` (Envoy's default host)."""
    return lambda endpoint, cfg: http_probe(endpoint, cfg, service)


def _grpc(service: str) -> Probe:
    """``grpc.health.v1.Health/Check``; needs grpcio (checked now, at start-up)."""
    try:
        import grpc  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("health_check_protocol=grpc needs grpcio: pip install 'meshlib-client[grpc]'") from exc
    from .grpc_probe import grpc_health_probe

    return grpc_health_probe


register_probe("http", _http)
register_probe("grpc", _grpc)
