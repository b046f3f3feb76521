"""ring_hash: consistent hashing on a ring (Ketama), sized and filled as Envoy's.

Each host gets ring entries in proportion to its weight, and the ring holds
at least ``ring_hash_min_size`` and at most ``ring_hash_max_size`` entries, as
Envoy's. Unlike Envoy, which rescales every host's entry count to
``min_size / hosts`` whenever the host set changes (so a host leaving also
moves keys between the hosts that stay), meshlib gives each unit of weight a
count that does not depend on the host count (see ``entries_per_weight``). Entry
k of a host hashes ``"<address>_<k>"`` with xxHash64. A request's hash maps to
the first entry at or after it, wrapping around. When a host leaves, only the
keys that mapped to its entries move (about 1/N of them).

A call without a hash key picks a random host, as Envoy does.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from typing import Sequence

from ..clock import Clock
from .base import Host
from .hashing import _xxh64 as xxh64
from .settings import LbSettings


#: Entries built at most (unless ring_hash_min_size asks for more): keeps a
#: 10,000-host rebuild well under 100 ms.
BUILD_BUDGET = 1 << 16


def ring_cap(min_size: int, max_size: int) -> int:
    """The most entries a ring is built with."""
    return min(max_size, max(min_size, BUILD_BUDGET))


def entries_per_weight(total_weight: int, min_size: int, max_size: int) -> int:
    """Ring entries per unit of weight.

    Half of ``min_size`` per unit (512 by default), so any two units already
    fill the minimum ring; fewer once the ring would exceed the build budget
    or ``max_size``; more only for a single unit. The count does not depend on
    the number of hosts in the usual range, so when a host leaves the others
    keep exactly their entries and only the leaving host's keys move.
    """
    cap = ring_cap(min_size, max_size)
    per = max(1, min(-(-min_size // 2), cap // total_weight))
    if total_weight * per < min_size:  # a single unit of weight (max_size still caps it)
        per = max(per, min(-(-min_size // total_weight), cap // total_weight))
    return per


def build_ring(addresses: Sequence[str], weights: Sequence[int], min_size: int, max_size: int) -> tuple[list[int], list[int]]:
    """Return (sorted entry hashes, host index per entry)."""
    total = sum(weights)
    cap = ring_cap(min_size, max_size)
    if total > cap:
        # More weight than the ring may hold: share ``cap`` entries out in
        # proportion to weight (cumulative rounding, as Envoy fills its ring).
        counts, before, cum = [], 0, 0
        for w in weights:
            cum += w
            upto = cap * cum // total
            counts.append(upto - before)
            before = upto
    else:
        per = entries_per_weight(total, min_size, max_size)
        counts = [w * per for w in weights]
    hashes: list[int] = []
    owners: list[int] = []
    for i, (addr, n) in enumerate(zip(addresses, counts)):
        hashes.extend([xxh64(f"{addr}_{k}".encode()) for k in range(n)])
        owners.extend([i] * n)
    order = sorted(range(len(hashes)), key=hashes.__getitem__)
    return [hashes[j] for j in order], [owners[j] for j in order]


class RingHashPicker:
    __slots__ = ("_hashes", "_owners", "_size", "_rand", "_hosts")

    def __init__(self, hosts: Sequence[Host], cfg: LbSettings, rng: random.Random) -> None:
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


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> RingHashPicker:
    return RingHashPicker(hosts, cfg, rng)
