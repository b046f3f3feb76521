"""A gRPC response stream's attempt is timed twice: to its first byte (the
answer's headers or first message: time to first byte, and the latency the
balancers learn from) and to its end (the request's duration), whichever way
the caller makes it: the mesh channel, or the interceptors on a channel of
its own, sync or ``grpc.aio``.

The agent answers ``Count`` with its first message at once, then one message
every ``GAP`` seconds."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from meshlib import Mesh

from .grpc_agents import COUNT, grpc_agents, wait_until  # noqa: F401 (a fixture)

GAP = 0.1
MESSAGES = 4  # so the stream lasts 3 gaps


def _timings(mesh: Mesh) -> tuple[dict, dict]:
    """The one endpoint's time-to-first-byte and duration histograms (empty before the first record)."""
    t = mesh.stats()["telemetry"]["services"]["svc"]
    none = {"count": 0}
    return next(iter(t["first_byte"].values()), none), next(iter(t["rq_time"].values()), none)


def _assert_timed_apart(mesh: Mesh) -> None:
    wait_until(lambda: _timings(mesh)[1]["count"] == 1)
    ttfb, total = _timings(mesh)
    assert ttfb["count"] == total["count"] == 1
    assert total["sum"] >= (MESSAGES - 1) * GAP * 0.9
    assert ttfb["sum"] < GAP  # not the stream's whole duration


def _messages(n: int = MESSAGES) -> list[bytes]:
    return [f"agent-1:{i}".encode() for i in range(n)]


def test_mesh_channel_streams_are_timed_to_first_message_and_to_end(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.gap = GAP
    with Mesh(config={"services": {"svc": {"endpoints": agent.address}}}) as mesh:
        assert list(mesh.grpc_channel("svc").unary_stream(COUNT)(str(MESSAGES).encode())) == _messages()
        _assert_timed_apart(mesh)


def test_interceptor_streams_are_timed_to_first_message_and_to_end(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.gap = GAP
    with Mesh(config={"services": {"svc": {}}}) as mesh:
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *mesh.grpc_interceptors("svc"))
        stream = channel.unary_stream(COUNT)(str(MESSAGES).encode())
        assert isinstance(stream, grpc.Call) and isinstance(stream, grpc.Future)
        assert list(stream) == _messages()
        assert stream.code() is grpc.StatusCode.OK and stream.done() and not stream.is_active()
        _assert_timed_apart(mesh)
        channel.close()


def test_an_interceptor_stream_keeps_grpcio_errors_and_cancellation(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.gap = GAP
    with Mesh(config={"services": {"svc": {}}}) as mesh:
        interceptors = mesh.grpc_interceptors("svc")
        channel = grpc.intercept_channel(grpc.insecure_channel(agent.address), *interceptors)
        stream = channel.unary_stream(COUNT)(b"50")
        assert next(stream) == b"agent-1:0"
        done = []
        stream.add_done_callback(done.append)
        assert stream.cancel()
        try:
            next(stream)
            raise AssertionError("a cancelled stream went on")
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
        wait_until(lambda: done == [stream])
        wait_until(lambda: interceptors[0].stats()["active"] == 0)
        assert "CANCELLED" in str(mesh.stats()["telemetry"]["services"]["svc"]["grpc_attempt_duration"])
        channel.close()


async def test_aio_interceptor_streams_are_timed_to_headers_and_to_end(grpc_agents) -> None:
    (agent,) = grpc_agents(1)
    agent.behaviour.gap = GAP
    with Mesh(config={"services": {"svc": {}}}) as mesh:
        async with grpc.aio.insecure_channel(agent.address, interceptors=mesh.grpc_interceptors("svc", aio=True)) as channel:
            assert [m async for m in channel.unary_stream(COUNT)(str(MESSAGES).encode())] == _messages()
            for _ in range(100):  # the attempt is booked on the loop once the call is done
                if _timings(mesh)[1]["count"]:
                    break
                await asyncio.sleep(0.01)
        _assert_timed_apart(mesh)
