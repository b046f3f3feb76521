"""gRPC clients behave as their raw selves (issue 11, gRPC part), against real
grpcio servers on 127.0.0.1: a status the server sent is never a connect
failure; ``.future()`` is live at once and can be cancelled while it runs;
interceptor streams that fail before they start are iterators raising the
error; grpc.aio errors are ``grpc.aio.AioRpcError``; a stream's attempt is
in flight until the stream ends."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

import grpc
import grpc.aio
import pytest

import meshlib
from meshlib import CircuitOpenError, DeadlineExceededError, Mesh
from meshlib.adapters.grpc import judge_rpc
from meshlib.outcome import Outcome

from .grpc_agents import COUNT, ECHO, JOIN, GrpcAgent, grpc_agents, wait_until  # noqa: F401 (a fixture)

SC = grpc.StatusCode
PEER_REFUSED = "backend db: Connection refused"


def mesh_for(agents: list[GrpcAgent], **service: object) -> Mesh:
    return Mesh(config={"services": {"svc": {"endpoints": ",".join(a.address for a in agents), **service}}})


class _Status:
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


# ------------------------------------------------------------- a peer's status is its answer


def test_only_grpc_cores_own_no_connection_status_is_a_connect_failure() -> None:
    core = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"
    assert judge_rpc(_Status(SC.UNAVAILABLE, core)).outcome == Outcome.CONNECT_FAILURE
    assert judge_rpc(_Status(SC.UNAVAILABLE, "DNS resolution failed for nowhere.invalid")).outcome == Outcome.CONNECT_FAILURE
    for server_text in (PEER_REFUSED, "Connection refused", "upstream: failed to connect to all addresses"):
        assert judge_rpc(_Status(SC.UNAVAILABLE, server_text)).outcome == Outcome.FAILURE, server_text


@pytest.mark.parametrize("client", ["mesh_channel", "interceptors"])
def test_a_servers_unavailable_saying_connection_refused_runs_once(grpc_agents, client: str) -> None:
    agents = grpc_agents(2)
    for agent in agents:
        agent.fail(SC.UNAVAILABLE, details=PEER_REFUSED)
    with mesh_for(agents) as mesh:  # default retry_on: connect-failure, refused-stream
        if client == "mesh_channel":
            channel: Any = mesh.grpc_channel("svc")
        else:
            channel = grpc.intercept_channel(grpc.insecure_channel(agents[0].address), *mesh.grpc_interceptors("svc"))
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(ECHO)(b"")
        assert (info.value.code(), info.value.details()) == (SC.UNAVAILABLE, PEER_REFUSED)
        assert sum(a.hits for a in agents) == 1
        assert mesh.stats()["services"]["svc"]["retries"] == 0


# ------------------------------------------------------------- .future() on the mesh channel


def test_a_running_future_is_cancelled_and_no_attempt_follows(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.delay = 0.5
    # Even a policy that retries CANCELLED must not retry the caller's own cancel.
    with mesh_for([agent], retry_on="cancelled,unavailable,reset", num_retries=3) as mesh:
        called: list[Any] = []
        future = mesh.grpc_channel("svc").unary_unary(ECHO).future(b"", timeout=5)
        future.add_done_callback(called.append)
        wait_until(lambda: agent.hits == 1)
        assert future.running() and not future.done()
        assert future.cancel() is True
        assert future.cancelled() and future.done() and not future.running()
        assert called == [future]
        assert future.code() is SC.CANCELLED
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
        with pytest.raises(grpc.FutureCancelledError):
            future.exception()
        assert future.cancel() is False  # already over
        endpoint = lambda: mesh.stats()["services"]["svc"]["endpoints"][0]  # noqa: E731
        wait_until(lambda: endpoint()["active"] == 0)
        time.sleep(0.7)  # long enough for a retry to have reached the server
        assert agent.hits == 1
        assert endpoint()["failures"] == 0  # the caller's cancel says nothing about the host


def test_a_future_reports_time_remaining_and_its_answer(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.delay = 0.2
    with mesh_for([agent]) as mesh:
        future = mesh.grpc_channel("svc").unary_unary(ECHO).future(b"", timeout=5)
        wait_until(lambda: agent.hits == 1)
        left = future.time_remaining()
        assert left is not None and 4 < left <= 5
        assert future.result() == b"agent-1" and future.code() is SC.OK and future.exception() is None


def test_a_stream_cancelled_between_attempts_starts_no_other(grpc_agents) -> None:
    agents = grpc_agents(2)
    for agent in agents:
        agent.fail(SC.UNAVAILABLE, pushback_ms="400")  # the retry waits 400 ms
    with mesh_for(agents, retry_on="unavailable") as mesh:
        stream = mesh.grpc_channel("svc").unary_stream(COUNT)(b"3")
        errors: list[grpc.RpcError] = []
        reader = threading.Thread(target=lambda: errors.extend(_first_error(stream)))
        reader.start()
        wait_until(lambda: sum(a.hits for a in agents) == 1)
        time.sleep(0.05)  # the reader is in the back-off now
        assert stream.cancel() is True
        reader.join(5)
        assert [e.code() for e in errors] == [SC.CANCELLED]
        time.sleep(0.5)
        assert sum(a.hits for a in agents) == 1


def _first_error(stream: Any) -> list[grpc.RpcError]:
    try:
        next(stream)
    except grpc.RpcError as err:
        return [err]
    return []


async def test_an_aio_stream_cancelled_between_attempts_starts_no_other(grpc_agents) -> None:
    agents = grpc_agents(2)
    for agent in agents:
        agent.fail(SC.UNAVAILABLE, pushback_ms="400")
    with mesh_for(agents, retry_on="unavailable") as mesh:
        async with mesh.grpc_aio_channel("svc") as channel:
            stream = channel.unary_stream(COUNT)(b"3")
            reading = asyncio.ensure_future(stream.read())
            while sum(a.hits for a in agents) < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert stream.cancel() is True and stream.cancelled()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reading
            assert err.value.code() is SC.CANCELLED
            await asyncio.sleep(0.5)
            assert sum(a.hits for a in agents) == 1


# ------------------------------------------------------------- interceptors


def test_an_interceptor_future_is_live_at_once_and_cancellable(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.delay = 0.5
    with Mesh(config={"services": {"svc": {}}}) as mesh:
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *mesh.grpc_interceptors("svc"))
        echo = channel.unary_unary(ECHO)
        started = time.monotonic()
        slow = echo.future(b"")
        assert time.monotonic() - started < 0.3 and not slow.done()
        assert slow.result(timeout=5) == b"agent-1"
        cancelled = echo.future(b"")
        wait_until(lambda: agent.hits == 2)
        assert cancelled.cancel() is True and cancelled.cancelled()
        assert cancelled.code() is SC.CANCELLED
        time.sleep(0.6)
        assert agent.hits == 2


def test_an_interceptor_request_stream_can_be_fed_after_future_returns(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    with Mesh(config={"services": {"svc": {}}}) as mesh:
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *mesh.grpc_interceptors("svc"))
        requests: queue.Queue[bytes | None] = queue.Queue()
        future = channel.stream_unary(JOIN).future(iter(requests.get, None))
        for part in (b"a", b"b"):
            requests.put(part)
        requests.put(None)
        assert future.result(timeout=5) == b"agent-1:a,b"


@pytest.mark.parametrize("why", ["deadline", "breaker", "fault"])
def test_interceptor_streams_refused_before_they_start_raise_when_read(grpc_agents, why: str) -> None:
    (agent,) = grpc_agents(1)
    service: dict[str, object] = {}
    if why == "breaker":
        service = {"breaker": "cluster", "breaker_minimum_calls": 1, "breaker_window_size": 1, "breaker_wait_duration_open": "60s"}
        agent.fail(SC.INTERNAL, times=1)
    elif why == "fault":
        service = {"fault_abort_percent": 100, "fault_abort_grpc_status": "RESOURCE_EXHAUSTED"}
    with Mesh(config={"services": {"svc": service}}) as mesh:
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *mesh.grpc_interceptors("svc"))
        if why == "breaker":
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(ECHO)(b"")  # opens the breaker
        count = channel.unary_stream(COUNT)
        if why == "deadline":
            with meshlib.deadline(0.0):
                stream = count(b"3")
        else:
            stream = count(b"3")
        with pytest.raises(grpc.RpcError) as info:
            next(iter(stream))
        expected = {"deadline": SC.DEADLINE_EXCEEDED, "breaker": SC.UNAVAILABLE, "fault": SC.RESOURCE_EXHAUSTED}[why]
        assert info.value.code() is expected
        assert stream.code() is expected
        if why == "deadline":
            assert isinstance(info.value, DeadlineExceededError)
        if why == "breaker":
            assert isinstance(info.value, CircuitOpenError)


# ------------------------------------------------------------- grpc.aio


async def test_aio_mesh_errors_are_aio_rpc_errors(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.delay = 0.5
    with mesh_for([agent]) as mesh:
        async with mesh.grpc_aio_channel("svc") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await channel.unary_unary(ECHO)(b"", timeout=0.1)
            assert late.value.code() is SC.DEADLINE_EXCEEDED
            assert isinstance(late.value, DeadlineExceededError)
        interceptors = mesh.grpc_interceptors("svc", aio=True)
        async with grpc.aio.insecure_channel(agent.address, interceptors=interceptors) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await channel.unary_unary(ECHO)(b"", timeout=0.1)
            assert late.value.code() is SC.DEADLINE_EXCEEDED
    with mesh_for([agent], fault_abort_percent=100, fault_abort_grpc_status="RESOURCE_EXHAUSTED") as mesh:
        async with mesh.grpc_aio_channel("svc") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as aborted:
                await channel.unary_unary(ECHO)(b"")
            assert (aborted.value.code(), aborted.value.details()) == (SC.RESOURCE_EXHAUSTED, "fault filter abort")
            stream = channel.unary_stream(COUNT)(b"2")
            with pytest.raises(grpc.aio.AioRpcError):
                await stream.read()


async def test_aio_cancel_and_time_remaining_as_grpc_aio(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.delay = 0.3
    with mesh_for([agent]) as mesh:
        async with mesh.grpc_aio_channel("svc") as channel:
            echo = channel.unary_unary(ECHO)
            call = echo(b"", timeout=5)
            left = call.time_remaining()
            assert left is not None and 4 < left <= 5
            await asyncio.sleep(0.05)
            left = call.time_remaining()
            assert left is not None and 4 < left < 5  # in flight: counting down
            assert call.cancel() is True
            assert call.cancelled() and call.done()  # at once, as grpc.aio's
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await call.code() is SC.CANCELLED
            stream = channel.unary_stream(COUNT)(b"2", timeout=5)
            left = stream.time_remaining()
            assert left is not None and 4 < left <= 5  # before its first attempt went out
            assert [m async for m in stream] == [b"agent-1:0", b"agent-1:1"]


# ------------------------------------------------------------- streams count until they end


def test_a_stream_holds_its_slot_until_it_is_read_to_the_end(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    with mesh_for([agent], max_requests=1) as mesh:
        channel = mesh.grpc_channel("svc")
        endpoint = lambda: mesh.stats()["services"]["svc"]["endpoints"][0]  # noqa: E731
        stream = channel.unary_stream(COUNT)(b"3")
        assert next(stream) == b"agent-1:0"
        assert endpoint()["active"] == 1  # committed, not yet read to the end
        with pytest.raises(CircuitOpenError):
            channel.unary_unary(ECHO)(b"")  # max_requests=1 is taken by the open stream
        assert list(stream) == [b"agent-1:1", b"agent-1:2"]
        wait_until(lambda: endpoint()["active"] == 0)
        assert channel.unary_unary(ECHO)(b"") == b"agent-1"
