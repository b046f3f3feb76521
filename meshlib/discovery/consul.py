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
An entry that cannot be used, for any reason (no address, port out of range,
not an object, tags or metadata of the wrong type...), is skipped with a
warning naming the service instance; if it had a good value before, that
value stays. An unexpected error in a loop is logged, shown in
``mesh.stats()`` (``healthy: false``, ``internal_errors``), and the loop backs
off and resumes: no answer ends a watch.
"""

from __future__ import annotations

import abc
import logging
import socket
import threading
import weakref
from typing import TYPE_CHECKING, Any, Mapping

import consul
import requests
from requests.adapters import HTTPAdapter

from ..endpoint import Endpoint, check_metadata, check_priority
from ..errors import ConfigError
from ..names import canonical_service, is_service_name
from ..resilience.ratelimit import TokenBucket
from .base import Publish
from .registry import RegistryResolver, RegistryUnavailable, reconnecting, run_guarded

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig

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


def make_client(host: str, port: int, cfg: "RegistryConfig") -> tuple[consul.Consul, _InterruptibleAdapter]:
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
    try:
        meta = check_metadata(svc.get("Meta") or {}, f"{key} Service.Meta")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
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
    zone = locality.get("Zone") or meta.get("zone") or ""
    if not isinstance(zone, str):
        raise ValueError(f"Service.Locality.Zone {str(zone)[:80]} is not a string")
    try:
        priority = check_priority(meta.get("priority", 0), f"{key} Meta.priority")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return Endpoint(
        host=address.strip().strip("[]"),
        port=port,
        weight=min(weight, 1_000_000),
        zone=zone,
        priority=priority,
        tags=tuple(tags),
        metadata=meta,
    )


# -- the resolver -----------------------------------------------------------------------


class _BlockingLoop(abc.ABC):
    """One Consul blocking-query loop on its own thread and client: Consul's
    index rules (an index that goes backwards restarts the loop; after a
    failure, one query without an index tells at once that the agent is
    back), paced by a token bucket, reconnecting with back-off. Subclasses
    say what to ask (:meth:`_ask`) and what to do with the answer (:meth:`_apply`)."""

    def __init__(self, resolver: "ConsulResolver", label: str, thread_name: str) -> None:
        self.resolver = resolver
        self.label = label  # in logs, errors and staleness
        self.stop = threading.Event()
        self.synced = threading.Event()
        self.client, self.adapter = make_client(resolver.host, resolver.port, resolver.cfg)
        self.bucket = TokenBucket(resolver.cfg.consul_query_rate, QUERY_BURST, now=resolver.now)
        self.index = 0
        self.recovering = False
        self.queries = 0
        self.resets = 0
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.stop.set()
        self.adapter.interrupt()

    @abc.abstractmethod
    def _ask(self, index: int | None) -> tuple[Any, Any]:
        """One blocking query from ``index`` (None: answer at once)."""

    @abc.abstractmethod
    def _apply(self, data: Any) -> None:
        """Adopt one answer."""

    def _query(self) -> tuple[int, Any]:
        if self.stop.is_set():
            raise _Closed()
        self.queries += 1
        try:
            index, data = self._ask(None if self.recovering else self.index or None)
            return int(index), data
        except (requests.RequestException, consul.ConsulException, ValueError, TypeError) as exc:  # TypeError: no index
            if self.stop.is_set():
                raise _Closed() from None
            raise RegistryUnavailable(f"consul {self.resolver.target}: {self.label}: {describe(exc)}") from None

    def _failed(self, exc: BaseException) -> None:
        self.recovering = True
        self.resolver.staleness.failed(exc, self.label)

    def _run(self) -> None:
        r = self.resolver
        run_guarded(f"consul {r.target} watch of {self.label}", self._loop, self.stop, r.staleness, r.cfg, self.label, r.now)

    def _loop(self) -> None:
        r = self.resolver
        while self.bucket.wait(self.stop):
            try:
                index, data = reconnecting(r.cfg, self.stop, self._failed)(self._query)
            except (_Closed, RegistryUnavailable):
                return
            r.staleness.ok(self.label)
            if self.recovering:
                self.recovering = False
                self.index = max(index, 1)
            elif index < self.index:
                self.resets += 1
                log.info("meshlib: consul %s: index of %s went backwards (%d -> %d); restarting its blocking loop", r.target, self.label, self.index, index)
                self.index = 0
            else:
                self.index = max(index, 1)
            self._apply(data)
            self.synced.set()


class _ServiceWatch(_BlockingLoop):
    """The blocking-query loop of one service's healthy instances."""

    def __init__(self, resolver: "ConsulResolver", name: str) -> None:
        super().__init__(resolver, name, f"meshlib-consul({name})")
        self.name = name
        self.entries: dict[str, Endpoint] = {}

    def _ask(self, index: int | None) -> tuple[Any, Any]:
        cfg = self.resolver.cfg
        return self.client.health.service(self.name, index=index, wait=f"{cfg.consul_wait:g}s", passing=cfg.consul_only_passing or None)

    def _apply(self, entries: Any) -> None:
        r = self.resolver
        fresh: dict[str, Endpoint] = {}
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            key = f"{self.name} {entry_key(entry, i)}"
            try:
                ep = endpoint_from_entry(entry, key)
            except Exception as exc:  # any reason at all: one entry never stops the watch
                old = self.entries.get(key)
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {str(exc)[:200]}"
                r.bad.skip(key, reason + ("; its last good value stays" if old is not None else ""))
                if old is not None:
                    fresh[key] = old
                continue
            r.bad.forget(key)
            if ep is not None:
                fresh[key] = ep
        self.entries = fresh
        r.table_set(self.name, fresh.values())


