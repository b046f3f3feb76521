"""Trace propagation without OpenTelemetry's context (``tracing=native``):
W3C traceparent/tracestate/baggage and B3, exactly, through every HTTP client."""

from __future__ import annotations

import asyncio
import string

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshlib
from meshlib.telemetry import carriers
from meshlib.telemetry.b3 import parse_b3_multi, parse_b3_single
from meshlib.telemetry.propagation import Propagation, current_native
from meshlib.telemetry.server import asgi_middleware, wsgi_middleware
from meshlib.telemetry.w3c import (
    SpanContext,
    format_baggage,
    format_traceparent,
    format_tracestate,
    parse_baggage,
    parse_traceparent,
    parse_tracestate,
)
from tests.conftest import endpoints_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    "value, expected",
    [
        (VALID, (TRACE, SPAN, 1)),
        (f"00-{TRACE}-{SPAN}-00", (TRACE, SPAN, 0)),
        (f"cc-{TRACE}-{SPAN}-01-what-the-future-holds", (TRACE, SPAN, 1)),  # higher version: first four fields
        (f"cc-{TRACE}-{SPAN}-01", (TRACE, SPAN, 1)),
        (f"ff-{TRACE}-{SPAN}-01", None),  # version ff is invalid
        (f"00-{'0' * 32}-{SPAN}-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00-{TRACE.upper()}-{SPAN}-01", None),  # upper-case hex
        (f"00-{TRACE}-{SPAN}-01-extra", None),  # version 00 has exactly four fields
        (f"cc-{TRACE}-{SPAN}-01x", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_traceparent_parsing_follows_the_w3c_rules(value, expected):
    assert parse_traceparent(value) == expected


@given(st.text(max_size=80))
def test_traceparent_parsing_never_raises(text):
    result = parse_traceparent(text)
    if result is not None:
        assert len(result[0]) == 32 and len(result[1]) == 16


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.integers(0, 255))
def test_traceparent_round_trips(trace, span, flags):
    t, s = trace.hex(), span.hex()
    parsed = parse_traceparent(format_traceparent(t, s, flags))
    if set(t) == {"0"} or set(s) == {"0"}:
        assert parsed is None
    else:
        assert parsed == (t, s, flags)


def test_tracestate_keeps_32_members_and_drops_invalid_ones_only():
    members = ",".join(f"k{i}=v{i}" for i in range(40))
    parsed = parse_tracestate(members)
    assert len(parsed) == 32 and parsed[0] == ("k0", "v0") and parsed[-1] == ("k31", "v31")
    assert parse_tracestate("a=1,BAD=2,b=x=y,c=3, tenant@vendor=4 ") == (("a", "1"), ("c", "3"), ("tenant@vendor", "4"))
    assert parse_tracestate(["a=1", "b=2"]) == (("a", "1"), ("b", "2"))  # several headers combine as a list


def test_tracestate_keeps_512_characters_dropping_long_entries_first():
    long_entry = ("big", "x" * 200)
    small = [(f"k{i}", "v" * 20) for i in range(30)]
    text = format_tracestate([long_entry] + small)
    assert "big=" not in text  # entries over 128 characters go first
    assert len(text) <= 512
    assert text.startswith("k0=")
    # Under 512 characters everything is kept, whatever the sizes.
    kept = format_tracestate([("a", "y" * 250), ("b", "z" * 200)])
    assert kept == "a=" + "y" * 250 + ",b=" + "z" * 200


def test_baggage_limits_and_percent_encoding():
    many = ",".join(f"k{i}=v{i}" for i in range(70))
    assert len(parse_baggage(many)) == 64
    big = ",".join(f"k{i}=" + "v" * 1000 for i in range(10))
    parsed = parse_baggage(big)
    assert sum(len(k) + len(v) + 2 for k, v in parsed) <= 8192 and len(parsed) == 8
    assert parse_baggage("user=J%C3%B6rg;prop=1, bad key=x, ok=%ZZ") == (("user", "Jörg;prop=1"), ("ok", "%ZZ"))
    assert format_baggage([("k", "a b,c%;p")]) == "k=a%20b%2Cc%25;p"


@given(st.lists(st.tuples(st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=8), st.text(max_size=20).filter(lambda v: ";" not in v)), max_size=10))
def test_baggage_round_trips_any_value(members):
    assert parse_baggage(format_baggage(members)) == tuple(members)


