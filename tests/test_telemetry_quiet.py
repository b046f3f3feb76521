"""Calls of which only metrics can come (no spans, no access log, no trace ids
of meshlib's to make) take telemetry's quiet path: their metrics are the same."""

from __future__ import annotations

import grpc
import pytest

import meshlib
from meshlib import telemetry
from meshlib.telemetry.scope import QuietScope
from tests.grpc_agents import ECHO, GrpcAgent


def test_grpc_calls_count_attempts_and_call_durations_on_the_quiet_path():
    agent = GrpcAgent("quiet")
    agent.fail(grpc.StatusCode.UNAVAILABLE, times=1)
    cfg = {"tracing": "off", "access_log": False,
           "services": {"quiet-grpc": {"endpoints": agent.address, "retry_on": "unavailable", "num_retries": 2, "retry_backoff_base": "1ms"}}}  # fmt: skip
    try:
        with meshlib.Mesh(config=cfg) as mesh:
            assert type(telemetry.call(mesh.cluster("quiet-grpc"), rpc=ECHO)) is QuietScope
            channel = mesh.grpc_channel("quiet-grpc")
            assert channel.unary_unary(ECHO)(b"x", timeout=5) == b"quiet"
            agent.fail(grpc.StatusCode.PERMISSION_DENIED, times=1)
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(ECHO)(b"x", timeout=5)
            stats = mesh.stats()["telemetry"]["services"]["quiet-grpc"]
    finally:
        agent.server.stop(0)
    assert stats["grpc_attempt_started"] == {ECHO: 3}
    assert sorted((r["status"], r["count"]) for r in stats["grpc_attempt_duration"]) == [("OK", 1), ("PERMISSION_DENIED", 1), ("UNAVAILABLE", 1)]
    assert sorted((r["status"], r["count"]) for r in stats["grpc_call_duration"]) == [("OK", 1), ("PERMISSION_DENIED", 1)]
    assert stats["retry_success"] == 1


def test_http_and_decorated_calls_keep_their_labels_on_the_quiet_path(agents):
    a = agents(1)[0]
    cfg = {"tracing": "off", "access_log": False, "services": {"quiet-http": {"endpoints": a.address}}}
    with meshlib.Mesh(config=cfg) as mesh:
        assert type(telemetry.http_call(mesh.cluster("quiet-http"), "GET", "http://quiet-http:8080/")) is QuietScope
        s = mesh.requests_session()
        for _ in range(3):
            assert s.get("http://quiet-http:8080/x").status_code == 200
        mesh.call("quiet-http")(lambda ep: None)()
        stats = mesh.stats()["telemetry"]["services"]["quiet-http"]
    [row] = stats["http_client_request_duration"]  # the decorated call is no HTTP request
    assert (row["method"], row["port"], row["status_code"], row["count"]) == ("GET", "8080", "200", 3)
    assert sum(r["count"] for r in stats["completed"]) == 4


@pytest.mark.parametrize("settle_chance", [0.01, 0.5])  # many values per settle (bounds walked), a few (each bisected)
def test_histograms_counting_in_bulk_match_counting_one_at_a_time(settle_chance):
    import random
    from bisect import bisect_left

    from meshlib.telemetry.metrics import Histogram
    from meshlib.telemetry.settings import GRPC_LATENCY_BUCKETS

    rng = random.Random(7)
    bounds = GRPC_LATENCY_BUCKETS
    h = Histogram(bounds)
    counts, total, n = [0] * (len(bounds) + 1), 0.0, 0
    for _ in range(2000):
        value = rng.choice([rng.random() * 10 ** rng.uniform(-6, 2), rng.choice(bounds), 0.0])
        h.add(value)
        counts[bisect_left(bounds, value)] += 1  # the bucket observe() used to pick: the first bound >= value
        total += value
        n += 1
        if rng.random() < settle_chance:
            h.settle()
    assert h.counts == counts and h.sum == total and h.count == n


def test_histograms_hold_few_values_however_many_endpoints_a_service_has():
    """Values wait in a histogram only until it is next settled, which every
    few folds covers the histograms counted into since the last time (not
    every endpoint's): memory stays bounded, and the counts are exact."""
    from meshlib import Endpoint
    from meshlib.config import load_config
    from meshlib.outcome import AttemptRecord, Outcome
    from meshlib.telemetry.metrics import ClusterMetrics

    from bisect import bisect_left

    m = ClusterMetrics("svc", load_config(environ={}).telemetry)
    bound = m.BATCH * m.SETTLE_EVERY
    endpoints = [Endpoint(f"10.0.{i // 250}.{i % 250}", 80) for i in range(1000)]
    expected = [0] * (len(m.buckets) + 1)
    for i in range(20 * bound):
        ep = endpoints[i % 3] if i < 10 * bound else endpoints[i % 1000]  # a few endpoints, then all of them
        took = 0.0004 * (1 + i % 50)  # 0.4 ms to 20 ms, across several buckets
        m.add((AttemptRecord(ep, 0.0, took / 2, took, Outcome.SUCCESS, status=200), "GET", 80, None, True))
        expected[bisect_left(m.buckets, took)] += 1
        if i % m.BATCH == 0:
            waiting = max((len(h._values) for table in (m.rq_time, m.first_byte, m.http) for h in table.values()), default=0)
            assert waiting <= bound
    m.fold()
    # Settled in bulk, one value at a time or inline: the buckets are those of counting each value at once.
    assert [sum(col) for col in zip(*(h.counts for h in m.rq_time.values()))] == expected
