"""weighted_round_robin: smooth, exact weighted rotation.

The order of one whole cycle is computed when the host set changes, by earliest
deadline first (host i is due every 1/weight_i, as Envoy's EDF scheduler): a
host of weight 3 appears exactly three times per cycle of sum(weights), spread
out rather than bunched. Weights are first divided by their greatest common
divisor; if a cycle would still exceed ``MAX_CYCLE`` entries the weights are
scaled down proportionally (each stays at least 1), which is documented as the
only case where shares are approximate.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from functools import reduce
from typing import Sequence

from ..clock import Clock
from .base import Host
from .settings import LbSettings

MAX_CYCLE = 1 << 17


def schedule(weights: Sequence[int], max_cycle: int = MAX_CYCLE) -> list[int]:
    """One cycle of host indexes; index i appears weights[i] (reduced) times."""
    if weights and weights.count(weights[0]) == len(weights):
        return list(range(len(weights)))  # equal weights: what the deadlines below give, in one C call
    g = reduce(math.gcd, weights)
    ws = [w // g for w in weights]
    total = sum(ws)
    if total > max_cycle:
        scale = max_cycle / total
        ws = [max(1, int(w * scale)) for w in ws]
    # (deadline, index): each host's k-th turn is due at (k + 0.5) / weight,
    # half a period in, so light hosts fall between the heavy one's turns.
    heap = [(0.5 / w, i) for i, w in enumerate(ws)]
    heapq.heapify(heap)
    order = []
    for _ in range(sum(ws)):
        deadline, i = heapq.heappop(heap)
        order.append(i)
        heapq.heappush(heap, (deadline + 1.0 / ws[i], i))
    return order


class WeightedRoundRobinPicker:
    __slots__ = ("_order", "_n", "_next")

    def __init__(self, hosts: Sequence[Host], start: int) -> None:
        weights = [h.endpoint.weight for h in hosts]
        if weights.count(weights[0]) == len(weights):
            self._order = tuple(hosts)  # equal weights: plain rotation (schedule's order)
        else:
            self._order = tuple([hosts[i] for i in schedule(weights)])
        self._n = len(self._order)
        self._next = itertools.count(start % self._n).__next__

    def pick(self, hash_value: int | None) -> Host:
        return self._order[self._next() % self._n]


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> WeightedRoundRobinPicker:
    return WeightedRoundRobinPicker(hosts, rng.randrange(1 << 30))
