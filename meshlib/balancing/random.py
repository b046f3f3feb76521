"""random: a uniformly random host, or weighted when weights differ."""

from __future__ import annotations

import random as _random
from bisect import bisect_right
from typing import Sequence

from ..clock import Clock
from .base import Host, cumulative
from .settings import LbSettings


class RandomPicker:
    __slots__ = ("_hosts", "_n", "_rand")

    def __init__(self, hosts: Sequence[Host], rng: _random.Random) -> None:
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        self._rand = rng.random

    def pick(self, hash_value: int | None) -> Host:
        return self._hosts[int(self._rand() * self._n)]


class WeightedRandomPicker:
    __slots__ = ("_hosts", "_cum", "_total", "_rand")

    def __init__(self, hosts: Sequence[Host], rng: _random.Random) -> None:
        self._hosts = tuple(hosts)
        self._cum = cumulative([h.endpoint.weight for h in hosts])
        self._total = self._cum[-1]
        self._rand = rng.random

    def pick(self, hash_value: int | None) -> Host:
        return self._hosts[bisect_right(self._cum, self._rand() * self._total)]


def build(hosts: Sequence[Host], cfg: LbSettings, rng: _random.Random, clock: Clock) -> RandomPicker | WeightedRandomPicker:
    if len({h.endpoint.weight for h in hosts}) == 1:
        return RandomPicker(hosts, rng)
    return WeightedRandomPicker(hosts, rng)
