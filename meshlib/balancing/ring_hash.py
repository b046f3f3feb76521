"""ring_hash: consistent hashing on a ring (Ketama), sized and filled as Envoy's.

Each host gets a number of ring entries in proportion to its weight, and the
ring holds at least ``ring_hash_min_size`` and at most ``ring_hash_max_size``
entries, as Envoy's. Entries per unit of weight are a power of two (Envoy uses
exactly ``ceil(min_size / hosts)``), so a host leaving does not reshuffle the
entries of the others. Entry
k of a host hashes ``"<address>_<k>"`` with xxHash64. A request's hash maps to
the first entry at or after it, wrapping around. When a host leaves, only the
keys that mapped to its entries move (about 1/N of them).

A call without a hash key picks a random host, as Envoy does.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from typing import Sequence

from ..clock import Clock
from ..config import ServiceConfig
from ..host import Host
from .hashing import host_hash


def build_ring(addresses: Sequence[str], weights: Sequence[int], min_size: int, max_size: int) -> tuple[list[int], list[int]]:
    """Return (sorted entry hashes, host index per entry).

    Each unit of weight gets ``unit`` entries: the smallest power of two that
    makes the ring at least ``min_size`` long, so the ring is between
    ``min_size`` and ``2 x min_size`` (never over ``max_size``). Rounding to a
    power of two keeps every other host's entries unchanged when one host
    joins or leaves, unless the total weight crosses a power of two.
    """
    total = sum(weights)
    unit = float(1 << max(0, math.ceil(math.log2(min_size / total)))) if min_size > total else 1.0
    if unit * total > max_size:
        unit = max_size / total
    entries: list[tuple[int, int]] = []
    for i, (addr, w) in enumerate(zip(addresses, weights)):
        for k in range(max(1, round(w * unit))):
            entries.append((host_hash(f"{addr}_{k}"), i))
    entries.sort()
    if len(entries) > max_size:
        entries = entries[:max_size]
    return [h for h, _ in entries], [i for _, i in entries]


class RingHashPicker:
    __slots__ = ("_hashes", "_owners", "_size", "_rand", "_hosts")

    def __init__(self, hosts: Sequence[Host], cfg: ServiceConfig, rng: random.Random) -> None:
        hashes, owners = build_ring(
            [h.endpoint.address for h in hosts],
            [h.endpoint.weight for h in hosts],
            cfg.ring_hash_min_size,
            cfg.ring_hash_max_size,
        )
        self._hashes = hashes
        self._owners = tuple(hosts[i] for i in owners)
        self._size = len(hashes)
        self._rand = rng.random
        self._hosts = tuple(hosts)

    def pick(self, hash_value: int | None) -> Host:
        if hash_value is None:
            return self._hosts[int(self._rand() * len(self._hosts))]
        i = bisect_left(self._hashes, hash_value)
        return self._owners[i if i < self._size else 0]

    @property
    def size(self) -> int:
        return self._size


def build(hosts: Sequence[Host], cfg: ServiceConfig, rng: random.Random, clock: Clock) -> RingHashPicker:
    return RingHashPicker(hosts, cfg, rng)
