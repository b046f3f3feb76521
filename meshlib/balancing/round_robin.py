"""round_robin: each host in turn, starting at a random offset (as Envoy)."""

from __future__ import annotations

import itertools
import random
from typing import Sequence

from ..clock import Clock
from .base import Host
from .settings import LbSettings


class RoundRobinPicker:
    __slots__ = ("_hosts", "_n", "_next")

    def __init__(self, hosts: Sequence[Host], start: int) -> None:
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        # next() on itertools.count is atomic under the GIL: no lock needed.
        self._next = itertools.count(start).__next__

    def pick(self, hash_value: int | None) -> Host:
        return self._hosts[self._next() % self._n]


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> RoundRobinPicker:
    return RoundRobinPicker(hosts, rng.randrange(len(hosts)))
