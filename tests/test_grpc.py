"""End to end: ``mesh.grpc_channel`` and the gRPC interceptors against real
grpcio servers on 127.0.0.1 (in this process, or in child processes that are
killed mid-call), plus the status mapping and health-check wire format."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

import meshlib
from meshlib import CircuitOpenError, DeadlineExceededError, Mesh
from meshlib.adapters.grpc import (
    GRPC_TO_HTTP,
    MeshChannel,
    RpcStatusError,
    decode_health_status,
    encode_health_request,
    judge_rpc,
)
from meshlib.endpoint import EndpointSnapshot, parse_endpoint
from meshlib.outcome import Outcome

from .grpc_agents import CHAT, COUNT, ECHO, JOIN, AgentProcess, grpc_agents, wait_until  # noqa: F401 (a fixture)

SC = grpc.StatusCode


@pytest.fixture
def processes() -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(name: str, **kw: float) -> AgentProcess:
        p = AgentProcess(name, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.kill()


def addresses(agents: list) -> str:  # type: ignore[type-arg]
    return ",".join(a.address for a in agents)


def mesh_for(agents: list, **service: object) -> Mesh:  # type: ignore[type-arg]
    return Mesh(config={"services": {"svc": {"endpoints": addresses(agents), **service}}})


def user_on(echo: Callable[..., bytes], name: bytes) -> tuple[tuple[str, str], ...]:
    """Metadata whose ``x-user`` key ring_hash sends to the agent answering ``name``."""
    for i in range(200):
        md = (("x-user", f"user-{i}"),)
        if echo(b"", metadata=md) == name:
            return md
    raise AssertionError(f"no key lands on {name!r}")


def names(answers: list[bytes]) -> Counter[str]:
    return Counter(a.decode().split(":")[0] for a in answers)


# ----------------------------------------------------------------- status mapping (unit)


class _Err:
    def __init__(self, code: grpc.StatusCode, details: str = "", trailing: tuple = ()) -> None:  # type: ignore[type-arg]
        self._c, self._d, self._t = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._c

    def details(self) -> str:
        return self._d

    def trailing_metadata(self) -> tuple:  # type: ignore[type-arg]
        return self._t


def test_statuses_map_to_envoys_http_codes_and_outcomes() -> None:
    assert GRPC_TO_HTTP[SC.UNAVAILABLE] == 503 and GRPC_TO_HTTP[SC.DEADLINE_EXCEEDED] == 504
    assert GRPC_TO_HTTP[SC.RESOURCE_EXHAUSTED] == 429 and GRPC_TO_HTTP[SC.UNIMPLEMENTED] == 501
    assert len(GRPC_TO_HTTP) == len(SC)
    r = judge_rpc(_Err(SC.UNAVAILABLE, "busy"))
    assert (r.outcome, r.status, r.grpc_status) == (Outcome.FAILURE, 503, "UNAVAILABLE")
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"
    assert judge_rpc(_Err(SC.UNAVAILABLE, refused)).outcome == Outcome.CONNECT_FAILURE
    assert judge_rpc(_Err(SC.UNAVAILABLE, "Stream removed (Socket closed)")).outcome == Outcome.RESET
    assert judge_rpc(_Err(SC.DEADLINE_EXCEEDED, "Deadline Exceeded")).outcome == Outcome.TIMEOUT
    # A 4xx-like answer is the server working as meant, as an HTTP 4xx is ...
    assert judge_rpc(_Err(SC.NOT_FOUND)).outcome == Outcome.SUCCESS
    # ... unless a retry_on condition names it.
    assert judge_rpc(_Err(SC.RESOURCE_EXHAUSTED)).outcome == Outcome.FAILURE
    assert judge_rpc(_Err(SC.INTERNAL)).status == 500
    pushed = judge_rpc(_Err(SC.UNAVAILABLE, "x", (("grpc-retry-pushback-ms", "250"),)))
    assert pushed.retry_after == 0.25


def test_health_messages_in_protobuf_wire_format() -> None:
    assert encode_health_request("") == b""
    assert encode_health_request("inventory") == health_pb2.HealthCheckRequest(service="inventory").SerializeToString()
    long_name = "x" * 300
    assert encode_health_request(long_name) == health_pb2.HealthCheckRequest(service=long_name).SerializeToString()
    for status in (0, 1, 2, 3):
        assert decode_health_status(health_pb2.HealthCheckResponse(status=status).SerializeToString()) == status


def test_meshlib_errors_are_also_rpc_errors() -> None:
    from meshlib.adapters.grpc import rpc_error

    err = rpc_error(DeadlineExceededError("svc", 1.5))
    assert isinstance(err, DeadlineExceededError) and isinstance(err, grpc.RpcError) and isinstance(err, grpc.Call)
    assert err.code() is SC.DEADLINE_EXCEEDED and "1.500s" in err.details()  # type: ignore[attr-defined]
    open_ = rpc_error(CircuitOpenError("svc", "breaker open"))
    assert isinstance(open_, CircuitOpenError) and open_.code() is SC.UNAVAILABLE  # type: ignore[attr-defined]
    assert open_.service == "svc"  # type: ignore[attr-defined]


# ----------------------------------------------------------------- balancing


@pytest.mark.parametrize(
    "policy", ["round_robin", "least_request", "peak_ewma", "random", "weighted_round_robin", "ring_hash", "maglev"]
)
def test_unary_calls_are_spread_per_policy(grpc_agents, policy: str) -> None:
    agents = grpc_agents(3)
    endpoints = [a.address for a in agents]
    if policy == "weighted_round_robin":
        endpoints[0] += ";weight=2"
    service = {"endpoints": ",".join(endpoints), "lb_policy": policy}
    if policy in ("ring_hash", "maglev"):
        service["hash_header"] = "x-user"
    with Mesh(config={"services": {"svc": service}}) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        if policy in ("ring_hash", "maglev"):
            # The same key always lands on the same endpoint; many keys spread.
            for user in ("ann", "bob", "cy"):
                assert len(names([echo(b"", metadata=(("x-user", user),)) for _ in range(10)])) == 1
            spread = names([echo(b"", metadata=(("x-user", f"user-{i}"),)) for i in range(120)])
            assert len(spread) == 3 and min(spread.values()) >= 15
            return
        got = names([echo(b"") for _ in range(120)])
    if policy == "peak_ewma":
        # P2C over latency: the endpoint whose first call (with its connection
        # set-up) was slowest may lose every draw; the others share the calls.
        assert len(got) >= 2 and sum(got.values()) == 120
        return
    assert set(got) == {"agent-1", "agent-2", "agent-3"}
    if policy == "round_robin":
        assert set(got.values()) == {40}
    elif policy == "weighted_round_robin":
        assert got["agent-1"] == 60 and got["agent-2"] == got["agent-3"] == 30
    else:
        assert min(got.values()) >= 15


def test_generated_stubs_work_unchanged(grpc_agents, tmp_path: Path) -> None:
    if shutil.which("protoc") is None:
        pytest.importorskip("grpc_tools")
    proto = tmp_path / "greeter.proto"
    proto.write_text(
        'syntax = "proto3";\npackage meshtest.greeter;\n'
        "message Hello { string name = 1; int32 n = 2; }\n"
        "message Reply { string text = 1; }\n"
        "service Greeter {\n"
        "  rpc Greet (Hello) returns (Reply);\n"
        "  rpc GreetMany (Hello) returns (stream Reply);\n"
        "  rpc GreetAll (stream Hello) returns (Reply);\n"
        "  rpc Converse (stream Hello) returns (stream Reply);\n"
        "}\n"
    )
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(proto)],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import greeter_pb2 as pb
        import greeter_pb2_grpc as pb_grpc
    finally:
        sys.path.remove(str(tmp_path))

    from concurrent import futures

    servers = []

    class Greeter(pb_grpc.GreeterServicer):
        def __init__(self, name: str) -> None:
            self.name = name

        def Greet(self, request, context):  # noqa: N802 - generated name
            return pb.Reply(text=f"{self.name} greets {request.name}")

        def GreetMany(self, request, context):  # noqa: N802
            for i in range(request.n):
                yield pb.Reply(text=f"{self.name}:{i}")

        def GreetAll(self, request_iterator, context):  # noqa: N802
            return pb.Reply(text=f"{self.name}:" + ",".join(r.name for r in request_iterator))

        def Converse(self, request_iterator, context):  # noqa: N802
            for r in request_iterator:
                yield pb.Reply(text=f"{self.name}:{r.name}")

    ports = []
    for name in ("g1", "g2"):
        server = grpc.server(futures.ThreadPoolExecutor(4))
        pb_grpc.add_GreeterServicer_to_server(Greeter(name), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    try:
        with Mesh(config={"services": {"greeter": {"endpoints": ",".join(f"127.0.0.1:{p}" for p in ports), "lb_policy": "round_robin"}}}) as mesh:
            stub = pb_grpc.GreeterStub(mesh.grpc_channel("greeter"))
            replies = [stub.Greet(pb.Hello(name="ann")).text for _ in range(4)]
            assert sorted(replies) == ["g1 greets ann"] * 2 + ["g2 greets ann"] * 2
            reply, call = stub.Greet.with_call(pb.Hello(name="bob"), timeout=5)
            assert reply.text.endswith("greets bob") and call.code() is SC.OK
            assert stub.Greet.future(pb.Hello(name="cy")).result(timeout=5).text.endswith("greets cy")
            many = [r.text for r in stub.GreetMany(pb.Hello(n=3))]
            assert len(many) == 3 and len({t.split(":")[0] for t in many}) == 1
            assert stub.GreetAll(iter([pb.Hello(name="a"), pb.Hello(name="b")])).text.endswith(":a,b")
            conv = [r.text for r in stub.Converse(iter([pb.Hello(name="x"), pb.Hello(name="y")]))]
            assert [t.split(":")[1] for t in conv] == ["x", "y"]
    finally:
        for server in servers:
            server.stop(None)


def test_all_four_kinds_and_streams_pinned_to_one_endpoint(grpc_agents) -> None:
    agents = grpc_agents(2)
    for a in agents:
        a.behaviour.gap = 0.002
    with mesh_for(agents, lb_policy="round_robin") as mesh:
        ch = mesh.grpc_channel("svc")
        count, join, chat = ch.unary_stream(COUNT), ch.stream_unary(JOIN), ch.stream_stream(CHAT)
        streams = [list(count(b"20")) for _ in range(4)]
        for messages in streams:
            assert len(messages) == 20 and len(names(messages)) == 1  # every message from one agent
        assert names([m[0] for m in streams]) == {"agent-1": 2, "agent-2": 2}  # streams balanced
        assert join(iter([b"a", b"b", b"c"])).decode().endswith(":a,b,c")
        replies = list(chat(iter([b"1", b"2", b"3"])))
        assert len(names(replies)) == 1 and [r.split(b":")[1] for r in replies] == [b"1", b"2", b"3"]
        # Streams hold an attempt slot while they run, and are booked when they end.
        stream = count(b"5")
        assert next(stream).endswith(b":0") and stream.is_active()
        rest = list(stream)
        assert len(rest) == 4 and stream.code() is SC.OK
        wait_until(lambda: all(e["active"] == 0 for e in mesh.stats()["services"]["svc"]["endpoints"]))
        assert sum(e["requests"] for e in mesh.stats()["services"]["svc"]["endpoints"]) == 4 + 1 + 1 + 1


def test_authority_is_the_service_name_and_options_pass_through(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.handler = lambda req, ctx: req * 3
    with mesh_for([agent]) as mesh:
        echo = mesh.grpc_channel("svc", options=[("grpc.max_receive_message_length", 1000)], compression=grpc.Compression.Gzip).unary_unary(ECHO)
        assert echo(b"ab") == b"ababab"
        assert agent.behaviour.seen[-1].authority == "svc"
        with pytest.raises(grpc.RpcError) as info:
            echo(b"x" * 600)  # the 1800-byte answer is over the channel's limit
        assert info.value.code() is SC.RESOURCE_EXHAUSTED


# ----------------------------------------------------------------- failover


def test_failover_when_a_server_is_killed_mid_unary(processes) -> None:
    doomed = processes("doomed", delay=2.0)
    spare = processes("spare")
    config = {"endpoints": f"{doomed.address},{spare.address}", "lb_policy": "ring_hash", "hash_header": "x-user",
              "retry_on": "reset,connect-failure", "outlier_detection": False}
    with Mesh(config={"services": {"svc": config}}) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        # A user whose calls ring_hash sends to `doomed`.
        user = user_on(echo, b"doomed")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(echo, b"slow", metadata=user)  # `doomed` sleeps on it ...
            time.sleep(0.3)
            doomed.kill()  # ... and dies: the broken connection is a reset, retried elsewhere.
            assert pending.result(5) == b"spare"
        assert mesh.stats()["services"]["svc"]["retries"] == 1
        # Later calls of that user find `doomed` refusing connections: retried at once.
        assert {echo(b"", metadata=user) for _ in range(4)} == {b"spare"}


def test_a_stream_broken_mid_way_fails_and_the_next_ones_fail_over(processes) -> None:
    streamer = processes("streamer", gap=0.02)
    spare = processes("spare")
    with Mesh(config={"services": {"svc": {"endpoints": f"{streamer.address},{spare.address}", "lb_policy": "round_robin", "outlier_detection": False}}}) as mesh:
        count = mesh.grpc_channel("svc").unary_stream(COUNT)
        stream = count(b"1000")
        if next(stream).startswith(b"spare"):  # round robin started with the spare
            stream.cancel()
            stream = count(b"1000")
            next(stream)
        got = [next(stream) for _ in range(5)]
        assert names(got) == {"streamer": 5}
        streamer.kill()
        # Committed (messages arrived): as with gRPC, the error reaches the caller.
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                pass
        assert info.value.code() is SC.UNAVAILABLE
        # New streams picking the dead endpoint fail to connect before any
        # message: not committed, so retried on the other endpoint.
        for _ in range(4):
            assert names(list(count(b"3"))) == {"spare": 3}
        stats = {e["address"]: e for e in mesh.stats()["services"]["svc"]["endpoints"]}
        assert stats[streamer.address]["connect_failures"] >= 1
        assert stats[streamer.address]["failures"] >= 2  # the broken stream and the refusals


# ----------------------------------------------------------------- retries, budget, breaker, outlier


def test_unavailable_is_retried_under_retry_on_unavailable_only(grpc_agents) -> None:
    bad, good = grpc_agents(2)
    bad.fail(SC.UNAVAILABLE)
    with mesh_for([bad, good], lb_policy="round_robin", outlier_detection=False) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        errors = []
        for _ in range(10):
            try:
                echo(b"")
            except grpc.RpcError as err:
                errors.append(err.code())
        assert errors == [SC.UNAVAILABLE] * 5  # the default retry_on retries only never-sent calls
    with mesh_for([bad, good], lb_policy="round_robin", outlier_detection=False, retry_on="unavailable") as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        before = bad.hits
        assert [echo(b"") for _ in range(10)] == [b"agent-2"] * 10
        retries = mesh.stats()["services"]["svc"]["retries"]
        assert retries == bad.hits - before >= 9  # each call starts on `bad` (bar maybe the first), then retries
        seen = [s.metadata.get("x-envoy-attempt-count") for s in good.behaviour.seen[-10:]]
        assert seen.count("2") == retries  # retries say which attempt they are
        # Other statuses are not retried under `unavailable`.
        bad.fail(SC.RESOURCE_EXHAUSTED)
        with pytest.raises(grpc.RpcError) as info:
            for _ in range(2):
                echo(b"")
        assert info.value.code() is SC.RESOURCE_EXHAUSTED


def test_request_streams_are_replayed_on_retry_within_the_buffer(grpc_agents) -> None:
    bad, good = grpc_agents(2)
    with mesh_for([bad, good], lb_policy="ring_hash", hash_header="x-user", retry_on="unavailable", outlier_detection=False) as mesh:
        channel = mesh.grpc_channel("svc")
        user = user_on(channel.unary_unary(ECHO), b"agent-1")
        bad.fail(SC.UNAVAILABLE)  # Join reads every request, then fails
        join = channel.stream_unary(JOIN)
        assert join((m for m in (b"a", b"b", b"c")), metadata=user) == b"agent-2:a,b,c"  # a generator, read once
        chat = channel.stream_stream(CHAT)
        assert list(chat((m for m in (b"x", b"y")), metadata=user)) == [b"agent-2:x", b"agent-2:y"]
        # Past 256 KiB the stream is committed to its attempt: no retry.
        big = (bytes([65 + i % 26]) * 1024 for i in range(300))
        hits = good.hits
        with pytest.raises(grpc.RpcError) as info:
            join(big, metadata=user)
        assert info.value.code() is SC.UNAVAILABLE and good.hits == hits


def test_pushback_minus_one_stops_retries_and_a_positive_one_delays(grpc_agents) -> None:
    bad, good = grpc_agents(2)
    with mesh_for([bad, good], lb_policy="round_robin", outlier_detection=False, retry_on="unavailable") as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        bad.fail(SC.UNAVAILABLE, pushback_ms="-1")  # gRFC A6: "do not retry"
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(echo(b""))
            except grpc.RpcError as err:
                outcomes.append(err.code())
        assert Counter(outcomes) == {b"agent-2": 2, SC.UNAVAILABLE: 2}
        assert mesh.stats()["services"]["svc"]["retries"] == 0
        bad.fail(SC.UNAVAILABLE, times=1, pushback_ms="200")
        started = time.monotonic()
        answers = [echo(b""), echo(b"")]  # the one that met `bad` waited out the pushback, then `agent-2` answered
        assert b"agent-2" in answers and set(answers) <= {b"agent-1", b"agent-2"}
        assert time.monotonic() - started >= 0.19
        assert mesh.stats()["services"]["svc"]["retries"] == 1


def test_retry_budget_caps_retries_in_an_outage(grpc_agents) -> None:
    agents = grpc_agents(3)
    for a in agents:
        a.fail(SC.UNAVAILABLE)
    config = {
        "retry_on": "unavailable",
        "num_retries": 3,
        "retry_budget": "ratio",
        "retry_budget_ratio": 0.1,
        "retry_budget_min_per_sec": 0,
        "outlier_detection": False,
    }
    with mesh_for(agents, **config) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        for _ in range(100):
            with pytest.raises(grpc.RpcError):
                echo(b"")
        svc = mesh.stats()["services"]["svc"]
    sent = sum(a.hits for a in agents)
    assert svc["retries"] <= 10 and svc["retries_budget_exhausted"] >= 80
    assert sent == 100 + svc["retries"] <= 110  # an outage does not multiply the load


def test_cluster_breaker_opens_and_fails_fast_as_unavailable(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.fail(SC.INTERNAL)
    config = {"breaker": "cluster", "breaker_minimum_calls": 5, "breaker_window_size": 10, "breaker_wait_duration_open": "60s", "outlier_detection": False}
    with mesh_for([agent], **config) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        codes = []
        for _ in range(10):
            try:
                echo(b"")
            except grpc.RpcError as err:
                codes.append((err.code(), isinstance(err, CircuitOpenError)))
        assert codes[:5] == [(SC.INTERNAL, False)] * 5
        assert codes[5:] == [(SC.UNAVAILABLE, True)] * 5
        assert agent.hits == 5
        assert mesh.stats()["services"]["svc"]["breaker_rejected"] == 5


def test_outlier_detection_ejects_an_endpoint_answering_unavailable(grpc_agents) -> None:
    bad, good = grpc_agents(2)
    bad.fail(SC.UNAVAILABLE)
    with mesh_for([bad, good], lb_policy="round_robin", retry_on="unavailable", outlier_consecutive_5xx=3, outlier_max_ejection_percent=50) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        assert {echo(b"") for _ in range(20)} == {b"agent-2"}
        ejected = {ep.address: ep.ejected for ep in mesh.endpoints("svc")}
        assert ejected == {bad.address: True, good.address: False}
        assert bad.hits == 3  # ejected after 3 failures in a row: no more traffic


def test_hedging_answers_from_the_fast_endpoint(grpc_agents) -> None:
    slow, fast = grpc_agents(2)
    slow.behaviour.delay, slow.behaviour.slow_only = 1.0, True
    with mesh_for([slow, fast], lb_policy="ring_hash", hash_header="x-user", hedge_max_attempts=2, hedge_delay="50ms") as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        user = user_on(echo, b"agent-1")
        started = time.monotonic()
        assert echo(b"slow", metadata=user) == b"agent-2"  # the hedge, 50 ms later, answered first
        assert time.monotonic() - started < 0.8
        assert mesh.stats()["services"]["svc"]["hedges"] == 1


def test_hedging_honours_server_pushback(grpc_agents) -> None:
    bad, good = grpc_agents(2)
    config = dict(lb_policy="ring_hash", hash_header="x-user", hedge_max_attempts=2, hedge_delay="5s", hedge_non_fatal="UNAVAILABLE", outlier_detection=False)
    with mesh_for([bad, good], **config) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        user = user_on(echo, b"agent-1")
        # gRFC A6: a pushback on a non-fatal status delays the next hedge by that much ...
        bad.fail(SC.UNAVAILABLE, pushback_ms="300")
        started = time.monotonic()
        assert echo(b"", metadata=user) == b"agent-2"
        assert 0.29 <= time.monotonic() - started < 2.0  # not at once, and not after the 5 s hedge delay
        # ... and a "do not retry" pushback sends no more hedges: the call ends with the status.
        bad.fail(SC.UNAVAILABLE, pushback_ms="-1")
        hits = good.hits
        with pytest.raises(grpc.RpcError) as info:
            echo(b"", metadata=user)
        assert info.value.code() is SC.UNAVAILABLE and good.hits == hits
        assert mesh.stats()["services"]["svc"]["hedges"] == 1


def test_fault_injection_aborts_with_the_configured_grpc_status(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    with mesh_for([agent], fault_abort_percent=100, fault_abort_grpc_status="RESOURCE_EXHAUSTED") as mesh:
        ch = mesh.grpc_channel("svc")
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(ECHO)(b"")
        assert info.value.code() is SC.RESOURCE_EXHAUSTED and info.value.details() == "fault filter abort"
        with pytest.raises(grpc.RpcError):
            list(ch.unary_stream(COUNT)(b"2"))
        assert agent.hits == 0


# ----------------------------------------------------------------- deadlines


def test_deadline_propagates_over_two_grpc_hops(grpc_agents) -> None:
    front, back = grpc_agents(2)
    with Mesh(config={"services": {"front": {"endpoints": front.address}, "back": {"endpoints": back.address}}}) as mesh:
        back_echo = mesh.grpc_channel("back").unary_unary(ECHO)

        def relay(request: bytes, context: grpc.ServicerContext) -> bytes:
            # The server side of hop 1 bounds its own calls by the caller's deadline.
            with meshlib.deadline(context.time_remaining()):
                time.sleep(0.05)
                return back_echo(b"")

        front.behaviour.handler = relay
        assert mesh.grpc_channel("front").unary_unary(ECHO)(b"", timeout=2.0) == b"agent-2"
        at_front = front.behaviour.seen[-1].time_remaining
        at_back = back.behaviour.seen[-1].time_remaining
        assert at_front is not None and at_back is not None
        assert 1.5 < at_front <= 2.01
        assert 1.4 < at_back < at_front - 0.04  # what was left, minus the front's own work

        # The caller's timeout and meshlib.deadline() combine: the shorter wins.
        echo = mesh.grpc_channel("back").unary_unary(ECHO)
        # (grpc-timeout is rounded up to its unit, hence the 5 ms of slack.)
        with meshlib.deadline(0.5):
            echo(b"", timeout=10)
        assert back.behaviour.seen[-1].time_remaining <= 0.505
        with meshlib.deadline(10):
            echo(b"", timeout=0.4)
        assert back.behaviour.seen[-1].time_remaining <= 0.405


def test_an_expired_deadline_is_deadline_exceeded_both_ways(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.delay = 0.5
    with mesh_for([agent]) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        with pytest.raises(DeadlineExceededError) as info:
            echo(b"", timeout=0.1)
        assert isinstance(info.value, grpc.RpcError) and info.value.code() is SC.DEADLINE_EXCEEDED
        assert mesh.stats()["services"]["svc"]["deadline_exceeded"] == 1
    with mesh_for([agent], timeout="100ms") as mesh:  # the service's own timeout
        with pytest.raises(DeadlineExceededError):
            mesh.grpc_channel("svc").unary_unary(ECHO)(b"")


def test_per_try_timeout_moves_a_slow_attempt_to_another_endpoint(grpc_agents) -> None:
    slow, fast = grpc_agents(2)
    slow.behaviour.delay, slow.behaviour.slow_only = 1.0, True
    config = {"lb_policy": "ring_hash", "hash_header": "x-user", "per_try_timeout": "100ms", "retry_on": "deadline-exceeded", "outlier_detection": False}
    with mesh_for([slow, fast], **config) as mesh:
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        user = user_on(echo, b"agent-1")
        started = time.monotonic()
        assert echo(b"slow", timeout=5, metadata=user) == b"agent-2"
        assert time.monotonic() - started < 0.8
        assert slow.behaviour.seen[-1].time_remaining <= 0.105  # the attempt carried the per-try limit


# ----------------------------------------------------------------- channel lifecycle


def test_an_endpoint_leaving_closes_its_channel_after_its_calls_finish(grpc_agents) -> None:
    leaving, staying = grpc_agents(2)
    leaving.behaviour.delay = 0.4
    with mesh_for([leaving]) as mesh:
        channel = mesh.grpc_channel("svc")
        assert isinstance(channel, MeshChannel) and isinstance(channel, grpc.Channel)
        echo = channel.unary_unary(ECHO)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(echo, b"")  # to `leaving`, which takes 0.4 s
            wait_until(lambda: leaving.hits == 1)
            sub = next(s for s in channel.pool.subchannels() if s.endpoint.port == leaving.port)
            mesh.cluster("svc").update(EndpointSnapshot("svc", [parse_endpoint(staying.address)], version=2))
            assert sub not in channel.pool.subchannels() and not sub.closed  # retired, its call still running
            assert in_flight.result(5) == b"agent-1"
        wait_until(lambda: sub.closed)
        with pytest.raises(ValueError):  # grpcio's own word for a closed channel
            sub.channel.unary_unary(ECHO)(b"")
        assert {echo(b"") for _ in range(4)} == {b"agent-2"}


def test_close_closes_every_endpoint_channel(grpc_agents) -> None:
    agents = grpc_agents(2)
    mesh = mesh_for(agents, lb_policy="round_robin")
    channel = mesh.grpc_channel("svc")
    echo = channel.unary_unary(ECHO)
    for _ in range(4):
        echo(b"")
    subs = channel.pool.subchannels()
    assert len(subs) == 2
    # Channels of the same service and options share the endpoint channels.
    assert mesh.grpc_channel("svc").pool is channel.pool
    mesh.close()
    assert all(s.closed for s in subs)
    with pytest.raises(grpc.RpcError):
        echo(b"")
    with pytest.raises(meshlib.MeshError):
        mesh.grpc_channel("svc")


def test_unknown_service_is_refused_at_once(grpc_agents) -> None:
    with mesh_for(grpc_agents(1)) as mesh:
        with pytest.raises(meshlib.UnknownServiceError):
            mesh.grpc_channel("nope")


def test_channel_ready_future_and_subscribe(grpc_agents) -> None:
    with mesh_for(grpc_agents(2)) as mesh:
        channel = mesh.grpc_channel("svc")
        grpc.channel_ready_future(channel).result(timeout=5)
        channel.close()


# ----------------------------------------------------------------- health checks and TLS


def test_grpc_health_checks_take_a_not_serving_endpoint_out(grpc_agents) -> None:
    sick, well = grpc_agents(2)
    config = {"health_check_protocol": "grpc", "health_check_interval": "1h", "health_check_unhealthy_threshold": 1, "health_check_healthy_threshold": 1, "lb_policy": "round_robin"}
    with mesh_for([sick, well], **config) as mesh:
        cluster = mesh.cluster("svc")
        cluster.check_health()
        assert all(ep.healthy for ep in mesh.endpoints("svc"))
        sick.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert cluster.check_health()
        assert {ep.address: ep.healthy for ep in mesh.endpoints("svc")} == {sick.address: False, well.address: True}
        echo = mesh.grpc_channel("svc").unary_unary(ECHO)
        assert {echo(b"") for _ in range(6)} == {b"agent-2"}
        sick.health.set("", health_pb2.HealthCheckResponse.SERVING)
        assert cluster.check_health()
        assert all(ep.healthy for ep in mesh.endpoints("svc"))


def test_grpc_health_check_asks_about_the_named_service(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.health.set("inventory", health_pb2.HealthCheckResponse.NOT_SERVING)
    config = {"health_check_protocol": "grpc", "health_check_path": "inventory", "health_check_interval": "1h", "health_check_unhealthy_threshold": 1}
    with mesh_for([agent], **config) as mesh:
        mesh.cluster("svc").check_health()
        assert not mesh.endpoints("svc")[0].healthy


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[bytes, bytes]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("grpc-tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=inventory", "-addext", "subjectAltName=DNS:inventory"],
        check=True, capture_output=True,
    )
    return crt.read_bytes(), key.read_bytes()


def test_tls_to_every_endpoint_verifies_the_service_name(grpc_agents, cert) -> None:
    crt, key = cert
    agents = grpc_agents(2, credentials=grpc.ssl_server_credentials([(key, crt)]))
    with Mesh(config={"services": {"inventory": {"endpoints": addresses(agents), "lb_policy": "round_robin"}, "other": {"endpoints": addresses(agents)}}}) as mesh:
        creds = grpc.ssl_channel_credentials(root_certificates=crt)
        echo = mesh.grpc_channel("inventory", credentials=creds).unary_unary(ECHO)
        assert names([echo(b"") for _ in range(4)]) == {"agent-1": 2, "agent-2": 2}
        # The certificate names `inventory`: another service name does not verify.
        with pytest.raises(grpc.RpcError) as info:
            mesh.grpc_channel("other", credentials=creds).unary_unary(ECHO)(b"", timeout=5)
        assert info.value.code() is SC.UNAVAILABLE


# ----------------------------------------------------------------- interceptors on the caller's own channel


def test_interceptors_retry_propagate_and_count_on_your_own_channel(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.fail(SC.UNAVAILABLE, times=2)
    with Mesh(config={"services": {"svc": {"retry_on": "unavailable", "num_retries": 3, "retry_backoff_base": "1ms"}}}) as mesh:
        (interceptor,) = mesh.grpc_interceptors("svc")
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), interceptor)
        echo = channel.unary_unary(ECHO)
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with meshlib.deadline(3.0):
            assert echo(b"", metadata=(("traceparent", traceparent),)) == b"agent-1"
        seen = agent.behaviour.seen
        assert [s.metadata.get("x-envoy-attempt-count") for s in seen] == [None, "2", "3"]
        # The caller's trace goes on in every attempt (each attempt's own parent-id when spans are recorded).
        assert {s.metadata["traceparent"][:36] for s in seen} == {traceparent[:36]}
        assert all(s.time_remaining is not None and s.time_remaining <= 3.01 for s in seen)
        stats = interceptor.stats()
        assert (stats["attempts"], stats["successes"], stats["retries"], stats["calls"]) == (3, 1, 2, 1)
        # with_call, future and streams go through it too.
        assert echo.with_call(b"")[0] == b"agent-1"
        assert echo.future(b"").result(5) == b"agent-1"
        assert names(list(channel.unary_stream(COUNT)(b"3"))) == {"agent-1": 3}
        assert channel.stream_unary(JOIN)(iter([b"x", b"y"])) == b"agent-1:x,y"
        wait_until(lambda: interceptor.stats()["active"] == 0)
        assert interceptor.stats()["calls"] == 5


def test_interceptors_bring_breaker_and_deadline_errors(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.fail(SC.INTERNAL)
    config = {"breaker": "cluster", "breaker_minimum_calls": 3, "breaker_window_size": 3, "breaker_wait_duration_open": "60s"}
    with Mesh(config={"services": {"svc": config}}) as mesh:
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *mesh.grpc_interceptors("svc"))
        echo = channel.unary_unary(ECHO)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                echo(b"")
            assert info.value.code() is SC.INTERNAL
        with pytest.raises(CircuitOpenError) as opened:
            echo(b"")
        assert opened.value.code() is SC.UNAVAILABLE  # type: ignore[attr-defined]
        assert agent.hits == 3
    agent.fail(None)
    agent.behaviour.delay = 0.5
    with Mesh(config={"services": {"svc": {}}}) as mesh:
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *mesh.grpc_interceptors("svc"))
        with pytest.raises(DeadlineExceededError) as late:
            channel.unary_unary(ECHO)(b"", timeout=0.1)
        assert late.value.code() is SC.DEADLINE_EXCEEDED  # type: ignore[attr-defined]


def test_rpc_status_error_is_a_finished_future() -> None:
    err = RpcStatusError(SC.UNAVAILABLE, "down", (("k", "v"),))
    assert err.done() and err.exception() is err and err.code() is SC.UNAVAILABLE
    assert err.trailing_metadata() == (("k", "v"),)
    with pytest.raises(RpcStatusError):
        err.result()


def test_a_paused_request_stream_view_does_not_block_the_others() -> None:
    from meshlib.adapters.grpc import Replay

    replay = Replay(iter([b"a", b"b", b"c"]))
    first = replay.view()
    assert next(first) == b"a"  # grpcio may sit here on flow control, holding nothing
    second = replay.view()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(lambda: list(second)).result(timeout=2) == [b"a", b"b", b"c"]
        pool.submit(replay.commit).result(timeout=2)
    assert list(first) == [b"b", b"c"]


def test_a_stream_the_caller_cancels_is_not_counted_against_the_endpoint(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.gap = 0.01
    with mesh_for([agent]) as mesh:
        stream = mesh.grpc_channel("svc").unary_stream(COUNT)(b"50")
        next(stream)
        stream.cancel()
        endpoint = lambda: mesh.stats()["services"]["svc"]["endpoints"][0]  # noqa: E731
        wait_until(lambda: endpoint()["active"] == 0)
        assert endpoint()["failures"] == 0


def test_an_injected_delay_does_not_eat_a_streams_service_timeout(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.gap = 0.01  # 20 messages take about 200 ms
    with mesh_for([agent], timeout="400ms", fault_delay_percent=100, fault_delay="300ms") as mesh:
        messages = list(mesh.grpc_channel("svc").unary_stream(COUNT)(b"20"))
    assert len(messages) == 20  # the 400 ms started after the 300 ms delay, as for unary calls
