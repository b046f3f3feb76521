"""xDS resources → meshlib's model: bootstrap, listeners, routes, clusters,
endpoints; every policy mapping; bad protos are errors, never crashes."""

from __future__ import annotations

import json

import pytest
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import ConfigError
from meshlib.resilience.budget import BudgetConfig
from meshlib.resilience.outlier import OutlierConfig
from meshlib.xds._proto import ResourceError
from meshlib.xds.bootstrap import load_bootstrap, parse_bootstrap
from meshlib.xds.clusters import PEAK_EWMA_TYPE, cluster_info
from meshlib.xds.listeners import listener_info
from meshlib.xds.resources import CDS, EDS, LDS, RDS, decode
from meshlib.xds.routes import route_config

from .xds_control_plane import api_listener, cluster, endpoints, hcm, header, pack, route, route_config as rc_proto, socket_listener

# -- bootstrap ------------------------------------------------------------------------


def test_bootstrap_sources_and_fields(tmp_path) -> None:
    doc = {
        "xds_servers": [
            {"server_uri": "127.0.0.1:1", "channel_creds": [{"type": "google_default"}, {"type": "insecure"}], "server_features": ["fail_on_data_errors"]},
            {"server_uri": "127.0.0.1:2", "channel_creds": [{"type": "insecure"}]},
        ],
        "node": {"id": "n1", "cluster": "c", "locality": {"zone": "z"}, "metadata": {"k": "v"}},
        "unknown_field": 1,
    }
    f = tmp_path / "b.json"
    f.write_text(json.dumps(doc))
    for env in ({"MESHLIB_XDS_BOOTSTRAP": str(f)}, {"GRPC_XDS_BOOTSTRAP": str(f)}, {"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(doc)},
                {"MESHLIB_XDS_BOOTSTRAP_CONFIG": json.dumps(doc), "GRPC_XDS_BOOTSTRAP": "/nonexistent"}):  # fmt: skip
        b = load_bootstrap(env)
        assert [s.server_uri for s in b.servers] == ["127.0.0.1:1", "127.0.0.1:2"]
        assert b.servers[0].fail_on_data_errors and not b.servers[1].fail_on_data_errors
        assert b.node.id == "n1" and b.node.zone == "z" and b.node.metadata["k"] == "v"


@pytest.mark.parametrize(
    "doc,field",
    [
        ({}, "xds_servers"),
        ({"xds_servers": []}, "xds_servers"),
        ({"xds_servers": [{"channel_creds": [{"type": "insecure"}]}]}, "xds_servers[0].server_uri"),
        ({"xds_servers": [{"server_uri": "a:1"}]}, "xds_servers[0].channel_creds"),
        ({"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "google_default"}]}]}, "xds_servers[0].channel_creds"),
        ({"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": "/no/such"}}]}]},
         "channel_creds.config.ca_certificate_file"),
        ({"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "insecure"}], "server_features": "x"}]}, "server_features"),
        ({"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "insecure"}]}], "node": {"id": 5}}, "node.id"),
    ],
)
def test_bad_bootstrap_names_the_field(doc, field) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(json.dumps(doc), "GRPC_XDS_BOOTSTRAP_CONFIG")
    assert field in str(info.value) and "GRPC_XDS_BOOTSTRAP_CONFIG" in str(info.value)


def test_missing_or_unreadable_bootstrap() -> None:
    with pytest.raises(ConfigError, match="MESHLIB_XDS_BOOTSTRAP"):
        load_bootstrap({})
    with pytest.raises(ConfigError, match="GRPC_XDS_BOOTSTRAP"):
        load_bootstrap({"GRPC_XDS_BOOTSTRAP": "/no/such/file"})
    with pytest.raises(ConfigError, match="JSON"):
        load_bootstrap({"GRPC_XDS_BOOTSTRAP_CONFIG": "{nope"})


# -- listeners and routes ---------------------------------------------------------------


def test_listener_shapes() -> None:
    assert listener_info(api_listener("inv", "inv-routes")).rds_name == "inv-routes"
    assert listener_info(socket_listener("inv", 1234, "inv-routes")).rds_name == "inv-routes"  # an Envoy sidecar's listener
    inline = listener_info(api_listener("inv", inline=rc_proto("r", ["*"], [route("/", "c1")])))
    assert inline.inline is not None and inline.inline.clusters == {"c1"}


def test_listener_filters_and_defaults() -> None:
    fault = fault_pb2.HTTPFault()
    fault.abort.http_status = 503
    fault.abort.percentage.numerator = 25
    h = hcm("r", filters=[hcm_pb2.HttpFilter(name="fault", typed_config=pack(fault))])
    h.common_http_protocol_options.max_stream_duration.FromSeconds(3)
    from envoy.config.listener.v3 import api_listener_pb2, listener_pb2

    info = listener_info(listener_pb2.Listener(name="l", api_listener=api_listener_pb2.ApiListener(api_listener=pack(h))))
    assert info.fault.abort_percent == 25 and info.fault.abort_status == 503 and info.max_stream_duration == 3
    unknown = hcm_pb2.HttpFilter(name="x", typed_config=pack(fault_pb2.FaultAbort()))
    for filters, ok in (([unknown], False), ([hcm_pb2.HttpFilter(name="x", typed_config=pack(fault_pb2.FaultAbort()), is_optional=True)], True)):
        h = hcm("r", filters=filters)
        lst = listener_pb2.Listener(name="l", api_listener=api_listener_pb2.ApiListener(api_listener=pack(h)))
        if ok:
            listener_info(lst)
        else:
            with pytest.raises(ResourceError, match="not supported and not is_optional"):
                listener_info(lst)


def test_route_translation() -> None:
    r1 = route("/", cluster="v2", headers=[header("x-model-version", "v2")])
    r2 = route(regex="/items/[0-9]+", cluster="items")
    r2.match.case_sensitive.value = False
    r2.route.retry_policy.retry_on = "5xx,unavailable,retriable-headers"
    r2.route.retry_policy.num_retries.value = 3
    r2.route.retry_policy.per_try_timeout.FromMilliseconds(250)
    r2.route.timeout.FromSeconds(2)
    r2.route.hash_policy.add().header.header_name = "x-user"
    mirror = r2.route.request_mirror_policies.add()
    mirror.cluster = "shadow"
    mirror.runtime_fraction.default_value.numerator = 10
    r3 = route("/", weighted=[("v1", 95), ("v2", 5)])
    r3.match.runtime_fraction.default_value.numerator = 50
    rc = route_config(rc_proto("rc", ["inventory"], [r1, r2, r3]))
    a, b, c = rc.virtual_hosts[0].routes
    assert a.headers[0].name == "x-model-version" and a.action.cluster == "v2"
    assert b.path.kind == "regex" and not b.path.case_sensitive
    assert b.action.retry.retry_on == {"5xx", "unavailable"} and b.action.retry.num_retries == 3  # unknown condition left out
    assert b.action.retry.per_try_timeout == 0.25 and b.action.timeout == 2
    assert b.action.hash_policies[0].name == "x-user" and b.action.mirrors[0].fraction == 0.1
    assert c.action.weighted == (("v1", 95), ("v2", 5)) and c.fraction == 0.5
    assert rc.clusters == {"v1", "v2", "items", "shadow"}


def test_header_match_kinds() -> None:
    hm = route_components_pb2.HeaderMatcher
    cases = [
        (hm(name="a", exact_match="x"), {"a": "x"}, True),
        (hm(name="a", prefix_match="x"), {"a": "xy"}, True),
        (hm(name="a", suffix_match="y"), {"a": "xy"}, True),
        (hm(name="a", contains_match="b"), {"a": "abc"}, True),
        (hm(name="a", present_match=True), {}, False),
        (hm(name="a", present_match=True, invert_match=True), {}, True),
    ]
    rng = hm(name="a")
    rng.range_match.start, rng.range_match.end = 1, 5
    cases.append((rng, {"a": "3"}, True))
    rx = hm(name="a")
    rx.safe_regex_match.regex = "v[0-9]"
    cases.append((rx, {"a": "v1"}, True))
    sm = hm(name="a")
    sm.string_match.exact = "X"
    sm.string_match.ignore_case = True
    cases.append((sm, {"a": "x"}, True))
    for proto, headers, expected in cases:
        rc = route_config(rc_proto("rc", ["*"], [route("/", "c", headers=[proto])]))
        assert rc.virtual_hosts[0].routes[0].headers[0].matches(headers) is expected, proto


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda r: r.match.ClearField("prefix"), "prefix, path or safe_regex"),
        (lambda r: setattr(r.match.safe_regex, "regex", "("), "regular expression"),
        (lambda r: [c.weight.__setattr__("value", 0) for c in r.route.weighted_clusters.clusters], "sum to more than 0"),
    ],
)
def test_invalid_routes_are_nacked(mutate, reason) -> None:
    r = route("/", weighted=[("a", 1), ("b", 2)]) if "sum" in reason else route("/", "c")
    mutate(r)
    with pytest.raises(ResourceError, match=reason):
        route_config(rc_proto("rc", ["*"], [r]))


