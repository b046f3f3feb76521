"""``xds``: the discovery scheme that takes listeners, routes, clusters and
endpoints from an xDS control plane.

Same shape as every resolver (``start(publish)``, ``services()``,
``status()``, ``close()``), plus the publication of routes and cluster
settings: before ``start``, :meth:`XdsResolver.attach` gives it where to send
a listener's :class:`~meshlib.routing.RouteConfig` and a cluster's settings (a
mapping of :class:`meshlib.config.ServiceConfig` field names to values).
Endpoints go through ``publish`` as :class:`~meshlib.EndpointSnapshot`, one
per xDS cluster, named as the cluster.
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any, Callable, Iterable, Mapping

from ..clock import SYSTEM_CLOCK, Clock
from ..endpoint import EndpointSnapshot
from ..routing import RouteConfig
from .bootstrap import Bootstrap, load_bootstrap
from .client import AdsClient
from .graph import Graph, Sink
from .resources import SHORT, TYPES

__all__ = ["XdsResolver", "RoutesSink", "ClusterSink"]

RoutesSink = Callable[[str, "RouteConfig | None"], None]
ClusterSink = Callable[[str, "Mapping[str, Any] | None"], None]


class XdsResolver:
    def __init__(
        self,
        bootstrap: Bootstrap,
        listeners: Iterable[str] = (),
        *,
        clock: Clock = SYSTEM_CLOCK,
        does_not_exist_timeout: float = 15.0,
        backoff_base: float = 1.0,
        backoff_max: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self._listeners = set(listeners)
        self._routes_sink: RoutesSink = lambda name, rc: None
        self._cluster_sink: ClusterSink = lambda name, settings: None
        self._publish: Callable[[EndpointSnapshot], None] = lambda snap: None
        self._clusters: set[str] = set()
        self._lock = threading.Lock()
        self.graph = Graph(self._subscribe, Sink(self._on_endpoints, self._on_cluster, self._on_routes))
        self.client = AdsClient(
            bootstrap, self.graph.on_resource, clock=clock, does_not_exist_timeout=does_not_exist_timeout,
            backoff_base=backoff_base, backoff_max=backoff_max, rng=rng,
        )  # fmt: skip
        self._started = False

    @classmethod
    def from_settings(cls, settings: Any, listeners: Iterable[str], *, clock: Clock = SYSTEM_CLOCK,
                      environ: Mapping[str, str] | None = None) -> "XdsResolver":  # fmt: skip
        """Build from the ``MESHLIB_XDS_*`` settings (any object with the
        ``xds_*`` attributes of ``meshlib.config.XdsConfig``); the bootstrap
        comes from ``xds_bootstrap`` / ``xds_bootstrap_config`` if set, else
        from the environment (``GRPC_XDS_BOOTSTRAP`` ...)."""
        env = dict(os.environ if environ is None else environ)
        if settings.xds_bootstrap:
            env["MESHLIB_XDS_BOOTSTRAP"] = settings.xds_bootstrap
        if settings.xds_bootstrap_config:
            env["MESHLIB_XDS_BOOTSTRAP_CONFIG"] = settings.xds_bootstrap_config
        return cls(
            load_bootstrap(env), listeners, clock=clock, does_not_exist_timeout=settings.xds_does_not_exist_timeout,
            backoff_base=settings.xds_backoff_base, backoff_max=settings.xds_backoff_max,
        )  # fmt: skip

    def attach(self, routes: RoutesSink, cluster: ClusterSink) -> None:
        """Where listeners' routes and clusters' settings go (call before start)."""
        self._routes_sink, self._cluster_sink = routes, cluster

    def _subscribe(self, type_url: str, names: frozenset[str]) -> None:
        self.client.subscribe(type_url, names)

    def _on_endpoints(self, snapshot: EndpointSnapshot) -> None:
        self._publish(snapshot)

    def _on_cluster(self, name: str, settings: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._clusters.add(name)
        self._cluster_sink(name, settings)

    def _on_routes(self, listener: str, routes: RouteConfig | None) -> None:
        self._routes_sink(listener, routes)

    # -- the resolver contract -------------------------------------------------------------

    def services(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._clusters)

    def start(self, publish: Callable[[EndpointSnapshot], None]) -> None:
        self._publish = publish
        for name in sorted(self._listeners):
            self.graph.watch(name)
        self.client.start()
        self._started = True

    def watch(self, listener: str) -> None:
        """Also follow ``listener`` (e.g. for a ``xds:///name`` target)."""
        self._listeners.add(listener)
        self.graph.watch(listener)

    def wait(self, listener: str, timeout: float) -> bool:
        """Block until ``listener``'s configuration is complete (or known not to
        exist); False after ``timeout`` seconds."""
        with self.graph.complete:
            return self.graph.complete.wait_for(lambda: self.graph.is_complete(listener), timeout)

    def close(self) -> None:
        self.client.close()

    def status(self) -> dict[str, Any]:
        """CSDS-like: the server, and per resource its type, version, status,
        last error and last update time."""
        c = self.client
        resources = []
        for st in sorted(c.resources(), key=lambda s: (TYPES.index(s.type_url), s.name)):
            resources.append({"type": SHORT[st.type_url], **st.as_dict()})
        return {
            "kind": "xds",
            "server": c.server.server_uri,
            "connected": c.connected,
            "node": c.bootstrap.node.id,
            "listeners": sorted(self._listeners),
            "versions": {SHORT[t]: v for t, v in c._versions.items()},
            "counters": dict(c.counters),
            "resources": resources,
        }
