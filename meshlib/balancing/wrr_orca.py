"""wrr_orca: gRPC's client-side weighted round robin by ORCA utilization (gRFC A58).

(Named ``wrr_orca`` because ``weighted_round_robin`` is meshlib's static-weight
rotation.) Each host's weight comes from its latest ORCA report (per-call
trailers or the out-of-band stream, ``load_reports``)::

    weight = qps / (utilization + eps / qps x wrr_error_utilization_penalty)

with ``utilization`` the report's ``application_utilization``, or its
``cpu_utilization`` when that is 0. As in A58, a host's weight counts only
once it has reported non-zero qps and utilization for ``wrr_blackout_period``
(10s), and is dropped when not refreshed for ``wrr_weight_expiration_period``
(3m); hosts without a weight get the mean of the others; with no weight at all it
is plain round robin. Weights are read into a new schedule every
``wrr_weight_update_period`` (1s) by the first pick after it (a reference swap:
no lock). The schedule is A58's static stride scheduler: weights scaled to
at most 65535 (clamped to [mean/100, 10 x mean] first), and host ``i`` of
generation ``g`` is taken when ``(w_i x g + i x 32767) mod 65535 >= 65535 - w_i``.
"""

from __future__ import annotations

import itertools
import random
from typing import Sequence

from ..clock import Clock
from .base import Host
from .load import LoadSettings, load_settings
from .settings import LbSettings

__all__ = ["WrrOrcaPicker", "host_weight", "scale_weights", "build"]

MAX_WEIGHT = 65535
MAX_RATIO = 10.0
MIN_RATIO = 0.01


def host_weight(host: Host, now: float, s: LoadSettings) -> float:
    """A58's weight of one host now (0: none yet, or expired)."""
    r = host.load
    if r is None or r.nonempty_since is None or now - r.at >= s.expiration:
        return 0.0
    if now - r.nonempty_since < s.blackout:
        return 0.0
    qps = r.rps or 0.0
    util = r.app if r.app else (r.cpu or 0.0)
    if qps <= 0 or util <= 0:
        return 0.0
    return qps / (util + (r.eps or 0.0) / qps * s.error_penalty)


def scale_weights(weights: Sequence[float]) -> tuple[int, ...] | None:
    """A58's scheduler weights, or None for round robin (fewer than two weights)."""
    known = [w for w in weights if w > 0]
    if not known or len(weights) < 2:
        return None
    mean = sum(known) / len(known)
    top = min(max(known), mean * MAX_RATIO)
    scale = MAX_WEIGHT / top
    scaled_mean = round(scale * mean)
    lower = max(round(scaled_mean * MIN_RATIO), 1)
    out = []
    for w in weights:
        if w <= 0:
            out.append(scaled_mean)
        else:
            out.append(min(max(round(w * scale), lower), MAX_WEIGHT))
    return tuple(out)


class WrrOrcaPicker:
    __slots__ = ("_hosts", "_n", "_s", "_now", "_next", "_state")

    def __init__(self, hosts: Sequence[Host], rng: random.Random, clock: Clock, s: LoadSettings) -> None:
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        self._s = s
        self._now = clock.monotonic
        self._next = itertools.count(rng.randrange(1 << 20)).__next__
        self._state: tuple[float, tuple[int, ...] | None] = (-float("inf"), None)

    def weights(self, now: float) -> tuple[int, ...] | None:
        built, scaled = self._state
        if now - built >= self._s.update_period:
            scaled = scale_weights([host_weight(h, now, self._s) for h in self._hosts])
            self._state = (now, scaled)
        return scaled

    def pick(self, hash_value: int | None) -> Host:
        scaled = self.weights(self._now())
        n, nxt = self._n, self._next
        if scaled is None:
            return self._hosts[nxt() % n]
        offset = MAX_WEIGHT // 2
        while True:  # terminates: every weight is at least 1, so each host is due within 65535 generations
            seq = nxt()
            i = seq % n
            w = scaled[i]
            if (w * (seq // n) + i * offset) % MAX_WEIGHT >= MAX_WEIGHT - w:
                return self._hosts[i]


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock) -> WrrOrcaPicker:
    return WrrOrcaPicker(hosts, rng, clock, load_settings(cfg))
