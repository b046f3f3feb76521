"""consul:// end to end against the Consul HTTP API double: discovery with
blocking queries, index resets, rate limiting, weights, datacenters, ACL
tokens, self-registration, outages and bad data."""

from __future__ import annotations

import logging
import signal
import statistics
import time

import pytest

import meshlib
from meshlib.clock import ManualClock
from tests.consul_double import ConsulDouble
from tests.registry_helpers import Traffic, addresses, registering_process, wait_for

PROPAGATION_TARGET = 0.100


def mesh_for(double: ConsulDouble, **extra) -> meshlib.Mesh:
    return meshlib.Mesh(config={"discovery": double.url, "registry_timeout": "3s", **extra})


def test_register_and_deregister_are_seen_by_another_mesh_within_the_target(consul, agents):
    a, b = agents(2)
    times = []
    with mesh_for(consul) as provider, mesh_for(consul) as consumer:
        for _ in range(5):
            reg = provider.register("planner", port=a.port, tags=["llm"])
            times.append(wait_for(lambda: addresses(consumer, "planner") == {a.address}, timeout=1.0))
            reg.close()
            times.append(wait_for(lambda: addresses(consumer, "planner") == set(), timeout=1.0))
        with provider.register("planner", port=b.port):
            wait_for(lambda: addresses(consumer, "planner") == {b.address}, timeout=1.0)
            with consumer.requests_session() as s:
                assert {s.get("http://planner/").json()["agent"] for _ in range(5)} == {b.name}
        assert consul.service_ids() == set()  # every registration was removed
    assert statistics.median(times) < PROPAGATION_TARGET, times


def test_entries_map_to_endpoints_and_filters_select_by_capability(consul):
    consul.add_instance("summarizer", 8001, address="10.0.0.1", tags=["llm", "gpu"], meta={"model": "x", "zone": "a", "priority": "1"}, weights={"Passing": 5, "Warning": 1})
    consul.add_instance("summarizer", 8002, tags=["llm"], meta={"model": "y"}, node="node-2", node_address="10.0.0.2")
    consul.add_instance("summarizer", 8003, address="10.0.0.3", status="critical")
    with mesh_for(consul) as mesh:
        assert addresses(mesh, "summarizer") == {"10.0.0.1:8001", "10.0.0.2:8002"}  # critical: left out
        s1 = next(ep for ep in mesh.endpoints("summarizer") if ep.port == 8001)
        assert (s1.weight, s1.zone, s1.priority, s1.tags) == (5, "a", 1, ("llm", "gpu"))
        assert s1.metadata["model"] == "x"
        assert {ep.port for ep in mesh.endpoints("summarizer", meta={"model": "y"})} == {8002}
        assert {ep.port for ep in mesh.endpoints("summarizer", tags=["gpu", "llm"])} == {8001}
    with mesh_for(consul, services={"summarizer": {"filter_meta": {"model": "y"}}}) as mesh:
        assert addresses(mesh, "summarizer") == {"10.0.0.2:8002"}


def test_only_passing_false_keeps_warning_instances_at_their_warning_weight(consul):
    sid = consul.add_instance("api", 8001, weights={"Passing": 10, "Warning": 2})
    consul.add_instance("api", 8002, weights={"Passing": 10, "Warning": 0})
    with mesh_for(consul) as strict, mesh_for(consul, consul_only_passing=False) as lenient:
        consul.set_status(f"service:{sid}", "warning")
        consul.set_status("service:api-8002", "warning")
        wait_for(lambda: addresses(strict, "api") == set())
        wait_for(lambda: addresses(lenient, "api") == {"127.0.0.1:8001"})  # Warning weight 0: no traffic
        assert lenient.endpoints("api")[0].weight == 2


def test_datacenter_selection(consul):
    double = ConsulDouble(datacenters=("dc1", "dc2"))
    try:
        double.add_instance("api", 8001)
        double.add_instance("api", 9001, dc="dc2", node="node-dc2")
        with mesh_for(double) as local, mesh_for(double, consul_datacenter="dc2") as remote:
            assert addresses(local, "api") == {"127.0.0.1:8001"}
            assert addresses(remote, "api") == {"127.0.0.1:9001"}
            assert remote.endpoints("api").source.endswith("?dc=dc2")
    finally:
        double.close()


