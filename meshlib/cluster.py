"""A cluster: one service's hosts, its picker, and the per-call attempt logic.

Discovery calls :meth:`Cluster.update` with each new snapshot (off the hot
path); it rebuilds the picker and swaps one reference. Calls read that
reference without a lock. :class:`Call` is the attempt loop's state as plain
decisions, shared by the sync and async drivers in ``_driver``.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from dataclasses import dataclass
from .balancing import HASHING, POLICIES, Picker, build_picker
from .balancing.hashing import hash_key as _hash
from .balancing.locality import PriorityLevel
from .clock import SYSTEM_CLOCK, Clock
from .config import ServiceConfig
from .endpoint import EndpointSnapshot
from .errors import NoHealthyEndpointsError
from .host import Host, Outcome

__all__ = ["Cluster", "Call", "hash_key"]

_HASH_KEY: contextvars.ContextVar[str | bytes | None] = contextvars.ContextVar("meshlib_hash_key", default=None)


class hash_key:
    """Give calls made inside the block an explicit hash key (ring_hash, maglev)::

        with meshlib.hash_key(user_id):
            session.get("http://profile/")
    """

    __slots__ = ("_key", "_token")

    def __init__(self, key: str | bytes) -> None:
        self._key = key

    def __enter__(self) -> "hash_key":
        self._token = _HASH_KEY.set(self._key)
        return self

    def __exit__(self, *exc: object) -> None:
        _HASH_KEY.reset(self._token)


@dataclass(frozen=True)
class _State:
    """Everything a pick reads, swapped as one reference."""

    snapshot: EndpointSnapshot
    hosts: tuple[Host, ...]
    picker: Picker
    levels: tuple[PriorityLevel, ...]


class Cluster:
    """One service inside a Mesh."""

    def __init__(self, name: str, cfg: ServiceConfig, *, clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None) -> None:
        self.name = name
        self.config = cfg
        self.clock = clock
        self.hashing = cfg.lb_policy in HASHING
        self.connect_retries_done = 0
        self._rng = rng or random.Random()
        self._policy = POLICIES[cfg.lb_policy]
        self._hosts: dict[tuple[str, int], Host] = {}
        self._write_lock = threading.Lock()  # snapshot rebuilds only
        self._stats_lock = threading.Lock()  # counters; never waits for a rebuild
        picker, levels = build_picker(name, (), (), cfg, self._policy, self._rng, clock)
        self._state = _State(EndpointSnapshot(name, ()), (), picker, tuple(levels))

    # -- discovery side -------------------------------------------------------

    def update(self, snapshot: EndpointSnapshot) -> None:
        """Adopt a new snapshot: keep the Host (and its statistics) of every
        endpoint that stays, add new ones, drop the rest, rebuild the picker."""
        cfg = self.config
        with self._write_lock:
            hosts: list[Host] = []
            fresh: dict[tuple[str, int], Host] = {}
            for ep in snapshot.endpoints:
                host = self._hosts.get(ep.key)
                if host is None:
                    host = Host(ep, decay=cfg.ewma_decay, default_rtt=cfg.ewma_default_rtt, failure_penalty=cfg.ewma_failure_penalty, clock=self.clock)
                else:
                    host.endpoint = ep
                fresh[ep.key] = host
                hosts.append(host)
            self._hosts = fresh
            usable = [h.endpoint.healthy for h in hosts]
            picker, levels = build_picker(self.name, hosts, usable, cfg, self._policy, self._rng, self.clock)
            self._state = _State(snapshot, tuple(hosts), picker, tuple(levels))

    # -- call side ------------------------------------------------------------

    @property
    def snapshot(self) -> EndpointSnapshot:
        return self._state.snapshot

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self._state.hosts

    @property
    def levels(self) -> tuple[PriorityLevel, ...]:
        return self._state.levels

    def pick(self, hash_value: int | None = None) -> Host:
        return self._state.picker.pick(hash_value)

    def count_connect_retry(self) -> None:
        with self._stats_lock:
            self.connect_retries_done += 1

    def start_call(self, header_hash_key: str | None = None) -> "Call":
        key: str | bytes | None = None
        if self.hashing:
            key = _HASH_KEY.get()
            if key is None:
                key = header_hash_key
        return Call(self, key)


class Call:
    """One logical call's attempts: which host next, and whether to try again.

    Connect failures (the request never left) are retried on a host not yet
    tried, up to ``connect_retries`` times. Everything else is returned to the
    caller (retry policies and budgets build on this in the resilience layer).
    """

    __slots__ = ("cluster", "key", "tried", "attempt")

    def __init__(self, cluster: Cluster, key: str | bytes | None) -> None:
        self.cluster = cluster
        self.key = key
        self.tried: list[Host] = []
        self.attempt = 0

    def pick(self, failure: BaseException | None = None) -> Host:
        """Choose this attempt's host (another than those tried, where one
        exists), mark it started and return it. ``failure`` is the previous
        attempt's error: if no host is left to retry on, it is raised instead."""
        cluster = self.cluster
        key = self.key
        hash_value = None if key is None else _hash(key, self.attempt)
        try:
            host = cluster.pick(hash_value)
        except NoHealthyEndpointsError:
            if failure is not None:
                raise failure from None
            raise
        if self.tried and host in self.tried:
            # Envoy's previous_hosts predicate: re-pick a few times for a fresh host.
            for extra in range(1, 4):
                if key is not None:
                    hash_value = _hash(key, self.attempt + 7919 * extra)
                candidate = cluster.pick(hash_value)
                if candidate not in self.tried:
                    host = candidate
                    break
            else:
                untried = [h for h in cluster.hosts if h not in self.tried and h.endpoint.healthy]
                if untried:
                    host = untried[0]
        self.tried.append(host)
        self.attempt += 1
        host.start()
        return host

    def done(self, host: Host, started: float, outcome: str) -> bool:
        """Record the attempt's outcome; return True to make another attempt."""
        host.done(time.perf_counter() - started, outcome)
        if outcome == Outcome.CONNECT_FAILURE and self.attempt <= self.cluster.config.connect_retries:
            self.cluster.count_connect_retry()
            return True
        return False

