"""etcd:// end to end against a real etcd on 127.0.0.1: discovery, self-registration,
lease expiry, compaction recovery, outages and bad data, judged by what a mesh
sees and what its calls do."""

from __future__ import annotations

import json
import logging
import signal
import statistics
import threading

import pytest

import meshlib
from meshlib.discovery.etcd_client import EtcdClient
from tests.registry_helpers import TcpProxy, Traffic, addresses, enable_etcd_auth, registering_process, wait_for

#: Propagation target from a registry write to the picker (docs/benchmarks.md).
PROPAGATION_TARGET = 0.100


def client_for(server) -> EtcdClient:
    return EtcdClient("127.0.0.1", server.port, timeout=5)


def mesh_for(server, prefix: str, **extra) -> meshlib.Mesh:
    return meshlib.Mesh(config={"discovery": server.url, "etcd_prefix": prefix, "registry_timeout": "3s", **extra})


def put(client: EtcdClient, prefix: str, service: str, instance: str, **value) -> None:
    client.put(f"{prefix}/{service}/{instance}", json.dumps(value))


def test_register_and_deregister_are_seen_by_another_mesh_within_the_target(etcd, agents):
    server, prefix = etcd
    a, b = agents(2)
    times = []
    with mesh_for(server, prefix) as provider, mesh_for(server, prefix) as consumer:
        for _ in range(5):
            reg = provider.register("planner", port=a.port, address="127.0.0.1", tags=["llm"])
            times.append(wait_for(lambda: addresses(consumer, "planner") == {a.address}, timeout=1.0, what="registration seen"))
            reg.close()
            times.append(wait_for(lambda: addresses(consumer, "planner") == set(), timeout=1.0, what="deregistration seen"))
        # The consumer routes to what it sees: calls reach the registered agent.
        with provider.register("planner", port=b.port, address="127.0.0.1"):
            wait_for(lambda: addresses(consumer, "planner") == {b.address}, timeout=1.0)
            with consumer.requests_session() as s:
                assert {s.get("http://planner/").json()["agent"] for _ in range(5)} == {b.name}
        snap = consumer.endpoints("planner")
        assert snap.source == f"etcd://127.0.0.1:{server.port}{prefix}"
    assert statistics.median(times) < PROPAGATION_TARGET, times


