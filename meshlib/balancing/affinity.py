"""Prefix affinity with bounded load: a key keeps to its owner until the owner
is saturated, then goes to the key's next owner, not to a random host.

A call with a hash key (the prompt's prefix, from ``hash_header`` or
``meshlib.hash_key``) walks its key's owners in a fixed order: for
``ring_hash`` (and ``least_loaded``/``llm``, which keep a ring for this) the
distinct hosts met walking the ring clockwise from the key, as Envoy's bounded
load does; for ``maglev`` the owners of the key rehashed with seeds 1, 2, ...
With ``load_affinity_choices`` 2 (``llm``'s default) a call goes to the key's
first owner unless its second is less loaded by more than ``AFFINITY_MARGIN``
(both unsaturated), to the other one when one of them is saturated, and only
past both to the next unsaturated owner: a hot prefix is cached on two hosts
and shared, a quiet one stays on its first, and a spill stays on a warm host
while one is left. A host is passed over when it is saturated (``balancing.load.saturated``): its
fresh report shows a queue above ``load_queue_threshold`` or KV use above
``load_kv_threshold``, or it holds more than ``hash_balance_factor`` / 100 x the
mean in-flight count (Envoy's ``hash_balance_factor``). Since the spill order
is fixed per key, the second owner of a hot prefix caches it too and stays
warm for it. When every owner is saturated: the least loaded host
(``load_saturation=spill``) or ``EndpointsSaturatedError`` (``fail``, and
``wait``, whose queue, ``health.load.queue``, catches it and waits). Calls
without a key go to the fallback's pick; with ``fail`` or ``wait``, never to
a saturated host while another is not.
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

#: With two owners per key, the second takes a call only when its score is
#: lower than the first's by more than this (about one request's worth), so
#: a lightly loaded key stays on its first owner and its second warms up only
#: when the first is busy.
AFFINITY_MARGIN = 1.0
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
    a key go to ``fallback`` (passed over when saturated, unless ``spill``)."""

    __slots__ = ("_owners", "_hosts", "_s", "_now", "_fallback", "_score", "_service", "_factor", "_lists", "_tick", "_every", "_cap", "_margin")

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
        self._margin = AFFINITY_MARGIN

    def pick(self, hash_value: int | None) -> Host:
        if hash_value is None:
            host = self._fallback.pick(None)
            if self._s.saturation == "spill":
                return host
            return self._unsaturated(host)
        s = self._s
        now = self._now()
        cap = math.inf
        capped = False
        first = None
        two = s.affinity_choices == 2
        for rank, host in enumerate(self._owners(hash_value)):
            if not capped and host.inflight and self._factor > 0:
                cap = self._bound()
                capped = True
            if not saturated(host, fresh_report(host, now, s.max_age), s, cap):
                if not two or rank > 0 and first is None:
                    return host  # (a warm second owner, when the first is saturated)
                if first is None:
                    first = host
                    continue
                # The key's first two owners are unsaturated: the second only when less loaded by more than the margin.
                return host if self._score(host, now) + self._margin < self._score(first, now) else first
            if first is not None:
                return first  # the second owner is saturated: the first, warm and unsaturated
        return self._all_saturated(now)

    def _bound(self) -> float:
        if self._tick() % self._every == 0:
            self._cap = cap_of(self._lists, self._factor)
        return self._cap

    def _unsaturated(self, host: Host) -> Host:
        """A call without a key when the service does not spill: ``host`` (the
        fallback's pick) unless it is saturated, then the least loaded host
        that is not, or the verdict for a fully saturated service."""
        s = self._s
        now = self._now()
        cap = self._bound() if self._factor > 0 else math.inf
        if not saturated(host, fresh_report(host, now, s.max_age), s, cap):
            return host
        free = [h for h in self._hosts if not saturated(h, fresh_report(h, now, s.max_age), s, cap)]
        if not free:
            return self._all_saturated(now)
        score = self._score
        return min(free, key=lambda h: score(h, now))

    def _all_saturated(self, now: float) -> Host:
        """Every host is saturated: the least loaded (``spill``), or
        ``EndpointsSaturatedError`` (``fail``; ``wait``: the call's queue catches it)."""
        if self._s.saturation != "spill":
            raise EndpointsSaturatedError(self._service, self._s.saturation)
        score = self._score
        return min(self._hosts, key=lambda h: score(h, now))


def owner_order(picker: AffinityPicker, hash_value: int) -> list[Host]:
    """The key's owners in spill order (tests, docs)."""
    return list(picker._owners(hash_value))
