"""Spans and metrics on the real OpenTelemetry SDK (in-memory exporter and
reader): one trace across agents A -> B -> C over HTTP and gRPC, retries as
sibling attempt spans, the stable HTTP and gRPC conventions."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import requests

import meshlib
from meshlib.telemetry.w3c import parse_traceparent
from tests import otel_setup
from tests.conftest import endpoints_of
from tests.grpc_agents import COUNT, ECHO, GrpcAgent

SPANS = otel_setup.SPANS


@pytest.fixture(autouse=True)
def _fresh_spans():
    otel_setup.install()  # once per process: the SDK's providers are global
    SPANS.clear()
    yield
    SPANS.clear()


def spans_named(name):
    return [s for s in SPANS.get_finished_spans() if s.name == name]


class _AgentB(BaseHTTPRequestHandler):
    """Agent B: serves HTTP and, while serving, calls agent C over gRPC through its mesh."""

    protocol_version = "HTTP/1.1"
    server: "_BServer"

    def do_GET(self) -> None:  # noqa: N802
        with meshlib.incoming(self.headers):
            answer = self.server.channel.unary_unary(ECHO)(b"hello", timeout=5)
        body = json.dumps({"c": answer.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _BServer(ThreadingHTTPServer):
    daemon_threads = True
    channel: object


@pytest.fixture
def chain():
    c = GrpcAgent("agent-c")
    b_mesh = meshlib.Mesh(config={"services": {"agent-c": {"endpoints": c.address}}})
    server = _BServer(("127.0.0.1", 0), _AgentB)
    server.channel = b_mesh.grpc_channel("agent-c")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    b_address = f"127.0.0.1:{server.server_address[1]}"
    a_mesh = meshlib.Mesh(config={"services": {"agent-b": {"endpoints": b_address}}})
    yield a_mesh, c
    a_mesh.close()
    server.shutdown()
    server.server_close()
    b_mesh.close()
    c.server.stop(0)


def test_one_trace_across_an_http_hop_and_a_grpc_hop(chain):
    a_mesh, c = chain
    tracer = otel_setup.trace.get_tracer("test")
    with tracer.start_as_current_span("agent-a work") as root:
        r = a_mesh.requests_session().get("http://agent-b/plan?user=secret-query")
    assert r.json() == {"c": "agent-c"}
    spans = SPANS.get_finished_spans()
    trace_ids = {s.context.trace_id for s in spans}
    assert trace_ids == {root.get_span_context().trace_id}

    a_call = spans_named("GET")
    a_attempt = [s for s in a_call if s.kind == otel_setup.trace.SpanKind.CLIENT]
    # The default policy retries only requests that never left: no span for the call around its attempt.
    assert len(a_attempt) == 1 and len(a_call) == 1
    assert a_attempt[0].parent.span_id == root.get_span_context().span_id
    attrs = a_attempt[0].attributes
    assert attrs["http.request.method"] == "GET"
    assert attrs["server.address"] == "agent-b" and attrs["server.port"] == 80
    assert attrs["network.peer.address"] == "127.0.0.1"
    assert attrs["url.full"] == "http://agent-b/plan"  # no query, no credentials
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs and "http.request.resend_count" not in attrs

    # Agent B's gRPC call is a child of A's attempt (the remote parent), after gRFC A72.
    sent = spans_named("Sent.meshtest.Agent.Echo")
    attempt = spans_named("Attempt.meshtest.Agent.Echo")
    assert len(sent) == 1 and len(attempt) == 1
    assert sent[0].parent.span_id == a_attempt[0].context.span_id and sent[0].parent.is_remote
    assert attempt[0].parent.span_id == sent[0].context.span_id
    assert attempt[0].attributes["previous-rpc-attempts"] == 0
    assert attempt[0].attributes["rpc.status_code"] == "OK"
    # And C saw B's attempt as its parent.
    seen = c.behaviour.seen[0].metadata
    trace_id, parent, _ = parse_traceparent(seen["traceparent"])
    assert int(trace_id, 16) == root.get_span_context().trace_id
    assert int(parent, 16) == attempt[0].context.span_id


def test_retries_are_sibling_attempt_spans_with_resend_count(agents, refused_port):
    flaky = agents(1)[0]
    flaky.behaviour.script = [503]
    cfg = {"services": {"flaky": {"endpoints": flaky.address, "retry_on": "5xx", "num_retries": 2, "retry_backoff_base": "1ms"}}}
    with meshlib.Mesh(config=cfg) as mesh:
        assert mesh.requests_session().get("http://flaky/").status_code == 200
    attempts = [s for s in spans_named("GET") if s.kind == otel_setup.trace.SpanKind.CLIENT]
    call = [s for s in spans_named("GET") if s.kind == otel_setup.trace.SpanKind.INTERNAL]
    assert len(attempts) == 2 and len(call) == 1
    first, second = sorted(attempts, key=lambda s: s.start_time)
    assert first.parent.span_id == second.parent.span_id == call[0].context.span_id
    assert "http.request.resend_count" not in first.attributes and second.attributes["http.request.resend_count"] == 1
    assert first.attributes["error.type"] == "503" and first.status.status_code == otel_setup.trace.StatusCode.ERROR
    assert second.attributes["http.response.status_code"] == 200
    assert [e.name for e in call[0].events] == ["retry"]
    # The server saw each attempt's own span as the parent.
    parents = [int(parse_traceparent(h["traceparent"])[1], 16) for h in flaky.behaviour.seen]
    assert parents == [first.context.span_id, second.context.span_id]


def test_grpc_retry_spans_and_a66_metrics():
    agent = GrpcAgent("retry-me")
    agent.fail(grpc.StatusCode.UNAVAILABLE, times=1)
    cfg = {"services": {"grpc-retry": {"endpoints": agent.address, "retry_on": "unavailable", "num_retries": 2, "retry_backoff_base": "1ms"}}}
    try:
        with meshlib.Mesh(config=cfg) as mesh:
            assert mesh.grpc_channel("grpc-retry").unary_unary(ECHO)(b"x", timeout=5) == b"retry-me"
            stats = mesh.stats()["telemetry"]["services"]["grpc-retry"]
    finally:
        agent.server.stop(0)
    attempts = sorted(spans_named("Attempt.meshtest.Agent.Echo"), key=lambda s: s.start_time)
    assert [s.attributes["previous-rpc-attempts"] for s in attempts] == [0, 1]
    assert attempts[0].attributes["rpc.status_code"] == "UNAVAILABLE" and attempts[0].status.status_code == otel_setup.trace.StatusCode.ERROR
    assert stats["grpc_attempt_started"] == {ECHO: 2}
    statuses = sorted((row["status"], row["count"]) for row in stats["grpc_attempt_duration"])
    assert statuses == [("OK", 1), ("UNAVAILABLE", 1)]
    assert [(row["status"], row["count"]) for row in stats["grpc_call_duration"]] == [("OK", 1)]
    points = otel_setup.histogram_points("grpc.client.attempt.duration", **{"grpc.target": "grpc-retry"})
    assert sum(p.count for p in points) == 2


def test_http_client_request_duration_on_the_otel_meter(agents):
    a = agents(1)[0]
    with meshlib.Mesh(config={"services": {"otel-metered": {"endpoints": a.address}}}) as mesh:
        s = mesh.requests_session()
        for _ in range(3):
            s.get("http://otel-metered:8080/x")
    points = otel_setup.histogram_points("http.client.request.duration", **{"server.address": "otel-metered"})
    assert len(points) == 1 and points[0].count == 3
    p = points[0]
    assert p.attributes["http.request.method"] == "GET" and p.attributes["server.port"] == 8080
    assert p.attributes["http.response.status_code"] == 200
    assert list(p.explicit_bounds)[:14] == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    assert 300.0 in p.explicit_bounds  # the configurable buckets for long LLM calls


def test_span_events_for_breaker_rejection_and_ejection(agents):
    bad = agents(1)[0]
    bad.behaviour.status = 503
    cfg = {"services": {"breaking": {
        "endpoints": bad.address, "breaker": "cluster", "breaker_minimum_calls": 2, "breaker_window_type": "count_based",
        "breaker_window_size": 2, "outlier_consecutive_5xx": 2, "outlier_max_ejection_percent": 100,
    }}}  # fmt: skip
    with meshlib.Mesh(config=cfg) as mesh:
        s = mesh.requests_session()
        assert s.get("http://breaking/").status_code == 503
        assert s.get("http://breaking/").status_code == 503
        with pytest.raises(meshlib.CircuitOpenError):
            s.get("http://breaking/")
    attempts = sorted((x for x in spans_named("GET") if x.kind == otel_setup.trace.SpanKind.CLIENT), key=lambda x: x.start_time)
    assert [e.name for e in attempts[1].events] == ["endpoint ejected"]
    [refused] = [x for x in spans_named("GET") if x.kind == otel_setup.trace.SpanKind.INTERNAL]  # the call refused before any attempt
    assert [e.name for e in refused.events] == ["circuit breaker rejected"]
    assert refused.attributes["error.type"] == "CircuitOpenError" and refused.status.status_code == otel_setup.trace.StatusCode.ERROR


def test_hedge_launch_is_an_event_and_hedges_are_siblings(agents):
    slow, fast = agents(2)
    slow.behaviour.delay = 0.5
    cfg = {"services": {"hedged": {"endpoints": f"{slow.address},{fast.address}", "lb_policy": "round_robin", "hedge_max_attempts": 2, "hedge_delay": "50ms"}}}
    with meshlib.Mesh(config=cfg) as mesh:
        session = mesh.requests_session()
        answers = [session.get("http://hedged/").json()["agent"] for _ in range(2)]
        stats = mesh.stats()["services"]["hedged"]
        deadline = time.monotonic() + 5
        while len([x for x in spans_named("GET") if x.kind == otel_setup.trace.SpanKind.CLIENT]) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # the abandoned slow attempt ends when its answer arrives
    assert fast.name in answers
    calls = [x for x in spans_named("GET") if x.kind == otel_setup.trace.SpanKind.INTERNAL]
    hedged = [c for c in calls if any(e.name == "hedge" for e in c.events)]
    assert len(hedged) == stats["hedges"] >= 1
    children = [x for x in spans_named("GET") if x.kind == otel_setup.trace.SpanKind.CLIENT and x.parent.span_id == hedged[0].context.span_id]
    assert len(children) == 2 and {c.attributes.get("http.request.resend_count") for c in children} == {None, 1}
    abandoned = [c for c in children if c.attributes.get("meshlib.outcome") == "cancelled"]
    assert len(abandoned) == 1 and abandoned[0].status.status_code != otel_setup.trace.StatusCode.ERROR


def test_a_decorated_functions_attempt_is_the_current_span(agents):
    a = agents(1)[0]
    with meshlib.Mesh(config={"services": {"fn": {"endpoints": a.address}}}) as mesh:

        @mesh.call("fn")
        def call(ep):
            return requests.get(f"http://{ep.address}/", headers=meshlib.inject({}))

        assert call().status_code == 200
    [attempt] = spans_named("meshlib.attempt")
    assert spans_named("meshlib.call") == [] and attempt.attributes["network.peer.address"] == "127.0.0.1"
    assert int(parse_traceparent(a.behaviour.seen[0]["traceparent"])[1], 16) == attempt.context.span_id


_B3_CHILD = r"""
import json, sys, urllib.request
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import meshlib
trace.set_tracer_provider(TracerProvider())
with meshlib.Mesh(config={"services": {"up": {"endpoints": sys.argv[1]}}}) as mesh:
    with trace.get_tracer("t").start_as_current_span("root") as root:
        mesh.requests_session().get("http://up/")
    print(f"{root.get_span_context().trace_id:032x}")
