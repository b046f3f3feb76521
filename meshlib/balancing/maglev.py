"""maglev: Maglev consistent hashing (Google's NSDI'16 paper, Envoy's weighted variant).

Each host walks its own permutation of a prime-sized table (offset and skip
from xxHash64 of its address with seeds 0 and 1) and claims the next free
slot in turn; a host of half the top weight takes a turn every second round.
Lookup is one modulo and one index. Removing one of N hosts moves about 1/N
of keys. A call without a hash key picks a random host, as Envoy does.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..clock import Clock
from .base import Host
from .hashing import host_hash
from .settings import LbSettings


def build_table(addresses: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """The lookup table: for each slot, the index of the host that owns it."""
    n = len(addresses)
    pos = [host_hash(a, 0) % size for a in addresses]
    skip = [host_hash(a, 1) % (size - 1) + 1 for a in addresses]
    top = max(weights)
    share = [w / top for w in weights]
    due = [0.0] * n  # a host takes a turn when round * share >= due
    table = [-1] * size
    filled = 0
    rnd = 0
    while filled < size:
        rnd += 1
        for i in range(n):
            if rnd * share[i] < due[i]:
                continue
            due[i] += 1.0
            c, s = pos[i], skip[i]
            while table[c] >= 0:
                c += s
                if c >= size:
                    c -= size
            table[c] = i
            c += s
            pos[i] = c - size if c >= size else c
            filled += 1
            if filled == size:
                break
    return table


class MaglevPicker:
    __slots__ = ("_table", "_size", "_hosts", "_rand")

    def __init__(self, hosts: Sequence[Host], cfg: LbSettings, rng: random.Random) -> None:
        size = cfg.maglev_table_size
        idx = build_table([h.endpoint.address for h in hosts], [h.endpoint.weight for h in hosts], size)
        self._hosts = tuple(hosts)
        self._table = tuple(self._hosts[i] for i in idx)
        self._size = size
        self._rand = rng.random

    def pick(self, hash_value: int | None) -> Host:
        if hash_value is None:
            return self._hosts[int(self._rand() * len(self._hosts))]
        return self._table[hash_value % self._size]


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> MaglevPicker:
    return MaglevPicker(hosts, cfg, rng)