class _CatalogWatch(_BlockingLoop):
    """The blocking-query loop of the catalog's service names (watch=all)."""

    def __init__(self, resolver: "ConsulResolver") -> None:
        super().__init__(resolver, _CATALOG, f"meshlib-consul-catalog({resolver.target})")

    def _ask(self, index: int | None) -> tuple[Any, Any]:
        return self.client.catalog.services(index=index, wait=f"{self.resolver.cfg.consul_wait:g}s")

    def _apply(self, services: Any) -> None:
        r = self.resolver
        names = set()
        for raw in services if isinstance(services, Mapping) else {}:
            name = canonical_service(str(raw))
            if name != str(raw) or not is_service_name(name):
                # Consul names are case-sensitive; meshlib's are not. Watch
                # only names that are already in meshlib's one spelling.
                r.bad.skip(f"catalog service {raw!r}", "meshlib service names are lower case letters, digits, '-' and '.'")
                continue
            names.add(name)
        r._sync(names)


class ConsulResolver(RegistryResolver):
    kind = "consul"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watches: dict[str, _ServiceWatch] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._catalog: _CatalogWatch | None = None
        self._absent_since: dict[str, float] = {}

    # -- Resolver ---------------------------------------------------------------

    def start(self, publish: Publish) -> None:
        dc = f"?dc={self.cfg.consul_datacenter}" if self.cfg.consul_datacenter else ""
        self._start_table(f"consul://{self.target}{dc}", publish)
        deadline = self.now() + self.cfg.registry_timeout
        with self._lock:
            for name in sorted(self._declared):
                self._watch(name)
        if self.cfg.registry_watch == "all":
            self._catalog = _CatalogWatch(self)
            self._catalog.start()
            self._catalog.synced.wait(max(0.0, deadline - self.now()))
        loops = self._loops()
        for w in loops:
            w.synced.wait(max(0.0, deadline - self.now()))
        if not all(w.synced.is_set() for w in loops):
            self._warn_not_synced()

    def _loops(self) -> list[_BlockingLoop]:
        """The catalog loop (if any) and every service watch."""
        with self._lock:
            watches: list[_BlockingLoop] = list(self._watches.values())
        return ([self._catalog] if self._catalog is not None else []) + watches

    def close(self) -> None:
        with self._lock:  # no watch starts after this
            self._stop.set()
        loops = self._loops()
        with self._lock:
            self._watches.clear()
        for w in loops:
            w.cancel()
        for w in loops:
            if w.thread.is_alive() and w.thread is not threading.current_thread():
                w.thread.join(self.cfg.registry_timeout + 1.0)

    def status(self) -> dict[str, Any]:
        with self._lock:
            watches = len(self._watches)
        loops = self._loops()
        table = self._table
        return {
            "kind": "consul",
            "target": self.target,
            "datacenter": self.cfg.consul_datacenter or "(agent's)",
            "services": len(self.services()),
            "watches": watches,
            "queries": sum(w.queries for w in loops),
            "index_resets": sum(w.resets for w in loops),
            "rate_limited": sum(w.bucket.refused for w in loops),
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
