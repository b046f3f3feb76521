"""Load-balancing policies, registered by snake_case name.

A policy is a builder ``(hosts, settings, rng, clock) -> Picker`` where
settings is the service's :class:`LbSettings`; see ``base``.
"""

from __future__ import annotations

from . import least_request, maglev, peak_ewma, random, ring_hash, round_robin, weighted_round_robin
from .base import EmptyPicker, Picker, PolicyBuilder
from .locality import build_picker
from .settings import DEFAULT_LB, LbSettings

POLICIES: dict[str, PolicyBuilder] = {
    "round_robin": round_robin.build,
    "weighted_round_robin": weighted_round_robin.build,
    "random": random.build,
    "least_request": least_request.build,
    "peak_ewma": peak_ewma.build,
    "ring_hash": ring_hash.build,
    "maglev": maglev.build,
}

#: Policies that read the request's hash key.
HASHING = frozenset({"ring_hash", "maglev"})

__all__ = ["POLICIES", "HASHING", "Picker", "PolicyBuilder", "EmptyPicker", "build_picker", "LbSettings", "DEFAULT_LB"]
