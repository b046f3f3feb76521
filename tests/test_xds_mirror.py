"""Request mirroring (a route's ``request_mirror_policies``) from httpx (sync
and async) and from gRPC channels (sync and aio), configured over xDS by the
test control plane: every call still goes to the route's cluster and answers
at once, a copy reaches the mirror cluster with ``-shadow`` on its authority,
and a slow or dead mirror never delays or fails the real call."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable, Iterator

import pytest

import meshlib

from .grpc_agents import COUNT, ECHO, GrpcAgent
from .xds_control_plane import ControlPlane, bootstrap, route, service

SLOW = 2.0  # the mirror's answer takes this long; the real calls must not wait for it


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return got


async def await_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    yield plane
    plane.stop()


def mirrored(cp: ControlPlane, name: str, main: str, shadow: str, dead: str) -> meshlib.Mesh:
    """Listener ``name``: every call to ``<name>-main``, mirrored to ``<name>-shadow`` and to a dead cluster."""
    r = route("/", f"{name}-main")
    r.route.request_mirror_policies.add().cluster = f"{name}-shadow"
    r.route.request_mirror_policies.add().cluster = f"{name}-dead"
    cp.set(service(name, {f"{name}-main": [main], f"{name}-shadow": [shadow], f"{name}-dead": [dead]}, routes=[r]))
    doc = json.dumps(bootstrap(cp.address))
    return meshlib.Mesh(config={"discovery": "xds", "xds_bootstrap_config": doc, "xds_listeners": name})


def test_httpx_clients_mirror_without_waiting_for_the_mirror(cp, agents, refused_port) -> None:
    main, shadow = agents(1, "main")[0], agents(1, "shadow")[0]
    shadow.behaviour.delay = SLOW
    with mirrored(cp, "web", main.address, shadow.address, f"127.0.0.1:{refused_port}") as mesh:
        with mesh.httpx_client() as client:
            started = time.monotonic()
            for _ in range(3):
                assert client.post("http://web/items?q=1", content=b"payload").json()["agent"] == main.name
            assert time.monotonic() - started < SLOW / 2
            wait_until(lambda: shadow.hits == 3, what="3 shadow copies")
            assert shadow.behaviour.hosts[-1] == "web-shadow" and main.behaviour.hosts[-1] == "web"
            assert main.hits == 3

        async def go() -> None:
            async with mesh.httpx_async_client() as aclient:
                started = time.monotonic()
                for _ in range(2):
                    assert (await aclient.get("http://web/items")).json()["agent"] == main.name
                assert time.monotonic() - started < SLOW / 2
                await await_until(lambda: shadow.hits == 5, what="2 shadow copies from the async client")

        asyncio.run(go())
        assert main.hits == 5
        stats = mesh.resource(_pool_key(), _no_pool)
        assert stats.sent + stats.failed + stats.in_flight >= 5 and stats.failed >= 1  # the dead mirror's copies failed, quietly


def test_grpc_channels_mirror_unary_request_calls(cp, refused_port) -> None:
    main, shadow = GrpcAgent("main"), GrpcAgent("shadow")
    shadow.behaviour.delay = SLOW
    try:
        with mirrored(cp, "g", main.address, shadow.address, f"127.0.0.1:{refused_port}") as mesh:
            ch = mesh.grpc_channel("g")
            echo = ch.unary_unary(ECHO)
            started = time.monotonic()
            for _ in range(3):
                assert echo(b"x", timeout=5) == b"main"
            assert time.monotonic() - started < SLOW / 2
            wait_until(lambda: shadow.hits == 3, what="3 shadow copies")
            assert {s.authority for s in shadow.behaviour.seen} == {"g-shadow"} and main.behaviour.seen[-1].authority == "g"
            assert [m.decode() for m in ch.unary_stream(COUNT)(b"2", timeout=5)] == ["main:0", "main:1"]
            wait_until(lambda: shadow.hits == 4 and shadow.behaviour.seen[-1].method == "Count", what="a mirrored server-streaming call")

            async def go() -> None:
                aio = mesh.grpc_aio_channel("g")
                started = time.monotonic()
                assert await aio.unary_unary(ECHO)(b"x", timeout=5) == b"main"
                assert time.monotonic() - started < SLOW / 2
                await await_until(lambda: shadow.hits == 5, what="a shadow copy from grpc.aio")
                await aio.close()

            asyncio.run(go())
            assert main.hits == 5
    finally:
        main.stop()
        shadow.stop()


def _pool_key() -> Any:
    from meshlib.adapters._mirror import MirrorPool

    return MirrorPool


def _no_pool() -> Any:
    raise AssertionError("no copy was mirrored")
