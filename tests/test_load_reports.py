"""Server load reports: parsing (bad and hostile input ignored), staleness,
herding prevention, spill order, wrr_orca's weights, ORCA over real grpcio
servers, and /metrics polling of the model-server simulator."""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import time
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshlib
from meshlib import Endpoint, EndpointSnapshot, ManualClock
from meshlib.balancing.affinity import owner_order
from meshlib.balancing.hashing import hash_key
from meshlib.balancing import DEFAULT_LB
from meshlib.balancing.load import inflight_cap, load_settings
from meshlib.balancing.wrr_orca import host_weight, scale_weights
from meshlib.config import load_config
from meshlib.core.cluster import Cluster
from meshlib.errors import EndpointsSaturatedError
from meshlib.health.load import orca_trailer, parse_header, parse_prometheus, store, with_load_report
from meshlib.health.load.orca import STREAM_METHOD, encode_report
from meshlib.outcome import AttemptResult, Outcome

from .llm_sim import Fleet

VLLM = "TEXT named_metrics.kv_cache_usage_perc=0.42, named_metrics.num_requests_waiting=3"


def cluster_of(policy: str, n: int = 4, clock=None, seed: int = 3, **keys) -> Cluster:
    cfg = load_config(environ={}, overrides={"lb_policy": policy, **keys}).service("svc")
    c = Cluster("svc", cfg, clock=clock or ManualClock(), rng=random.Random(seed))
    c.update(EndpointSnapshot("svc", tuple(Endpoint(f"10.0.0.{i + 1}", 80) for i in range(n))))
    return c


def report(host, clock, **fields):
    return store(host, fields, "header", clock.monotonic())


# -- parsing ---------------------------------------------------------------------------


def test_vllm_text_header_is_read():
    assert parse_header(VLLM) == {"kv": 0.42, "waiting": 3.0, "named": {"kv_cache_usage_perc": 0.42, "num_requests_waiting": 3.0}}


def test_json_and_bin_forms_are_read():
    js = parse_header('JSON {"cpu_utilization": 0.5, "rps_fractional": 10, "named_metrics": {"num_requests_waiting": 2}}')
    assert js is not None and js["cpu"] == 0.5 and js["rps"] == 10 and js["waiting"] == 2
    raw = encode_report(cpu_utilization=0.25, application_utilization=0.5, rps_fractional=40.0, eps=2.0, named_metrics={"kv_cache_usage_perc": 0.9})
    for value in (raw, "BIN " + base64.b64encode(raw).decode()):
        got = parse_header(value)
        assert got is not None and got["app"] == 0.5 and got["cpu"] == 0.25 and got["rps"] == 40 and got["eps"] == 2 and got["kv"] == 0.9


@pytest.mark.parametrize(
    "value",
    [
        "", "TEXT", "TEXT =,=,,", "XML <a/>", "TEXT cpu_utilization=nan", "TEXT cpu_utilization=inf", "TEXT cpu_utilization=-1",
        "TEXT named_metrics.num_requests_waiting=1e400", "JSON [1,2]", "JSON {", "JSON " + "[" * 100000, 'JSON {"cpu_utilization": "x"}',
        "BIN !!!", "BIN " + base64.b64encode(b"\xff\xff\xff\xff").decode(), b"\xff\x00garbage", "TEXT " + "a=1," * 100000,
        "TEXT cpu_utilization=1e308", 'JSON {"named_metrics": {"bad name\\n": 1}}', 12, None,
    ],
)  # fmt: skip
def test_bad_and_hostile_headers_are_ignored(value):
    got = parse_header(value)
    assert got is None or all(math.isfinite(v) and v >= 0 for k, v in got.items() if k != "named")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.text(max_size=200).map(lambda t: "TEXT " + t), st.text(max_size=200).map(lambda t: "JSON " + t)))
