"""meshlib: an embeddable client-side service mesh.

    import meshlib

    with meshlib.Mesh.from_env() as mesh:
        session = mesh.requests_session()
        session.get("http://inventory/items")

See the README and docs/ for the whole picture.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Callable, TypeVar

from .clock import ManualClock
from .core.call import hash_key
from .config import MeshConfig, ServiceConfig
from .endpoint import Endpoint, EndpointSnapshot
from .errors import (
    CircuitOpenError,
    ConfigError,
    DeadlineExceededError,
    EndpointsSaturatedError,
    MeshError,
    FaultInjectedError,
    NoHealthyEndpointsError,
    RateLimitedError,
    UnknownServiceError,
)
from .mesh import ATTACHMENTS as _ATTACHMENTS, Mesh
from .resilience.deadline import deadline, deadline_headers, incoming_deadline, remaining
from .security import peer_identity
from .telemetry import extract, incoming, inject

__version__ = "0.1.0"

__all__ = [
    "Mesh",
    "MeshConfig",
    "ServiceConfig",
    "Endpoint",
    "EndpointSnapshot",
    "MeshError",
    "ConfigError",
    "UnknownServiceError",
    "NoHealthyEndpointsError",
    "EndpointsSaturatedError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "RateLimitedError",
    "FaultInjectedError",
    "ManualClock",
    "deadline",
    "deadline_headers",
    "incoming_deadline",
    "remaining",
    "call",
    "default_mesh",
    "hash_key",
    "peer_identity",
    "inject",
    "extract",
    "incoming",
    "__version__",
]

F = TypeVar("F", bound=Callable[..., Any])


def _start_admin(mesh: Mesh) -> Any:
    """The admin endpoint, when ``MESHLIB_ADMIN`` asks for one (imported only then)."""
    if not mesh.config.telemetry.admin:
        return None
    from .admin import attach

    return attach(mesh)


_ATTACHMENTS.append(_start_admin)


def _start_csds(mesh: Mesh) -> Any:
    """CSDS (what ``mesh.xds_status()`` says, over gRPC), when ``MESHLIB_XDS_CSDS`` asks for it."""
    if not mesh.config.xds.xds_csds:
        return None
    from .xds.csds import CsdsServer

    xds = getattr(mesh, "_xds", None)
    return CsdsServer(mesh.config.xds.xds_csds, mesh.xds_status, lambda: None if xds is None else xds.client.node).start()


_ATTACHMENTS.append(_start_csds)

_default: Mesh | None = None
_default_lock = threading.Lock()


def default_mesh() -> Mesh:
    """The process-wide Mesh built from the environment on first use, closed at exit."""
    global _default
    mesh = _default
    if mesh is None or mesh.closed:
        with _default_lock:
            if _default is None or _default.closed:
                _default = Mesh.from_env()
                atexit.register(_default.close)
            mesh = _default
    return mesh


def call(service: str, *, idempotent: bool = True) -> Callable[[F], F]:
    """``@meshlib.call("svc")``: like ``mesh.call`` on the default mesh, which is
    built from the environment the first time a decorated function runs."""
    from .adapters.decorator import mesh_call

    return mesh_call(default_mesh, service, idempotent=idempotent)
