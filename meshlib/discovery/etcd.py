"""etcd://: services from etcd v3 keys, watched.

Key layout (``<prefix>`` is ``MESHLIB_ETCD_PREFIX``, default ``/meshlib/services``)::

    <prefix>/<service>/<instance-id>  ->  {"address": "10.0.0.5:8080", "weight": 2, "zone": "a",
                                           "priority": 0, "tags": ["gpu"], "metadata": {"model": "x"},
                                           "healthy": true}

``address`` may be given as ``host`` and ``port`` instead; every other field is
optional and unknown fields are ignored (a newer writer does not break an older
reader). grpc-go's etcd naming value ``{"Op": 0, "Addr": "host:port",
"Metadata": {...}}`` is read too.

The resolver reads the whole prefix once (a range), then watches it from the
next revision on one stream; events are applied in order and only services
whose endpoints changed get a new snapshot. When the stream breaks it
reconnects with jittered exponential back-off and resumes from the last
revision it applied. If that revision was compacted meanwhile, etcd says so
(``compact_revision``): the resolver reads the prefix again, then watches from
``header.revision + 1`` (etcd's documented recovery). If etcd's revision went
backwards (a restored or new cluster) it reads the prefix again too.

An entry that does not parse, for any reason (bad JSON, nesting too deep, no
address, port out of range, ``tags: 5``, ``weight: 1e999``...), is skipped
with a warning naming its key, once per revision of the key; if the key had a
good value before, that value stays. The rest of the service is unaffected.
An unexpected error in the watch loop itself is logged, reported in
``mesh.stats()`` (``healthy: false``, ``internal_errors``), and the loop
backs off, reads the prefix again and resumes: no input ends the watch.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from typing import Any, Mapping

from ..endpoint import Endpoint, endpoint_from_mapping
from ..names import canonical_service, is_service_name
from .base import Publish
from .etcd_client import EtcdClient, WatchStream
from .registry import RegistryResolver, RegistryUnavailable, reconnecting, run_guarded

log = logging.getLogger("meshlib.discovery.etcd")

_FIELDS = frozenset({"address", "host", "port", "weight", "zone", "priority", "tags", "metadata", "healthy"})



class _Closed(Exception):
    """close() was called: leave the loop."""


class _Compacted(Exception):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(compact_revision)
        self.compact_revision = compact_revision


def endpoint_from_value(raw: bytes, key: str) -> Endpoint | None:
    """Parse one instance's value; None for a grpc-go ``Op: 1`` (delete) record.

    Raises :class:`ValueError` (including ``ConfigError``) with the reason."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, nesting deeper than the parser goes
        raise ValueError(f"not JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"not a JSON object: {raw[:80]!r}")
    if "Addr" in data and not {"address", "host"} & set(data):
        if data.get("Op", 0) != 0:
            return None
        meta = data.get("Metadata")
        data = {"address": data["Addr"], "metadata": meta if isinstance(meta, Mapping) else {}}
    return endpoint_from_mapping({k: v for k, v in data.items() if k in _FIELDS}, name=key)


class EtcdResolver(RegistryResolver):
    kind = "etcd"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = self.cfg.etcd_prefix
        self._dir = self.prefix + "/"
        self._instances: dict[str, dict[str, Endpoint]] = {}
        self._revision = 0
        self._need_list = True
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._lock = threading.Lock()  # the current client and stream, for close()
        self._client: EtcdClient | None = None
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None
        self.listings = 0
        self.compactions = 0
        self.events = 0

    # -- Resolver ---------------------------------------------------------------

    def start(self, publish: Publish) -> None:
        self._start_table(f"etcd://{self.target}{self.prefix}", publish)
        self._thread = threading.Thread(target=self._run, name=f"meshlib-etcd-watch({self.target})", daemon=True)
        self._thread.start()
        if not self._synced.wait(self.cfg.registry_timeout):
            self._warn_not_synced()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            stream, client = self._stream, self._client
        if stream is not None:
            stream.cancel()
        if client is not None:
            client.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.cfg.registry_timeout + 1.0)

    def status(self) -> dict[str, Any]:
        table = self._table
        return {
            "kind": "etcd",
            "target": self.target,
            "prefix": self.prefix,
            "services": len(self.services()),
            "revision": self._revision,
            "listings": self.listings,
            "compactions": self.compactions,
            "events": self.events,
            "updates": table.updates if table else 0,
            "skipped_entries": self.bad.skipped,
            **self.staleness.status(),
        }

    # -- the watch loop ---------------------------------------------------------

    def _run(self) -> None:
        run_guarded(f"etcd {self.target} watch of {self._dir}", self._watch, self._stop, self.staleness, self.cfg, now=self.now)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                stream, first = reconnecting(self.cfg, self._stop, self.staleness.failed)(self._open)
                self._consume(stream, first)
            except _Closed:
                return
            except _Compacted as exc:
                self.compactions += 1
                log.warning(
                    "meshlib: etcd %s compacted past revision %d (now %d); reading %s again, then watching from there",
                    self.target,
                    self._revision + 1,
                    exc.compact_revision,
                    self._dir,
                )
                self._need_list = True
            except RegistryUnavailable as exc:
                if self._stop.is_set():
                    return
                self.staleness.failed(exc)
            except Exception:
                self._need_list = True  # what was applied is in doubt: read it all again
                raise
            finally:
                self._drop_connection()

    def _open(self) -> tuple[WatchStream, Any]:
        """Connect, read the prefix if needed, start the watch and wait for its
        first response (so a dead etcd fails here, inside the back-off)."""
        if self._stop.is_set():
            raise _Closed()
        self._drop_connection()
        client = EtcdClient.from_config(self.host, self.port, self.cfg)
        with self._lock:
            self._client = client
        if self._stop.is_set():
            raise _Closed()
        if self._need_list:
            revision, kvs = client.range_prefix(self._dir)
            self._apply_listing(kvs)
            self._revision = revision
            self._need_list = False
            self.listings += 1
        stream = client.watch(self._dir, self._revision + 1)
        with self._lock:
            self._stream = stream
        if self._stop.is_set():
            raise _Closed()
        try:
            first = next(stream)
        except StopIteration:
            raise _Closed() from None
        self._synced.set()
        return stream, first

    def _consume(self, stream: WatchStream, first: Any) -> None:
        for resp in itertools.chain((first,), stream):
            if self._stop.is_set():
                raise _Closed()
            if resp.compact_revision:
                raise _Compacted(resp.compact_revision)
            if resp.canceled:
                raise RegistryUnavailable(f"etcd {self.target}: watch cancelled: {resp.cancel_reason or 'no reason given'}")
            self.staleness.ok()
            if resp.created and resp.header.revision < self._revision:
                log.warning(
                    "meshlib: etcd %s is at revision %d, behind the %d already seen (restored or new cluster); reading %s again",
                    self.target,
                    resp.header.revision,
                    self._revision,
                    self._dir,
                )
                self._need_list = True
                raise RegistryUnavailable(f"etcd {self.target}: revision went backwards")
            if resp.events:
                self._apply_events(resp.events)
            self._revision = max(self._revision, resp.header.revision)
        raise _Closed()

    def _drop_connection(self) -> None:
        with self._lock:
            stream, client = self._stream, self._client
            self._stream = self._client = None
        if stream is not None:
            stream.cancel()
        if client is not None:
            client.close()

    # -- applying what etcd says -----------------------------------------------

    def _split(self, key: str) -> tuple[str, str] | None:
        """(service, instance) of a key this resolver watches, else None."""
        if not key.startswith(self._dir):
            return None
        service, sep, instance = key[len(self._dir) :].partition("/")
        name = canonical_service(service)
        if not sep or not instance or not is_service_name(name):
            self.bad.skip(key, f"keys are {self._dir}<service>/<instance-id> with a service name of letters, digits, '-', '_' and '.'")
            return None
        return (name, instance) if self._wanted(name) else None

    def _parse(self, key: str, value: bytes, old: Endpoint | None, revision: int) -> Endpoint | None:
        """The endpoint of one value; for a value that cannot be used, for
        whatever reason, a warning (once per revision) and ``old``."""
        try:
            ep = endpoint_from_value(value, key)
        except Exception as exc:  # any reason at all: one entry never stops the watch
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {str(exc)[:200]}"
            self.bad.skip(key, reason + ("; its last good value stays" if old is not None else ""), revision)
            return old
        self.bad.forget(key)
        return ep

    def _apply_listing(self, kvs: list[tuple[str, bytes, int]]) -> None:
        fresh: dict[str, dict[str, Endpoint]] = {}
        for key, value, revision in kvs:
            split = self._split(key)
            if split is None:
                continue
            service, instance = split
            ep = self._parse(key, value, self._instances.get(service, {}).get(instance), revision)
            if ep is not None:
                fresh.setdefault(service, {})[instance] = ep
        self._instances = fresh
        assert self._table is not None
        self._table.replace_all({name: tuple(eps.values()) for name, eps in fresh.items()})

    def _apply_events(self, events: Any) -> None:
        changed: set[str] = set()
        for ev in events:
            self.events += 1
            key = ev.kv.key.decode("utf-8", "replace")
            split = self._split(key)
            if split is None:
                continue
            service, instance = split
            instances = self._instances.setdefault(service, {})
            if ev.type == ev.DELETE:
                self.bad.forget(key)
                if instances.pop(instance, None) is not None:
                    changed.add(service)
                continue
            old = instances.get(instance)
            ep = self._parse(key, ev.kv.value, old, ev.kv.mod_revision)
            if ep is None:
                if instances.pop(instance, None) is not None:
                    changed.add(service)
            elif ep != old:
                instances[instance] = ep
                changed.add(service)
        assert self._table is not None
        for service in sorted(changed):
            self._table.set(service, self._instances.get(service, {}).values())