def test_b3_single_wins_and_pads_short_trace_ids():
    assert parse_b3_single(f"{TRACE}-{SPAN}-1") == (TRACE, SPAN, 1)
    assert parse_b3_single(f"a3ce929d0e0e4736-{SPAN}-d") == ("0" * 16 + "a3ce929d0e0e4736", SPAN, 1)
    assert parse_b3_single(f"{TRACE}-{SPAN}-0-{SPAN}") == (TRACE, SPAN, 0)
    assert parse_b3_single("0") is None and parse_b3_single(f"{TRACE}-{SPAN}-x") is None
    assert parse_b3_multi(TRACE, SPAN, "1", None) == (TRACE, SPAN, 1)
    assert parse_b3_multi(TRACE, SPAN, "true", None) == (TRACE, SPAN, 1)
    assert parse_b3_multi(TRACE, "zz", "1", None) is None
    other = "1" * 32
    carrier = {"b3": f"{TRACE}-{SPAN}-1", "X-B3-TraceId": other, "X-B3-SpanId": SPAN}
    assert Propagation(["b3", "b3multi"], mode="native").read(carrier).trace_id == TRACE


@pytest.mark.parametrize("names", [["tracecontext", "baggage"], ["b3"], ["b3multi"]])
def test_every_format_round_trips_through_a_carrier(names):
    prop = Propagation(names, mode="native")
    ctx = SpanContext(TRACE, SPAN, 1, (("vendor", "x"),), (("user", "42"),))
    carrier: dict[str, str] = {}
    prop.write(carrier, ctx)
    back = prop.read(carrier)
    assert (back.trace_id, back.span_id, back.sampled) == (TRACE, SPAN, True)
    metadata: list[tuple[str, str]] = [("traceparent", "stale")]
    prop.write(metadata, ctx)
    assert all(k == k.lower() for k, _ in metadata) and len([k for k, _ in metadata if k == "traceparent"]) <= 1
    assert prop.read(metadata).trace_id == TRACE


def test_an_invalid_traceparent_means_its_tracestate_is_not_read():
    prop = Propagation(mode="native")
    assert prop.read({"traceparent": "00-xyz", "tracestate": "a=1"}) is None
    assert prop.read({"traceparent": [VALID, VALID]} if False else {"traceparent": VALID, "tracestate": "a=1,b"}).tracestate == (("a", "1"),)


@pytest.fixture
def native_mesh(agents):
    made = []

    def make(**extra):
        upstream = agents(2)
        cfg = {"tracing": "native", "services": {"inventory": {"endpoints": endpoints_of(upstream), "lb_policy": "round_robin"}}, **extra}
        mesh = meshlib.Mesh(config=cfg)
        made.append(mesh)
        return mesh, upstream

    yield make
    for m in made:
        m.close()


def _seen(upstream):
    return [h for a in upstream for h in a.behaviour.seen]


def test_every_http_client_sends_the_callers_trace_with_a_new_parent_id(native_mesh):
    mesh, upstream = native_mesh()
    incoming = {"traceparent": VALID, "tracestate": "vendor=abc", "baggage": "user=42"}
    with meshlib.incoming(incoming):
        assert current_native().trace_id == TRACE
        mesh.requests_session().get("http://inventory/a")
        mesh.urllib3_pool().request("GET", "http://inventory/b")
        with mesh.httpx_client() as client:
            client.get("http://inventory/c")

        async def aio():
            async with mesh.httpx_async_client() as client:
                await client.get("http://inventory/d")

        asyncio.run(aio())

        @mesh.call("inventory")
        def by_hand(ep):
            headers = meshlib.inject({})
            return httpx.get(f"http://{ep.address}/e", headers=headers)

        by_hand()
    seen = _seen(upstream)
    assert len(seen) == 5
    parents = set()
    for headers in seen:
        trace, parent, flags = parse_traceparent(headers["traceparent"])
        assert trace == TRACE and parent != SPAN and flags == 1
        assert headers["tracestate"] == "vendor=abc" and headers["baggage"] == "user=42"
        parents.add(parent)
    assert len(parents) == 5  # each attempt its own parent-id


