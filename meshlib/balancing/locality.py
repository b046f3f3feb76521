"""Priority levels and locality weighting around any policy, as Envoy does.

Hosts are grouped by priority (0 first). Each level's health is
``min(100, overprovisioning_factor x 100 x healthy / total)``; levels take
traffic in order until 100% is covered, so a level losing hosts spills
gradually onto the next. When the levels together are under 100% (the
*normalized total health*), the load is scaled up across them, and a level
whose healthy share is below ``panic_threshold`` goes into panic: it
balances over all its hosts, healthy or not, instead of overloading the few
healthy ones. With no healthy host anywhere, all traffic goes to priority 0
in panic (unless the threshold is 0, which disables panic).

With ``locality_weights`` set, each level first picks a zone with weight
``locality_weight x min(100, factor x 100 x healthy/total in the zone)`` and
then a host inside the zone with the service's policy.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import compress
from operator import attrgetter
from dataclasses import dataclass
from typing import Sequence

from ..clock import Clock
from .base import EmptyPicker, Host, Picker, PolicyBuilder, cumulative
from .settings import LbSettings


@dataclass(frozen=True)
class PriorityLevel:
    priority: int
    total: int
    healthy: int
    health: float  # percent, after overprovisioning
    load: float  # percent of traffic
    panic: bool


def _health(healthy: int, total: int, factor: float) -> float:
    return min(100.0, factor * 100.0 * healthy / total) if total else 0.0


def plan_levels(groups: Sequence[tuple[int, int, int]], factor: float, panic_threshold: float) -> list[PriorityLevel]:
    """Envoy's priority load and panic computation.

    ``groups`` is (priority, total hosts, healthy hosts), sorted by priority.
    """
    healths = [_health(h, t, factor) for _, t, h in groups]
    total_health = min(100.0, sum(healths))
    levels = []
    remaining = 100.0
    for (prio, total, healthy), health in zip(groups, healths):
        if total_health == 0.0:
            load = 100.0 if not levels else 0.0
        else:
            load = min(remaining, health * 100.0 / total_health)
        remaining -= load
        healthy_pct = 100.0 * healthy / total if total else 0.0
        panic = total_health < 100.0 and healthy_pct < panic_threshold
        levels.append(PriorityLevel(prio, total, healthy, health, load, panic))
    return levels


class WeightedChoicePicker:
    """Chooses one sub-picker by weight, then delegates (priorities, zones)."""

    __slots__ = ("_pickers", "_cum", "_total", "_rand")

    def __init__(self, pickers: Sequence[Picker], weights: Sequence[float], rng: random.Random) -> None:
        self._pickers = tuple(pickers)
        self._cum = cumulative(weights)
        self._total = self._cum[-1]
        self._rand = rng.random

    def pick(self, hash_value: int | None) -> Host:
        # A hashed call chooses its level / zone by its hash too (high bits, so
        # the choice is independent of the ring or table position): the same
        # key keeps landing on the same endpoint, as Envoy's hash policies do.
        r = self._rand() if hash_value is None else (hash_value >> 11) * 2.0**-53
        i = bisect_right(self._cum, r * self._total)
        return self._pickers[min(i, len(self._pickers) - 1)].pick(hash_value)


def _zone_picker(
    hosts: Sequence[Host], usable: Sequence[Host], cfg: LbSettings, policy: PolicyBuilder, rng: random.Random, clock: Clock, panic: bool
) -> Picker | None:
    by_zone_all: dict[str, int] = {}
    by_zone: dict[str, list[Host]] = {}
    for h in hosts:
        by_zone_all[h.endpoint.zone] = by_zone_all.get(h.endpoint.zone, 0) + 1
    for h in usable:
        by_zone.setdefault(h.endpoint.zone, []).append(h)
    pickers, weights = [], []
    for zone, members in by_zone.items():
        lw = cfg.locality_weights.get(zone, 0)
        if lw <= 0:
            continue
        eff = lw if panic else lw * _health(len(members), by_zone_all[zone], cfg.overprovisioning_factor) / 100.0
        if eff > 0:
            pickers.append(policy(members, cfg, rng, clock))
            weights.append(eff)
    if not pickers:
        return None
    return pickers[0] if len(pickers) == 1 else WeightedChoicePicker(pickers, weights, rng)


_priority = attrgetter("endpoint.priority")


def build_picker(
    service: str,
    hosts: Sequence[Host],
    usable: Sequence[bool],
    cfg: LbSettings,
    policy: PolicyBuilder,
    rng: random.Random,
    clock: Clock,
) -> tuple[Picker, list[PriorityLevel]]:
    """Build the service's picker over ``hosts``; ``usable[i]`` says whether
    host i may take traffic outside panic (healthy and not ejected)."""
    if not hosts:
        return EmptyPicker(service, "no endpoints"), []
    # Per priority: all its hosts, and the usable ones. One level (the usual
    # case) takes the hosts as they are: no per-host work in Python.
    prios = sorted(set(map(_priority, hosts)))
    if len(prios) == 1:
        chosen_by = {prios[0]: list(compress(hosts, usable))}
        all_by = {prios[0]: hosts}
    else:
        all_by, chosen_by = {p: [] for p in prios}, {p: [] for p in prios}
        for h, u in zip(hosts, usable):
            all_by[h.endpoint.priority].append(h)
            if u:
                chosen_by[h.endpoint.priority].append(h)
    levels = plan_levels([(p, len(all_by[p]), len(chosen_by[p])) for p in prios], cfg.overprovisioning_factor, cfg.panic_threshold)
    pickers, loads = [], []
    for level in levels:
        if level.load <= 0.0:
            continue
        all_hosts = all_by[level.priority]
        chosen = all_hosts if level.panic else chosen_by[level.priority]
        if not chosen:
            continue
        if cfg.locality_weights:
            picker = _zone_picker(all_hosts, chosen, cfg, policy, rng, clock, level.panic)
            if picker is None:
                continue
        else:
            picker = policy(chosen, cfg, rng, clock)
        pickers.append(picker)
        loads.append(level.load)
    if not pickers:
        return EmptyPicker(service, "no healthy endpoints (panic mode is disabled or no zone has weight)"), levels
    if len(pickers) == 1:
        return pickers[0], levels
    return WeightedChoicePicker(pickers, loads, rng), levels