def test_no_input_makes_the_parser_fail(value):
    got = parse_header(value)
    if got is not None:
        for key, v in got.items():
            if key == "named":
                assert all(math.isfinite(x) and x >= 0 for x in v.values())
            else:
                assert math.isfinite(v) and v >= 0
        if "kv" in got:
            assert got["kv"] <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_no_scrape_makes_the_prometheus_parser_fail(text):
    parse_prometheus(text, "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")


def test_prometheus_gauges_are_read_and_summed_over_series():
    text = (
        "# HELP vllm:num_requests_waiting waiting\n# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="a"} 2.0\nvllm:num_requests_waiting{model_name="b",x="}"} 3\n'
        'vllm:kv_cache_usage_perc{model_name="a"} 0.5\nvllm:kv_cache_usage_perc{model_name="b"} 0.7 1700000000\n'
        "vllm:num_requests_waiting_total 99\nbogus line\n"
    )
    got = parse_prometheus(text, "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")
    assert got is not None and got["waiting"] == 5 and got["kv"] == 0.7 and "running" not in got


def test_the_adapter_hook_carries_the_raw_report_only_when_there_is_one():
    ok = AttemptResult(Outcome.SUCCESS, 200)
    assert with_load_report(ok, None) is ok
    assert with_load_report(ok, VLLM).load == VLLM

    class Rpc:
        def trailing_metadata(self):
            return (("x", "y"), ("endpoint-load-metrics-bin", b"\x01"))

    assert orca_trailer(Rpc()) == b"\x01"
    assert orca_trailer(object()) is None


# -- the observer, staleness, herding ----------------------------------------------------


def test_a_report_on_a_response_lands_on_its_host_and_in_stats():
    clock = ManualClock()
    c = cluster_of("least_loaded", clock=clock)
    call = c.start_call()
    call.begin()
    host = call.pick()
    call.ended(host, clock.perf_counter(), with_load_report(AttemptResult(Outcome.SUCCESS, 200), VLLM))
    call.finish()
    assert host.load.waiting == 3 and host.load.kv == 0.42 and host.load.source == "header"
    clock.advance(0.5)
    assert c.host_resilience(host)["load_report"] == {"source": "header", "age_s": 0.5, "waiting": 3.0, "kv": 0.42, "named": {"kv_cache_usage_perc": 0.42, "num_requests_waiting": 3.0}}
    assert c.resilience_stats()["load_reports"]["reports"] == 1
    call = c.start_call()
    call.begin()
    host = call.pick()
    call.ended(host, clock.perf_counter(), with_load_report(AttemptResult(Outcome.SUCCESS, 200), "TEXT \x00garbage=\u2603"))
    call.finish()
    assert c.resilience_stats()["load_reports"]["rejected"] == 1  # ignored, counted, never fatal


def test_stale_reports_fall_back_to_the_own_in_flight_count():
    clock = ManualClock()
    c = cluster_of("least_loaded", n=2, clock=clock, load_report_max_age="1s")
    a, b = c.hosts
    report(a, clock, waiting=50.0)  # a says it is swamped
    assert Counter(c.pick(None) for _ in range(200)) == Counter({b: 200})
    clock.advance(1.5)  # the report is stale now: both idle, shared
    counts = Counter(c.pick(None) for _ in range(2000))
    assert 800 < counts[a] < 1200
    b.start()
    b.start()  # b busy by our own count
    assert Counter(c.pick(None) for _ in range(200)) == Counter({a: 200})


def test_requests_sent_since_a_report_count_against_it_so_a_burst_does_not_herd():
    clock = ManualClock()
    c = cluster_of("least_loaded", n=4, clock=clock, load_inflight_weight=0)  # only the reports speak
    for i, host in enumerate(c.hosts):
        report(host, clock, waiting=0.0 if i == 0 else 2.0)
    burst = Counter()
    for _ in range(24):  # a burst between two reports
        host = c.pick(None)
        host.start()
        burst[host] += 1
    assert burst[c.hosts[0]] <= 12  # without counting, all 24 would go to the one that looked idle
    assert len(burst) == 4