def test_unsupported_cluster_specifier_skips_the_route() -> None:
    r = route("/", "c")
    r.route.cluster_header = "x-cluster"
    rc = route_config(rc_proto("rc", ["*"], [r, route("/", "d")]))
    assert [x.action.cluster for x in rc.virtual_hosts[0].routes] == ["d"]


# -- clusters ---------------------------------------------------------------------------

C = cluster_pb2.Cluster


@pytest.mark.parametrize(
    "lb,expected",
    [(C.ROUND_ROBIN, "weighted_round_robin"), (C.RANDOM, "random"), (C.LEAST_REQUEST, "least_request"), (C.RING_HASH, "ring_hash"), (C.MAGLEV, "maglev")],
)
def test_lb_policy_names(lb, expected) -> None:
    assert cluster_info(cluster("c", lb)).settings["lb_policy"] == expected


def test_typed_load_balancing_policy_first_supported_wins() -> None:
    from xds.type.v3 import typed_struct_pb2

    c = cluster("c")
    pols = c.load_balancing_policy.policies
    pols.add().typed_extension_config.typed_config.CopyFrom(pack(typed_struct_pb2.TypedStruct(type_url="example.com/unknown")))
    lr = least_request_pb2.LeastRequest()
    lr.choice_count.value = 4
    wrr = wrr_locality_pb2.WrrLocality()
    wrr.endpoint_picking_policy.policies.add().typed_extension_config.typed_config.CopyFrom(pack(lr))
    pols.add().typed_extension_config.typed_config.CopyFrom(pack(wrr))
    s = cluster_info(c).settings
    assert s["lb_policy"] == "least_request" and s["choice_count"] == 4
    c = cluster("c")
    c.load_balancing_policy.policies.add().typed_extension_config.typed_config.CopyFrom(pack(typed_struct_pb2.TypedStruct(type_url=f"type.example/{PEAK_EWMA_TYPE}")))
    assert cluster_info(c).settings["lb_policy"] == "peak_ewma"
    c = cluster("c")
    c.load_balancing_policy.policies.add().typed_extension_config.typed_config.CopyFrom(pack(typed_struct_pb2.TypedStruct(type_url="x/y")))
    with pytest.raises(ResourceError, match="no supported policy"):
        cluster_info(c)
    rh = ring_hash_pb2.RingHash()
    rh.maximum_ring_size.value = 9_000_000
    c = cluster("c")
    c.load_balancing_policy.policies.add().typed_extension_config.typed_config.CopyFrom(pack(rh))
    with pytest.raises(ResourceError, match="ring sizes"):
        cluster_info(c)


