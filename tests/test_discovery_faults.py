"""Bad data from a real registry or a file rewritten in place, while traffic
runs: no call fails, no watch ends, the resolver says what happened, and no
secret reaches a log line, a stat or an error."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import meshlib
from meshlib.discovery.etcd import EtcdResolver
from meshlib.discovery.etcd_client import EtcdClient
from tests.registry_helpers import Traffic, addresses, enable_etcd_auth, wait_for

#: Every kind of bad etcd value seen or imagined: not UTF-8, not JSON, nested
#: past any parser, the wrong types for every field, numbers beyond a float.
BAD_ETCD_VALUES = [
    b"\xff\xfe\x00",
    b"{oops",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"null",
    b"1e999",
    b'"127.0.0.1:9"',
    b'{"address": "127.0.0.1:9", "tags": 5}',
    b'{"address": "127.0.0.1:9", "tags": true}',
    b'{"address": "127.0.0.1:9", "tags": "gpu"}',
    b'{"address": "127.0.0.1:9", "weight": 1e999}',
    b'{"address": "127.0.0.1:9", "weight": true}',
    b'{"address": "127.0.0.1:9", "weight": NaN}',
    b'{"address": "127.0.0.1:9", "priority": 1e999}',
    b'{"address": "127.0.0.1:9", "priority": -Infinity}',
    b'{"address": "127.0.0.1:9", "metadata": {"m": {"deep": [1]}}}',
    b'{"address": "127.0.0.1:9", "metadata": [1]}',
    b'{"address": "127.0.0.1:9", "zone": ["a"]}',
    b'{"address": "127.0.0.1:9", "healthy": "yes"}',
    b'{"address": 5}',
    b'{"address": "127.0.0.1:99999999999999999999999"}',
    b'{"host": ["127.0.0.1"], "port": 9}',
    b'{"host": "127.0.0.1", "port": 1e999}',
    b'{"Op": 0, "Addr": {"x": 1}}',
    b'{"Op": 0, "Addr": "127.0.0.1:9", "Metadata": {"m": [[]]}}',
]


def etcd_mesh(server, prefix: str, **extra) -> meshlib.Mesh:
    config = {"discovery": server.url, "etcd_prefix": prefix, "registry_timeout": "5s", "lb_policy": "round_robin"}
    return meshlib.Mesh(config={**config, **extra})


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("meshlib-etcd-watch")]


def test_etcd_every_bad_value_under_traffic_then_a_good_instance_is_picked_up(etcd, agents, caplog):
    server, prefix = etcd
    a, b = agents(2)
    caplog.set_level(logging.WARNING, logger="meshlib")
    client = EtcdClient("127.0.0.1", server.port, timeout=10)
    client.put(f"{prefix}/inventory/a", json.dumps({"address": a.address}))
    try:
        with etcd_mesh(server, prefix) as mesh:
            wait_for(lambda: addresses(mesh, "inventory") == {a.address}, timeout=10)
            with Traffic(mesh, "http://inventory/items") as traffic:
                wait_for(lambda: traffic.ok > 10, timeout=10)
                for i, value in enumerate(BAD_ETCD_VALUES):
                    client.put(f"{prefix}/inventory/bad-{i}", value)
                # A good entry turned bad keeps its last good value.
                client.put(f"{prefix}/inventory/a", json.dumps({"address": a.address, "tags": 5}))
                client.put(f"{prefix}/inventory/b", json.dumps({"address": b.address, "tags": ["late"]}))
                wait_for(lambda: addresses(mesh, "inventory") == {a.address, b.address}, timeout=15, what="the good instance")
                ok = traffic.ok
                wait_for(lambda: traffic.ok > ok + 20, timeout=10)
            assert traffic.failures == []
            status = mesh.stats()["discovery"][0]
            assert status["connected"] and status["healthy"] and status["internal_errors"] == 0, status
            assert status["skipped_entries"] >= len(BAD_ETCD_VALUES) + 1
            assert watch_threads() and all(t.is_alive() for t in watch_threads())
            messages = [r.getMessage() for r in caplog.records]
            for i in range(len(BAD_ETCD_VALUES)):
                key = f"{prefix}/inventory/bad-{i}"
                assert sum(f"{key} skipped" in m for m in messages) == 1, key  # once per revision
    finally:
        client.close()


def test_an_unexpected_error_in_the_etcd_watch_is_logged_reported_and_the_watch_resumes(etcd, agents, monkeypatch, caplog):
    server, prefix = etcd
    a, b = agents(2)
    broken = threading.Event()
    broken.set()
    apply_events = EtcdResolver._apply_events

    def buggy(self: EtcdResolver, events: object) -> None:
        if broken.is_set():
            raise RuntimeError("a bug in applying events")
        apply_events(self, events)

    monkeypatch.setattr(EtcdResolver, "_apply_events", buggy)
    client = EtcdClient("127.0.0.1", server.port, timeout=10)
    client.put(f"{prefix}/inventory/a", json.dumps({"address": a.address}))
    try:
        with etcd_mesh(server, prefix, registry_backoff_base="20ms", registry_backoff_max="200ms") as mesh:
            wait_for(lambda: addresses(mesh, "inventory") == {a.address}, timeout=10)
            with Traffic(mesh, "http://inventory/items") as traffic:
                client.put(f"{prefix}/inventory/b", json.dumps({"address": b.address}))
                wait_for(lambda: mesh.stats()["discovery"][0]["internal_errors"] > 0, timeout=10, what="the error counted")
                status = mesh.stats()["discovery"][0]
                assert not status["healthy"] and not status["connected"] and "RuntimeError" in status["last_error"]
                broken.clear()
                wait_for(lambda: addresses(mesh, "inventory") == {a.address, b.address}, timeout=10, what="resumed")
                wait_for(lambda: mesh.stats()["discovery"][0]["healthy"], timeout=10, what="healthy again")
            assert traffic.failures == []
            assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
    finally:
        client.close()


# -- file:// rewritten in place ------------------------------------------------------------------


def rewrite_in_place(path: Path, text: str, *, pieces: int, pause: float) -> None:
    """What an editor or ``echo > file`` does: truncate the file, then write it
    (in ``pieces`` writes, ``pause`` apart)."""
    data = text.encode()
    with open(path, "r+b") as f:
        f.truncate(0)
        f.flush()
        os.fsync(f.fileno())
        time.sleep(pause)
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def test_file_rewritten_in_place_under_traffic_fails_no_call(tmp_path: Path, agents):
    a, b = agents(2)
    yaml_file, json_file = tmp_path / "endpoints.yaml", tmp_path / "endpoints.json"
    docs = {
        yaml_file: lambda w: f"services:\n  inventory:\n    endpoints:\n      - {a.address};weight={w}\n      - {{address: '{b.address}', zone: z}}\n",
        json_file: lambda w: json.dumps({"services": {"inventory": [f"{a.address};weight={w}", {"address": b.address, "zone": "z"}]}}),
    }
    for path, doc in docs.items():
        path.write_text(doc(1))
        published: list = []
        with meshlib.Mesh(config={"discovery": f"file://{path}", "file_poll_interval": "5ms"}) as mesh:
            resolver = mesh._resolvers[-1]
            original = resolver._publish
            resolver._publish = lambda snap: (published.append(snap), original(snap))
            with Traffic(mesh, "http://inventory/items") as traffic:
                wait_for(lambda: traffic.ok > 5)
                for i in range(30):
                    # Truncate, pause, write: in one piece, or (JSON, whose
                    # prefixes never parse) in four with pauses between.
                    rewrite_in_place(path, doc(2 + i % 3), pieces=4 if path is json_file and i % 2 else 1, pause=0.004)
                    time.sleep(0.15 if i % 4 == 0 else 0.01)  # now and then long enough to be read
                wait_for(lambda: mesh.endpoints("inventory")[0].weight == 2 + 29 % 3, timeout=5, what="the last rewrite")
            assert traffic.failures == [], traffic.failures[:5]
            assert traffic.ok > 30
            assert published and all(len(snap) == 2 for snap in published), [repr(s) for s in published if len(s) != 2]
            status = mesh.stats()["discovery"][-1]
            assert status["reloads"] >= 1


@contextlib.contextmanager
def file_resolver(path: Path, text: str) -> Iterator[tuple[meshlib.discovery.FileResolver, list]]:
    """A started FileResolver on ``path`` (first written with ``text``) and what it published."""
    path.write_text(text)
    resolver = meshlib.discovery.FileResolver(str(path), 3600)
    published: list = []
    resolver.start(published.append)
    try:
        yield resolver, published
    finally:
        resolver.close()


def write_settled(path: Path, text: str) -> None:
    path.write_text(text)
    os.utime(path, ns=(0, time.time_ns() - 1_000_000_000))  # written a second ago: no need to wait for it to settle


def test_only_an_explicit_empty_list_or_empty_services_removes_endpoints(tmp_path: Path):
    f = tmp_path / "e.yaml"
    with file_resolver(f, "services:\n  a: ['127.0.0.1:1']\n  b: ['127.0.0.1:2']\n") as (resolver, published):
        for text in ["", "   \n# nothing yet\n", "services:\n", "services:\n  a:\n", "services:\n  a:\n    endpoints:\n"]:
            write_settled(f, text)
            assert resolver.check() is False, text
        assert len(published) == 2 and resolver.status()["incomplete_reads"] == 5 and resolver.status()["errors"] == 0
        f.write_text("services:\n  a: []\n  b: ['127.0.0.1:2']\n")
        assert resolver.check() is True
        assert published[-1].service == "a" and len(published[-1]) == 0
        f.write_text("services: {}\n")
        assert resolver.check() is True
        assert published[-1].service == "b" and len(published[-1]) == 0


def test_any_error_reading_the_file_is_counted_and_keeps_the_last_good_endpoints(tmp_path: Path):
    f = tmp_path / "e.json"
    with file_resolver(f, '{"services": {"a": ["127.0.0.1:1"]}}') as (resolver, published):
        for text in ['{"services": {"a": [{"address": "127.0.0.1:1", "weight": 1e999}]}}', "[" * 100_000, '{"services": {"a": [{"address": "127.0.0.1:1", "tags": 5}]}}']:
            write_settled(f, text)
            assert resolver.check() is False
        assert resolver.status()["errors"] == 3 and len(published) == 1


# -- Consul and DNS ---------------------------------------------------------------------------------


def test_consul_malformed_entries_under_traffic_then_a_good_instance_is_picked_up(consul, agents):
    a, b = agents(2)
    consul.add_instance("api", a.port)
    with meshlib.Mesh(config={"discovery": consul.url, "registry_timeout": "5s", "lb_policy": "round_robin"}) as mesh:
        wait_for(lambda: addresses(mesh, "api") == {a.address}, timeout=10)
        with Traffic(mesh, "http://api/items") as traffic:
            wait_for(lambda: traffic.ok > 10, timeout=10)
            node = {"Node": "n9", "Address": "127.0.0.1"}
            for i, service in enumerate(
                [
                    {"Port": 9, "Tags": 5},
                    {"Port": 9, "Tags": [1, 2]},
                    {"Port": 9, "Meta": {"m": {"deep": 1}}},
                    {"Port": 9, "Meta": {"priority": "1e999"}},
                    {"Port": 9, "Weights": {"Passing": 1e999}},
                    {"Port": 9, "Weights": {"Passing": True}},
                    {"Port": "9"},
                    {"Port": 9, "Address": ["127.0.0.1"]},
                    {"Port": 9, "Locality": {"Zone": {"z": 1}}},
                ]
            ):
                consul.add_raw_entry("api", {"Node": node, "Service": {"ID": f"bad-{i}", **service}, "Checks": []})
            for junk in [None, 5, "text", [], {"Node": 5, "Service": 5}]:
                consul.add_raw_entry("api", junk)
            consul.add_instance("api", b.port)
            wait_for(lambda: addresses(mesh, "api") == {a.address, b.address}, timeout=10, what="the good instance")
            ok = traffic.ok
            wait_for(lambda: traffic.ok > ok + 20, timeout=10)
        assert traffic.failures == []
        status = mesh.stats()["discovery"][0]
        assert status["connected"] and status["healthy"] and status["internal_errors"] == 0 and status["skipped_entries"] >= 14


def test_dns_malformed_answers_are_skipped_under_traffic(agents):
    (a,) = agents(1)
    answers = [["127.0.0.1"]]

    def lookup(name: str, port: int) -> list:
        return answers[0]

    config = {"discovery": "dns", "dns_refresh_interval": "10ms", "services": {"inventory": {"port": a.port}}}
    with meshlib.Mesh(config=config, dns_lookup=lookup) as mesh:
        with Traffic(mesh, "http://inventory/items") as traffic:
            wait_for(lambda: traffic.ok > 5)
            for bad in [["not-an-ip", None, "127.0.0.1"], [5], None, "127.0.0.1", [b"127.0.0.1"], [["127.0.0.1"]]]:
                answers[0] = bad
                lookups = mesh.stats()["discovery"][0]["lookups"]
                wait_for(lambda: mesh.stats()["discovery"][0]["lookups"] > lookups + 2)
            answers[0] = ["127.0.0.1"]
            ok = traffic.ok
            wait_for(lambda: traffic.ok > ok + 10)
        assert traffic.failures == []
        assert [ep.address for ep in mesh.endpoints("inventory")] == [a.address]
        status = mesh.stats()["discovery"][0]
        assert status["errors"] > 0 and status["skipped_answers"] > 0


# -- secrets --------------------------------------------------------------------------------------

SECRET = "s3cr3t-Zq9-never-shown"


def everything_said(caplog, mesh: meshlib.Mesh) -> str:
    return "\n".join([r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records]) + repr(mesh.stats()) + repr(mesh)


def test_the_consul_token_is_never_in_discovery_logs_stats_or_errors(consul, caplog):
    caplog.set_level(logging.DEBUG)
    consul.acl_token = "the-right-token"
    config = {"discovery": consul.url, "consul_token": SECRET, "registry_timeout": "300ms", "registry_backoff_base": "10ms", "registry_backoff_max": "50ms"}
    with meshlib.Mesh(config={**config, "services": {"api": {}}}) as mesh:
        wait_for(lambda: mesh.stats()["discovery"][0]["errors"] > 2, timeout=10)
        assert "403" in mesh.stats()["discovery"][0]["last_error"] or "ACL" in mesh.stats()["discovery"][0]["last_error"]
        reg = mesh.register("api", port=8080)
        wait_for(lambda: reg.status()["errors"] > 0, timeout=10)
        said = everything_said(caplog, mesh) + repr(reg.status()) + repr(reg)
        reg.close()
        assert SECRET not in said
    for value in [f"consul://127.0.0.1:1?token={SECRET}", f"consul://user:{SECRET}@127.0.0.1:1", f"etcd://root:{SECRET}@h?password={SECRET}"]:
        with pytest.raises(meshlib.ConfigError) as err:
            meshlib.discovery.schemes.parse_discovery(value, "MESHLIB_DISCOVERY")
        assert SECRET not in str(err.value) and "hidden" in str(err.value)


def test_the_etcd_password_is_never_in_discovery_logs_stats_or_errors(own_etcd, caplog):
    caplog.set_level(logging.DEBUG)
    enable_etcd_auth(own_etcd.port, "root", "rootpw")
    config = {"discovery": own_etcd.url, "etcd_user": "root", "etcd_password": SECRET, "registry_timeout": "500ms", "registry_backoff_base": "10ms", "registry_backoff_max": "50ms"}
    with meshlib.Mesh(config=config) as mesh:
        wait_for(lambda: mesh.stats()["discovery"][0]["errors"] > 1, timeout=10)
        reg = mesh.register("api", port=8080, address="127.0.0.1")
        wait_for(lambda: reg.status()["errors"] > 0, timeout=10)
        said = everything_said(caplog, mesh) + repr(reg.status()) + repr(reg)
        reg.close()
    assert "authentication failed" in said
    assert SECRET not in said
