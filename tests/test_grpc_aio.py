"""End to end, asyncio: ``mesh.grpc_aio_channel`` and the ``grpc.aio``
interceptors on the test's event loop, against real grpcio servers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Callable

import grpc
import grpc.aio
import pytest

import meshlib
from meshlib import CircuitOpenError, DeadlineExceededError, Mesh
from meshlib.adapters.grpc import MeshAioChannel
from meshlib.endpoint import EndpointSnapshot, parse_endpoint

from .grpc_agents import CHAT, COUNT, ECHO, JOIN, GrpcAgent, grpc_agents  # noqa: F401 (a fixture)

SC = grpc.StatusCode


def mesh_for(agents: list[GrpcAgent], **service: object) -> Mesh:
    return Mesh(config={"services": {"svc": {"endpoints": ",".join(a.address for a in agents), **service}}})


def names(answers: list[bytes]) -> Counter[str]:
    return Counter(a.decode().split(":")[0] for a in answers)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_aio_calls_are_balanced_and_streams_pinned(grpc_agents) -> None:
    agents = grpc_agents(2)
    with mesh_for(agents, lb_policy="round_robin") as mesh:
        async with mesh.grpc_aio_channel("svc") as channel:
            assert isinstance(channel, MeshAioChannel) and isinstance(channel, grpc.aio.Channel)
            echo = channel.unary_unary(ECHO)
            answers = await asyncio.gather(*(echo(b"") for _ in range(20)))
            assert names(answers) == {"agent-1": 10, "agent-2": 10}
            call = echo(b"")
            assert await call in (b"agent-1", b"agent-2")
            assert await call.code() is SC.OK and call.done()

            streams = [[m async for m in channel.unary_stream(COUNT)(b"10")] for _ in range(4)]
            for messages in streams:
                assert len(messages) == 10 and len(names(messages)) == 1
            assert names([s[0] for s in streams]) == {"agent-1": 2, "agent-2": 2}

            assert (await channel.stream_unary(JOIN)(iter([b"a", b"b"]))).endswith(b":a,b")

            async def gen():
                for r in (b"1", b"2"):
                    yield r

            assert [r.split(b":")[1] for r in [m async for m in channel.stream_stream(CHAT)(gen())]] == [b"1", b"2"]
            # The write() / done_writing() style works too.
            chat = channel.stream_stream(CHAT)()
            await chat.write(b"hello")
            first = await chat.read()
            assert first.endswith(b":hello")
            await chat.done_writing()
            assert await chat.read() is grpc.aio.EOF
            assert await chat.code() is SC.OK
        await until(lambda: all(e["active"] == 0 for e in mesh.stats()["services"]["svc"]["endpoints"]))


async def test_aio_unavailable_retried_under_retry_on_and_deadline_exceeded(grpc_agents) -> None:
    bad, good = grpc_agents(2)
    bad.fail(SC.UNAVAILABLE)
    with mesh_for([bad, good], lb_policy="round_robin", retry_on="unavailable", outlier_detection=False) as mesh:
        channel = mesh.grpc_aio_channel("svc")
        echo = channel.unary_unary(ECHO)
        assert [await echo(b"") for _ in range(6)] == [b"agent-2"] * 6
        assert mesh.stats()["services"]["svc"]["retries"] >= 5
        bad.fail(SC.RESOURCE_EXHAUSTED)
        codes = set()
        for _ in range(4):
            try:
                await echo(b"")
            except grpc.aio.AioRpcError as err:
                codes.add(err.code())
        assert codes == {SC.RESOURCE_EXHAUSTED}
        # Streams that fail before their first message are retried too.
        bad.fail(SC.UNAVAILABLE)
        for _ in range(4):
            assert names([m async for m in channel.unary_stream(COUNT)(b"2")]) == {"agent-2": 2}
        bad.fail(None)
        good.behaviour.delay = bad.behaviour.delay = 0.5
        with pytest.raises(DeadlineExceededError) as info:
            await echo(b"", timeout=0.1)
        assert isinstance(info.value, grpc.RpcError) and info.value.code() is SC.DEADLINE_EXCEEDED
        call = echo(b"", timeout=0.1)
        with pytest.raises(grpc.RpcError):
            await call
        assert await call.code() is SC.DEADLINE_EXCEEDED
        await channel.close()


async def test_aio_deadline_reaches_the_server_and_hedges_are_cancelled(grpc_agents) -> None:
    slow, fast = grpc_agents(2)
    slow.behaviour.delay, slow.behaviour.slow_only = 1.0, True
    with mesh_for([slow, fast], lb_policy="ring_hash", hash_header="x-user", hedge_max_attempts=2, hedge_delay="50ms") as mesh:
        channel = mesh.grpc_aio_channel("svc")
        echo = channel.unary_unary(ECHO)
        with meshlib.deadline(2.0):
            await echo(b"", timeout=10)
        (remaining,) = [seen.time_remaining for a in (slow, fast) for seen in a.behaviour.seen]
        assert 1.5 < remaining <= 2.01
        user = None
        for i in range(200):
            md = (("x-user", f"u{i}"),)
            if await echo(b"", metadata=md) == b"agent-1":
                user = md
                break
        assert user is not None
        started = time.monotonic()
        assert await echo(b"slow", metadata=user) == b"agent-2"
        assert time.monotonic() - started < 0.8
        assert mesh.stats()["services"]["svc"]["hedges"] == 1
        await channel.close()


async def test_aio_endpoint_leaving_closes_its_channel_after_in_flight_calls(grpc_agents) -> None:
    leaving, staying = grpc_agents(2)
    leaving.behaviour.delay = 0.3
    with mesh_for([leaving]) as mesh:
        channel = mesh.grpc_aio_channel("svc")
        echo = channel.unary_unary(ECHO)
        in_flight = echo(b"")
        await until(lambda: leaving.hits == 1)
        (sub,) = channel.pool.subchannels()
        mesh.cluster("svc").update(EndpointSnapshot("svc", [parse_endpoint(staying.address)], version=2))
        assert not sub.closed
        assert await in_flight == b"agent-1"
        await until(lambda: sub.closed)
        assert [await echo(b"") for _ in range(3)] == [b"agent-2"] * 3
        await channel.close()
    assert all(s.closed for s in channel.pool.subchannels())


async def test_aio_interceptors_on_your_own_channel(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.fail(SC.UNAVAILABLE, times=2)
    with Mesh(config={"services": {"svc": {"retry_on": "unavailable", "num_retries": 3, "retry_backoff_base": "1ms"}}}) as mesh:
        interceptors = mesh.grpc_interceptors("svc", aio=True)
        async with grpc.aio.insecure_channel(agent.address, interceptors=interceptors) as channel:
            echo = channel.unary_unary(ECHO)
            with meshlib.deadline(3.0):
                assert await echo(b"", metadata=(("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)) == b"agent-1"
            seen = agent.behaviour.seen
            assert [s.metadata.get("x-envoy-attempt-count") for s in seen] == [None, "2", "3"]
            assert all(s.metadata["traceparent"].startswith("00-0af76519") and s.time_remaining <= 3.01 for s in seen)
            assert [m async for m in channel.unary_stream(COUNT)(b"3")] == [b"agent-1:0", b"agent-1:1", b"agent-1:2"]
            stats = interceptors[0].stats()
            await until(lambda: interceptors[0].stats()["active"] == 0)
            assert (stats["retries"], interceptors[0].stats()["calls"]) == (2, 2)

    agent.fail(SC.INTERNAL)
    config = {"breaker": "cluster", "breaker_minimum_calls": 2, "breaker_window_size": 2, "breaker_wait_duration_open": "60s"}
    with Mesh(config={"services": {"svc": config}}) as mesh:
        async with grpc.aio.insecure_channel(agent.address, interceptors=mesh.grpc_interceptors("svc", aio=True)) as channel:
            echo = channel.unary_unary(ECHO)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    await echo(b"")
            with pytest.raises(CircuitOpenError) as info:
                await echo(b"")
            assert info.value.code() is SC.UNAVAILABLE  # type: ignore[attr-defined]


async def test_aio_interceptors_retry_client_streams_by_replaying_them(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    with Mesh(config={"services": {"svc": {"retry_on": "unavailable", "num_retries": 3, "retry_backoff_base": "1ms"}}}) as mesh:
        interceptors = mesh.grpc_interceptors("svc", aio=True)
        async with grpc.aio.insecure_channel(agent.address, interceptors=interceptors) as channel:
            join = channel.stream_unary(JOIN)

            async def requests():
                for message in (b"x", b"y"):
                    yield message

            agent.fail(SC.UNAVAILABLE, times=1)
            assert await join(requests()) == b"agent-1:x,y"  # the retry read the stream again from the start
            agent.fail(SC.UNAVAILABLE, times=1)
            call = join()
            await call.write(b"p")
            await call.write(b"q")
            await call.done_writing()
            assert await call == b"agent-1:p,q"
            assert [s.metadata.get("x-envoy-attempt-count") for s in agent.behaviour.seen] == [None, "2", None, "2"]
            stats = interceptors[0].stats()
            assert (stats["calls"], stats["attempts"], stats["retries"], stats["active"]) == (2, 4, 2, 0)


def test_aio_channel_needs_a_running_loop(grpc_agents) -> None:
    with mesh_for(grpc_agents(1)) as mesh:
        with pytest.raises(RuntimeError, match="from a coroutine"):
            mesh.grpc_aio_channel("svc")
