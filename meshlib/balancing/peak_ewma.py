"""peak_ewma: power of two choices over peak-EWMA latency x outstanding requests.

As Finagle's ``p2cPeakEwma`` and Linkerd's balancer: two hosts are drawn at
random and the one with the lower load wins, where load is the host's
peak-EWMA latency (time to first byte, decayed toward zero with the time since
its last observation, ``ewma_decay``) times ``active + 1``. A slow host loses
almost every comparison; an idle host's estimate decays, so it is re-probed.
Failed attempts count as ``ewma_failure_penalty``.

Where meshlib differs from Finagle / Linkerd, and why (docs/load-balancing.md):

* **Tried before judged.** A host with no observation yet is handed the next
  call once (when it is idle), before any comparison: with N hosts, each has
  had traffic after N calls. (Finagle scores an unobserved idle host 0, so it
  wins when drawn; Linkerd scores it ``default_rtt``, so under fast one-at-a-time
  traffic it may never be drawn a winner.) An unobserved host with calls in
  flight is scored ``ewma_default_rtt`` x (active + 1), as Linkerd. Likewise
  a host with nothing in flight and no observation for ``ewma_decay`` (it lost
  every comparison that long) scores 0 and so is re-probed by one call,
  rather than waiting the several decay times a large peak needs to fade.
* **Ties are random.** Two loads within ``TIE`` (10%) of each other are a tie,
  and a tie goes to the first host drawn, which is random, so equal hosts share
  evenly instead of one holding the traffic while its peak stays lowest.
* **Weights.** Candidates are drawn in proportion to weight (with
  replacement, as Envoy's least_request); a tie keeps the first draw, so
  equal hosts share in proportion to weight; otherwise load / weight decides.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from typing import Sequence

from ..clock import Clock
from .base import Host, cumulative
from .settings import LbSettings

_exp = math.exp

#: Loads within this fraction of each other are a tie (decided at random).
TIE = 0.10


class PeakEwmaPicker:
    __slots__ = ("_hosts", "_n", "_rand", "_now", "_weighted", "_cum", "_total", "_unprobed", "_stale")

    def __init__(self, hosts: Sequence[Host], rng: random.Random, clock: Clock, stale_after: float = 10.0) -> None:
        self._stale = stale_after
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        self._rand = rng.random
        self._now = clock.monotonic
        self._weighted = len({h.endpoint.weight for h in hosts}) > 1
        self._cum = cumulative([h.endpoint.weight for h in hosts])
        self._total = self._cum[-1]
        # Hosts never observed, in random order; each is handed one call first.
        fresh = [h for h in self._hosts if not h.observed]
        rng.shuffle(fresh)
        self._unprobed = fresh

    def _probe(self) -> Host | None:
        unprobed = self._unprobed
        while unprobed:
            try:
                host = unprobed.pop()  # atomic: two threads never get the same entry
            except IndexError:
                return None
            if not host.observed and not host.inflight:
                return host
        return None

    def _draw(self) -> Host:
        if self._weighted:
            return self._hosts[bisect_right(self._cum, self._rand() * self._total)]
        return self._hosts[int(self._rand() * self._n)]

    def pick(self, hash_value: int | None) -> Host:
        if self._n == 1:
            return self._hosts[0]
        if self._unprobed:
            host = self._probe()
            if host is not None:
                return host
        if self._weighted:
            a = self._draw()
            b = self._draw()
        else:  # _draw(), inline
            rand, n, hosts = self._rand, self._n, self._hosts
            a = hosts[int(rand() * n)]
            b = hosts[int(rand() * n)]
        if a is b:
            if self._weighted:
                return a
            while b is a:  # two distinct hosts, as Finagle's P2C
                b = self._hosts[int(self._rand() * self._n)]
        now = self._now()
        load_a = _load(a, now, self._stale)
        load_b = _load(b, now, self._stale)
        if abs(load_a - load_b) <= TIE * max(load_a, load_b):
            return a
        if self._weighted:
            load_a /= a.endpoint.weight
            load_b /= b.endpoint.weight
        return b if load_b < load_a else a


def _load(host: Host, now: float, stale_after: float) -> float:
    active = len(host.inflight)
    cost, stamp = host.ewma_state  # Host.ewma(now), inline: two per pick
    if cost == 0.0:  # never observed
        return host.default_rtt * (active + 1) if active else 0.0  # tried before judged (Finagle scores it 0)
    age = now - stamp
    if age <= 0.0:
        return cost * (active + 1)
    if not active and age > stale_after:
        return 0.0  # idle and unobserved for a decay time: re-probed
    return cost * _exp(-age / host.decay) * (active + 1)


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> PeakEwmaPicker:
    return PeakEwmaPicker(hosts, rng, clock, cfg.ewma_decay)
