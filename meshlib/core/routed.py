"""A cluster as one route sees it, and the mesh's routing table.

:class:`RoutedCluster` stands in for a :class:`Cluster` when a route carries
its own retry policy, timeouts or fault settings: the call machinery reads
``retry``, ``timeout``, ``per_try_timeout`` and ``gates`` from it, and
everything else (hosts, picker, budget, thresholds, observers, counters) from
the cluster itself, so the service's state is shared by every route.

:class:`RouteTable` maps each routed name (a Listener, or a service with
``ROUTES``) to its compiled virtual host; it is replaced whole on change and
read without a lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import MeshError
from ..routing import HostRoutes, RouteAction, hash_key
from .call import Call, current_hash_key
from .gates import FaultGate

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["RoutedCluster", "RouteTable", "NoRouteError"]

_EMPTY: Mapping[str, str] = {}


class NoRouteError(MeshError, LookupError):
    """No route of a routed service matches the request."""

    def __init__(self, service: str, path: str) -> None:
        self.service = service
        super().__init__(
            f"no route of {service!r} matches {path!r}; add a catch-all route (prefix '/') "
            "or check the route configuration (mesh.xds_status(), MESHLIB_SERVICES__<NAME>__ROUTES)."
        )


class RoutedCluster:
    """``cluster`` with the overrides of one route ``action`` (and, for one call,
    the hash key the route's hash policy computed)."""

    __slots__ = ("_cluster", "retry", "timeout", "per_try_timeout", "gates", "fault", "mirrors", "_key", "action", "base")

    def __init__(self, cluster: "Cluster", action: RouteAction, key: str | None = None) -> None:
        self._cluster = cluster
        self.action = action
        self.retry = action.retry if action.retry is not None else cluster.retry
        timeout = action.effective_timeout
        self.timeout = cluster.timeout if timeout is None else (timeout or None)
        self.per_try_timeout = self.retry.per_try_timeout if action.retry is not None else cluster.per_try_timeout
        gates = cluster.gates
        self.fault = cluster.fault
        if action.fault is not None:
            gates = tuple(g for g in gates if not isinstance(g, FaultGate))
            self.fault = action.fault if action.fault.enabled else None
            if self.fault is not None:
                gates += (FaultGate(self.fault, cluster),)
        self.gates = gates
        #: Where copies of the calls go (request_mirror_policies); sent by the HTTP adapters.
        self.mirrors = action.mirrors
        self._key = key
        #: The shared view this one was copied from for one call's hash key (itself if none).
        self.base = self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)

    @property
    def cluster(self) -> "Cluster":
        return self._cluster

    @property
    def hash_key(self) -> str | None:
        """The key the route's hash policy computed for this call (None: none)."""
        return self._key

    def with_key(self, key: str | None) -> "RoutedCluster":
        out = RoutedCluster.__new__(RoutedCluster)
        for slot in RoutedCluster.__slots__:
            setattr(out, slot, getattr(self, slot))
        out._key = key
        out.base = self.base
        return out

    def start_call(self, header_hash_key: str | None = None, idempotent: bool = True, timeout: float | None = None) -> Call:
        key: str | bytes | None = None
        if self._cluster.hashing:  # as Cluster.start_call: meshlib.hash_key(), then the route's, then the header
            key = current_hash_key()
            if key is None:
                key = self._key if self._key is not None else header_hash_key
        return Call(self, key, idempotent, timeout)  # type: ignore[arg-type]


class RouteTable:
    """Routed names → compiled virtual hosts, and the route → cluster step."""

    __slots__ = ("hosts", "_resolve", "_views")

    def __init__(self, hosts: Mapping[str, HostRoutes], resolve: Callable[[str], "Cluster | None"]) -> None:
        self.hosts = hosts
        self._resolve = resolve
        self._views: dict[tuple[int, str], RoutedCluster] = {}

    def route(self, name: str, hr: HostRoutes, path: str, headers: Any) -> "Cluster | RoutedCluster":
        if type(headers) is dict:  # a plain dict: compare header names in lower case
            headers = {k.lower(): v for k, v in headers.items()}
        elif headers is None:
            headers = _EMPTY
        d = hr.decide(path, headers)
        if d is None:
            raise NoRouteError(name, path)
        cluster = self._resolve(d.cluster)
        if cluster is None:
            from ..errors import NoHealthyEndpointsError

            raise NoHealthyEndpointsError(d.cluster, f"no cluster (route of {name!r} names {d.cluster!r}, which is not known yet)")
        action = d.route.action
        if action.retry is None and action.effective_timeout is None and action.fault is None and not action.hash_policies and not action.mirrors:
            return cluster
        view_key = (id(action), d.cluster)
        view = self._views.get(view_key)
        if view is None or view.cluster is not cluster:
            view = self._views[view_key] = RoutedCluster(cluster, action)
        if action.hash_policies:
            return view.with_key(hash_key(action.hash_policies, path, headers))
        return view
