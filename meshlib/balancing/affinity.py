"""Prefix affinity with bounded load: a key keeps to its owners, in the key's
own order, and goes one owner further along only when that is worth it.

A call with a hash key (the prompt's prefix, from ``hash_header`` or
``meshlib.hash_key``) walks its key's owners in a fixed order: for
``ring_hash`` (and ``least_loaded``/``llm``, which keep a ring for this) the
distinct hosts met walking the ring clockwise from the key, as Envoy's bounded
load does; for ``maglev`` the owners of the key rehashed with seeds 1, 2, ...
A host is passed over when it is saturated (``balancing.load.saturated``): its
fresh report shows a queue above ``load_queue_threshold`` or KV use above
``load_kv_threshold``, or it holds more than ``hash_balance_factor`` / 100 x the
mean in-flight count (Envoy's ``hash_balance_factor``).

With ``load_affinity_choices`` 1 a call goes to the key's first unsaturated
owner. With N > 1 (``load_affinity_choices`` 2; ``llm``, when it is left at
0: every host) the key's first N unsaturated owners are candidates and the
call goes to the one of lowest::

    cost = score x slowness + rank x AFFINITY_MARGIN + (0 if warm else AFFINITY_COLD)

``score`` is the policy's load score (``least_loaded``'s: about one per request
queued or in flight); ``rank`` the owner's place in the key's order (0: its
first owner; saturated ones keep their place); ``AFFINITY_MARGIN`` is 1 and
``AFFINITY_COLD`` 6 (ties: the earlier owner). An owner is warm for the key
(expected to have its prefix cached) when it is the key's first owner or,
with ``load_affinity_choices`` 2, its second: every client sends the key
there (each owner past those two pays ``AFFINITY_COLD`` once more per rank:
costs 8, 15, ... when idle). ``llm`` keeps track instead: past the first owner, an owner is warm
when this client sent the key there in the last ``AFFINITY_WARM_FOR``
seconds (60; the latest ``AFFINITY_WARM_KEYS`` keys, 4,096, are
remembered). So a quiet prefix stays on its first owner, and a key moves to
an owner it never used, rather than queue, only when that saves about seven
requests' worth of score; once it has, that owner is warm for it and a
request's worth is enough: a hot prefix is shared by the owners it warmed,
and a rare one is not spread over owners it would reach cold.
``slowness`` (``llm`` only; 1 elsewhere) is the host's ``pace`` (the average
whole time of its recent successful attempts, streams until their end) over
the fastest pace among the hosts (read every ``PACE_REFRESH``, 0.1 s): a request held by a replica half as fast
counts twice, so at equal counts the slower replica loses the comparison and
takes fewer requests; a host without a pace yet counts as the fastest. No
cost is below ``rank x AFFINITY_MARGIN``, so the walk ends at the first owner
whose rank alone reaches the best cost so far (at once, behind an idle first
owner). Since the
order is fixed per key, the owners that take a hot prefix's spill cache it
and stay warm for it. ``llm``'s notes of where it sent each key belong to the
picker: a change of the service's endpoints (a new picker) starts them
afresh, with only each key's first owner warm. When every owner is saturated: the least loaded host
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

#: What each step along a key's owners costs, in score units (about one
#: request): the second owner takes a call only when its score is lower than
#: the first's by more than this, so a lightly loaded key stays on its first
#: owner and its second warms up only when the first is busy.
AFFINITY_MARGIN = 1.0
#: What an owner cold for the key costs on top of its rank's margin: a move
#: there costs a cold prefill and a cached prefix evicted there, so it pays
#: only when the warm owners are queueing.
AFFINITY_COLD = 6.0
#: ``llm``: an owner is warm for a key this long (clock seconds) after this
#: client last sent the key there ...
AFFINITY_WARM_FOR = 60.0
#: ... for the latest this many keys (least recently sent forgotten first).
AFFINITY_WARM_KEYS = 4096
#: How often (clock seconds) ``llm`` reads the fastest pace among the hosts
#: again: paces are averages over several whole calls and move slowly.
PACE_REFRESH = 0.1
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
    (``affinity_choices`` 1) or to the lowest ``score x slowness + rank x
    margin + (0 if warm else cold)`` of their first ``affinity_choices``
    unsaturated owners (``llm``: slowness from the hosts' paces, warmth from
    where this picker sent the key; else slowness 1 and the first two owners
    warm); calls without a key go to ``fallback`` (passed over when
    saturated, unless ``spill``)."""

    __slots__ = ("_owners", "_hosts", "_s", "_now", "_fallback", "_score", "_service", "_factor", "_lists", "_tick", "_every", "_cap", "_margin", "_llm", "_fastest", "_pace_due", "_sent")

    def __init__(
        self, service: str, hosts: Sequence[Host], owners: Owners, fallback: Picker, settings: LoadSettings, clock: Clock, score: Score,
        llm: bool = False,
    ) -> None:  # fmt: skip
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
        self._llm = llm
        self._fastest = 0.0
        self._pace_due = -math.inf
        #: ``llm``: key -> {id(host): when this picker last sent the key there},
        #: least recently sent keys first.
        self._sent: dict[int, dict[int, float]] = {}

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
        choices = s.affinity_choices
        margin = self._margin
        score = self._score
        llm = self._llm and choices > 1
        fastest = self._pace_floor(now) if llm else 0.0
        sent = self._sent.pop(hash_value, None) if llm else None
        best = None
        best_cost = math.inf
        compared = 0
        for rank, host in enumerate(self._owners(hash_value)):
            floor = rank * margin
            if floor >= best_cost:
                break  # no cost is below its rank's margin: no owner further along can cost less
            if not capped and host.inflight and self._factor > 0:
                cap = self._bound()
                capped = True
            if saturated(host, fresh_report(host, now, s.max_age), s, cap):
                continue
            if choices == 1:
                return host  # the first unsaturated owner
            cost = score(host, now)
            if fastest > 0.0 and host.pace > fastest:
                cost *= host.pace / fastest  # a slower host's requests count for more
            if llm:
                if rank and (sent is None or now - sent.get(id(host), -math.inf) > AFFINITY_WARM_FOR):
                    cost += AFFINITY_COLD
            elif rank > 1:
                cost += (rank - 1) * AFFINITY_COLD  # each owner past the two warm ones colder
            cost += floor
            if cost < best_cost:
                best = host
                best_cost = cost
            compared += 1
            if compared == choices:
                break
        if llm:
            self._remember(hash_value, sent, best, now)
        if best is None:
            return self._all_saturated(now)
        return best

    def _remember(self, hash_value: int, sent: dict[int, float] | None, host: Host | None, now: float) -> None:
        """Note that the key goes to ``host`` now; the key becomes the most
        recently sent one (it was taken out of ``_sent`` by the pick). Picks
        of one key in two threads at once may keep only one's note: warmth is
        an estimate, and a pick never fails on it."""
        if sent is None:
            sent = {}
            if len(self._sent) >= AFFINITY_WARM_KEYS:
                try:
                    del self._sent[next(iter(self._sent))]
                except (KeyError, RuntimeError, StopIteration):
                    pass  # another thread changed it at the same moment: the bound holds within a key or two
        if host is not None:
            sent[id(host)] = now
        self._sent[hash_value] = sent

    def _pace_floor(self, now: float) -> float:
        """The fastest pace among the hosts that have one (0.0: none yet),
        read again every ``PACE_REFRESH`` seconds."""
        if now >= self._pace_due:
            self._pace_due = now + PACE_REFRESH
            self._fastest = min((h.pace for h in self._hosts if h.pace > 0.0), default=0.0)
        return self._fastest

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