# -- spill order ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["ring_hash", "maglev", "llm"])
def test_a_saturated_owner_spills_to_the_keys_next_owner_in_a_fixed_order(policy):
    clock = ManualClock()
    c = cluster_of(policy, n=5, clock=clock, load_reports="header", hash_header="x-prefix-key")
    h = hash_key("system-prompt-7")
    order = owner_order(c.picker, h)
    assert len(order) == 5 and len(set(order)) == 5
    assert c.pick(h) is order[0]
    report(order[0], clock, kv=0.95)  # KV over 0.8
    assert c.pick(h) is order[1]
    report(order[1], clock, waiting=9.0)  # queue over 4
    assert c.pick(h) is order[2]
    assert owner_order(c.picker, h) == order  # the order is the key's, not the load's
    clock.advance(5)  # both reports stale: back to the owner
    assert c.pick(h) is order[0]


def test_the_in_flight_bound_spills_as_envoys_hash_balance_factor():
    c = cluster_of("ring_hash", n=4, hash_balance_factor=150)
    h = hash_key("k")
    order = owner_order(c.picker, h)
    for _ in range(3):
        order[0].start()
    assert inflight_cap(c.hosts, 1.5) == 2  # ceil(ceil(1.5 x (3 + 1)) / 4): 3 in flight is over it
    assert c.pick(h) is order[1]
    order[0].done(0.01, "success")
    order[0].done(0.01, "success")
    assert inflight_cap(c.hosts, 1.5) == 1
    assert c.pick(h) is order[0]  # 1 in flight is not more than 1

def test_when_every_endpoint_is_saturated_spill_or_fail_fast():
    clock = ManualClock()
    spill = cluster_of("llm", n=3, clock=clock)
    fail = cluster_of("llm", n=3, clock=clock, load_saturation="fail")
    for c in (spill, fail):
        for i, host in enumerate(c.hosts):
            report(host, clock, waiting=10.0 + i)
    h = hash_key("k")
    assert spill.pick(h) is spill.hosts[0]  # the least loaded
    with pytest.raises(EndpointsSaturatedError, match="saturated"):
        fail.pick(h)


def warm(c, clock, h, host):
    """Send key ``h`` to ``host`` once (every other owner saturated for a
    moment), so ``llm`` remembers ``host`` as warm for it; the reports that
    did it are stale afterwards."""
    for other in owner_order(c.picker, h):
        if other is not host:
            report(other, clock, waiting=99.0)
    assert c.pick(h) is host
    clock.advance(c.picker._s.max_age + 0.001)


def test_llm_spills_to_the_keys_warm_second_owner_before_a_cold_one():
    clock = ManualClock()
    c = cluster_of("llm", n=4, clock=clock)
    h = hash_key("prompt")
    first, second, third, _ = owner_order(c.picker, h)
    report(first, clock, waiting=9.0)  # saturated
    report(second, clock, waiting=0.0)  # both cold for the key: 0 + 1 + 6 against 0 + 2 + 6
    report(third, clock, waiting=0.0)
    assert c.pick(h) is second  # and now the second is warm for it
    report(second, clock, waiting=2.0)  # busy: 2 + 1 against the idle third's 8
    assert c.pick(h) is second
    report(second, clock, waiting=9.0)
    assert c.pick(h) is third  # past both: the next one in the key's order


def test_llm_keeps_a_rare_key_on_its_busy_first_owner_rather_than_reach_a_cold_one():
    """A key this client never sent past its first owner stays there while
    that owner is busy but not queueing: each other owner would have to
    prefill the prefix cold, which costs about seven requests' worth."""
    clock = ManualClock()
    c = cluster_of("llm", n=4, clock=clock, load_queue_threshold=20)
    h = hash_key("rare prompt")
    first, second, third, fourth = owner_order(c.picker, h)
    for host in (second, third, fourth):
        report(host, clock, waiting=0.0)
    report(first, clock, waiting=6.0)  # 6 against the idle second's 0 + 1 + 6
    assert c.pick(h) is first
    report(first, clock, waiting=7.5)
    assert c.pick(h) is second  # queueing now: worth the cold prefill
    report(first, clock, waiting=3.0)
    report(second, clock, waiting=1.0)  # warm now: 1 + 1 against 3
    assert c.pick(h) is second


