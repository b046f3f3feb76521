"""Mesh: owns the configuration, the discovery sources, the clusters and their lifecycle."""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

from ._background import PeriodicWorker
from .clock import SYSTEM_CLOCK, Clock
from .core.cluster import Cluster
from .config import MeshConfig, ServiceConfig, canonical_service, load_config
from .discovery import Resolver
from .discovery.dns import Lookup, system_lookup
from .discovery.schemes import make_resolvers
from .discovery.filter import filter_snapshot
from .endpoint import Endpoint, EndpointSnapshot
from .health.load.view import with_reports
from .errors import MeshError, UnknownServiceError
from .health import Probe
from .security import ClientTls, TlsProvider
from .mesh_routing import RoutingMixin
from .mesh_security import SecurityMixin
from .telemetry import Telemetry

if TYPE_CHECKING:  # pragma: no cover - import cost only for type checkers
    import ssl

    import grpc
    import grpc.aio
    import httpx

    from .adapters.keyed import KeyFn
    import requests
    import urllib3

    from .registration import Registration
    from .registration.base import Health

log = logging.getLogger("meshlib")
F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

__all__ = ["Mesh", "ATTACHMENTS"]

#: What the layers above start with every Mesh (the admin endpoint registers
#: itself here): ``attach(mesh)`` returns something with ``close()``, or None.
ATTACHMENTS: list[Callable[["Mesh"], Any]] = []