def test_thresholds_budget_outlier_panic() -> None:
    c = cluster("c")
    t = c.circuit_breakers.thresholds.add()
    t.priority = base_pb2.HIGH
    t.max_requests.value = 1
    t = c.circuit_breakers.thresholds.add()
    t.max_connections.value, t.max_pending_requests.value, t.max_requests.value, t.max_retries.value = 10, 20, 30, 4
    t.retry_budget.budget_percent.value = 25
    od = outlier_detection_pb2.OutlierDetection()
    od.consecutive_5xx.value = 3
    od.interval.FromSeconds(2)
    od.enforcing_success_rate.value = 0
    od.failure_percentage_threshold.value = 60
    od.split_external_local_origin_errors = True
    c.outlier_detection.CopyFrom(od)
    c.common_lb_config.healthy_panic_threshold.value = 30
    s = cluster_info(c).settings
    assert (s["max_connections"], s["max_pending_requests"], s["max_requests"], s["max_retries"]) == (10, 20, 30, 4)
    assert s["retry_budget"] == BudgetConfig(kind="concurrency", budget_percent=25.0, min_retry_concurrency=3)
    assert s["outlier"] == OutlierConfig(consecutive_5xx=3, interval=2.0, enforcing_success_rate=0, failure_percentage_threshold=60,
                                         split_external_local_origin_errors=True)  # fmt: skip
    assert s["outlier_detection"] and s["panic_threshold"] == 30
    assert cluster_info(cluster("d")).settings["outlier_detection"] is False  # no outlier_detection: off, as Envoy


