"""Outlier detection's settings: Envoy's ``OutlierDetection``, frozen and validated."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import ConfigError

__all__ = ["OutlierConfig"]


@dataclass(frozen=True)
class OutlierConfig:
    """Envoy's ``OutlierDetection`` (``envoy.config.cluster.v3``). Durations in seconds.

    Every default is Envoy's except ``always_eject_one_host``:

    ==========================================  =======  ========
    field                                       meshlib  Envoy
    ==========================================  =======  ========
    consecutive_5xx                             5        5
    consecutive_gateway_failure                 5        5
    consecutive_local_origin_failure            5        5 (split mode only)
    split_external_local_origin_errors          False    false
    interval                                    10 s     10 s
    base_ejection_time                          30 s     30 s
    max_ejection_time                           300 s    300 s (or base, if larger)
    max_ejection_time_jitter                    0 s      0 s
    max_ejection_percent                        10       10
    always_eject_one_host                       True     false (since 1.31)
    enforcing_consecutive_5xx                   100      100
    enforcing_consecutive_gateway_failure       0        0
    enforcing_consecutive_local_origin_failure  100      100
    enforcing_success_rate                      100      100
    enforcing_local_origin_success_rate         100      100
    success_rate_minimum_hosts                  5        5
    success_rate_request_volume                 100      100
    success_rate_stdev_factor                   1900     1900 (= 1.9)
    failure_percentage_threshold                85       85
    failure_percentage_minimum_hosts            5        5
    failure_percentage_request_volume           50       50
    enforcing_failure_percentage                0        0
    enforcing_failure_percentage_local_origin   0        0
    successful_active_health_check_uneject_host True     true
    ==========================================  =======  ========

    ``always_eject_one_host``: Envoy before 1.31 always allowed the first
    ejection; since 1.31 that takes ``always_eject_one_host: true``, and with
    the default 10% a cluster of fewer than 10 hosts ejects nothing. Client-side
    services are usually that small, so meshlib keeps the old rule by default.
    As in Envoy, it also lets one host go when ``max_ejection_percent`` is 0;
    set the ``enforcing_*`` percentages to 0 to disable ejection.

    ``max_ejection_time`` below ``base_ejection_time`` is not an error (Envoy
    rejects it): the cap is the larger of the two.
    """

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    split_external_local_origin_errors: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: int = 10
    always_eject_one_host: bool = True
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    failure_percentage_threshold: int = 85
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    successful_active_health_check_uneject_host: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(v, bool):
                    raise ConfigError(f.name, v, "true or false")
            elif f.type == "float":
                positive = f.name in ("interval", "base_ejection_time", "max_ejection_time")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
                    raise ConfigError(f.name, v, "a duration in seconds, greater than 0" if positive else "a duration in seconds >= 0")
            elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f.name, v, "a whole number >= 0")
            elif (f.name.startswith("enforcing_") or f.name in ("max_ejection_percent", "failure_percentage_threshold")) and v > 100:
                raise ConfigError(f.name, v, "a percentage from 0 to 100")