def test_an_index_that_goes_backwards_restarts_the_blocking_loop(consul):
    for _ in range(20):  # the index climbs well above where the reset puts it
        consul.add_instance("other", 9000)
    consul.add_instance("api", 8001)
    with mesh_for(consul) as mesh:
        assert addresses(mesh, "api") == {"127.0.0.1:8001"}
        wait_for(lambda: consul.blocked["/v1/health/service/api"] == 1, what="the api query blocked")
        consul.reset_index(to=2)  # a snapshot restore: every blocked query returns a lower index
        wait_for(lambda: mesh.stats()["discovery"][0]["index_resets"] >= 1)
        # Had the loop kept the old, higher index, it would block until the
        # index passed it again (or 5 minutes): the next change would be missed.
        consul.add_instance("api", 8002)
        wait_for(lambda: addresses(mesh, "api") == {"127.0.0.1:8001", "127.0.0.1:8002"}, timeout=2, what="change after the reset")


def test_a_server_that_never_blocks_cannot_make_the_loop_spin(consul):
    consul.add_instance("api", 8001)
    consul.zero_index = True  # X-Consul-Index: 0 on every answer
    consul.ignore_blocking = True  # and every query answered at once
    with mesh_for(consul, registry_watch="declared", services={"api": {"lb_policy": "round_robin"}}, consul_query_rate=4) as mesh:
        assert addresses(mesh, "api") == {"127.0.0.1:8001"}
        start = consul.requests["/v1/health/service/api"]
        time.sleep(1.0)
        made = consul.requests["/v1/health/service/api"] - start
        # A naive loop would make thousands; the token bucket allows its
        # burst of 5, then 4 per second.
        assert made <= 5 + 4 * 1.2 + 1, made
        assert mesh.stats()["discovery"][0]["rate_limited"] > 0
        consul.add_instance("api", 8002)  # and changes still arrive
        wait_for(lambda: len(addresses(mesh, "api")) == 2, timeout=2)


def test_malformed_entries_are_skipped_with_a_log_line_naming_the_instance(consul, caplog):
    caplog.set_level(logging.WARNING, logger="meshlib")
    consul.add_instance("api", 8001)
    consul.add_raw_entry("api", {"Node": {"Node": "n9", "Address": ""}, "Service": {"ID": "no-address", "Port": 80}})
    consul.add_raw_entry("api", {"Node": {"Node": "n9", "Address": "10.0.0.9"}, "Service": {"ID": "bad-port", "Port": 70000}})
    consul.add_raw_entry("api", "not an object")
    with mesh_for(consul) as mesh:
        assert addresses(mesh, "api") == {"127.0.0.1:8001"}
        messages = [r.getMessage() for r in caplog.records]
        assert any("api n9/no-address skipped" in m and "no address" in m for m in messages)
        assert any("api n9/bad-port skipped" in m and "70000" in m for m in messages)
        assert any("api #" in m and "not a JSON object" in m for m in messages)
        consul.add_instance("api", 8002)
        wait_for(lambda: len(addresses(mesh, "api")) == 2)


def test_agent_outage_mid_traffic_fails_no_call_and_converges(consul, agents):
    a, b = agents(2)
    config = {"registry_backoff_max": "300ms", "lb_policy": "round_robin"}
    with mesh_for(consul, **config) as provider, mesh_for(consul, **config) as consumer:
        provider.register("inventory", port=a.port)
        wait_for(lambda: addresses(consumer, "inventory") == {a.address})
        with Traffic(consumer, "http://inventory/items") as traffic:
            wait_for(lambda: traffic.ok > 20)
            consul.down()
            wait_for(lambda: consumer.stats()["discovery"][0]["stale"], what="stale in stats")
            ok_during = traffic.ok
            wait_for(lambda: traffic.ok > ok_during + 50, what="calls during the outage")
            assert consumer.stats()["discovery"][0]["stale_seconds"] > 0
            consul.up()
            wait_for(lambda: not consumer.stats()["discovery"][0]["stale"], timeout=5, what="reconnected")
            provider.register("inventory", port=b.port)
            wait_for(lambda: addresses(consumer, "inventory") == {a.address, b.address}, timeout=3)
            wait_for(lambda: b.hits > 0)
        assert traffic.failures == []


def test_a_registration_the_agent_lost_is_registered_again(consul, agents):
    (a,) = agents(1)
    with mesh_for(consul, registry_ttl="1s") as provider, mesh_for(consul) as consumer:
        reg = provider.register("worker", port=a.port)
        wait_for(lambda: addresses(consumer, "worker") == {a.address})
        consul.remove_instance(reg.id)  # an agent restart forgets it
        wait_for(lambda: addresses(consumer, "worker") == set())
        wait_for(lambda: addresses(consumer, "worker") == {a.address}, timeout=3, what="re-registration")
        # the handle counts the new registration right after the agent has it
        wait_for(lambda: reg.status()["registrations"] == 2, timeout=2, what="the registration count")


