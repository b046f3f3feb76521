"""The subscription graph and complete configurations (gRFC A74).

Listener → RouteConfiguration (unless inline) → Cluster → ClusterLoadAssignment
(EDS clusters). The graph subscribes to what the current resources name and
to what the configuration in use names, so nothing in use is dropped while a
new one arrives. A listener's routes reach the data path only once every
cluster they name is resolved — its settings and its endpoints present, or
known not to exist — and then in the order clusters, endpoints, routes, so a
new cluster never fails calls while it arrives.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..endpoint import EndpointSnapshot
from ..resilience.fault import FaultConfig
from ..routing import RouteConfig
from .clusters import ClusterInfo
from .endpoints import Assignment
from .listeners import ListenerInfo
from .resources import CDS, EDS, LDS, RDS

__all__ = ["Graph", "Sink"]

log = logging.getLogger("meshlib.xds")

_MISSING = object()  # not received yet
_ABSENT = None  # does not exist (or dropped)


class Sink:
    """Where a complete configuration goes: endpoints, cluster settings, routes."""

    def __init__(
        self,
        endpoints: Callable[[EndpointSnapshot], None],
        cluster: Callable[[str, Mapping[str, Any] | None], None],
        routes: Callable[[str, RouteConfig | None], None],
    ) -> None:
        self.endpoints = endpoints
        self.cluster = cluster
        self.routes = routes


class Graph:
    def __init__(self, subscribe: Callable[[str, frozenset[str]], None], sink: Sink) -> None:
        self._subscribe = subscribe
        self._sink = sink
        self._lock = threading.RLock()
        self.roots: set[str] = set()
        self._have: dict[str, dict[str, Any]] = {LDS: {}, RDS: {}, CDS: {}, EDS: {}}
        #: What each listener has on the data path: its RouteConfig and clusters.
        self.published: dict[str, RouteConfig | None] = {}
        self._published_clusters: dict[str, tuple[Any, ...]] = {}
        self._versions: dict[str, int] = {}
        self.complete = threading.Condition(self._lock)

    def watch(self, listener: str) -> None:
        with self._lock:
            if listener not in self.roots:
                self.roots.add(listener)
                self._resubscribe()

    def on_resource(self, type_url: str, name: str, value: Any) -> None:
        with self._lock:
            self._have[type_url][name] = value
            self._resubscribe()
            self._publish_ready()
            self._resubscribe()  # what the previous configuration alone used can go now

    # -- what to watch -------------------------------------------------------------------

    def _route_of(self, listener: str) -> RouteConfig | None:
        info = self._have[LDS].get(listener, _MISSING)
        if not isinstance(info, ListenerInfo):
            return None
        if info.inline is not None:
            return info.inline
        rc = self._have[RDS].get(info.rds_name, _MISSING)
        return rc if isinstance(rc, RouteConfig) else None

    def _wanted(self) -> tuple[set[str], set[str], set[str]]:
        rds: set[str] = set()
        clusters: set[str] = set()
        for name in self.roots:
            info = self._have[LDS].get(name)
            if isinstance(info, ListenerInfo) and info.rds_name:
                rds.add(info.rds_name)
            rc = self._route_of(name)
            if rc is not None:
                clusters |= rc.clusters
            used = self.published.get(name)
            if used is not None:
                clusters |= used.clusters
        eds = set()
        for c in clusters:
            ci = self._have[CDS].get(c)
            if isinstance(ci, ClusterInfo) and ci.eds_name:
                eds.add(ci.eds_name)
        return rds, clusters, eds

    def _resubscribe(self) -> None:
        rds, clusters, eds = self._wanted()
        for t, names in ((LDS, self.roots), (RDS, rds), (CDS, clusters), (EDS, eds)):
            for gone in set(self._have[t]) - names:
                del self._have[t][gone]  # dereferenced: forgotten (RDS/EDS deletion)
            self._subscribe(t, frozenset(names))

    # -- publishing ----------------------------------------------------------------------

    def _cluster_ready(self, name: str) -> tuple[bool, ClusterInfo | None, Assignment | None]:
        ci = self._have[CDS].get(name, _MISSING)
        if ci is _MISSING:
            return False, None, None
        if ci is _ABSENT:
            return True, None, None
        assert isinstance(ci, ClusterInfo)
        if not ci.eds_name:
            return True, ci, ci.load_assignment
        a = self._have[EDS].get(ci.eds_name, _MISSING)
        if a is _MISSING:
            return False, ci, None
        return True, ci, a if isinstance(a, Assignment) else None

    def _publish_ready(self) -> None:
        in_use = {c for rc in self.published.values() if rc is not None for c in rc.clusters}
        for c in sorted(in_use):  # updates of clusters already on the data path apply at once
            ready, ci, a = self._cluster_ready(c)
            if ready:
                self._publish_cluster(c, ci, a)
        for listener in sorted(self.roots):
            info = self._have[LDS].get(listener, _MISSING)
            if info is _MISSING:
                continue
            if info is _ABSENT:
                if self.published.get(listener) is not None or listener not in self.published:
                    self.published[listener] = None
                    self._sink.routes(listener, None)
                continue
            rc = self._route_of(listener)
            if rc is None:
                rds = self._have[RDS].get(info.rds_name, _MISSING)
                if rds is _ABSENT and self.published.get(listener, _MISSING) is not None:
                    self.published[listener] = None
                    self._sink.routes(listener, None)
                continue
            parts = {}
            for c in sorted(rc.clusters):
                ready, ci, a = self._cluster_ready(c)
                if not ready:
                    break
                parts[c] = (ci, a)
            else:
                for c, (ci, a) in parts.items():
                    self._publish_cluster(c, ci, a)
                routes = _with_listener_defaults(rc, info)
                if self.published.get(listener) != routes:
                    self.published[listener] = routes
                    self._sink.routes(listener, routes)
                self.complete.notify_all()
        # Clusters no route uses any more keep their last state; nothing routes to them.

    def _publish_cluster(self, name: str, ci: ClusterInfo | None, a: Assignment | None) -> None:
        last = self._published_clusters.get(name)
        same_ci = last is not None and (last[0] is ci or last[0] == ci)  # a re-sent CDS resource is a new, equal object
        if same_ci and last is not None and last[1] is a:  # identity: comparing 10,000 endpoints costs more than it saves
            return
        self._published_clusters[name] = (ci, a)
        version = self._versions[name] = self._versions.get(name, 0) + 1
        if ci is None:
            self._sink.cluster(name, None)
            self._sink.endpoints(EndpointSnapshot(name, (), version=version, source="xds"))
            return
        settings = dict(ci.settings)
        if a is not None:
            settings["overprovisioning_factor"] = a.overprovisioning_factor
            if ci.locality_weighted:
                settings["locality_weights"] = a.locality_weights
            if a.drops:  # Envoy's drop_overloads: that share of calls fails at once with 503 / UNAVAILABLE
                kept = 1.0
                for _, share in a.drops:
                    kept *= 1.0 - share
                settings["fault"] = FaultConfig(abort_percent=round((1.0 - kept) * 100, 6), abort_status=503, abort_grpc_status="UNAVAILABLE")
        self._sink.cluster(name, settings)  # the Mesh ignores settings equal to the current ones
        self._sink.endpoints(
            a.snapshot(name, version, ci.locality_weighted) if a is not None else EndpointSnapshot(name, (), version=version, source="xds")
        )

    def is_complete(self, listener: str) -> bool:
        with self._lock:
            return listener in self.published


def _with_listener_defaults(rc: RouteConfig, info: ListenerInfo) -> RouteConfig:
    """The HCM's max_stream_duration and fault filter as defaults of every route."""
    if info.max_stream_duration is None and info.fault is None:
        return rc
    vhosts = []
    for vh in rc.virtual_hosts:
        routes = []
        for r in vh.routes:
            a = r.action
            if a.max_stream_duration is None and info.max_stream_duration is not None:
                a = replace(a, max_stream_duration=info.max_stream_duration)
            if a.fault is None and info.fault is not None:
                a = replace(a, fault=info.fault)
            routes.append(r if a is r.action else replace(r, action=a))
        vhosts.append(replace(vh, routes=tuple(routes)))
    return replace(rc, virtual_hosts=tuple(vhosts))
