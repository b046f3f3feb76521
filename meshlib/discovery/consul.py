"""consul://: services from Consul's health API, watched with blocking queries (py-consul).

Each watched service has its own loop (a ``meshlib-consul(<service>)``
thread) on ``GET /v1/health/service/<service>?passing&index=I&wait=W``. With
``MESHLIB_REGISTRY_WATCH=all`` (the default) one more loop watches
``/v1/catalog/services`` and starts service loops as services appear (a loop
whose service has been gone from the catalog for a minute stops). Every loop follows Consul's rules for blocking queries:

- the first query has no index; later ones send the last ``X-Consul-Index``;
- an index lower than the previous one resets the loop to index 0 (a
  snapshot restore, say); an index below 1 is sent as 1 (never a busy loop);
- the loop is rate-limited by a token bucket (burst 5, then
  ``MESHLIB_CONSUL_QUERY_RATE`` per second), so an answer that comes back at
  once, again and again, degrades to polling instead of spinning; in the
  happy case no query waits;
- a failed query is retried with jittered exponential back-off; meanwhile
  routing stays on the last good endpoints.

An entry becomes an :class:`Endpoint`: host ``Service.Address`` (else
``Node.Address``), ``Service.Port``, weight ``Weights.Passing`` (or
``Weights.Warning`` for an instance with a warning check when
``MESHLIB_CONSUL_ONLY_PASSING=false``; a weight of 0 or a critical check drops
it), tags ``Service.Tags``, metadata ``Service.Meta``, zone
``Service.Locality.Zone`` or ``Meta["zone"]``, priority ``Meta["priority"]``.
An entry that cannot be used (no address, port out of range, not an object) is
skipped with a warning naming the service instance; if it had a good value
before, that value stays.
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from types import MappingProxyType
from typing import Any, Mapping

import consul
import requests
from requests.adapters import HTTPAdapter

from ..config import _SERVICE_RE, RegistryConfig, canonical_service
from ..endpoint import Endpoint, _check_priority
from ..errors import ConfigError
from ..resilience.ratelimit import TokenBucket
from ._registry import RegistryResolver, RegistryUnavailable, reconnecting
from .base import Publish

log = logging.getLogger("meshlib.discovery.consul")

#: Blocking queries let through at once before the rate limit applies.
QUERY_BURST = 5
#: A service that leaves the catalog is watched this much longer, so an agent
#: that registers again soon is seen by its own blocking query at once.
GONE_AFTER = 60.0
_CATALOG = "(catalog)"


class _Closed(Exception):
    """close() was called, or the service left the catalog: leave the loop."""


# -- interruptible HTTP ---------------------------------------------------------------


class _InterruptibleAdapter(HTTPAdapter):
    """An HTTPAdapter that remembers the connections it opens, so that
    :meth:`interrupt` can shut down the socket of a blocking query that would
    otherwise hang until its ``wait`` runs out."""

    def __init__(self) -> None:
        self.interrupted = False
        self._conns: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._classes: dict[type, type] = {}
        self._lock = threading.Lock()
        super().__init__(pool_connections=1, pool_maxsize=1)

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        base = pool.ConnectionCls
        if base not in self._classes.values():
            pool.ConnectionCls = self._tracking(base)
        return pool

    def _tracking(self, base: type) -> type:
        with self._lock:
            cls = self._classes.get(base)
            if cls is None:
                adapter = self

                class Tracked(base):  # type: ignore[valid-type, misc]
                    def connect(self) -> None:
                        # After interrupt() no new connection is made: urllib3
                        # would otherwise replace a shut-down pooled one.
                        if adapter.interrupted:
                            raise ConnectionAbortedError("meshlib: closed")
                        adapter._conns.add(self)
                        super().connect()

                cls = self._classes[base] = Tracked
            return cls

    def interrupt(self) -> None:
        """Shut down every open connection, and open no new one."""
        self.interrupted = True
        for conn in list(self._conns):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def make_client(host: str, port: int, cfg: RegistryConfig) -> tuple[consul.Consul, _InterruptibleAdapter]:
    """A py-consul client on an interruptible session. TLS options switch to
    https. The token is set after construction because py-consul would
    otherwise prefer ``CONSUL_HTTP_TOKEN`` over an explicit one."""
    tls = bool(cfg.consul_tls_ca or cfg.consul_tls_cert)
    verify: bool | str = cfg.consul_tls_ca or True
    cert = (cfg.consul_tls_cert, cfg.consul_tls_key) if cfg.consul_tls_cert else None
    client = consul.Consul(
        host=host,
        port=port,
        scheme="https" if tls else "http",
        dc=cfg.consul_datacenter or None,
        verify=verify,
        cert=cert,
        connections_timeout=cfg.registry_timeout,
    )
    client.token = cfg.consul_token or None
    adapter = _InterruptibleAdapter()
    session = requests.Session()
    session.trust_env = False  # a Consul agent is never reached through an HTTP proxy
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    client.http.session = session
    return client, adapter


def describe(exc: BaseException) -> str:
    """A one-line reason, without the request's headers (the token)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