class Mesh(RoutingMixin, SecurityMixin):
    """An in-process service mesh.

    Build one from the environment with :meth:`from_env`, or from a mapping /
    :class:`MeshConfig` with ``Mesh(config=...)``. Use it as a context manager,
    or call :meth:`close` to stop its background threads.

    A URL host (or a ``@mesh.call`` name) is a *mesh service* when it names a
    service declared in the configuration or published by the discovery
    source, compared case-insensitively with ``_`` and ``-`` treated alike.
    Any other host passes through untouched.
    """

    def __init__(
        self,
        config: MeshConfig | Mapping[str, Any] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        dns_lookup: Lookup = system_lookup,
        health_probe: Probe | None = None,
    ) -> None:
        if config is None:
            config = MeshConfig()
        elif not isinstance(config, MeshConfig):
            config = load_config(environ={}, overrides=config)
        self.config: MeshConfig = config
        self.clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._closed = False
        self._clusters: dict[str, Cluster] = {}
        self._health_probe = health_probe
        #: Trace propagation, spans, metrics and access logs: one observer per cluster.
        self.telemetry = Telemetry(config.telemetry)
        self._attached: list[Any] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # Adapter-owned objects (gRPC channel pools), closed by close().
        self._resources: dict[Hashable, Any] = {}
        # Outlier-detection intervals and breaker waits are checked on this timer.
        self._ticker = PeriodicWorker("resilience", 0.1, self.tick)
        # Hot-path lookup: every accepted spelling of a service -> its cluster.
        # Copied and swapped on change, read without a lock.
        self._by_host: Mapping[str, Cluster] = MappingProxyType({})
        self._registrations: list["Registration"] = []
        # Workload identity (files or the SPIFFE Workload API) and each service's
        # TLS mode; a bad identity or mtls without one is a ConfigError now.
        self._tls = TlsProvider(config.tls)
        self._tls_by_service: dict[str, ClientTls | None] = {}
        try:
            for svc in (config.defaults, *config.services.values()):
                self._tls.for_service(svc.name, svc.tls_mode, svc.tls_spiffe_ids)
            self._init_routing()
            self._resolvers: list[Resolver] = self._make_resolvers(dns_lookup)
        except BaseException:
            self._tls.close()
            raise
        for name, svc in config.services.items():
            if svc.routes is not None:
                self._set_routes(name, svc.routes)
            if not self._is_xds_service(name):
                self._ensure_cluster(name)
        try:
            self._ticker.start()
            for resolver in self._resolvers:
                resolver.start(self._publish)
            self._wait_for_xds()
            for attach in ATTACHMENTS:
                started = attach(self)
                if started is not None:
                    self._attached.append(started)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK, **overrides: Any) -> "Mesh":
        """Build a Mesh from ``MESHLIB_*`` variables and the ``MESHLIB_CONFIG``
        file; keyword arguments (file-style keys) win over both."""
        return cls(MeshConfig.from_env(environ, **overrides), clock=clock)

    # -- discovery ---------------------------------------------------------------

    def _make_resolvers(self, dns_lookup: Lookup) -> list[Resolver]:
        resolvers = make_resolvers(self.config, dns_lookup=dns_lookup, now=self.clock.monotonic)
        xds = self._make_xds_resolver()  # it also publishes routes and cluster policies
        if xds is not None:
            resolvers.append(xds)
        return resolvers

    def _ensure_cluster(self, name: str) -> Cluster:
        with self._lock:
            cluster = self._clusters.get(name)
            if cluster is None:
                cluster = Cluster(
                    name,
                    self._service_config(name),
                    clock=self.clock,
                    rng=random.Random(self._rng.random()),
                    executor=self._executor,
                    health_probe=self._health_probe or self._tls_probe(name),
                    observers=(self.telemetry.observer,),
                )
                self.telemetry.watch(cluster)
                self._clusters[name] = cluster
                cluster.start()
                spellings = dict(self._by_host)
                for spelling in {name, name.replace("-", "_")}:
                    spellings[spelling] = cluster
                self._by_host = MappingProxyType(spellings)
            return cluster

    def _publish(self, snapshot: EndpointSnapshot) -> None:
        if self._closed:
            return
        name = canonical_service(snapshot.service)
        svc = self.config.service(name)
        if svc.filter_tags or svc.filter_meta:
            snapshot = filter_snapshot(snapshot, svc.filter_tags, svc.filter_meta)
        self._ensure_cluster(name).update(snapshot)
        log.debug("meshlib: %s now has %d endpoints (v%d)", name, len(snapshot), snapshot.version)

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The thread pool hedged sync calls run their attempts on (made on first use)."""
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._closed:
                    raise MeshError("this Mesh is closed; create a new one")
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="meshlib-hedge")
                pool = self._pool
        return pool

    def tick(self) -> None:
        """Run every service's interval work now (outlier detection, breaker
        waits). A Mesh thread does this ten times a second; tests with a
        ManualClock call it after advancing the clock."""
        for cluster in list(self._clusters.values()):
            cluster.tick()

    # -- lookup ------------------------------------------------------------------

    def lookup(self, host: str) -> Cluster | None:
        """The cluster a URL host names, or None if it is not a mesh service."""
        cluster = self._by_host.get(host)
        if cluster is None:
            cluster = self._by_host.get(canonical_service(host))
        return cluster

    def cluster(self, name: str) -> Cluster:
        """The cluster for service ``name``; raises UnknownServiceError. A routed
        name (a Listener, or a service with ROUTES) answers the cluster its
        routes choose for a call without path or headers."""
        if self._closed:
            raise MeshError("this Mesh is closed; create a new one")
        if self._routes.hosts:
            hr = self._routes.hosts.get(name) or self._routes.hosts.get(canonical_service(name))
            if hr is not None:
                return self._routes.route(name, hr, "/", None)  # type: ignore[return-value]
        cluster = self._by_host.get(name) or self.lookup(name)
        if cluster is None:
            raise UnknownServiceError(name, list(self._clusters) + list(self._route_configs))
        return cluster

    def is_mesh_service(self, host: str) -> bool:
        return self.lookup(host) is not None or self.routed(host)

    def services(self) -> list[str]:
        return sorted(set(self._clusters) | set(self._route_configs))

    def service_config(self, name: str) -> ServiceConfig:
        return self._service_config(name)

    # -- introspection -----------------------------------------------------------

    def endpoints(self, name: str, *, tags: Iterable[str] = (), meta: Mapping[str, str] | None = None) -> EndpointSnapshot:
        """The current snapshot of ``name``'s endpoints, with health: what its
        balancer uses (after the service's ``FILTER_TAGS``/``FILTER_META``). An
        endpoint failing its active health checks has ``healthy=False``, one
        ejected by outlier detection (or an open endpoint breaker) ``ejected=True``.
        ``tags`` and ``meta`` keep only endpoints with every one of those tags
        and metadata values: ``mesh.endpoints("worker", tags=["gpu"], meta={"model": "x"})``.
        A service that reads load reports (``LOAD_REPORTS``) gives each endpoint
        its latest report as ``load`` (source, ``age_s`` now, fields; None: none yet)."""
        cluster = self.cluster(name)
        return filter_snapshot(cluster.view if cluster.load_reports is None else with_reports(cluster, self.clock.monotonic()), tags, meta)

    # -- self-registration -------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        port: int,
        address: str | None = None,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        health: "Health" = None,
        weight: int = 1,
        zone: str = "",
        priority: int = 0,
        instance_id: str | None = None,
    ) -> "Registration":
        """Register this process as an instance of ``name`` in the registry of
        ``MESHLIB_DISCOVERY`` (consul:// or etcd://) and keep it registered
        (TTL heartbeat / lease keep-alive) until the returned handle is closed,
        the Mesh is closed, or the process exits or gets SIGTERM.

        ``address`` defaults to the Consul agent's address (Consul) or this
        machine's address towards etcd; ``health`` is None, a callable
        returning True when healthy, or an http(s) URL answering 2xx when
        healthy. See docs/registries.md."""
        if self._closed:
            raise MeshError("this Mesh is closed; create a new one")
        from .registration import register

        reg = register(
            self.config, name, port=port, address=address, tags=tags, meta=meta, health=health,
            weight=weight, zone=zone, priority=priority, instance_id=instance_id,
        )  # fmt: skip
        with self._lock:
            self._registrations.append(reg)
        return reg

    def stats(self) -> dict[str, Any]:
        """Per-service and per-endpoint counters, priority levels and discovery state."""
        now = self.clock.monotonic()
        services: dict[str, Any] = {}
        for name, cluster in sorted(self._clusters.items()):
            hosts = cluster.hosts
            total = sum(h.requests for h in hosts) or 1
            view = {ep.key: ep for ep in cluster.view}
            services[name] = {
                "policy": cluster.config.lb_policy,
                "source": cluster.snapshot.source,
                "version": cluster.snapshot.version,
                **cluster.resilience_stats(),
                "priorities": [
                    {"priority": lv.priority, "total": lv.total, "healthy": lv.healthy, "load": round(lv.load, 2), "panic": lv.panic}
                    for lv in cluster.levels
                ],
                "endpoints": [
                    {**_host_stats(h, view.get(h.key, h.endpoint), total, now), **cluster.host_resilience(h)} for h in hosts
                ],
            }
        stats: dict[str, Any] = {"services": services, "discovery": [r.status() for r in self._resolvers], "telemetry": self.telemetry.stats()}
        if self._registrations:
            stats["registrations"] = [r.status() for r in self._registrations if not r.closed]
        if self._tls.source is not None or any(c.config.tls_mode != "off" for c in self._clusters.values()):
            stats["tls"] = self._tls.status()
        return stats

    # -- adapters ----------------------------------------------------------------

    def requests_session(self, *, hash_key: "KeyFn | None" = None, **adapter_kwargs: Any) -> "requests.Session":
        """A real ``requests.Session`` whose mesh-service URLs are balanced.

        Keyword arguments go to the transport adapter (``HTTPAdapter``):
        ``pool_connections`` (endpoints kept pooled, default 10) and
        ``pool_maxsize`` (connections kept per endpoint, default 10).
        ``hash_key``: a function of the request (here and on the other
        clients) whose result is the call's hash key (docs/load-balancing.md)."""
        if hash_key is not None:
            from .adapters.keyed import keyed_session

            return keyed_session(self, hash_key, **adapter_kwargs)  # type: ignore[no-any-return]
        from .adapters.requests import session

        return session(self, **adapter_kwargs)

    def urllib3_pool(self, **kwargs: Any) -> "urllib3.PoolManager":
        """A ``urllib3.PoolManager`` whose mesh-service URLs are balanced.
        Keyword arguments are PoolManager's; ``maxsize`` defaults to 10
        connections kept per endpoint (urllib3's own default is 1)."""
        from .adapters.urllib3 import MeshPoolManager

        kwargs.setdefault("maxsize", 10)
        return MeshPoolManager(mesh=self, **kwargs)

    def httpx_client(self, **kwargs: Any) -> "httpx.Client":
        """An ``httpx.Client`` (needs the ``httpx`` extra) routing mesh services."""
        from .adapters.httpx import client

        return client(self, **kwargs)

    def httpx_async_client(self, **kwargs: Any) -> "httpx.AsyncClient":
        """An ``httpx.AsyncClient`` (needs the ``httpx`` extra) routing mesh services."""
        from .adapters.httpx import async_client

        return async_client(self, **kwargs)

    def grpc_channel(self, name: str, *, hash_key: "KeyFn | None" = None, **options: Any) -> "grpc.Channel":
        """A ``grpc.Channel`` (needs the ``grpc`` extra) whose every call is
        balanced over ``name``'s endpoints: one underlying channel per
        endpoint, made on first use. Keyword arguments: ``credentials``
        (``grpc.ChannelCredentials``, TLS to every endpoint, verifying the
        service name), ``options`` (channel arguments) and ``compression``.
        See docs/grpc.md."""
        if hash_key is not None:
            from .adapters.grpc.keyed import KeyedChannel

            return KeyedChannel(self.grpc_channel(name, **options), hash_key)
        name = self._xds_target(name)
        if self.routed(name):
            from .adapters.grpc.routed import routed_channel

            return routed_channel(self, name, **options)
        from .adapters.grpc import channel

        return channel(self, name, **options)

    def grpc_aio_channel(self, name: str, *, hash_key: "KeyFn | None" = None, **options: Any) -> "grpc.aio.Channel":
        """The ``grpc.aio`` counterpart of :meth:`grpc_channel`, used on the caller's event loop."""
        if hash_key is not None:
            from .adapters.grpc.keyed import KeyedAioChannel

            return KeyedAioChannel(self.grpc_aio_channel(name, **options), hash_key)  # type: ignore[return-value]
        name = self._xds_target(name)
        if self.routed(name):
            from .adapters.grpc.aio_routed import routed_aio_channel

            return routed_aio_channel(self, name, **options)  # type: ignore[return-value]
        from .adapters.grpc import aio_channel

        return aio_channel(self, name, **options)

    def grpc_interceptors(self, name: str, *, aio: bool = False) -> Sequence[Any]:
        """Client interceptors for a channel of your own (``grpc.intercept_channel(ch,
        *interceptors)``, or ``grpc.aio.insecure_channel(target, interceptors=...)``
        with ``aio=True``): ``name``'s retries and budget, breakers, deadlines,
        trace headers and statistics, without meshlib's balancing."""
        if aio:
            from .adapters.grpc import aio_interceptors

            return aio_interceptors(self, name)
        from .adapters.grpc import interceptors

        return interceptors(self, name)

    def call(self, service: str, *, idempotent: bool = True) -> Callable[[F], F]:
        """Decorate a sync or async function whose first parameter receives the
        picked :class:`Endpoint`; every attempt picks again. ``idempotent=False``
        retries only attempts that never reached the endpoint (like a POST)."""
        from .adapters.decorator import mesh_call

        return mesh_call(self, service, idempotent=idempotent)

    # -- lifecycle ---------------------------------------------------------------

    def resource(self, key: Hashable, make: Callable[[], R]) -> R:
        """The Mesh-owned object for ``key``, made by ``make()`` on first use;
        :meth:`close` calls its ``close()``. Adapters keep their per-endpoint
        connection pools here, so they live and die with the Mesh."""
        found = self._resources.get(key)
        if found is None:
            with self._lock:
                if self._closed:
                    raise MeshError("this Mesh is closed; create a new one")
                found = self._resources.get(key)
                if found is None:
                    found = self._resources[key] = make()
        return found  # type: ignore[no-any-return]

    def drop_resource(self, key: Hashable) -> None:
        """Forget a :meth:`resource` (its owner closed it already)."""
        with self._lock:
            self._resources.pop(key, None)

    def close(self) -> None:
        """Stop every background thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for attached in self._attached:
            try:
                attached.close()
            except Exception:
                log.exception("meshlib: closing %r failed", attached)
        for reg in self._registrations:
            try:
                reg.close()
            except Exception:
                log.exception("meshlib: closing %r failed", reg)
        self._ticker.stop()
        self.telemetry.close()
        for cluster in list(self._clusters.values()):
            cluster.close()
        with self._lock:
            pool, self._pool = self._pool, None
            resources, self._resources = list(self._resources.values()), {}
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for resource in resources:
            try:
                resource.close()
            except Exception:
                log.exception("meshlib: closing %r failed", resource)
        for resolver in self._resolvers:
            try:
                resolver.close()
            except Exception:
                log.exception("meshlib: closing %r failed", resolver)
        self._tls.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Mesh services={self.services()} discovery={self.config.discovery!r}>"


def _host_stats(host: Any, ep: Endpoint, total: int, now: float) -> dict[str, Any]:
    return {
        "address": ep.address,
        "zone": ep.zone,
        "priority": ep.priority,
        "weight": ep.weight,
        "healthy": ep.healthy,
        "ejected": ep.ejected,
        "state": "ejected" if ep.ejected else "healthy" if ep.healthy else "unhealthy",
        "active": host.active,
        "requests": host.requests,
        "share": round(host.requests / total, 4),
        "successes": host.successes,
        "failures": host.failures,
        "connect_failures": host.connect_failures,
        "mean_latency_ms": round(host.mean_latency * 1000, 3),
        "ewma_ms": round(host.ewma(now) * 1000, 3),
    }