def test_llm_forgets_a_warm_owner_after_a_minute_and_past_the_latest_keys(monkeypatch):
    from meshlib.balancing import affinity

    clock = ManualClock()
    c = cluster_of("llm", n=4, clock=clock)
    h = hash_key("prompt")
    first, second, _, _ = owner_order(c.picker, h)
    warm(c, clock, h, second)
    report(first, clock, waiting=2.0)
    report(second, clock, waiting=0.0)
    assert c.pick(h) is second  # warm: 0 + 1 against 2
    clock.advance(affinity.AFFINITY_WARM_FOR + 1)
    report(first, clock, waiting=2.0)
    report(second, clock, waiting=0.0)
    assert c.pick(h) is first  # cold again: 0 + 1 + 6 against 2
    monkeypatch.setattr(affinity, "AFFINITY_WARM_KEYS", 3)
    warm(c, clock, h, second)
    for other in ("a", "b", "c"):  # three more keys: the first one is forgotten
        c.pick(hash_key(other))
    report(first, clock, waiting=2.0)
    report(second, clock, waiting=0.0)
    assert c.pick(h) is first


@pytest.mark.parametrize("n", [1, 3])
def test_calls_without_a_key_never_go_to_a_saturated_endpoint_unless_the_service_spills(n):
    clock = ManualClock()
    spill = cluster_of("least_loaded", n=n, clock=clock)
    fail = cluster_of("least_loaded", n=n, clock=clock, load_saturation="fail")
    for c in (spill, fail):
        for host in c.hosts[1:]:
            report(host, clock, waiting=9.0)
    assert set(Counter(fail.pick(None) for _ in range(300))) == {fail.hosts[0]}
    if n == 3:
        assert len(Counter(spill.pick(None) for _ in range(300))) == 3  # two saturated drawn together: one of them
    report(fail.hosts[0], clock, waiting=9.0)
    with pytest.raises(EndpointsSaturatedError, match=r"every endpoint saturated \(load_saturation=fail\)"):
        fail.pick(None)


# -- wrr_orca (gRFC A58) ---------------------------------------------------------------------


def test_a58_weight_blackout_and_expiration():
    clock = ManualClock()
    c = cluster_of("wrr_orca", n=1, clock=clock)
    host = c.hosts[0]
    s = load_settings(DEFAULT_LB)
    report(host, clock, rps=100.0, app=0.5, eps=10.0, cpu=0.9)
    assert host_weight(host, clock.monotonic(), s) == 0  # blackout
    clock.advance(11)
    report(host, clock, rps=100.0, app=0.5, eps=10.0, cpu=0.9)
    assert host_weight(host, clock.monotonic(), s) == pytest.approx(100 / (0.5 + 10 / 100 * 1.0))
    clock.advance(181)
    assert host_weight(host, clock.monotonic(), s) == 0  # expired
    assert scale_weights([0.0, 0.0]) is None
    assert scale_weights([1.0, 2.0, 0.0]) == (32768, 65535, 49151)


def test_wrr_orca_shares_follow_reported_utilization():
    clock = ManualClock()
    c = cluster_of("wrr_orca", n=3, clock=clock)
    for host, util in zip(c.hosts, (0.8, 0.4, 0.2)):
        report(host, clock, rps=100.0, cpu=util)
    clock.advance(11)
    for host, util in zip(c.hosts, (0.8, 0.4, 0.2)):
        report(host, clock, rps=100.0, cpu=util)
    counts = Counter(c.pick(None) for _ in range(7000))
    assert [round(counts[h] / 1000) for h in c.hosts] == [1, 2, 4]