def test_static_cluster_and_unsupported_types() -> None:
    c = C(name="s", type=C.STATIC)
    c.load_assignment.CopyFrom(endpoints("s", ["127.0.0.1:1", "127.0.0.1:2"]))
    assert [e.port for e in cluster_info(c).load_assignment.endpoints] == [1, 2]
    with pytest.raises(ResourceError, match="load_assignment"):
        cluster_info(C(name="s", type=C.STATIC))
    with pytest.raises(ResourceError, match="ORIGINAL_DST"):
        cluster_info(C(name="o", type=C.ORIGINAL_DST))


# -- endpoints --------------------------------------------------------------------------


def test_endpoints_localities_health_and_policy() -> None:
    from meshlib.xds.endpoints import assignment

    cla = endpoints("c", [("127.0.0.1:1", 3), "127.0.0.1:2"], zone="a")
    loc = cla.endpoints.add()
    loc.locality.region, loc.locality.zone = "r", "b"
    loc.priority = 1
    loc.load_balancing_weight.value = 2
    for port, health in ((3, health_check_pb2.UNHEALTHY), (4, health_check_pb2.DEGRADED)):
        lb = loc.lb_endpoints.add()
        lb.endpoint.address.socket_address.address = "127.0.0.1"
        lb.endpoint.address.socket_address.port_value = port
        lb.health_status = health
    cla.policy.overprovisioning_factor.value = 200
    drop = cla.policy.drop_overloads.add()
    drop.category = "lb"
    drop.drop_percentage.numerator = 5
    a = assignment(cla, "eds")
    assert [(e.port, e.weight, e.zone, e.priority, e.healthy) for e in a.endpoints] == [
        (1, 3, "/a", 0, True), (2, 1, "/a", 0, True), (3, 1, "r/b", 1, False), (4, 1, "r/b", 1, True)
    ]  # fmt: skip
    assert a.overprovisioning_factor == 2.0 and a.drops == (("lb", 0.05),) and a.locality_weights == {"/a": 1, "r/b": 2}


@pytest.mark.parametrize("problem", ["gap", "duplicate address", "duplicate locality"])
def test_invalid_endpoints(problem) -> None:
    from meshlib.xds.endpoints import assignment

    cla = endpoints("c", ["127.0.0.1:1"])
    if problem == "gap":
        cla.endpoints[0].priority = 1
    elif problem == "duplicate address":
        cla.endpoints.add().CopyFrom(endpoints("c", ["127.0.0.1:1"], zone="z").endpoints[0])
    else:
        cla.endpoints.add().CopyFrom(endpoints("c", ["127.0.0.1:2"]).endpoints[0])
    with pytest.raises(ResourceError):
        assignment(cla, "eds")


