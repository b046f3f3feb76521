"""Prefix affinity with bounded load: a key keeps to its owner until the owner
is saturated, then goes to the key's next owner, not to a random host.

A call with a hash key (the prompt's prefix, from ``hash_header`` or
``meshlib.hash_key``) walks its key's owners in a fixed order: for
``ring_hash`` (and ``least_loaded``/``llm``, which keep a ring for this) the
distinct hosts met walking the ring clockwise from the key, as Envoy's bounded
load does; for ``maglev`` the owners of the key rehashed with seeds 1, 2, ...
With ``load_affinity_choices`` 2 (``llm``'s default) a call goes to the less
loaded of the key's first two unsaturated owners, so each prefix is cached on
two hosts and a hot one is shared. A host is passed over when it is saturated (``balancing.load.saturated``): its
fresh report shows a queue above ``load_queue_threshold`` or KV use above
``load_kv_threshold``, or it holds more than ``hash_balance_factor`` / 100 x the
mean in-flight count (Envoy's ``hash_balance_factor``). Since the spill order
is fixed per key, the second owner of a hot prefix caches it too and stays
warm for it. When every owner is saturated: the least loaded host
(``load_saturation=spill``) or ``EndpointsSaturatedError`` (``fail``).
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from typing import Callable, Iterator, Sequence

from ..clock import Clock
from ..errors import EndpointsSaturatedError
from .base import Host, Picker
from .hashing import _xxh64
from .load import LoadSettings, cap_of, fresh_report, saturated

__all__ = ["AffinityPicker", "ring_owners", "maglev_owners", "Score"]

#: ``score(host, now) -> float``: lower is less loaded.
Score = Callable[[Host, float], float]
#: ``owners(hash) -> hosts in the key's preference order``.
Owners = Callable[[int], Iterator[Host]]


def ring_owners(hashes: Sequence[int], owners: Sequence[Host], n_hosts: int) -> Owners:
    """The distinct hosts walking the ring clockwise from a hash."""
    size = len(hashes)

    def walk(hash_value: int) -> Iterator[Host]:
        i = bisect_left(hashes, hash_value)
        seen: set[int] = set()
        for step in range(size):
            host = owners[(i + step) % size]
            if id(host) not in seen:
                seen.add(id(host))
                yield host
                if len(seen) == n_hosts:
                    return

    return walk


def maglev_owners(table: Sequence[Host], hosts: Sequence[Host]) -> Owners:
    """The key's owner, then the owners of the key rehashed with seeds 1, 2, ..."""
    size = len(table)
    n = len(hosts)

    def walk(hash_value: int) -> Iterator[Host]:
        seen: set[int] = set()
        h = hash_value
        for seed in range(4 * n):
            host = table[h % size]
            if id(host) not in seen:
                seen.add(id(host))
                yield host
                if len(seen) == n:
                    return
            h = _xxh64(hash_value.to_bytes(8, "little"), seed + 1)
        for host in hosts:
            if id(host) not in seen:
                yield host

    return walk


class AffinityPicker:
    """Wraps a policy's picker: keyed calls go to their first unsaturated owner
    (or the less loaded of the first two, ``affinity_choices`` 2); calls without
    a key go to ``fallback``."""

    __slots__ = ("_owners", "_hosts", "_s", "_now", "_fallback", "_score", "_service", "_factor", "_lists", "_tick", "_every", "_cap")

    def __init__(self, service: str, hosts: Sequence[Host], owners: Owners, fallback: Picker, settings: LoadSettings, clock: Clock, score: Score) -> None:
        self._service = service
        self._hosts = tuple(hosts)
        self._owners = owners
        self._fallback = fallback
        self._s = settings
        self._now = clock.monotonic
        self._score = score
        self._factor = settings.balance_factor
        self._lists = tuple(h.inflight for h in self._hosts)  # each host's list lives as long as the host
        # The bound needs the total in flight, one pass over the hosts: exact
        # for up to 64 hosts, recounted every hosts/64 busy-owner picks above
        # that (so it costs about 1 µs a pick at 1,000 hosts).
        self._tick = itertools.count().__next__
        self._every = max(1, len(self._hosts) // 64)
        self._cap = 1.0

    def pick(self, hash_value: int | None) -> Host:
        if hash_value is None:
            return self._fallback.pick(None)
        s = self._s
        now = self._now()
        cap = math.inf
        capped = False
        first = None
        for host in self._owners(hash_value):
            if not capped and host.inflight and self._factor > 0:
                if self._tick() % self._every == 0:
                    self._cap = cap_of(self._lists, self._factor)
                cap = self._cap
                capped = True
            if not saturated(host, fresh_report(host, now, s.max_age), s, cap):
                if s.affinity_choices == 1:
                    return host
                if first is None:
                    first = host
                    continue
                # The less loaded of the key's first two unsaturated owners (ties: the first).
                return host if self._score(host, now) < self._score(first, now) else first
        if first is not None:
            return first
        if s.saturation == "fail":
            raise EndpointsSaturatedError(self._service)
        score = self._score
        return min(self._hosts, key=lambda h: score(h, now))


def owner_order(picker: AffinityPicker, hash_value: int) -> list[Host]:
    """The key's owners in spill order (tests, docs)."""
    return list(picker._owners(hash_value))
