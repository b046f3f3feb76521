"""The settings balancers read, owned here (config builds one per service).

Defaults are Envoy's (``ring_hash_lb_config``, ``maglev_lb_config``,
``least_request_lb_config``, ``common_lb_config``); meshlib's configuration
keys take their defaults from :data:`DEFAULT_LB`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["LbSettings", "DEFAULT_LB"]


@dataclass(frozen=True, slots=True)
class LbSettings:
    """What the pickers read, and nothing else; validated by the configuration."""

    #: least_request: hosts sampled per pick (Envoy choice_count).
    choice_count: int = 2
    #: least_request with unequal weights: weight / (active + 1) ** bias.
    active_request_bias: float = 1.0
    #: ring_hash: ring entries, at least / at most (Envoy minimum_ring_size, maximum_ring_size).
    ring_hash_min_size: int = 1024
    ring_hash_max_size: int = 8_388_608
    #: maglev: lookup table size, a prime (Envoy table_size).
    maglev_table_size: int = 65537
    #: Priority and locality health is min(100%, factor x healthy share).
    overprovisioning_factor: float = 1.4
    #: Percent of healthy hosts below which a priority level balances over all its hosts.
    panic_threshold: float = 50.0
    #: zone -> weight; empty: no locality weighting.
    locality_weights: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


DEFAULT_LB = LbSettings()