"""


def test_otel_propagators_from_the_environment_are_used(agents, tmp_path):
    import os
    import subprocess
    import sys

    a = agents(1)[0]
    script = tmp_path / "child.py"
    script.write_text(_B3_CHILD)
    env = {**os.environ, "OTEL_PROPAGATORS": "b3multi", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, str(script), a.address], env=env, capture_output=True, text=True, timeout=60, check=True)
    trace_id = out.stdout.strip()
    seen = a.behaviour.seen[0]
    assert "traceparent" not in seen and seen["x-b3-traceid"] == trace_id and seen["x-b3-sampled"] == "1"


def test_connect_failures_retried_are_sibling_attempts_under_the_caller(agents, refused_port):
    ok = agents(1)[0]
    cfg = {"services": {"half-dead": {"endpoints": f"127.0.0.1:{refused_port},{ok.address}", "lb_policy": "round_robin", "outlier_detection": False}}}
    tracer = otel_setup.trace.get_tracer("test")
    with meshlib.Mesh(config=cfg) as mesh, tracer.start_as_current_span("caller") as caller:
        s = mesh.requests_session()
        for _ in range(2):
            assert s.get("http://half-dead/").status_code == 200
    attempts = sorted(spans_named("GET"), key=lambda x: x.start_time)
    assert all(a.parent.span_id == caller.get_span_context().span_id for a in attempts)
    failed = [a for a in attempts if a.attributes.get("error.type") == "connect_failure"]
    retried = [a for a in attempts if a.attributes.get("http.request.resend_count") == 1]
    assert len(failed) >= 1 and len(attempts) == 2 + len(failed) and len(retried) == len(failed)
    assert all([e.name for e in r.events] == ["retry"] and r.attributes["http.response.status_code"] == 200 for r in retried)


_LATE_PROVIDER = r"""
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import meshlib
from meshlib.telemetry import spans as spans_module