def test_a_killed_process_leaves_the_passing_set_after_its_ttl(consul, agents):
    (a,) = agents(1)
    with mesh_for(consul) as consumer:
        proc = registering_process(consul.url, "worker", a.port, "worker-victim", ttl="1s")
        try:
            wait_for(lambda: addresses(consumer, "worker") == {a.address}, timeout=2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            took = wait_for(lambda: addresses(consumer, "worker") == set(), timeout=5, what="TTL check critical")
            assert took > 0.3
            assert consul.check_status("service:worker-victim") == "critical"
        finally:
            proc.kill()


def test_health_callable_and_http_health_url(consul, agents):
    a, b = agents(2)
    healthy = {"ok": True}
    with mesh_for(consul, registry_ttl="1s") as provider, mesh_for(consul) as consumer:
        provider.register("worker", port=a.port, health=lambda: healthy["ok"])
        provider.register("worker", port=b.port, health=f"http://{b.address}/health")
        wait_for(lambda: addresses(consumer, "worker") == {a.address, b.address}, timeout=3)
        healthy["ok"] = False
        b.behaviour.status = 503
        wait_for(lambda: addresses(consumer, "worker") == set(), timeout=3, what="both unhealthy")
        healthy["ok"] = True
        b.behaviour.status = 200
        wait_for(lambda: addresses(consumer, "worker") == {a.address, b.address}, timeout=3, what="both healthy again")


def test_acl_token_from_meshlib_or_consul_variable(agents):
    (a,) = agents(1)
    with ConsulDouble(acl_token="s3cret") as double:
        double.add_instance("api", a.port)
        env = {"MESHLIB_DISCOVERY": double.url, "MESHLIB_REGISTRY_TIMEOUT": "2s"}
        with meshlib.Mesh.from_env({**env, "CONSUL_HTTP_TOKEN": "s3cret"}) as mesh:
            assert addresses(mesh, "api") == {a.address}
        with meshlib.Mesh.from_env({**env, "MESHLIB_CONSUL_TOKEN": "s3cret", "CONSUL_HTTP_TOKEN": "wrong"}) as mesh:
            assert addresses(mesh, "api") == {a.address}
        with meshlib.Mesh.from_env({**env, "MESHLIB_CONSUL_TOKEN": "wrong", "MESHLIB_REGISTRY_TIMEOUT": "300ms"}) as mesh:
            status = mesh.stats()["discovery"][0]
            assert status["stale"] and "ACL not found" in status["last_error"]
            assert "wrong" not in repr(mesh.config) and "wrong" not in str(mesh.stats())


def test_staleness_uses_the_mesh_clock(consul):
    clock = ManualClock()
    with meshlib.Mesh(config={"discovery": consul.url, "registry_backoff_max": "100ms"}, clock=clock) as mesh:
        consul.down()
        wait_for(lambda: mesh.stats()["discovery"][0]["stale"])
        clock.advance(42)
        assert mesh.stats()["discovery"][0]["stale_seconds"] >= 42
        consul.up()


@pytest.mark.parametrize(
    "config, message",
    [
        ({"discovery": "consul://127.0.0.1:99999"}, "port 99999 is out of range"),
        ({"discovery": "consul://host/path"}, "host:port only"),
        ({"consul_wait": "11m"}, "at most 10m"),
        ({"consul_deregister_after": "30s"}, "at least 1m"),
        ({"consul_tls_cert": "/etc/hostname"}, "MESHLIB_CONSUL_TLS_KEY"),
        ({"consul_only_passing": "maybe"}, "true or false"),
        ({"registry_watch": "some"}, "all, declared"),
        ({"services": {"w": {"filter_meta": "model"}}}, "key=value pairs"),
    ],
)
def test_bad_consul_settings_are_config_errors(config, message):
    with pytest.raises(meshlib.ConfigError, match=message):
        meshlib.Mesh(config=config)


def test_register_needs_a_registry_and_valid_arguments(consul):
    with meshlib.Mesh() as mesh, pytest.raises(meshlib.ConfigError, match="consul://host:port or etcd://host:port to register with"):
        mesh.register("svc", port=8080)
    with mesh_for(consul) as mesh:
        with pytest.raises(meshlib.ConfigError, match="register\\(port\\)"):
            mesh.register("svc", port=0)
        with pytest.raises(meshlib.ConfigError, match="register\\(health\\)"):
            mesh.register("svc", port=8080, health="tcp://x")
        with pytest.raises(meshlib.ConfigError, match="register\\(meta\\)"):
            mesh.register("svc", port=8080, meta={"n": 1})  # type: ignore[dict-item]
