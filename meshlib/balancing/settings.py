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

    #: The service's name (for the errors a picker raises; not compared).
    name: str = field(default="", compare=False)

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
    #: peak_ewma: decay time of the latency average (an idle host is re-probed once it is this stale).
    ewma_decay: float = 10.0
    # -- servers' load reports and the policies that read them (see ``load.load_settings``)
    #: Sources read: "auto", or a tuple of "header", "metrics", "orca_oob" (empty: off).
    load_reports: tuple[str, ...] | str = "auto"
    #: A report older than this is ignored (the host's own in-flight count decides).
    load_report_max_age: float = 1.0
    #: Saturated above this estimated queue, or this KV-cache use.
    load_queue_threshold: float = 4.0
    load_kv_threshold: float = 0.8
    #: Bounded load, percent of the mean in-flight count (Envoy hash_balance_factor; 0: off).
    hash_balance_factor: int = 0
    #: least_loaded's score: weights of the estimated queue, KV use and own in-flight count.
    load_queue_weight: float = 1.0
    load_kv_weight: float = 4.0
    load_inflight_weight: float = 1.0
    #: When every endpoint is saturated: "spill", "fail" or "wait" (in a queue of at most ``load_wait_queue`` calls).
    load_saturation: str = "spill"
    load_wait_queue: int = 64
    #: Prefix affinity: owners compared per key (0: 2 for llm, 1 otherwise).
    load_affinity_choices: int = 0
    #: wrr_orca (gRFC A58): blackout_period, weight_expiration_period, weight_update_period, error_utilization_penalty.
    wrr_blackout_period: float = 10.0
    wrr_weight_expiration_period: float = 180.0
    wrr_weight_update_period: float = 1.0
    wrr_error_utilization_penalty: float = 1.0


DEFAULT_LB = LbSettings()