_EP = st.tuples(st.integers(1, 12), st.sampled_from([0, 1, 3]), st.sampled_from([0, health_check_pb2.UNHEALTHY]), st.sampled_from(["", "h1"]))
_LOCALITIES = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.lists(_EP, max_size=6)), min_size=1, max_size=2)


def _cla(localities) -> object:
    from envoy.config.endpoint.v3 import endpoint_pb2

    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    used: set[int] = set()
    for prio, (zone, eps) in enumerate(localities):
        loc = cla.endpoints.add()
        loc.locality.zone, loc.priority = zone, prio
        for port, weight, health, hostname in eps:
            if port in used:
                continue
            used.add(port)
            lb = loc.lb_endpoints.add()
            lb.endpoint.address.socket_address.address = "127.0.0.1"
            lb.endpoint.address.socket_address.port_value = port
            lb.endpoint.hostname = hostname
            lb.health_status = health
            if weight:
                lb.load_balancing_weight.value = weight
    return cla


@settings(max_examples=300, deadline=None)
@given(_LOCALITIES, _LOCALITIES)
def test_an_update_reuses_exactly_the_unchanged_endpoints(before, after) -> None:
    """An update translated against the cached assignment gives what a fresh
    translation gives; no changed endpoint is the cached object, and the
    unchanged ones in place are (fewer objects; the cluster keeps Hosts by
    address anyway)."""
    from meshlib.xds.endpoints import assignment

    old = assignment(_cla(before), "eds")
    fresh = assignment(_cla(after), "eds")
    update = assignment(_cla(after), "eds", old)
    assert update.endpoints == fresh.endpoints and update.locality_weights == fresh.locality_weights
    assert [(x.data, x.ends, x.eps) for x in update.localities] == [(x.data, x.ends, x.eps) for x in fresh.localities]
    by_address = {e.address: e for e in old.endpoints}
    for ep in update.endpoints:
        cached = by_address.get(ep.address)
        assert ep is not cached or cached == ep, ep  # a changed endpoint is never the cached one
    if len(update.endpoints) == len(old.endpoints) and all(a == b for a, b in zip(update.endpoints, old.endpoints)):
        assert all(a is b for a, b in zip(update.endpoints, old.endpoints))  # equal, in place: all reused


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _fields_of(msg, rng) -> bytes:
    """``msg`` serialised one field (one repeated element) at a time, in a
    shuffled field order (repeated elements keep theirs): valid protobuf that
    no serialiser writes, which the EDS walker must read as the parser does."""
    parts = []
    for fd, value in msg.ListFields():
        if fd.is_repeated:
            chunk = b""
            for v in value:
                one = type(msg)()
                getattr(one, fd.name).add().CopyFrom(v)
                chunk += one.SerializeToString()
            parts.append(chunk)
        else:
            one = type(msg)()
            if fd.message_type is not None:
                getattr(one, fd.name).CopyFrom(value)
            else:
                setattr(one, fd.name, value)
            parts.append(one.SerializeToString())
    rng.shuffle(parts)
    return b"".join(parts)


def _expected(cla) -> list[tuple]:
    return [(lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value,
             lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1,
             "/".join(x for x in (l.locality.region, l.locality.zone, l.locality.sub_zone)).rstrip("/"), l.priority,
             lb.health_status not in (health_check_pb2.UNHEALTHY, health_check_pb2.DRAINING, health_check_pb2.TIMEOUT), lb.endpoint.hostname)
            for l in cla.endpoints for lb in l.lb_endpoints]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(_LOCALITIES, _LOCALITIES, st.randoms(use_true_random=False), st.booleans())
