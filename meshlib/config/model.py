"""The immutable model: one service's settings and the registry's settings.

Every default comes from the key table (``keys.KEYS``); nothing here repeats
one. ``MeshConfig`` (the whole configuration) lives with its loaders in
``load``, since its constructors are the loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..balancing import LbSettings
from ..routing import RouteConfig
from ..endpoint import Endpoint
from ..health import HealthCheckConfig
from ..resilience.breaker import BreakerConfig
from ..resilience.budget import BudgetConfig
from ..resilience.fault import FaultConfig
from ..resilience.hedge import HedgePolicy
from ..resilience.outlier import OutlierConfig
from ..resilience.retry import RetryPolicy
from .keys import KEYS, POLICY_DEFAULTS

__all__ = ["ServiceConfig", "RegistryConfig", "XdsConfig", "LB_FIELDS", "REGISTRY_FIELDS", "XDS_FIELDS"]


def _d(key: str) -> Any:
    return KEYS[key].default


def _factory(key: str) -> Any:
    return field(default_factory=lambda: KEYS[key].default)


#: ServiceConfig fields the balancers read, as LbSettings.
LB_FIELDS = tuple(f.name for f in fields(LbSettings))


@dataclass(frozen=True)
class ServiceConfig:
    """Settings for one service: its own keys, falling back to the global ones."""

    name: str
    lb_policy: str = _d("lb_policy")
    hash_header: str = _d("hash_header")
    ring_hash_min_size: int = _d("ring_hash_min_size")
    ring_hash_max_size: int = _d("ring_hash_max_size")
    maglev_table_size: int = _d("maglev_table_size")
    choice_count: int = _d("choice_count")
    active_request_bias: float = _d("active_request_bias")
    ewma_decay: float = _d("ewma_decay")
    ewma_default_rtt: float = _d("ewma_default_rtt")
    ewma_failure_penalty: float = _d("ewma_failure_penalty")
    # Load reports and the policies that read them (balancing.load.load_settings).
    load_reports: tuple[str, ...] | str = _d("load_reports")
    load_metrics_path: str = _d("load_metrics_path")
    load_metrics_interval: float = _d("load_metrics_interval")
    load_metrics_timeout: float = _d("load_metrics_timeout")
    load_metric_waiting: str = _d("load_metric_waiting")
    load_metric_running: str = _d("load_metric_running")
    load_metric_kv: str = _d("load_metric_kv")
    load_report_max_age: float = _d("load_report_max_age")
    load_queue_threshold: float = _d("load_queue_threshold")
    load_kv_threshold: float = _d("load_kv_threshold")
    hash_balance_factor: int = _d("hash_balance_factor")
    load_queue_weight: float = _d("load_queue_weight")
    load_kv_weight: float = _d("load_kv_weight")
    load_inflight_weight: float = _d("load_inflight_weight")
    load_saturation: str = _d("load_saturation")
    load_wait_queue: int = _d("load_wait_queue")
    load_affinity_choices: int = _d("load_affinity_choices")
    orca_oob_interval: float = _d("orca_oob_interval")
    wrr_blackout_period: float = _d("wrr_blackout_period")
    wrr_weight_expiration_period: float = _d("wrr_weight_expiration_period")
    wrr_weight_update_period: float = _d("wrr_weight_update_period")
    wrr_error_utilization_penalty: float = _d("wrr_error_utilization_penalty")
    panic_threshold: float = _d("panic_threshold")
    overprovisioning_factor: float = _d("overprovisioning_factor")
    locality_weights: Mapping[str, int] = _factory("locality_weights")
    connect_timeout: float = _d("connect_timeout")
    dns_refresh_interval: float = _d("dns_refresh_interval")
    endpoints: tuple[Endpoint, ...] | None = _d("endpoints")
    dns_name: str | None = _d("dns_name")
    port: int = _d("port")
    # Resilience: flat keys, and policy objects built from their *_ keys.
    retry: RetryPolicy = POLICY_DEFAULTS["retry"]
    retry_budget: BudgetConfig = POLICY_DEFAULTS["retry_budget"]
    max_requests: int = _d("max_requests")
    max_pending_requests: int = _d("max_pending_requests")
    max_retries: int = _d("max_retries")
    max_connections: int = _d("max_connections")
    timeout: float | None = _d("timeout")
    breaker: str = _d("breaker")
    breaker_config: BreakerConfig = POLICY_DEFAULTS["breaker_config"]
    outlier_detection: bool = _d("outlier_detection")
    outlier: OutlierConfig = POLICY_DEFAULTS["outlier"]
    health_check: HealthCheckConfig = POLICY_DEFAULTS["health_check"]
    hedge: HedgePolicy = POLICY_DEFAULTS["hedge"]
    rate_limit: float = _d("rate_limit")
    rate_limit_burst: float = _d("rate_limit_burst")
    fault: FaultConfig = POLICY_DEFAULTS["fault"]

    filter_tags: tuple[str, ...] = _d("filter_tags")
    filter_meta: Mapping[str, str] = _factory("filter_meta")
    tls_mode: str = _d("tls_mode")
    tls_spiffe_ids: tuple[str, ...] = _d("tls_spiffe_ids")
    # routing and xDS
    routes: RouteConfig | None = None
    xds_listener: str = ""

    #: What the balancers read (``meshlib.balancing.LbSettings``), built once from the fields above.
    lb: LbSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lb", LbSettings(**{name: getattr(self, name) for name in LB_FIELDS}))


@dataclass(frozen=True)
class RegistryConfig:
    """Settings of the consul:// and etcd:// sources and of ``mesh.register()``.

    Field names are the keys' names. Secrets are left out of ``repr``.
    """

    registry_watch: str = _d("registry_watch")
    registry_timeout: float = _d("registry_timeout")
    registry_backoff_base: float = _d("registry_backoff_base")
    registry_backoff_max: float = _d("registry_backoff_max")
    registry_ttl: float = _d("registry_ttl")
    consul_token: str = field(default=_d("consul_token"), repr=False)
    consul_datacenter: str = _d("consul_datacenter")
    consul_tls_ca: str = _d("consul_tls_ca")
    consul_tls_cert: str = _d("consul_tls_cert")
    consul_tls_key: str = _d("consul_tls_key")
    consul_wait: float = _d("consul_wait")
    consul_only_passing: bool = _d("consul_only_passing")
    consul_query_rate: float = _d("consul_query_rate")
    consul_deregister_after: float = _d("consul_deregister_after")
    etcd_prefix: str = _d("etcd_prefix")
    etcd_user: str = _d("etcd_user")
    etcd_password: str = field(default=_d("etcd_password"), repr=False)
    etcd_tls_ca: str = _d("etcd_tls_ca")
    etcd_tls_cert: str = _d("etcd_tls_cert")
    etcd_tls_key: str = _d("etcd_tls_key")


REGISTRY_FIELDS = frozenset(f.name for f in fields(RegistryConfig))


@dataclass(frozen=True)
class XdsConfig:
    """The global xDS keys (``MESHLIB_XDS_*``)."""

    xds_listeners: tuple[str, ...] = _d("xds_listeners")
    xds_bootstrap: str = _d("xds_bootstrap")
    xds_bootstrap_config: str = _d("xds_bootstrap_config")
    xds_does_not_exist_timeout: float = _d("xds_does_not_exist_timeout")
    xds_backoff_base: float = _d("xds_backoff_base")
    xds_backoff_max: float = _d("xds_backoff_max")
    xds_wait: float = _d("xds_wait")
    xds_csds: str = _d("xds_csds")


XDS_FIELDS = frozenset(f.name for f in fields(XdsConfig))
