"""Load-balancing policies, registered by snake_case name.

A policy is a builder ``(hosts, settings, rng, clock) -> Picker`` where
settings is the service's :class:`LbSettings`; see ``base``.
"""

from __future__ import annotations

from . import least_loaded, least_request, maglev, peak_ewma, random, ring_hash, round_robin, weighted_round_robin, wrr_orca
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
    # Policies that read servers' load reports (balancing.load).
    "least_loaded": least_loaded.build,
    "wrr_orca": wrr_orca.build,
    "llm": least_loaded.build_llm,
}

#: Policies that read the request's hash key.
HASHING = frozenset({"ring_hash", "maglev", "least_loaded", "llm"})
#: Load-report sources each policy reads when ``load_reports`` is ``auto``.
AUTO_LOAD_REPORTS = {"llm": ("header", "metrics"), "least_loaded": ("header",), "wrr_orca": ("header", "orca_oob")}

__all__ = ["POLICIES", "HASHING", "AUTO_LOAD_REPORTS", "Picker", "PolicyBuilder", "EmptyPicker", "build_picker", "LbSettings", "DEFAULT_LB"]