started = []
real_start = spans_module.Spans.start_attempt
spans_module.Spans.start_attempt = lambda self, *a, **k: started.append(1) or real_start(self, *a, **k)
with meshlib.Mesh(config={"services": {"up": {"endpoints": sys.argv[1]}}}) as mesh:
    s = mesh.requests_session()
    assert s.get("http://up/").status_code == 200
    before = len(started)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # after the Mesh was built
    assert s.get("http://up/").status_code == 200
    print(before, len(started), [sp.name for sp in exporter.get_finished_spans()])
"""


def test_no_span_work_until_a_tracer_provider_is_set(agents, tmp_path):
    """Without a TracerProvider every span would be a non-recording no-op: calls
    skip span work; a provider set later (after the Mesh) is used from then on."""
    import os
    import subprocess
    import sys

    a = agents(1)[0]
    script = tmp_path / "late.py"
    script.write_text(_LATE_PROVIDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("OTEL_PYTHON_TRACER_PROVIDER", None)
    out = subprocess.run([sys.executable, str(script), a.address], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "0 1 ['GET']"
    assert "traceparent" in a.behaviour.seen[1]


def _stream_spans():
    sent = spans_named("Sent.meshtest.Agent.Count")
    attempts = sorted(spans_named("Attempt.meshtest.Agent.Count"), key=lambda s: s.start_time)
    return sent, attempts


def test_a_response_stream_is_traced_until_it_ends_and_retried_before_its_first_message():
    agent = GrpcAgent("streamer")
    agent.fail(grpc.StatusCode.UNAVAILABLE, times=1)
    agent.behaviour.gap = 0.05  # three messages, 0.1 s from the first to the last
    cfg = {"services": {"grpc-stream": {"endpoints": agent.address, "retry_on": "unavailable", "num_retries": 2, "retry_backoff_base": "1ms"}}}
    try:
        with meshlib.Mesh(config=cfg) as mesh:
            stream = mesh.grpc_channel("grpc-stream").unary_stream(COUNT)(b"3", timeout=5)
            assert [m.decode() for m in stream] == ["streamer:0", "streamer:1", "streamer:2"]
            deadline = time.monotonic() + 5
            while len(SPANS.get_finished_spans()) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # grpcio reports the stream's end on its own thread
            stats = mesh.stats()["telemetry"]["services"]["grpc-stream"]
        seen = [s.metadata.get("traceparent") for s in agent.behaviour.seen]
    finally:
        agent.server.stop(0)
    sent, attempts = _stream_spans()
    assert len(sent) == 1 and len(attempts) == 2
    assert [s.attributes["previous-rpc-attempts"] for s in attempts] == [0, 1]
    assert attempts[0].attributes["rpc.status_code"] == "UNAVAILABLE"
    assert attempts[1].attributes["rpc.status_code"] == "OK"
    assert {s.parent.span_id for s in attempts} == {sent[0].context.span_id}
    # The committed attempt, and the call, last until the stream's last message.
    assert (attempts[1].end_time - attempts[1].start_time) / 1e9 >= 0.09
    assert sent[0].end_time >= attempts[1].end_time
    # Each attempt's metadata named its own span as the server's parent.
    assert [parse_traceparent(tp)[1] for tp in seen] == [f"{s.context.span_id:016x}" for s in attempts]
    assert stats["grpc_attempt_started"] == {COUNT: 2}
    assert [(row["status"], row["count"]) for row in stats["grpc_call_duration"]] == [("OK", 1)]


@pytest.mark.parametrize("kind", ["aio channel", "interceptors", "aio interceptors"])
def test_response_streams_of_every_grpc_client_get_a_call_and_an_attempt_span(kind):
    agent = GrpcAgent("streamer")
    try:
        with meshlib.Mesh(config={"services": {"grpc-stream": {"endpoints": agent.address}}}) as mesh:
            if kind == "interceptors":
                with grpc.insecure_channel(agent.address) as raw:
                    channel = grpc.intercept_channel(raw, *mesh.grpc_interceptors("grpc-stream"))
                    got = list(channel.unary_stream(COUNT)(b"2", timeout=5))
            else:

                async def read() -> list[bytes]:
                    if kind == "aio channel":
                        channel = mesh.grpc_aio_channel("grpc-stream")
                    else:
                        channel = grpc.aio.insecure_channel(agent.address, interceptors=mesh.grpc_interceptors("grpc-stream", aio=True))
                    try:
                        return [m async for m in channel.unary_stream(COUNT)(b"2", timeout=5)]
                    finally:
                        await channel.close()

                got = asyncio.run(read())
            deadline = time.monotonic() + 5
            while len(SPANS.get_finished_spans()) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            stats = mesh.stats()["telemetry"]["services"]["grpc-stream"]
    finally:
        agent.server.stop(0)
    assert got == [b"streamer:0", b"streamer:1"]
    sent, attempts = _stream_spans()
    assert len(sent) == 1 and len(attempts) == 1
    assert attempts[0].parent.span_id == sent[0].context.span_id
    assert attempts[0].attributes["rpc.status_code"] == "OK"
    assert [(row["status"], row["count"]) for row in stats["grpc_call_duration"]] == [("OK", 1)]