def test_eds_read_from_bytes_in_any_field_order_matches_the_parser(before, after, rng, junk) -> None:
    """EDS is read from its bytes; whatever the field order (localities and
    their fields shuffled, unknown fields added), it gives what the protobuf
    parser reads, fresh and as an update of a cached assignment."""
    from envoy.config.endpoint.v3 import endpoint_pb2
    from meshlib.xds.endpoints import split_assignment, translate

    def encode(localities) -> bytes:
        cla = _cla(localities)
        cla.policy.overprovisioning_factor.value = 150
        locs = []
        for lle in cla.endpoints:
            body = _fields_of(lle, rng) + (b"\xf8\x06\x01" if junk else b"")  # field 111, a varint: unknown
            locs.append(b"\x12" + _varint(len(body)) + body)
        head = [endpoint_pb2.ClusterLoadAssignment(cluster_name="c").SerializeToString(), endpoint_pb2.ClusterLoadAssignment(policy=cla.policy).SerializeToString()]
        rng.shuffle(head)
        return head[0] + b"".join(locs) + head[1]

    old_bytes, new_bytes = encode(before), encode(after)
    reference = endpoint_pb2.ClusterLoadAssignment.FromString(new_bytes)
    try:
        old = translate(*split_assignment(old_bytes), "eds")
        fresh = translate(*split_assignment(new_bytes), "eds")
    except ResourceError as exc:  # e.g. a priority gap: the parser's reading must show it too
        assert "gap" in str(exc) or "twice" in str(exc)
        return
    update = translate(*split_assignment(new_bytes), "eds", old)
    for a in (fresh, update):
        assert [(e.host, e.port, e.weight, e.zone, e.priority, e.healthy, e.metadata.get("hostname", "")) for e in a.endpoints] == _expected(reference)
        assert a.overprovisioning_factor == 1.5


def test_eds_with_framing_the_walker_leaves_to_the_parser() -> None:
    """An unknown field encoded as a group (valid, but no walker shortcut) and
    a truncated one: the first is read by the protobuf parser, the second NACKed."""
    group = b"\xa3\x06\xa4\x06"  # field 100: start group, end group
    cla = endpoints("c", ["127.0.0.1:1", "127.0.0.1:2"])
    loc = cla.endpoints[0].SerializeToString() + group
    raw = cla.SerializeToString().split(b"\x12", 1)[0] + b"\x12" + _varint(len(loc)) + loc + group
    name, a, _ = decode(EDS, any_pb2.Any(type_url=EDS, value=raw))
    assert name == "c" and [e.port for e in a.endpoints] == [1, 2]
    name, b, _ = decode(EDS, any_pb2.Any(type_url=EDS, value=raw), lambda n: a)
    assert b.endpoints == a.endpoints
    with pytest.raises(ResourceError):
        decode(EDS, any_pb2.Any(type_url=EDS, value=raw[:-6]))


def test_an_endpoint_listed_twice_is_refused_also_in_an_update() -> None:
    from meshlib.xds.endpoints import assignment

    old = assignment(endpoints("c", ["127.0.0.1:1", "127.0.0.1:2"]), "eds")
    with pytest.raises(ResourceError, match="127.0.0.1:2 appears twice"):
        assignment(endpoints("c", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:2"]), "eds", old)


# -- bad protos -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([LDS, RDS, CDS, EDS]), st.sampled_from([LDS, RDS, CDS, EDS, "type.googleapis.com/google.protobuf.Empty", ""]), st.binary(max_size=200))
def test_garbage_any_is_an_error_not_a_crash(type_url, any_type, payload) -> None:
    try:
        decode(type_url, any_pb2.Any(type_url=any_type, value=payload))
    except ResourceError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_mutated_valid_resources_never_crash(noise) -> None:
    base = [pack(api_listener("l", "r")), pack(cluster("c")), pack(endpoints("c", ["127.0.0.1:1"])), pack(rc_proto("r", ["*"], [route("/", "c")]))]
    for good, t in zip(base, (LDS, CDS, EDS, RDS)):
        raw = bytearray(good.value)
        for i, b in enumerate(noise):
            if raw:
                raw[(i * 7919 + b) % len(raw)] ^= b
        try:
            decode(t, any_pb2.Any(type_url=t, value=bytes(raw)))
        except ResourceError:
            pass
