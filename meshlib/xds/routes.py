"""RouteConfiguration (RDS) → :class:`meshlib.routing.RouteConfig` (gRFC A28, A31, A33, A44).

Unsupported fields of a supported message are ignored; an unsupported value
(no or deprecated path specifier, a bad regex, weights not summing to
total_weight) raises ``ResourceError``: the resource is NACKed. A route whose
action is not ``route`` or whose cluster specifier is not ``cluster`` /
``weighted_clusters`` is skipped, as gRPC does.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from ..errors import ConfigError
from ..resilience.backoff import Backoff
from ..resilience.fault import FaultConfig
from ..resilience.retry import RetryPolicy, parse_retry_on
from ..routing import HashPolicy, HeaderMatcher, MirrorPolicy, PathMatcher, Route, RouteAction, RouteConfig, VirtualHost
from ._proto import ResourceError, fraction, seconds, type_name, unpack

__all__ = ["route_config", "fault_config", "FAULT_TYPE"]

log = logging.getLogger("meshlib.xds")
_GRPC_CODES = {code.value[0]: code.name for code in grpc.StatusCode}
_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
FAULT_TYPE = fault_pb2.HTTPFault.DESCRIPTOR.full_name


def route_config(msg: route_pb2.RouteConfiguration) -> RouteConfig:
    """Translate one RouteConfiguration."""
    vhosts = []
    for i, vh in enumerate(msg.virtual_hosts):
        where = f"virtual_hosts[{i}] {vh.name!r}"
        try:
            routes = tuple(r for j, route in enumerate(vh.routes) if (r := _route(route, f"{where} routes[{j}]")))
            vhosts.append(
                VirtualHost(
                    vh.name or f"vh{i}",
                    tuple(vh.domains),
                    routes,
                    retry=_retry(vh.retry_policy, where) if vh.HasField("retry_policy") else None,
                )
            )
        except ConfigError as exc:
            raise ResourceError(f"{where}: {exc}") from None
    return RouteConfig(msg.name, tuple(vhosts))


def _route(route: rc.Route, where: str) -> Route | None:
    m = route.match
    spec = m.WhichOneof("path_specifier")
    if spec not in ("prefix", "path", "safe_regex"):
        raise ResourceError(f"{where}: match needs prefix, path or safe_regex (got {spec or 'none'})")
    value = m.safe_regex.regex if spec == "safe_regex" else getattr(m, spec)
    case_sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True
    try:
        path = PathMatcher("regex" if spec == "safe_regex" else spec, value, case_sensitive)
        headers = tuple(_header(h, where) for h in m.headers)
    except ConfigError as exc:
        raise ResourceError(f"{where}: {exc}") from None
    frac = fraction(m.runtime_fraction.default_value) if m.HasField("runtime_fraction") else 1.0
    if route.WhichOneof("action") != "route":
        log.debug("meshlib: xds: %s has action %s; skipped", where, route.WhichOneof("action"))
        return None
    action = _action(route.route, where)
    if action is None:
        return None
    fault = _fault_override(route.typed_per_filter_config, where)
    if fault is not None:
        action = RouteAction(**{**_fields(action), "fault": fault})
    return Route(path=path, action=action, headers=headers, fraction=frac, name=route.name, query_never_matches=len(m.query_parameters) > 0)


def _fields(action: RouteAction) -> dict[str, Any]:
    return {f: getattr(action, f) for f in action.__dataclass_fields__}


def _header(h: rc.HeaderMatcher, where: str) -> HeaderMatcher:
    kind = h.WhichOneof("header_match_specifier")
    name, invert = h.name, h.invert_match
    if kind in ("exact_match", "prefix_match", "suffix_match", "contains_match"):
        return HeaderMatcher(name, kind.partition("_")[0], getattr(h, kind), invert=invert)
    if kind == "safe_regex_match":
        return HeaderMatcher(name, "regex", h.safe_regex_match.regex, invert=invert)
    if kind == "present_match":
        return HeaderMatcher(name, "present", present=h.present_match, invert=invert)
    if kind == "range_match":
        return HeaderMatcher(name, "range", range_start=h.range_match.start, range_end=h.range_match.end, invert=invert)
    if kind == "string_match":
        sm = h.string_match
        sk = sm.WhichOneof("match_pattern")
        if sk not in ("exact", "prefix", "suffix", "contains", "safe_regex"):
            raise ResourceError(f"{where}: header {name!r} string_match needs a pattern")
        value = sm.safe_regex.regex if sk == "safe_regex" else getattr(sm, sk)
        return HeaderMatcher(name, "regex" if sk == "safe_regex" else sk, value, invert=invert, ignore_case=sm.ignore_case)
    raise ResourceError(f"{where}: header {name!r} has no supported match ({kind or 'none'})")


def _action(ra: rc.RouteAction, where: str) -> RouteAction | None:
    spec = ra.WhichOneof("cluster_specifier")
    fields: dict[str, Any] = {}
    if spec == "cluster":
        if not ra.cluster:
            raise ResourceError(f"{where}: route.cluster is empty")
        fields["cluster"] = ra.cluster
    elif spec == "weighted_clusters":
        wc = ra.weighted_clusters
        pairs = tuple((c.name, c.weight.value) for c in wc.clusters)
        total = sum(w for _, w in pairs)
        if not pairs or total <= 0:
            raise ResourceError(f"{where}: weighted_clusters need clusters whose weights sum to more than 0")
        # total_weight is deprecated: Envoy and grpcio split by the weights whatever it says (checked in tests).
        if any(not n for n, _ in pairs):
            raise ResourceError(f"{where}: a weighted cluster has no name")
        fields["weighted"] = pairs
    else:
        log.debug("meshlib: xds: %s has cluster specifier %s; route skipped", where, spec)
        return None
    if ra.HasField("retry_policy"):
        fields["retry"] = _retry(ra.retry_policy, where)
    if ra.HasField("timeout"):
        fields["timeout"] = seconds(ra.timeout)
    msd = ra.max_stream_duration
    if msd.HasField("grpc_timeout_header_max"):
        fields["max_stream_duration"] = seconds(msd.grpc_timeout_header_max)
    elif msd.HasField("max_stream_duration"):
        fields["max_stream_duration"] = seconds(msd.max_stream_duration)
    policies = []
    for hp in ra.hash_policy:
        kind = hp.WhichOneof("policy_specifier")
        if kind == "header":
            policies.append(HashPolicy("header", hp.header.header_name, hp.terminal))
        elif kind == "query_parameter":
            policies.append(HashPolicy("query_parameter", hp.query_parameter.name, hp.terminal))
        # cookie, connection_properties, filter_state: no client-side meaning; ignored (gRFC A42).
    fields["hash_policies"] = tuple(policies)
    mirrors = []
    for mp in ra.request_mirror_policies:
        frac = fraction(mp.runtime_fraction.default_value) if mp.HasField("runtime_fraction") else 1.0
        if not mp.cluster:
            raise ResourceError(f"{where}: request_mirror_policies needs a cluster")
        mirrors.append(MirrorPolicy(mp.cluster, frac))
    fields["mirrors"] = tuple(mirrors)
    try:
        return RouteAction(**fields)
    except ConfigError as exc:
        raise ResourceError(f"{where}: {exc}") from None


def _retry(rp: rc.RetryPolicy, where: str) -> RetryPolicy | None:
    """Envoy's retry policy; conditions meshlib does not know are left out (as
    gRPC drops the non-gRPC ones, gRFC A44); none left means no retries."""
    conditions = set()
    for token in rp.retry_on.split(","):
        try:
            conditions |= parse_retry_on(token, "retry_on")
        except ConfigError:
            log.debug("meshlib: xds: %s: retry_on %r not supported; ignored", where, token)
    num = rp.num_retries.value if rp.HasField("num_retries") else 1
    if not conditions:
        return RetryPolicy(num_retries=0)
    try:
        backoff = Backoff()
        if rp.HasField("retry_back_off"):
            base = max(0.001, seconds(rp.retry_back_off.base_interval)) if rp.retry_back_off.HasField("base_interval") else 0.025
            cap = seconds(rp.retry_back_off.max_interval) if rp.retry_back_off.HasField("max_interval") else None
            backoff = Backoff(base, max(cap, base) if cap is not None else None)
        per_try = seconds(rp.per_try_timeout) if rp.HasField("per_try_timeout") else None
        return RetryPolicy(
            retry_on=frozenset(conditions), num_retries=num, per_try_timeout=per_try or None, backoff=backoff,
            retriable_status_codes=frozenset(rp.retriable_status_codes),
        )  # fmt: skip
    except ConfigError as exc:
        raise ResourceError(f"{where}: retry_policy: {exc}") from None


def fault_config(msg: fault_pb2.HTTPFault, where: str) -> FaultConfig:
    """The fault filter's HTTPFault as meshlib's FaultConfig (fixed delays and
    fixed aborts; header-controlled ones keep their configured percentage)."""
    fields: dict[str, Any] = {}
    if msg.HasField("delay"):
        d = msg.delay
        if d.WhichOneof("fault_delay_secifier") == "fixed_delay":
            fields["delay"] = seconds(d.fixed_delay)
        fields["delay_percent"] = fraction(d.percentage) * 100
    if msg.HasField("abort"):
        a = msg.abort
        kind = a.WhichOneof("error_type")
        if kind == "http_status":
            if not 200 <= a.http_status < 600:
                raise ResourceError(f"{where}: abort.http_status {a.http_status} is not 200..599")
            fields["abort_status"] = a.http_status
        elif kind == "grpc_status":
            name = _GRPC_CODES.get(a.grpc_status)
            if name is None:
                raise ResourceError(f"{where}: abort.grpc_status {a.grpc_status} is not a gRPC status code")
            fields["abort_grpc_status"] = name
        fields["abort_percent"] = fraction(a.percentage) * 100
    try:
        return FaultConfig(**fields)
    except ConfigError as exc:
        raise ResourceError(f"{where}: {exc}") from None


def _fault_override(per_filter: Any, where: str) -> FaultConfig | None:
    """A route's fault filter override: an HTTPFault in ``typed_per_filter_config``
    (bare or in a FilterConfig). Recognised by its type: an RDS resource does not
    know its listener's filter names."""
    for name in sorted(per_filter):
        cfg = per_filter[name]
        if type_name(cfg.type_url) == _FILTER_CONFIG:
            cfg = unpack(cfg, rc.FilterConfig, f"{where} typed_per_filter_config[{name}]").config
        if type_name(cfg.type_url) == FAULT_TYPE:
            return fault_config(unpack(cfg, fault_pb2.HTTPFault, f"{where} typed_per_filter_config[{name}]"), where)
    return None
