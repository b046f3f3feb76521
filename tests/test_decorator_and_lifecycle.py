"""@mesh.call / @meshlib.call, introspection, and no leaks across Mesh lifetimes."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests

import meshlib
from meshlib import Endpoint, Mesh, MeshError, UnknownServiceError

from .conftest import endpoints_of


def test_decorator_passes_the_picked_endpoint_and_balances(agents):
    ags = agents(3)
    with Mesh(config={"services": {"agents": {"endpoints": endpoints_of(ags), "lb_policy": "round_robin"}}}) as mesh:

        @mesh.call("agents")
        def ask(endpoint: Endpoint, question: str) -> str:
            return requests.get(f"http://{endpoint.address}/{question}", timeout=5).json()["agent"]

        assert ask.__name__ == "ask"
        counts = Counter(ask("q") for _ in range(9))
        assert counts == {a.name: 3 for a in ags}
        stats = mesh.stats()["services"]["agents"]["endpoints"]
        assert [e["successes"] for e in stats] == [3, 3, 3]
        assert all(e["mean_latency_ms"] > 0 for e in stats)


def test_decorator_retries_connect_failures_but_not_other_errors(agents, refused_port):
    (alive,) = agents(1)
    eps = f"127.0.0.1:{refused_port},{alive.address}"
    with Mesh(config={"services": {"agents": {"endpoints": eps, "lb_policy": "round_robin"}}}) as mesh:
        seen: list[int] = []

        @mesh.call("agents")
        def fetch(endpoint: Endpoint) -> str:
            seen.append(endpoint.port)
            return requests.get(f"http://{endpoint.address}/", timeout=5).json()["agent"]

        assert [fetch() for _ in range(4)] == [alive.name] * 4

        calls = []

        @mesh.call("agents")
        def broken(endpoint: Endpoint) -> None:
            calls.append(endpoint)
            raise ValueError("application error")

        with pytest.raises(ValueError):
            broken()
        assert len(calls) == 1  # not retried: it may have had effects
        failures = sum(e["failures"] for e in mesh.stats()["services"]["agents"]["endpoints"])
        assert failures >= 1 + seen.count(refused_port)


async def test_async_decorator(agents, refused_port):
    ags = agents(2)
    eps = f"127.0.0.1:{refused_port}," + endpoints_of(ags)
    with Mesh(config={"services": {"agents": {"endpoints": eps, "lb_policy": "round_robin"}}}) as mesh:

        @mesh.call("agents")
        async def ping(endpoint: Endpoint) -> int:
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.close()
            await writer.wait_closed()
            return endpoint.port

        ports = await asyncio.gather(*(ping() for _ in range(12)))
    assert set(ports) == {a.port for a in ags}


def test_module_level_call_uses_the_environment(agents, monkeypatch):
    (a,) = agents(1)
    monkeypatch.setenv("MESHLIB_SERVICES__PLANNER__ENDPOINTS", a.address)
    monkeypatch.setattr(meshlib, "_default", None)

    @meshlib.call("planner")
    def where(endpoint: Endpoint) -> str:
        return endpoint.address

    try:
        assert where() == a.address
        assert meshlib.default_mesh().is_mesh_service("planner")
    finally:
        meshlib.default_mesh().close()


def test_unknown_service_says_how_to_declare_it():
    with Mesh(config={"services": {"known": {"endpoints": "127.0.0.1:1"}}}) as mesh:

        @mesh.call("unknown")
        def f(endpoint: Endpoint) -> None:
            raise AssertionError("never called")

        with pytest.raises(UnknownServiceError, match="MESHLIB_SERVICES__UNKNOWN__ENDPOINTS") as info:
            f()
        assert "known" in str(info.value)


def test_endpoints_and_stats_show_health_and_priorities():
    cfg = {
        "discovery": "static",
        "services": {"db": {"endpoints": ["127.0.0.1:1;zone=a", "127.0.0.1:2;priority=1"]}},
    }
    with Mesh(config=cfg) as mesh:
        snap = mesh.endpoints("db")
        assert [ep.address for ep in snap] == ["127.0.0.1:1", "127.0.0.1:2"]
        assert snap[0].zone == "a" and snap[1].priority == 1 and all(ep.healthy for ep in snap)
        stats = mesh.stats()["services"]["db"]
        assert stats["policy"] == "peak_ewma" and stats["source"] == "static"
        assert [p["load"] for p in stats["priorities"]] == [100.0, 0.0]


def _meshlib_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("meshlib-")]


def test_close_stops_every_background_thread_across_many_lifetimes(tmp_path: Path):
    f = tmp_path / "e.yaml"
    f.write_text("services:\n  a: ['127.0.0.1:1']\n")
    before = len(threading.enumerate())
    for _ in range(25):
        mesh = Mesh(
            config={
                "discovery": "dns",
                "file_poll_interval": "10ms",
                "services": {"localhost": {"port": 1, "dns_refresh_interval": "10ms"}},
            }
        )
        with mesh:
            assert _meshlib_threads()
        with Mesh(config={"discovery": f"file://{f}", "file_poll_interval": "10ms"}):
            assert _meshlib_threads()
    gc.collect()
    assert _meshlib_threads() == []
    assert len(threading.enumerate()) == before


def test_a_closed_mesh_refuses_calls():
    mesh = Mesh(config={"services": {"a": {"endpoints": "127.0.0.1:1"}}})
    mesh.close()
    mesh.close()  # idempotent

    @mesh.call("a")
    def f(endpoint: Endpoint) -> None:
        raise AssertionError("never called")

    with pytest.raises(MeshError, match="closed"):
        f()
