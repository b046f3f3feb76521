"""What an adapter needs of the Mesh that made it, and nothing more.

Adapters are built by ``Mesh`` and hold it only through this interface:
find the cluster a service name or URL host names, and keep a per-mesh
resource (a connection pool) that lives and dies with the mesh. They never
import ``meshlib.mesh``.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Protocol, TypeVar

from .cluster import Cluster
from .routed import RoutedCluster

__all__ = ["Services"]

R = TypeVar("R")


class Services(Protocol):
    @property
    def closed(self) -> bool:
        """True once the mesh is closed: calls to mesh services then raise ``MeshError``."""
        ...

    def lookup(self, host: str) -> Cluster | None:
        """The cluster a URL host names, or None if it is not a mesh service."""
        ...

    def route(self, host: str, path: str = "/", headers: Any = None) -> "Cluster | RoutedCluster | None":
        """The cluster a call to ``host`` with this path and headers goes to:
        through the routes when ``host`` is routed (xDS or ROUTES), else as
        :meth:`lookup`."""
        ...

    def cluster(self, name: str) -> Cluster:
        """The cluster for service ``name``; raises ``UnknownServiceError`` (or
        ``MeshError`` once closed)."""
        ...

    def resource(self, key: Hashable, make: Callable[[], R]) -> R:
        """The mesh-owned object for ``key``, made by ``make()`` on first use and
        closed (its ``close()``) when the mesh closes."""
        ...

    def drop_resource(self, key: Hashable) -> None:
        """Forget a resource its owner closed already."""
        ...