def test_the_value_becomes_the_endpoint_and_filters_select_by_capability(etcd):
    server, prefix = etcd
    c = client_for(server)
    put(c, prefix, "summarizer", "s1", address="10.0.0.1:80", weight=3, zone="a", priority=1, tags=["llm", "gpu"], metadata={"model": "x"})
    put(c, prefix, "summarizer", "s2", host="10.0.0.2", port=80, tags=["llm"], metadata={"model": "y"}, future_field=1)
    c.put(f"{prefix}/summarizer/s3", json.dumps({"Op": 0, "Addr": "10.0.0.3:80", "Metadata": {"model": "x"}}))  # grpc-go naming
    with mesh_for(server, prefix) as mesh:
        wait_for(lambda: len(addresses(mesh, "summarizer")) == 3)
        s1 = next(ep for ep in mesh.endpoints("summarizer") if ep.host == "10.0.0.1")
        assert (s1.weight, s1.zone, s1.priority, s1.tags, dict(s1.metadata)) == (3, "a", 1, ("llm", "gpu"), {"model": "x"})
        assert addresses(mesh, "summarizer") == {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
        assert {ep.host for ep in mesh.endpoints("summarizer", meta={"model": "x"})} == {"10.0.0.1", "10.0.0.3"}
        assert {ep.host for ep in mesh.endpoints("summarizer", tags=["gpu"], meta={"model": "x"})} == {"10.0.0.1"}
        assert len(mesh.endpoints("summarizer", tags=["tpu"])) == 0
    # The same filter in the configuration is what the balancer sees.
    with mesh_for(server, prefix, services={"summarizer": {"filter_tags": "llm", "filter_meta": "model=y"}}) as mesh:
        wait_for(lambda: addresses(mesh, "summarizer") == {"10.0.0.2:80"})
    c.close()


def test_malformed_entries_are_skipped_with_a_log_line_naming_the_key(etcd, caplog):
    server, prefix = etcd
    c = client_for(server)
    put(c, prefix, "inventory", "good", address="127.0.0.1:8001")
    c.put(f"{prefix}/inventory/not-json", "{oops")
    put(c, prefix, "inventory", "bad-port", address="127.0.0.1:70000")
    put(c, prefix, "inventory", "no-address", weight=2)
    caplog.set_level(logging.WARNING, logger="meshlib")
    with mesh_for(server, prefix) as mesh:
        wait_for(lambda: addresses(mesh, "inventory") == {"127.0.0.1:8001"})
        for key in ("not-json", "bad-port", "no-address"):
            assert any(f"{prefix}/inventory/{key}" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records), key
        # A good entry turned bad keeps its last good value; the others stand.
        put(c, prefix, "inventory", "second", address="127.0.0.1:8002")
        wait_for(lambda: len(addresses(mesh, "inventory")) == 2)
        c.put(f"{prefix}/inventory/second", "[]")
        put(c, prefix, "inventory", "third", address="127.0.0.1:8003")
        wait_for(lambda: len(addresses(mesh, "inventory")) == 3)
        assert addresses(mesh, "inventory") == {"127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"}
        assert mesh.stats()["discovery"][0]["skipped_entries"] >= 4
    c.close()


def test_a_killed_process_disappears_when_its_lease_expires(etcd, agents):
    server, prefix = etcd
    (a,) = agents(1)
    with mesh_for(server, prefix) as consumer:
        proc = registering_process(server.url, "worker", a.port, "worker-victim", ttl="1s", prefix=prefix)
        try:
            wait_for(lambda: addresses(consumer, "worker") == {a.address}, timeout=2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            # Gone after the TTL (etcd's lease expiry), with no deregistration call.
            took = wait_for(lambda: addresses(consumer, "worker") == set(), timeout=6, what="lease expiry")
            assert took > 0.5  # it was the lease, not a goodbye
        finally:
            proc.kill()


def test_sigterm_deregisters_at_once(etcd, agents):
    server, prefix = etcd
    (a,) = agents(1)
    with mesh_for(server, prefix) as consumer:
        proc = registering_process(server.url, "worker", a.port, "worker-polite", ttl="30s", prefix=prefix)
        try:
            wait_for(lambda: addresses(consumer, "worker") == {a.address}, timeout=2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == -signal.SIGTERM  # still ends by the signal
            wait_for(lambda: addresses(consumer, "worker") == set(), timeout=2, what="deregistration on SIGTERM")
        finally:
            proc.kill()


def test_a_lost_lease_is_registered_again(etcd, agents):
    server, prefix = etcd
    (a,) = agents(1)
    with mesh_for(server, prefix, registry_ttl="1s") as provider, mesh_for(server, prefix) as consumer:
        reg = provider.register("worker", port=a.port, address="127.0.0.1")
        wait_for(lambda: addresses(consumer, "worker") == {a.address})
        c = client_for(server)
        c.revoke(reg.lease_id)  # as if etcd had expired it during a partition
        c.close()
        wait_for(lambda: addresses(consumer, "worker") == set(), timeout=2)
        wait_for(lambda: addresses(consumer, "worker") == {a.address}, timeout=3, what="re-registration")
        # The watch can show the new key before the heartbeat thread counts the
        # registration it just made (the count follows the put).
        wait_for(lambda: reg.status()["registrations"] == 2, timeout=2, what="the registration count")


def test_compaction_past_the_watch_revision_is_recovered_by_relisting(etcd):
    server, prefix = etcd
    proxy = TcpProxy(server.port)
    c = client_for(server)
    put(c, prefix, "inventory", "one", address="127.0.0.1:8001")
    config = {"discovery": f"etcd://127.0.0.1:{proxy.port}", "etcd_prefix": prefix, "registry_backoff_max": "200ms"}
    try:
        with meshlib.Mesh(config=config) as mesh:
            wait_for(lambda: addresses(mesh, "inventory") == {"127.0.0.1:8001"})
            proxy.cut()  # the mesh loses etcd; etcd goes on
            wait_for(lambda: mesh.stats()["discovery"][0]["stale"], what="stale while cut")
            put(c, prefix, "inventory", "two", address="127.0.0.1:8002")
            c.delete(f"{prefix}/inventory/one")
            rev = c.put(f"{prefix}/other/x", json.dumps({"address": "127.0.0.1:9000"}))
            c.compact(rev)  # the revisions the mesh would resume from are gone
            proxy.restore()
            wait_for(lambda: addresses(mesh, "inventory") == {"127.0.0.1:8002"}, timeout=5, what="re-list after compaction")
            status = mesh.stats()["discovery"][0]
            assert status["compactions"] == 1 and status["listings"] == 2
            assert addresses(mesh, "other") == {"127.0.0.1:9000"}
            # ...and it watches again from there.
            put(c, prefix, "inventory", "three", address="127.0.0.1:8003")
            wait_for(lambda: addresses(mesh, "inventory") == {"127.0.0.1:8002", "127.0.0.1:8003"})
    finally:
        proxy.close()
        c.close()


def test_etcd_restart_mid_traffic_fails_no_call_and_converges(own_etcd, agents):
    a, b = agents(2)
    config = {"discovery": own_etcd.url, "registry_backoff_max": "300ms", "registry_ttl": "5s", "lb_policy": "round_robin"}
    with meshlib.Mesh(config=config) as provider, meshlib.Mesh(config=config) as consumer:
        provider.register("inventory", port=a.port, address="127.0.0.1")
        wait_for(lambda: addresses(consumer, "inventory") == {a.address})
        with Traffic(consumer, "http://inventory/items") as traffic:
            wait_for(lambda: traffic.ok > 20)
            own_etcd.stop()
            wait_for(lambda: consumer.stats()["discovery"][0]["stale"], what="stale in stats")
            ok_during = traffic.ok
            wait_for(lambda: traffic.ok > ok_during + 50, what="calls during the outage")
            status = consumer.stats()["discovery"][0]
            assert status["stale_seconds"] > 0 and "UNAVAILABLE" in status["last_error"]
            own_etcd.start()
            wait_for(lambda: not consumer.stats()["discovery"][0]["stale"], timeout=5, what="reconnected")
            # State converges without a restart: a change after the outage is seen.
            provider.register("inventory", port=b.port, address="127.0.0.1")
            wait_for(lambda: addresses(consumer, "inventory") == {a.address, b.address}, timeout=3)
            wait_for(lambda: b.hits > 0, what="traffic to the new endpoint")
        assert traffic.failures == []
        assert consumer.stats()["discovery"][0]["reconnects"] >= 1


def test_declared_watch_mode_and_static_services_win(etcd):
    server, prefix = etcd
    c = client_for(server)
    put(c, prefix, "wanted", "w", address="127.0.0.1:8001")
    put(c, prefix, "ignored", "i", address="127.0.0.1:8002")
    put(c, prefix, "pinned", "p", address="127.0.0.1:8003")
    config = {"registry_watch": "declared", "services": {"wanted": {"lb_policy": "round_robin"}, "pinned": {"endpoints": "127.0.0.1:9999"}}}
    with mesh_for(server, prefix, **config) as mesh:
        assert addresses(mesh, "wanted") == {"127.0.0.1:8001"}  # loaded before Mesh() returned
        assert not mesh.is_mesh_service("ignored")
        assert addresses(mesh, "pinned") == {"127.0.0.1:9999"}
        put(c, prefix, "pinned", "p2", address="127.0.0.1:8004")
        put(c, prefix, "wanted", "w2", address="127.0.0.1:8005")
        wait_for(lambda: len(addresses(mesh, "wanted")) == 2)
        assert addresses(mesh, "pinned") == {"127.0.0.1:9999"}
    c.close()


def test_close_stops_every_thread(etcd, agents):
    server, prefix = etcd
    (a,) = agents(1)
    before = set(threading.enumerate())
    for _ in range(3):
        with mesh_for(server, prefix) as mesh:
            mesh.register("svc", port=a.port, address="127.0.0.1")
            assert addresses(mesh, "svc") or wait_for(lambda: addresses(mesh, "svc"))
    wait_for(lambda: not [t for t in threading.enumerate() if t not in before and t.name.startswith("meshlib")], timeout=3, what="meshlib threads gone")


def test_user_and_password_with_auth_enabled(own_etcd, agents):
    (a,) = agents(1)
    enable_etcd_auth(own_etcd.port, "root", "rootpw")
    config = {"discovery": own_etcd.url, "etcd_user": "root", "etcd_password": "rootpw"}
    with meshlib.Mesh(config=config) as provider, meshlib.Mesh(config=config) as consumer:
        provider.register("secure", port=a.port, address="127.0.0.1")
        wait_for(lambda: addresses(consumer, "secure") == {a.address})
    with meshlib.Mesh(config={**config, "etcd_password": "wrong", "registry_timeout": "500ms"}) as mesh:
        status = mesh.stats()["discovery"][0]
        assert status["stale"] and "authentication failed" in status["last_error"]
        assert "wrong" not in str(mesh.stats()) and "wrong" not in repr(mesh.config)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MESHLIB_DISCOVERY": "etcd://127.0.0.1:0"}, "port 0 is out of range"),
        ({"MESHLIB_DISCOVERY": "etcd://root:pw@127.0.0.1:2379"}, "credentials hidden"),
        ({"MESHLIB_ETCD_USER": "root"}, "MESHLIB_ETCD_PASSWORD"),
        ({"MESHLIB_ETCD_TLS_CERT": "/etc/hostname"}, "MESHLIB_ETCD_TLS_KEY"),
        ({"MESHLIB_ETCD_TLS_CA": "/nonexistent/ca.pem"}, "MESHLIB_ETCD_TLS_CA='/nonexistent/ca.pem' is invalid"),
        ({"MESHLIB_ETCD_PREFIX": "has space"}, "MESHLIB_ETCD_PREFIX"),
    ],
)
def test_bad_etcd_settings_are_config_errors(env, message):
    with pytest.raises(meshlib.ConfigError, match=message.replace("(", r"\(")) as info:
        meshlib.Mesh.from_env(env)
    assert "pw" not in str(info.value)