# -- entries -> endpoints ---------------------------------------------------------------


def _status(checks: Any) -> str:
    statuses = {c.get("Status") for c in checks if isinstance(c, Mapping)} if isinstance(checks, list) else set()
    if "critical" in statuses or "maintenance" in statuses:
        return "critical"
    return "warning" if "warning" in statuses else "passing"


def entry_key(entry: Any, i: int) -> str:
    if isinstance(entry, Mapping):
        node = entry.get("Node") if isinstance(entry.get("Node"), Mapping) else {}
        svc = entry.get("Service") if isinstance(entry.get("Service"), Mapping) else {}
        if svc.get("ID") or node.get("Node"):
            return f"{node.get('Node', '?')}/{svc.get('ID', '?')}"
    return f"#{i}"


def endpoint_from_entry(entry: Any, key: str) -> Endpoint | None:
    """One ``/v1/health/service`` entry as an Endpoint; None if its checks or
    weight say it takes no traffic. Raises ValueError for an unusable entry."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"not a JSON object: {str(entry)[:80]}")
    svc = entry.get("Service")
    node = entry.get("Node") or {}
    if not isinstance(svc, Mapping) or not isinstance(node, Mapping):
        raise ValueError("no Service object")
    address = svc.get("Address") or node.get("Address")
    if not isinstance(address, str) or not address.strip():
        raise ValueError("no address: Service.Address and Node.Address are both empty")
    port = svc.get("Port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"Service.Port {port!r} is not a port from 1 to 65535")
    tags = svc.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("Service.Tags is not a list of strings")
    meta = svc.get("Meta") or {}
    if not isinstance(meta, Mapping):
        raise ValueError("Service.Meta is not an object")
    weights = svc.get("Weights") or {}
    if not isinstance(weights, Mapping):
        raise ValueError("Service.Weights is not an object")
    status = _status(entry.get("Checks"))
    if status == "critical":
        return None
    weight = weights.get("Warning" if status == "warning" else "Passing", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ValueError(f"Service.Weights has a bad weight {weight!r}")
    if weight == 0:
        return None
    locality = svc.get("Locality") if isinstance(svc.get("Locality"), Mapping) else {}
    zone = str(locality.get("Zone") or meta.get("zone") or "")
    try:
        priority = _check_priority(meta.get("priority", 0), f"{key} Meta.priority")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return Endpoint(
        host=address.strip().strip("[]"),
        port=port,
        weight=min(weight, 1_000_000),
        zone=zone,
        priority=priority,
        tags=tuple(tags),
        metadata=MappingProxyType({str(k): str(v) for k, v in meta.items()}),
    )


# -- the resolver -----------------------------------------------------------------------


class _ServiceWatch:
    """The blocking-query loop of one service, on its own thread and client."""

    def __init__(self, resolver: "ConsulResolver", name: str) -> None:
        self.resolver = resolver
        self.name = name
        self.stop = threading.Event()
        self.synced = threading.Event()
        self.client, self.adapter = resolver.new_client()
        self.bucket = TokenBucket(resolver.cfg.consul_query_rate, QUERY_BURST, now=resolver.now)
        self.entries: dict[str, Endpoint] = {}
        self.index = 0
        self.recovering = False  # after a failure, ask without an index: an answer at once says the agent is back
        self.queries = 0
        self.resets = 0
        self.thread = threading.Thread(target=self._run, name=f"meshlib-consul({name})", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.stop.set()
        self.adapter.interrupt()

    def _query(self) -> tuple[int, Any]:
        if self.stop.is_set():
            raise _Closed()
        r = self.resolver
        self.queries += 1
        try:
            index, entries = self.client.health.service(
                self.name,
                index=None if self.recovering else self.index or None,
                wait=f"{r.cfg.consul_wait:g}s",
                passing=r.cfg.consul_only_passing or None,
            )
            return int(index), entries
        except (requests.RequestException, consul.ConsulException, ValueError) as exc:
            if self.stop.is_set():
                raise _Closed() from None
            raise RegistryUnavailable(f"consul {r.target}: {self.name}: {describe(exc)}") from None

    def _failed(self, exc: BaseException) -> None:
        self.recovering = True
        self.resolver.staleness.failed(exc, self.name)

    def _run(self) -> None:
        r = self.resolver
        while self.bucket.wait(self.stop):
            try:
                index, entries = reconnecting(r.cfg, self.stop, self._failed)(self._query)
            except (_Closed, RegistryUnavailable):
                return
            r.staleness.ok(self.name)
            if self.recovering:
                self.recovering = False
                self.index = max(index, 1)
            elif index < self.index:
                self.resets += 1
                log.info("meshlib: consul %s: index of %s went backwards (%d -> %d); restarting its blocking loop", r.target, self.name, self.index, index)
                self.index = 0
            else:
                self.index = max(index, 1)
            self._apply(entries if isinstance(entries, list) else [])
            self.synced.set()

    def _apply(self, entries: list[Any]) -> None:
        r = self.resolver
        fresh: dict[str, Endpoint] = {}
        for i, entry in enumerate(entries):
            key = f"{self.name} {entry_key(entry, i)}"
            try:
                ep = endpoint_from_entry(entry, key)
            except ValueError as exc:
                old = self.entries.get(key)
                r.bad.skip(key, str(exc) + ("; its last good value stays" if old is not None else ""))
                if old is not None:
                    fresh[key] = old
                continue
            r.bad.forget(key)
            if ep is not None:
                fresh[key] = ep
        self.entries = fresh
        r.table_set(self.name, fresh.values())


class ConsulResolver(RegistryResolver):
    kind = "consul"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watches: dict[str, _ServiceWatch] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._catalog_synced = threading.Event()
        self._catalog_client: tuple[consul.Consul, _InterruptibleAdapter] | None = None
        self._catalog_thread: threading.Thread | None = None
        self._catalog_index = 0
        self._catalog_recovering = False
        self._absent_since: dict[str, float] = {}
        self.catalog_queries = 0

    def new_client(self) -> tuple[consul.Consul, _InterruptibleAdapter]:
        return make_client(self.host, self.port, self.cfg)

    # -- Resolver ---------------------------------------------------------------

    def start(self, publish: Publish) -> None:
        dc = f"?dc={self.cfg.consul_datacenter}" if self.cfg.consul_datacenter else ""
        self._start_table(f"consul://{self.target}{dc}", publish)
        deadline = self.now() + self.cfg.registry_timeout
        with self._lock:
            for name in sorted(self._declared):
                self._watch(name)
        if self.cfg.registry_watch == "all":
            self._catalog_client = self.new_client()
            self._catalog_thread = threading.Thread(target=self._catalog_loop, name=f"meshlib-consul-catalog({self.target})", daemon=True)
            self._catalog_thread.start()
            self._catalog_synced.wait(max(0.0, deadline - self.now()))
        with self._lock:
            watches = list(self._watches.values())
        for w in watches:
            w.synced.wait(max(0.0, deadline - self.now()))
        if not all(w.synced.is_set() for w in watches) or (self._catalog_thread and not self._catalog_synced.is_set()):
            self._warn_not_synced()

    def close(self) -> None:
        with self._lock:  # no watch starts after this
            self._stop.set()
        if self._catalog_client is not None:
            self._catalog_client[1].interrupt()
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for w in watches:
            w.cancel()
        for t in [self._catalog_thread] + [w.thread for w in watches]:
            if t is not None and t.is_alive() and t is not threading.current_thread():
                t.join(self.cfg.registry_timeout + 1.0)

    def status(self) -> dict[str, Any]:
        with self._lock:
            watches = list(self._watches.values())
        table = self._table
        return {
            "kind": "consul",
            "target": self.target,
            "datacenter": self.cfg.consul_datacenter or "(agent's)",
            "services": len(self.services()),
            "watches": len(watches),
            "queries": sum(w.queries for w in watches) + self.catalog_queries,
            "index_resets": sum(w.resets for w in watches),
            "rate_limited": sum(w.bucket.refused for w in watches),
            "updates": table.updates if table else 0,
            "skipped_entries": self.bad.skipped,
            **self.staleness.status(),
        }

    # -- watches ----------------------------------------------------------------

    def table_set(self, service: str, endpoints: Any) -> None:
        assert self._table is not None
        self._table.set(service, endpoints)

    def _watch(self, name: str) -> None:
        """Start watching ``name`` (caller holds ``self._lock``)."""
        if name in self._watches or self._stop.is_set() or not self._wanted(name):
            return
        w = self._watches[name] = _ServiceWatch(self, name)
        w.start()

    def _catalog_query(self) -> tuple[int, Any]:
        if self._stop.is_set():
            raise _Closed()
        assert self._catalog_client is not None
        client = self._catalog_client[0]
        self.catalog_queries += 1
        try:
            index, services = client.catalog.services(
                index=None if self._catalog_recovering else self._catalog_index or None, wait=f"{self.cfg.consul_wait:g}s"
            )
            return int(index), services
        except (requests.RequestException, consul.ConsulException, ValueError) as exc:
            if self._stop.is_set():
                raise _Closed() from None
            raise RegistryUnavailable(f"consul {self.target}: catalog: {describe(exc)}") from None

    def _catalog_failed(self, exc: BaseException) -> None:
        self._catalog_recovering = True
        self.staleness.failed(exc, _CATALOG)

    def _catalog_loop(self) -> None:
        bucket = TokenBucket(self.cfg.consul_query_rate, QUERY_BURST, now=self.now)
        while bucket.wait(self._stop):
            try:
                index, services = reconnecting(self.cfg, self._stop, self._catalog_failed)(self._catalog_query)
            except (_Closed, RegistryUnavailable):
                return
            self.staleness.ok(_CATALOG)
            if self._catalog_recovering:
                self._catalog_recovering = False
                self._catalog_index = max(index, 1)
            else:
                self._catalog_index = 0 if index < self._catalog_index else max(index, 1)
            names = set()
            for raw in services if isinstance(services, Mapping) else {}:
                name = canonical_service(str(raw))
                if name != str(raw) or not _SERVICE_RE.match(name):
                    # Consul names are case-sensitive; meshlib's are not. Watch
                    # only names that are already in meshlib's one spelling.
                    self.bad.skip(f"catalog service {raw!r}", "meshlib service names are lower case letters, digits, '-' and '.'")
                    continue
                names.add(name)
            self._sync(names)
            self._catalog_synced.set()

    def _sync(self, names: set[str]) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            now = self.now()
            for name in sorted(names):
                self._absent_since.pop(name, None)
                self._watch(name)
            gone = []
            for name, w in self._watches.items():
                if name in names or name in self._declared:
                    continue
                since = self._absent_since.setdefault(name, now)
                if now - since >= GONE_AFTER:
                    gone.append(w)
            for w in gone:
                del self._watches[w.name]
                del self._absent_since[w.name]
        for w in gone:
            w.cancel()
            self.table_set(w.name, ())
