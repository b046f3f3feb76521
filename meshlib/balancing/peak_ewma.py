"""peak_ewma: power of two choices over peak-EWMA latency x outstanding requests.

As Finagle's ``p2cPeakEwma`` and Linkerd's balancer: two distinct hosts are drawn
at random and the one with the lower load wins, where load is the host's
peak-EWMA latency (decayed to now, ``ewma_default_rtt`` before any
observation) times ``active + 1``, divided by the host's weight. A slow host
loses almost every comparison; a host that recovers is tried again as its
average decays. Failed attempts count as ``ewma_failure_penalty``.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..clock import Clock
from .base import Host
from .settings import LbSettings


class PeakEwmaPicker:
    __slots__ = ("_hosts", "_n", "_rand", "_now", "_weighted")

    def __init__(self, hosts: Sequence[Host], rng: random.Random, clock: Clock) -> None:
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        self._rand = rng.random
        self._now = clock.monotonic
        self._weighted = len({h.endpoint.weight for h in hosts}) > 1

    def pick(self, hash_value: int | None) -> Host:
        n = self._n
        if n == 1:
            return self._hosts[0]
        rand = self._rand
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a, b = self._hosts[i], self._hosts[j]
        now = self._now()
        load_a = a.ewma(now) * (len(a.inflight) + 1)
        load_b = b.ewma(now) * (len(b.inflight) + 1)
        if self._weighted:
            load_a /= a.endpoint.weight
            load_b /= b.endpoint.weight
        return b if load_b < load_a else a


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> PeakEwmaPicker:
    return PeakEwmaPicker(hosts, rng, clock)
