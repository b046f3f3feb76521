"""Listener (LDS) → what the client needs of it (gRFC A27, A39, A31).

meshlib takes a Listener's HttpConnectionManager from its ``api_listener``
(as proxyless gRPC) or, for a listener written for an Envoy sidecar, from the
first filter chain (``default_filter_chain`` first). The route configuration is
inline or named for RDS over ADS. HTTP filters: the router must be last; the
fault filter is understood; any other filter is a NACK unless ``is_optional``.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from ..resilience.fault import FaultConfig
from ..routing import RouteConfig
from ._proto import ResourceError, seconds, type_name, unpack
from .routes import FAULT_TYPE, fault_config, route_config

__all__ = ["ListenerInfo", "listener_info"]

HCM_TYPE = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
ROUTER_TYPE = router_pb2.Router.DESCRIPTOR.full_name


@dataclass(frozen=True)
class ListenerInfo:
    """A validated listener: ``rds_name`` (RDS) or ``inline`` routes, the HCM's
    ``max_stream_duration`` and its fault filter settings."""

    name: str
    rds_name: str = ""
    inline: RouteConfig | None = None
    max_stream_duration: float | None = None
    fault: FaultConfig | None = None


def listener_info(msg: listener_pb2.Listener) -> ListenerInfo:
    where = f"listener {msg.name!r}"
    if msg.HasField("api_listener"):
        hcm = unpack(msg.api_listener.api_listener, hcm_pb2.HttpConnectionManager, f"{where} api_listener")
    else:
        chains = ([msg.default_filter_chain] if msg.HasField("default_filter_chain") else []) + list(msg.filter_chains)
        hcm = None
        for chain in chains:
            for f in chain.filters:
                if f.HasField("typed_config") and type_name(f.typed_config.type_url) == HCM_TYPE:
                    hcm = unpack(f.typed_config, hcm_pb2.HttpConnectionManager, f"{where} filter {f.name!r}")
                    break
            if hcm is not None:
                break
        if hcm is None:
            raise ResourceError(f"{where}: neither an api_listener nor a filter chain with an HttpConnectionManager")
    fault = _filters(hcm, where)
    msd = None
    if hcm.common_http_protocol_options.HasField("max_stream_duration"):
        msd = seconds(hcm.common_http_protocol_options.max_stream_duration) or None
    spec = hcm.WhichOneof("route_specifier")
    if spec == "rds":
        source = hcm.rds.config_source
        if source.WhichOneof("config_source_specifier") != "ads":
            raise ResourceError(f"{where}: rds.config_source must be ads")
        if not hcm.rds.route_config_name:
            raise ResourceError(f"{where}: rds.route_config_name is empty")
        return ListenerInfo(msg.name, rds_name=hcm.rds.route_config_name, max_stream_duration=msd, fault=fault)
    if spec == "route_config":
        inline = route_config(hcm.route_config)
        return ListenerInfo(msg.name, inline=inline, max_stream_duration=msd, fault=fault)
    raise ResourceError(f"{where}: HttpConnectionManager needs rds or route_config (got {spec or 'none'})")


def _filters(hcm: hcm_pb2.HttpConnectionManager, where: str) -> FaultConfig | None:
    names: set[str] = set()
    fault = None
    filters = list(hcm.http_filters)
    for i, f in enumerate(filters):
        if f.name in names:
            raise ResourceError(f"{where}: http_filters has {f.name!r} twice")
        names.add(f.name)
        kind = type_name(f.typed_config.type_url) if f.HasField("typed_config") else ""
        last = i == len(filters) - 1
        if kind == ROUTER_TYPE:
            if not last:
                raise ResourceError(f"{where}: the router filter {f.name!r} must be the last http filter")
        elif last:
            raise ResourceError(f"{where}: the last http filter must be the router (got {f.name!r})")
        elif kind == FAULT_TYPE:
            cfg = fault_config(unpack(f.typed_config, fault_pb2.HTTPFault, f"{where} filter {f.name!r}"), where)
            fault = cfg if cfg.enabled else None
        elif not f.is_optional:
            raise ResourceError(f"{where}: http filter {f.name!r} ({kind or 'no typed_config'}) is not supported and not is_optional")
    if not filters:
        raise ResourceError(f"{where}: http_filters must end with the router")
    return fault
