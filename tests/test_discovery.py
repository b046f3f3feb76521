"""Discovery sources: file reload, DNS re-resolution, static."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from meshlib import ConfigError, Mesh
from meshlib.clock import ManualClock
from meshlib.discovery import DnsResolver, FileResolver


def write(path: Path, text: str) -> None:
    # Change the size or mtime so the change is seen even within one mtime tick.
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def addresses(mesh: Mesh, name: str) -> list[str]:
    return [ep.address for ep in mesh.endpoints(name)]


def test_file_discovery_reloads_without_restart(tmp_path: Path):
    f = tmp_path / "endpoints.yaml"
    write(f, "services:\n  inventory:\n    endpoints: ['127.0.0.1:8001', '127.0.0.1:8002;weight=2']\n")
    with Mesh(config={"discovery": f"file://{f}", "file_poll_interval": "20ms"}) as mesh:
        assert addresses(mesh, "inventory") == ["127.0.0.1:8001", "127.0.0.1:8002"]
        assert mesh.endpoints("inventory")[1].weight == 2
        write(f, "services:\n  inventory: ['127.0.0.1:8003']\n  billing: ['127.0.0.1:9001']\n")
        deadline = time.monotonic() + 5
        while (addresses(mesh, "inventory") != ["127.0.0.1:8003"] or not mesh.is_mesh_service("billing")) and time.monotonic() < deadline:
            time.sleep(0.01)  # each service of the file is published in turn
        assert addresses(mesh, "inventory") == ["127.0.0.1:8003"]
        assert mesh.is_mesh_service("billing")  # a service that appeared in the file


def test_bad_reload_keeps_last_good_endpoints(tmp_path: Path, caplog):
    f = tmp_path / "endpoints.json"
    write(f, json.dumps({"services": {"a": ["127.0.0.1:8001"]}}))
    resolver = FileResolver(str(f), 3600)
    published = []
    resolver.start(published.append)
    try:
        write(f, '{"services": {"a": ["127.0.0.1:99999"]}}')
        assert resolver.check() is False
        assert "99999" in resolver.status()["last_error"] and resolver.status()["errors"] == 1
        assert "keeping the last good endpoints" in caplog.text
        write(f, "{not json")
        assert resolver.check() is False
        assert [s.endpoints[0].port for s in published] == [8001]
        write(f, json.dumps({"services": {"a": ["127.0.0.1:8002"]}}))
        assert resolver.check() is True
        assert published[-1].endpoints[0].port == 8002 and published[-1].version == 2
    finally:
        resolver.close()


def test_unchanged_file_content_publishes_nothing(tmp_path: Path):
    f = tmp_path / "e.yaml"
    write(f, "services:\n  a: ['127.0.0.1:1']\n  b: ['127.0.0.1:2']\n")
    resolver = FileResolver(str(f), 3600)
    published = []
    resolver.start(published.append)
    try:
        write(f, "services:\n  b: ['127.0.0.1:2']\n  a: ['127.0.0.1:1']   # reordered, same content\n")
        assert resolver.check() is False
        write(f, "services:\n  a: ['127.0.0.1:1']\n  b: ['127.0.0.1:3']\n")
        assert resolver.check() is True
        assert [s.service for s in published[2:]] == ["b"]  # only the changed service
    finally:
        resolver.close()


def test_bad_file_at_startup_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="MESHLIB_DISCOVERY"):
        Mesh(config={"discovery": f"file://{tmp_path}/missing.yaml"})
    f = tmp_path / "e.yaml"
    f.write_text("services:\n  a: [{address: '127.0.0.1:1', colour: red}]\n")
    with pytest.raises(ConfigError, match="colour"):
        Mesh(config={"discovery": f"file://{f}"})


class FakeDns:
    """Stands in for the system resolver (the network is not ours to change)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls = 0
        self.fail = False

    def __call__(self, name: str, port: int) -> list[str]:
        self.calls += 1
        if self.fail:
            raise OSError("temporary failure in name resolution")
        return list(self.answers[name])


def test_dns_re_resolves_on_interval_and_skips_unchanged_results():
    clock = ManualClock()
    dns = FakeDns({"inventory.internal": ["10.0.0.2", "10.0.0.1"]})
    mesh = Mesh(
        config={"discovery": "dns", "services": {"inventory": {"dns_name": "inventory.internal", "port": 8080, "dns_refresh_interval": "5s"}}},
        clock=clock,
        dns_lookup=dns,
    )
    try:
        assert addresses(mesh, "inventory") == ["10.0.0.1:8080", "10.0.0.2:8080"]
        resolver = mesh._resolvers[0]
        assert isinstance(resolver, DnsResolver)
        cluster = mesh.cluster("inventory")
        state = cluster._state
        resolver.refresh()  # not due yet
        assert dns.calls == 1
        clock.advance(5)
        dns.answers["inventory.internal"] = ["10.0.0.1", "10.0.0.2"]  # same set, new order
        resolver.refresh()
        assert dns.calls == 2 and cluster._state is state  # no rebuild
        clock.advance(5)
        dns.answers["inventory.internal"] = ["10.0.0.3"]
        resolver.refresh()
        assert addresses(mesh, "inventory") == ["10.0.0.3:8080"]
        clock.advance(5)
        dns.fail = True
        resolver.refresh()
        assert addresses(mesh, "inventory") == ["10.0.0.3:8080"]  # last good kept
        assert mesh.stats()["discovery"][0]["errors"] == 1
    finally:
        mesh.close()


def test_dns_with_the_system_resolver_and_a_live_thread(agents):
    (agent,) = agents(1)
    env = {"MESHLIB_DISCOVERY": "dns", "MESHLIB_SERVICES__LOCALHOST__PORT": str(agent.port), "MESHLIB_LB_POLICY": "round_robin"}
    with Mesh.from_env(env) as mesh:
        assert "127.0.0.1" in {ep.host for ep in mesh.endpoints("localhost")}
        assert any(t.name == "meshlib-dns-resolver" for t in threading.enumerate())
        s = mesh.requests_session()
        # Only the IPv4 answer has a server; ::1, if resolved, is refused and retried.
        assert s.get("http://localhost/ping").json()["agent"] == agent.name


def test_a_service_leaving_the_file_is_reported_once(tmp_path: Path, caplog):
    f = tmp_path / "e.yaml"
    write(f, "services:\n  a: ['127.0.0.1:1']\n  b: ['127.0.0.1:2']\n")
    resolver = FileResolver(str(f), 3600)
    published = []
    resolver.start(published.append)
    try:
        write(f, "services:\n  b: ['127.0.0.1:2']\n")
        assert resolver.check() is True
        assert published[-1].service == "a" and len(published[-1]) == 0
        write(f, "services:\n  b: ['127.0.0.1:3']\n")
        assert resolver.check() is True
        assert caplog.text.count("'a' left") == 1
    finally:
        resolver.close()
