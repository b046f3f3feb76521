"""least_request: power of k choices on active requests (Envoy's semantics).

Equal weights: sample ``choice_count`` hosts uniformly (with replacement, as
Envoy) and take the one with the fewest active requests; ties keep the first
drawn. Unequal weights: candidates are drawn in proportion to their weight and
compared by Envoy's effective weight ``weight / (active + 1) ** bias``, so an
idle cluster is shared exactly by weight and a loaded one shifts toward the
hosts with spare capacity.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from typing import Sequence

from ..clock import Clock
from .base import Host, cumulative
from .settings import LbSettings


class LeastRequestPicker:
    __slots__ = ("_hosts", "_n", "_rand", "_k")

    def __init__(self, hosts: Sequence[Host], rng: random.Random, choice_count: int) -> None:
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        self._rand = rng.random
        self._k = choice_count

    def pick(self, hash_value: int | None) -> Host:
        hosts, n, rand = self._hosts, self._n, self._rand
        best = hosts[int(rand() * n)]
        if n == 1:
            return best
        for _ in range(self._k - 1):
            other = hosts[int(rand() * n)]
            if len(other.inflight) < len(best.inflight):
                best = other
        return best


class WeightedLeastRequestPicker:
    __slots__ = ("_hosts", "_cum", "_total", "_rand", "_k", "_bias")

    def __init__(self, hosts: Sequence[Host], rng: random.Random, choice_count: int, bias: float) -> None:
        self._hosts = tuple(hosts)
        self._cum = cumulative([h.endpoint.weight for h in hosts])
        self._total = self._cum[-1]
        self._rand = rng.random
        self._k = choice_count
        self._bias = bias

    def _draw(self) -> Host:
        return self._hosts[bisect_right(self._cum, self._rand() * self._total)]

    def pick(self, hash_value: int | None) -> Host:
        bias = self._bias
        best = self._draw()
        best_active = len(best.inflight)
        best_score = best.endpoint.weight / (best_active + 1) ** bias
        for _ in range(self._k - 1):
            other = self._draw()
            active = len(other.inflight)
            if active == best_active:
                continue  # idle tie: keep the weight-proportional first draw
            score = other.endpoint.weight / (active + 1) ** bias
            if score > best_score:
                best, best_active, best_score = other, active, score
        return best


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> LeastRequestPicker | WeightedLeastRequestPicker:
    if len({h.endpoint.weight for h in hosts}) == 1:
        return LeastRequestPicker(hosts, rng, cfg.choice_count)
    return WeightedLeastRequestPicker(hosts, rng, cfg.choice_count, cfg.active_request_bias)
