"""Cluster (CDS) → meshlib's cluster settings (gRFC A27, A32, A42, A50, A52).

The result is a mapping of :class:`meshlib.config.ServiceConfig` field names to
values, so a cluster configured over xDS is built exactly as one configured by
``MESHLIB_*`` keys. Policy names are meshlib's (``balancing.POLICIES``):

==================================  ===================================================
xDS                                 meshlib setting
==================================  ===================================================
lb_policy ROUND_ROBIN               weighted_round_robin (Envoy's RR honours weights)
LEAST_REQUEST (+ config)            least_request, choice_count, active_request_bias
RANDOM                              random
RING_HASH (+ ring_hash_lb_config)   ring_hash, ring_hash_min_size / max_size
MAGLEV (+ maglev_lb_config)         maglev, maglev_table_size
load_balancing_policy.policies      the first supported entry (A52); TypedStruct
                                    ``meshlib.peak_ewma`` selects peak_ewma
circuit_breakers (DEFAULT prio)     max_connections, max_pending_requests,
                                    max_requests, max_retries; retry_budget →
                                    retry_budget kind concurrency
outlier_detection                   outlier (OutlierConfig, every detector); absent: off
common_lb_config                    panic_threshold; locality_weighted_lb_config
                                    turns locality weights on (from EDS)
connect_timeout                     connect_timeout
==================================  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import client_side_weighted_round_robin_pb2 as cswrr
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2

from ..errors import ConfigError
from ..resilience.budget import BudgetConfig
from ..resilience.outlier import OutlierConfig
from ._proto import ResourceError, seconds, type_name, unpack
from .endpoints import Assignment
from .endpoints import assignment as endpoint_assignment

__all__ = ["ClusterInfo", "cluster_info", "PEAK_EWMA_TYPE"]

#: The TypedStruct type_url (last part) that selects meshlib's peak_ewma.
PEAK_EWMA_TYPE = "meshlib.peak_ewma"
_C = cluster_pb2.Cluster
_MAX_RING = 8_388_608


@dataclass(frozen=True)
class ClusterInfo:
    """A validated cluster: where its endpoints come from and its settings.

    ``eds_name``: the ClusterLoadAssignment to watch (EDS clusters);
    ``load_assignment``: inline endpoints (STATIC, LOGICAL_DNS);
    ``settings``: ServiceConfig field → value; ``locality_weighted``: take the
    locality weights from EDS."""

    name: str
    eds_name: str = ""
    load_assignment: Assignment | None = None
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    locality_weighted: bool = False


def cluster_info(msg: cluster_pb2.Cluster) -> ClusterInfo:
    where = f"cluster {msg.name!r}"
    try:
        return _cluster(msg, where)
    except ConfigError as exc:
        raise ResourceError(f"{where}: {exc}") from None


def _cluster(msg: cluster_pb2.Cluster, where: str) -> ClusterInfo:
    kind = msg.WhichOneof("cluster_discovery_type")
    settings: dict[str, Any] = {}
    eds_name, assignment = "", None  # type: str, Assignment | None
    if kind == "cluster_type":
        raise ResourceError(f"{where}: custom cluster type {msg.cluster_type.name!r} is not supported")
    ctype = msg.type if kind == "type" else _C.STATIC
    if ctype == _C.EDS:
        source = msg.eds_cluster_config.eds_config
        if source.WhichOneof("config_source_specifier") not in ("ads", "self"):
            raise ResourceError(f"{where}: eds_cluster_config.eds_config must be ads")
        eds_name = msg.eds_cluster_config.service_name or msg.name
    elif ctype in (_C.STATIC, _C.LOGICAL_DNS, _C.STRICT_DNS):
        if not msg.HasField("load_assignment"):
            raise ResourceError(f"{where}: a {_C.DiscoveryType.Name(ctype)} cluster needs load_assignment")
        assignment = endpoint_assignment(msg.load_assignment, f"{where} load_assignment")
    else:
        raise ResourceError(f"{where}: discovery type {_C.DiscoveryType.Name(ctype)} is not supported")
    settings.update(_lb(msg, where))
    if msg.HasField("connect_timeout"):
        t = seconds(msg.connect_timeout)
        if t > 0:
            settings["connect_timeout"] = t
    settings.update(_thresholds(msg.circuit_breakers))
    if msg.HasField("outlier_detection"):
        settings["outlier_detection"] = True
        settings["outlier"] = _outlier(msg.outlier_detection)
    else:
        settings["outlier_detection"] = False  # as Envoy: no outlier_detection, no ejection
    locality_weighted = False
    clc = msg.common_lb_config
    if clc.HasField("healthy_panic_threshold"):
        value = clc.healthy_panic_threshold.value
        if not 0 <= value <= 100:
            raise ResourceError(f"{where}: healthy_panic_threshold {value} is not a percentage")
        settings["panic_threshold"] = value
    if clc.WhichOneof("locality_config_specifier") == "locality_weighted_lb_config":
        locality_weighted = True
    return ClusterInfo(msg.name, eds_name, assignment, MappingProxyType(settings), locality_weighted)


def _lb(msg: cluster_pb2.Cluster, where: str) -> dict[str, Any]:
    if msg.HasField("load_balancing_policy"):
        for i, p in enumerate(msg.load_balancing_policy.policies):
            found = _typed_policy(p.typed_extension_config.typed_config, f"{where} load_balancing_policy[{i}]", 0)
            if found is not None:
                return found
        raise ResourceError(f"{where}: load_balancing_policy names no supported policy")
    lb = msg.lb_policy
    if lb == _C.ROUND_ROBIN:
        return {"lb_policy": "weighted_round_robin"}
    if lb == _C.RANDOM:
        return {"lb_policy": "random"}
    if lb == _C.LEAST_REQUEST:
        out: dict[str, Any] = {"lb_policy": "least_request"}
        c = msg.least_request_lb_config
        if c.HasField("choice_count"):
            out["choice_count"] = _choice_count(c.choice_count.value, where)
        if c.HasField("active_request_bias"):
            out["active_request_bias"] = c.active_request_bias.default_value
        return out
    if lb == _C.RING_HASH:
        c = msg.ring_hash_lb_config
        return _ring(c.minimum_ring_size.value if c.HasField("minimum_ring_size") else 1024,
                     c.maximum_ring_size.value if c.HasField("maximum_ring_size") else _MAX_RING, c.hash_function, where)  # fmt: skip
    if lb == _C.MAGLEV:
        out = {"lb_policy": "maglev"}
        if msg.maglev_lb_config.HasField("table_size"):
            out["maglev_table_size"] = msg.maglev_lb_config.table_size.value
        return out
    raise ResourceError(f"{where}: lb_policy {_C.LbPolicy.Name(lb)} is not supported")


def _choice_count(n: int, where: str) -> int:
    if not 2 <= n <= 100:
        raise ResourceError(f"{where}: least request choice_count {n} is not 2..100")
    return n


def _ring(lo: int, hi: int, hash_function: int, where: str) -> dict[str, Any]:
    if hash_function != 0:  # XX_HASH only, as gRPC (gRFC A42)
        raise ResourceError(f"{where}: ring hash function must be XX_HASH")
    if not 1 <= lo <= hi <= _MAX_RING:
        raise ResourceError(f"{where}: ring sizes {lo}..{hi} must satisfy 1 <= min <= max <= {_MAX_RING}")
    return {"lb_policy": "ring_hash", "ring_hash_min_size": lo, "ring_hash_max_size": hi}


def _typed_policy(any_msg: Any, where: str, depth: int) -> dict[str, Any] | None:
    """One ``load_balancing_policy`` entry, or None if meshlib does not support it (A52)."""
    if depth > 16:
        raise ResourceError(f"{where}: load_balancing_policy nests deeper than 16")
    name = type_name(any_msg.type_url)
    if name == round_robin_pb2.RoundRobin.DESCRIPTOR.full_name:
        return {"lb_policy": "weighted_round_robin"}
    if name == random_pb2.Random.DESCRIPTOR.full_name:
        return {"lb_policy": "random"}
    if name == cswrr.ClientSideWeightedRoundRobin.DESCRIPTOR.full_name:
        return {"lb_policy": "weighted_round_robin"}
    if name == least_request_pb2.LeastRequest.DESCRIPTOR.full_name:
        c = unpack(any_msg, least_request_pb2.LeastRequest, where)
        out: dict[str, Any] = {"lb_policy": "least_request"}
        if c.HasField("choice_count"):
            out["choice_count"] = _choice_count(c.choice_count.value, where)
        if c.HasField("active_request_bias"):
            out["active_request_bias"] = c.active_request_bias.default_value
        return out
    if name == ring_hash_pb2.RingHash.DESCRIPTOR.full_name:
        c = unpack(any_msg, ring_hash_pb2.RingHash, where)
        return _ring(c.minimum_ring_size.value if c.HasField("minimum_ring_size") else 1024,
                     c.maximum_ring_size.value if c.HasField("maximum_ring_size") else _MAX_RING, c.hash_function, where)  # fmt: skip
    if name == maglev_pb2.Maglev.DESCRIPTOR.full_name:
        c = unpack(any_msg, maglev_pb2.Maglev, where)
        return {"lb_policy": "maglev", **({"maglev_table_size": c.table_size.value} if c.HasField("table_size") else {})}
    if name == wrr_locality_pb2.WrrLocality.DESCRIPTOR.full_name:
        c = unpack(any_msg, wrr_locality_pb2.WrrLocality, where)
        for p in c.endpoint_picking_policy.policies:
            found = _typed_policy(p.typed_extension_config.typed_config, where, depth + 1)
            if found is not None:
                return found
        raise ResourceError(f"{where}: WrrLocality names no supported child policy")
    if name in ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"):
        from xds.type.v3 import typed_struct_pb2

        ts = unpack(any_msg, typed_struct_pb2.TypedStruct, where) if name.startswith("xds") else None
        inner = type_name(ts.type_url) if ts is not None else ""
        if inner == PEAK_EWMA_TYPE:
            return {"lb_policy": "peak_ewma"}
    return None


def _thresholds(cb: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in cb.thresholds:
        if t.priority != base_pb2.DEFAULT:
            continue
        for key in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            if t.HasField(key):
                out[key] = getattr(t, key).value
        if t.HasField("retry_budget"):
            rb = t.retry_budget
            out["retry_budget"] = BudgetConfig(
                kind="concurrency",
                budget_percent=rb.budget_percent.value if rb.HasField("budget_percent") else 20.0,
                min_retry_concurrency=rb.min_retry_concurrency.value if rb.HasField("min_retry_concurrency") else 3,
            )
        break  # only the first DEFAULT entry, as gRPC and Envoy
    return out


_OD_FIELDS = {f.name: f for f in outlier_detection_pb2.OutlierDetection.DESCRIPTOR.fields}


def _outlier(od: Any) -> OutlierConfig:
    """Every field Envoy's OutlierDetection and meshlib's OutlierConfig share
    (all five detectors); unset fields keep meshlib's defaults, which are Envoy's."""
    values: dict[str, Any] = {}
    for f in fields(OutlierConfig):
        pf = _OD_FIELDS.get(f.name)
        if pf is None:
            continue
        if pf.message_type is None:  # a plain bool
            values[f.name] = getattr(od, f.name)
        elif od.HasField(f.name):
            v = getattr(od, f.name)
            values[f.name] = seconds(v) if pf.message_type.full_name == "google.protobuf.Duration" else v.value
    return OutlierConfig(**values)