def test_without_a_caller_trace_each_call_starts_one_and_retries_keep_it(native_mesh, refused_port, agents):
    mesh, upstream = native_mesh()
    mesh.requests_session().get("http://inventory/")
    mesh.requests_session().get("http://inventory/")
    first, second = (parse_traceparent(h["traceparent"]) for h in _seen(upstream))
    assert first[0] != second[0]  # two calls, two traces
    ok = agents(1)[0]
    ok.behaviour.script = [503]
    with meshlib.Mesh(config={"tracing": "native", "services": {"flaky": {"endpoints": ok.address, "retry_on": "5xx", "num_retries": 2, "retry_backoff_base": "1ms"}}}) as m2:
        assert m2.requests_session().get("http://flaky/").status_code == 200
    a, b = (parse_traceparent(h["traceparent"]) for h in ok.behaviour.seen)
    assert a[0] == b[0] and a[1] != b[1]  # one trace, one parent-id per attempt


def test_b3_multi_headers_when_configured(native_mesh):
    mesh, upstream = native_mesh(propagators="b3multi")
    with meshlib.incoming({"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "0"}):
        mesh.requests_session().get("http://inventory/")
    headers = _seen(upstream)[0]
    assert "traceparent" not in headers
    assert headers["x-b3-traceid"] == TRACE and headers["x-b3-spanid"] != SPAN and headers["x-b3-sampled"] == "0"


def test_a_traceparent_set_by_hand_is_the_parent(native_mesh):
    mesh, upstream = native_mesh()
    mesh.requests_session().get("http://inventory/", headers={"traceparent": VALID})
    trace, parent, _ = parse_traceparent(_seen(upstream)[0]["traceparent"])
    assert trace == TRACE and parent != SPAN


def test_incoming_takes_the_trace_and_the_deadline_in_one_call():
    environ = {"REQUEST_METHOD": "GET", "HTTP_TRACEPARENT": VALID, "HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS": "1500"}
    meshlib.Mesh(config={"tracing": "native"}).close()
    with meshlib.incoming(environ):
        left = meshlib.remaining()
        assert current_native().trace_id == TRACE
        assert 1.0 < left <= 1.5
    assert meshlib.remaining() is None and current_native() is None

    seen = {}

    def app(environ, start_response):
        seen["trace"] = current_native().trace_id
        seen["left"] = meshlib.remaining()
        start_response("200 OK", [])
        return [b""]

    wsgi_middleware(app)(environ, lambda *a: None)
    assert seen["trace"] == TRACE and 1.0 < seen["left"] <= 1.5

    async def asgi_app(scope, receive, send):
        seen["asgi"] = current_native().trace_id

    scope = {"type": "http", "headers": [(b"traceparent", VALID.encode()), (b"grpc-timeout", b"2S")]}
    asyncio.run(asgi_middleware(asgi_app)(scope, None, None))
    assert seen["asgi"] == TRACE


def test_carriers_read_every_shape():
    assert carriers.get_all({"REQUEST_METHOD": "GET", "HTTP_X_A": "1"}, "x-a") == ["1"]
    assert carriers.get_all([("x-a", "1"), ("X-A", "2")], "x-a") == ["1", "2"]
    assert carriers.get_all(httpx.Headers([("x-a", "1"), ("x-a", "2")]), "X-A") == ["1", "2"]
    assert carriers.get_all({"type": "http", "headers": [(b"x-a", b"1")]}, "x-a") == ["1"]
    d = {"X-A": "old"}
    carriers.set_header(d, "x-a", "new")
    assert d == {"x-a": "new"}


@settings(max_examples=50)
@given(st.dictionaries(st.sampled_from(["traceparent", "tracestate", "baggage", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"]), st.text(max_size=60)))
def test_bad_incoming_headers_never_raise(headers):
    for names in (["tracecontext", "baggage"], ["b3", "b3multi"]):
        ctx = Propagation(names, mode="native").read(headers)
        assert ctx is None or len(ctx.trace_id) == 32


def test_a_grpc_server_interceptor_serves_inside_the_callers_trace_and_deadline():
    from concurrent import futures

    import grpc

    from meshlib.telemetry.server import grpc_server_interceptor

    seen = {}

    def echo(request, context):
        seen["trace"] = current_native().trace_id
        seen["left"] = meshlib.remaining()
        return request

    def count(request, context):
        for i in range(2):
            seen[f"stream{i}"] = current_native().trace_id
            yield b"x"

    meshlib.Mesh(config={"tracing": "native"}).close()
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[grpc_server_interceptor()])
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo), "Count": grpc.unary_stream_rpc_method_handler(count)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert ch.unary_unary("/t.S/Echo")(b"hi", timeout=2, metadata=(("traceparent", VALID),)) == b"hi"
            assert list(ch.unary_stream("/t.S/Count")(b"", timeout=2, metadata=(("traceparent", VALID),))) == [b"x", b"x"]
    finally:
        server.stop(0)
    assert seen["trace"] == seen["stream0"] == seen["stream1"] == TRACE
    assert 1.0 < seen["left"] <= 2.05  # grpc-timeout is rounded up on the wire


def test_a_grpc_aio_server_interceptor_does_the_same():
    import grpc
    import grpc.aio

    from meshlib.telemetry.server import grpc_aio_server_interceptor

    seen = {}

    async def echo(request, context):
        seen["trace"] = current_native().trace_id
        seen["left"] = meshlib.remaining()
        return request

    async def count(request, context):
        for i in range(2):
            seen[f"stream{i}"] = current_native().trace_id
            yield b"x"

    async def main():
        server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor()])
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo), "Count": grpc.unary_stream_rpc_method_handler(count)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                md = (("traceparent", VALID),)
                assert await ch.unary_unary("/t.S/Echo")(b"hi", timeout=2, metadata=md) == b"hi"
                assert [m async for m in ch.unary_stream("/t.S/Count")(b"", timeout=2, metadata=md)] == [b"x", b"x"]
        finally:
            await server.stop(0)

    meshlib.Mesh(config={"tracing": "native"}).close()
    asyncio.run(main())
    assert seen["trace"] == seen["stream0"] == seen["stream1"] == TRACE
    assert 1.0 < seen["left"] <= 2.05


class _AlwaysStamp:
    """An application's own propagator (not OpenTelemetry's): it writes a header
    even with no span and no baggage current."""

    fields = {"x-stamp"}

    def inject(self, carrier, context=None, setter=None):
        setter.set(carrier, "x-stamp", "1")

    def extract(self, carrier, context=None, getter=None):
        return context


def test_with_nothing_current_only_opentelemetrys_own_propagators_are_skipped(agents):
    """With an empty context, OpenTelemetry's propagators would write nothing and are
    not called; a propagator of the application's own is still called every time."""
    pytest.importorskip("opentelemetry")
    from opentelemetry import context, propagate

    prop = Propagation(mode="otel")
    before = propagate.get_global_textmap()
    a = agents(1)[0]
    try:
        carrier: dict[str, str] = {}
        prop.inject(carrier, context.Context())
        assert carrier == {}
        propagate.set_global_textmap(_AlwaysStamp())
        prop.inject(carrier, context.Context())
        assert carrier == {"x-stamp": "1"}
        with meshlib.Mesh(config={"tracing": "auto", "services": {"stamped": {"endpoints": a.address}}}) as mesh:
            mesh.requests_session().get("http://stamped/")
    finally:
        propagate.set_global_textmap(before)
    assert a.behaviour.seen[-1].get("x-stamp") == "1"


_HEADER_NAMES = st.sampled_from(["traceparent", "TraceParent", "TRACEPARENT", "b3", "B3", "accept", "x-b3-traceid", "X-B3-TraceId", "user-agent"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_HEADER_NAMES, st.text(string.ascii_letters, max_size=5), max_size=6))
def test_has_any_finds_a_trace_header_in_any_spelling_and_any_header_object(headers):
    import requests.structures
    import urllib3

    names = ("traceparent", "b3", "x-b3-traceid")
    want = any(k.lower() in names for k in headers)
    for carrier in (dict(headers), urllib3.HTTPHeaderDict(headers), requests.structures.CaseInsensitiveDict(headers), httpx.Headers(headers), list(headers.items())):
        assert carriers.has_any(carrier, names) == want, type(carrier)
