"""The routing step and the xDS glue of :class:`meshlib.Mesh` (a mixin).

A routed name — a Listener followed over xDS, or a service with ``ROUTES`` —
goes Listener → virtual host → route → cluster (or a weighted split). The
routing table is replaced whole on change and read without a lock. xDS
cluster settings arrive as :class:`ServiceConfig` values and reconfigure the
cluster in place, so a service behaves the same whatever source configured it.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config import MeshConfig, ServiceConfig, canonical_service
from .core.cluster import Cluster
from .core.routed import RoutedCluster, RouteTable
from .errors import MeshError
from .routing import RouteConfig, Router

if TYPE_CHECKING:  # pragma: no cover
    from .clock import Clock

__all__ = ["RoutingMixin"]

log = logging.getLogger("meshlib")


class RoutingMixin:
    # Provided by Mesh.
    config: MeshConfig
    clock: "Clock"
    _lock: threading.Lock
    _rng: random.Random
    _closed: bool
    _clusters: dict[str, Cluster]

    lookup: Callable[[str], "Cluster | None"]
    _ensure_cluster: Callable[[str], Cluster]

    def _init_routing(self) -> None:
        # Routed name -> compiled virtual host; replaced whole on change.
        self._routes = RouteTable(MappingProxyType({}), self.lookup)
        self._route_configs: dict[str, RouteConfig] = {}
        self._cluster_settings: dict[str, Mapping[str, Any]] = {}
        self._xds: Any = None
        self._listener_names: dict[str, str] = {}

    def route(self, host: str, path: str = "/", headers: Any = None) -> Cluster | RoutedCluster | None:
        """The cluster a call to ``host`` with ``path`` (and query) and
        ``headers`` goes to: through the routes when ``host`` is routed, else
        the cluster ``host`` names, or None if it is not a mesh service.
        Raises ``NoRouteError`` when no route matches."""
        table = self._routes
        if table.hosts:
            hr = table.hosts.get(host)
            if hr is None:
                hr = table.hosts.get(canonical_service(host))
            if hr is not None:
                return table.route(host, hr, path or "/", headers)
        return self.lookup(host)

    def routed(self, name: str) -> bool:
        """Whether ``name`` goes through routes (a Listener or ROUTES)."""
        hosts = self._routes.hosts
        return name in hosts or canonical_service(name) in hosts

    def _service_config(self, name: str) -> ServiceConfig:
        base = self.config.service(name)
        settings = self._cluster_settings.get(canonical_service(name))
        return replace(base, **settings) if settings else base

    def _set_routes(self, name: str, routes: RouteConfig | None) -> None:
        with self._lock:
            if routes is None:
                self._route_configs.pop(name, None)
            else:
                self._route_configs[name] = routes
            hosts = {}
            for routed, rc in self._route_configs.items():
                hr = Router(rc, random.Random(self._rng.random())).host(routed)
                if hr is not None:
                    for spelling in {routed, routed.replace("-", "_")}:
                        hosts[spelling] = hr
            self._routes = RouteTable(MappingProxyType(hosts), self.lookup)

    def _is_xds_service(self, name: str) -> bool:
        svc = self.config.services.get(name)
        return self.config.discovery == "xds" or bool(svc is not None and svc.xds_listener)

    def _xds_listeners(self) -> dict[str, str]:
        """Listener name -> the mesh service it is named as."""
        cfg = self.config
        out = {name: name for name in cfg.xds.xds_listeners}
        for name, svc in cfg.services.items():
            if svc.xds_listener:
                out[svc.xds_listener] = name
            elif cfg.discovery == "xds" and svc.endpoints is None:
                out[name] = name
        return out

    def _make_xds_resolver(self) -> Any:
        listeners = self._xds_listeners()
        if self.config.discovery != "xds" and not listeners:
            return None
        from .xds import XdsResolver  # needs the xds extra (xds-protos)

        self._listener_names = listeners
        resolver = XdsResolver.from_settings(self.config.xds, listeners, clock=self.clock)
        resolver.attach(self._xds_routes, self._xds_cluster)
        self._xds = resolver
        return resolver

    def _xds_routes(self, listener: str, routes: RouteConfig | None) -> None:
        if not self._closed:
            self._set_routes(self._listener_names.get(listener, listener), routes)

    def _xds_cluster(self, name: str, settings: Mapping[str, Any] | None) -> None:
        """A cluster's settings from xDS, applied as ServiceConfig values (so it
        behaves as a configured service would); an existing cluster is
        reconfigured in place, keeping its hosts and statistics."""
        if self._closed or settings is None:
            return
        name = canonical_service(name)  # as Mesh._publish names the cluster its endpoints go to
        with self._lock:
            if self._cluster_settings.get(name) == settings:
                return
            self._cluster_settings[name] = settings
            cluster = self._clusters.get(name)
        if cluster is None:
            self._ensure_cluster(name)
        else:
            cluster.reconfigure(self._service_config(name))

    def _wait_for_xds(self) -> None:
        if self._xds is None:
            return
        deadline = self.clock.monotonic() + self.config.xds.xds_wait
        for listener in self._listener_names:
            left = deadline - self.clock.monotonic()
            if left <= 0 or not self._xds.wait(listener, left):
                log.warning("meshlib: xds: no complete configuration for listener %r yet; calls to it fail until it arrives", listener)

    def _xds_target(self, name: str) -> str:
        """``xds:///name`` -> ``name``, following the Listener if it is new."""
        if not name.startswith("xds:///"):
            return name
        listener = name[len("xds:///") :]
        if self._xds is None:
            raise MeshError(f"{name!r} needs xDS: set MESHLIB_DISCOVERY=xds and an xDS bootstrap (MESHLIB_XDS_BOOTSTRAP)")
        if listener not in self._listener_names:
            self._listener_names[listener] = listener
            self._xds.watch(listener)
            if not self._xds.wait(listener, self.config.xds.xds_wait):
                log.warning("meshlib: xds: no complete configuration for listener %r yet", listener)
        return self._listener_names[listener]

    def xds_status(self) -> dict[str, Any]:
        """CSDS-like: the connected server, and per resource its type, version,
        status (requested, does-not-exist, acked, nacked, nacked-but-cached),
        last error and last update time. ``{"enabled": False}`` without xDS."""
        if self._xds is None:
            return {"enabled": False}
        return {"enabled": True, **self._xds.status()}