# -- ORCA over real grpcio servers ---------------------------------------------------------------


class OrcaServer:
    """A grpcio server that answers Echo with a per-call ORCA trailer and,
    when ``oob``, serves OpenRcaService/StreamCoreMetrics."""

    def __init__(self, util: float, oob: bool = False) -> None:
        self.util = util
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(self._echo)}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("meshtest.Agent", handlers),))
        if oob:
            stream = grpc.unary_stream_rpc_method_handler(self._stream)
            self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("xds.service.orca.v3.OpenRcaService", {"StreamCoreMetrics": stream}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.streams = 0

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("endpoint-load-metrics-bin", encode_report(cpu_utilization=self.util, rps_fractional=50.0, named_metrics={"num_requests_waiting": 1.0})),))
        return b"ok"

    def _stream(self, request: bytes, context: grpc.ServicerContext):
        self.streams += 1
        while context.is_active():
            yield encode_report(application_utilization=self.util, rps_fractional=20.0)
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.stop(0)


def _wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_grpcio_keeps_per_call_orca_trailers_from_python_so_oob_is_the_grpc_source():
    """grpc core parses ``endpoint-load-metrics-bin`` itself and leaves it out
    of the trailing metadata Python sees (docs/load-balancing.md): the hook
    stays in place, and gRPC services get reports from the out-of-band stream."""
    server = OrcaServer(0.2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            _, call = ch.unary_unary("/meshtest.Agent/Echo").with_call(b"x", timeout=5)
            assert orca_trailer(call) is None
        with meshlib.Mesh(config={"services": {"orca": {"endpoints": f"127.0.0.1:{server.port}", "lb_policy": "wrr_orca", "load_reports": "header"}}}) as mesh:
            assert mesh.grpc_channel("orca").unary_unary("/meshtest.Agent/Echo")(b"x", timeout=5) == b"ok"
            assert mesh.cluster("orca").hosts[0].load is None
    finally:
        server.stop()


def test_orca_out_of_band_stream_from_a_real_grpc_server():
    offered, plain = OrcaServer(0.3, oob=True), OrcaServer(0.7)
    try:
        eps = f"127.0.0.1:{offered.port},127.0.0.1:{plain.port}"
        with meshlib.Mesh(config={"services": {"orca": {"endpoints": eps, "lb_policy": "wrr_orca", "load_reports": "orca_oob", "orca_oob_interval": "50ms"}}}) as mesh:
            mesh.grpc_channel("orca")  # the cluster exists: its streams start
            cluster = mesh.cluster("orca")
            host = next(h for h in cluster.hosts if h.endpoint.port == offered.port)
            assert _wait_for(lambda: host.load is not None)
            assert host.load.source == "oob" and host.load.app == 0.3 and host.load.rps == 20
            echo = mesh.grpc_channel("orca").unary_unary("/meshtest.Agent/Echo")
            assert echo(b"x", timeout=5) == b"ok"
            assert mesh.stats()["services"]["orca"]["load_reports"]["reports"] > 0
            other = next(h for h in cluster.hosts if h.endpoint.port == plain.port)
            assert other.load is None  # UNIMPLEMENTED: left alone
        assert _wait_for(lambda: threading.active_count() < 50)
    finally:
        offered.stop()
        plain.stop()


# -- /metrics polling against the simulator ------------------------------------------------------


def test_llm_policy_polls_metrics_and_reads_headers_of_the_simulator():
    fleet = Fleet((1.0, 1.0))
    try:
        eps = ",".join(f"127.0.0.1:{p}" for p in fleet.ports)
        cfg = {"services": {"llm": {"endpoints": eps, "lb_policy": "llm", "hash_header": "x-prefix-key", "load_metrics_interval": "20ms"}}}
        with meshlib.Mesh(config=cfg) as mesh:
            cluster = mesh.cluster("llm")
            assert _wait_for(lambda: all(h.load is not None for h in cluster.hosts))
            assert {h.load.source for h in cluster.hosts} == {"metrics"}
            s = mesh.requests_session()
            body = {"system": "a", "system_tokens": 64, "user_tokens": 16, "max_tokens": 2, "stream": False}
            r = s.post("http://llm/v1/completions", json=body, headers={"x-prefix-key": "a"}, timeout=10)
            assert r.status_code == 200 and "endpoint-load-metrics" in r.headers
            with s.post("http://llm/v1/completions", json={**body, "stream": True}, headers={"x-prefix-key": "a"}, stream=True, timeout=10) as streamed:
                events = [line for line in streamed.iter_lines() if line]
            assert events[-1] == b"data: [DONE]"
            stats = mesh.stats()["services"]["llm"]
            assert stats["load_reports"]["scrapes"] > 0
            assert all(e["load_report"] is not None for e in stats["endpoints"])
    finally:
        fleet.close()


def test_llm_keeps_a_key_on_its_first_owner_unless_a_warm_second_is_less_loaded_by_more_than_one_request():
    clock = ManualClock()
    c = cluster_of("llm", n=4, clock=clock)
    h = hash_key("prompt")
    first, second, third, _ = owner_order(c.picker, h)
    warm(c, clock, h, second)
    report(first, clock, waiting=2.0)  # busier, not saturated
    report(second, clock, waiting=1.0)  # less loaded by exactly one request: not enough
    report(third, clock, waiting=0.0)  # idle, but cold for this prefix
    assert c.pick(h) is first
    report(second, clock, waiting=0.5)  # less loaded by more than one
    assert c.pick(h) is second
    report(second, clock, waiting=3.0)
    assert c.pick(h) is first
    one = cluster_of("llm", n=4, clock=clock, load_affinity_choices=1)
    report(one.hosts[0], clock, waiting=1.0)
    assert one.pick(h) is owner_order(one.picker, h)[0]  # the first unsaturated owner, however loaded


def test_llm_moves_a_key_past_its_two_busy_warm_owners_to_an_idle_one():
    clock = ManualClock()
    c = cluster_of("llm", n=4, clock=clock, load_queue_threshold=20)  # nobody saturated here
    h = hash_key("prompt")
    first, second, third, fourth = owner_order(c.picker, h)
    warm(c, clock, h, second)
    report(first, clock, waiting=8.0)
    report(second, clock, waiting=7.0)
    report(third, clock, waiting=0.0)  # idle but cold: 0 + 2 + 6
    report(fourth, clock, waiting=0.0)  # 0 + 3 + 6
    assert c.pick(h) is first  # 8 is not more than the third's 8: stay warm
    report(first, clock, waiting=10.0)
    report(second, clock, waiting=9.0)  # 10 and 9 + 1: queueing on both warm owners
    assert c.pick(h) is third  # which is warm for the key from now on
    report(first, clock, waiting=16.0)
    report(second, clock, waiting=16.0)
    report(third, clock, waiting=7.0)  # 7 + 2 = 9 = the cold fourth's: the earlier owner
    assert c.pick(h) is third
    report(third, clock, waiting=7.5)
    assert c.pick(h) is fourth


def test_llm_a_slower_host_with_equal_in_flight_loses_the_comparison():
    clock = ManualClock()
    c = cluster_of("llm", n=4, clock=clock)
    h = hash_key("prompt")
    first, second, third, fourth = owner_order(c.picker, h)
    for host, took in ((first, 2.0), (second, 1.0), (third, 1.0), (fourth, 1.0)):
        host.start()
        host.done(took, "success")  # each host's pace: the first's requests take twice as long
    assert (first.pace, second.pace) == (2.0, 1.0)
    warm(c, clock, h, second)
    for host in (first, second):
        host.start()
        host.start()
    assert c.pick(h) is second  # 2 in flight each: 2 x 2 against 2 + 1
    second.start()
    assert c.pick(h) is first  # 4 against 3 + 1: ties go to the earlier owner
    plain = cluster_of("least_loaded", n=4, clock=clock, load_affinity_choices=2)
    a, b, _, _ = owner_order(plain.picker, h)
    a.start()
    a.done(2.0, "success")
    for host in (a, a, b, b):
        host.start()
    assert plain.pick(h) is a  # least_loaded does not weigh paces: 2 against 2 + 1


def test_llm_with_many_hosts_keeps_a_key_on_its_owner_at_average_load():
    """Above 64 hosts the bounded-load cap is recounted every hosts/64 busy picks;
    with every host at the mean in-flight count, nobody is over the cap, so a
    key stays on its first owner pick after pick."""
    clock = ManualClock()
    c = cluster_of("llm", n=128, clock=clock)
    h = hash_key("prompt")
    owner = owner_order(c.picker, h)[0]
    for host in owner_order(c.picker, h):
        host.start()
        host.start()  # 2 in flight everywhere: the cap is ceil(ceil(257 x 1.5) / 128) = 4
    assert [c.pick(h) for _ in range(6)] == [owner] * 6

def test_host_pace_averages_whole_attempts_streams_included():
    from meshlib.core.host import PACE_WEIGHT, Host, _Timed

    host = Host(Endpoint("10.0.0.1", 80))
    assert host.pace == 0.0
    host.start()
    host.attempt_ended(_Timed(10.0, 10.1, Outcome.SUCCESS, 12.0))  # headers after 0.1 s, the stream over after 2 s
    assert host.pace == 2.0 and host.ewma() == pytest.approx(0.1)
    host.start()
    host.attempt_ended(_Timed(20.0, 20.1, Outcome.SUCCESS, 21.0))
    assert host.pace == pytest.approx(2.0 + PACE_WEIGHT * (1.0 - 2.0))
    host.start()
    host.attempt_ended(_Timed(30.0, 30.1, Outcome.TIMEOUT, 39.0))  # failures do not count
    assert host.pace == pytest.approx(1.8)


# -- HTTP clients ask for the report and read it (a real server on 127.0.0.1) ---------


class _Reporting(BaseHTTPRequestHandler):
    asked: list = []

    def do_GET(self):  # noqa: N802
        self.asked.append(self.headers.get("endpoint-load-metrics-format"))
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.headers.get("endpoint-load-metrics-format") == "TEXT":
            self.send_header("endpoint-load-metrics", VLLM)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def reporting_server():
    _Reporting.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reporting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("client", ["requests", "urllib3", "httpx"])
@pytest.mark.parametrize("timeout", [None, "2s"])
def test_http_clients_ask_for_the_load_report_and_store_it(reporting_server, client, timeout):
    port = reporting_server.server_address[1]
    svc = {"endpoints": f"127.0.0.1:{port}", "lb_policy": "least_loaded", **({"timeout": timeout} if timeout else {})}
    with meshlib.Mesh(config={"services": {"svc": svc, "plain": {"endpoints": f"127.0.0.1:{port}"}}}) as mesh:
        for name in ("svc", "plain"):
            url = f"http://{name}/"
            if client == "requests":
                assert mesh.requests_session().get(url).status_code == 200
            elif client == "urllib3":
                assert mesh.urllib3_pool().request("GET", url).status == 200
            else:
                with mesh.httpx_client() as c:
                    assert c.get(url).status_code == 200
        stats = mesh.stats()["services"]
        assert _Reporting.asked == ["TEXT", None]  # asked only by the service that reads headers
        assert stats["svc"]["load_reports"]["reports"] == 1
        assert stats["svc"]["endpoints"][0]["load_report"]["waiting"] == 3.0
        assert "load_reports" not in stats["plain"]
