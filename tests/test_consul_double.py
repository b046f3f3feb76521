"""The Consul double answers as Consul's API documentation says, over plain HTTP
(no meshlib in these tests): blocking queries, ?passing, TTL checks, reaping,
ACLs, errors."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from meshlib.clock import ManualClock
from tests.consul_double import ConsulDouble


def call(double: ConsulDouble, method: str, path: str, body: object = None, token: str | None = None) -> tuple[int, dict, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{double.address}{path}", data=data, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def manual():
    clock = ManualClock()
    double = ConsulDouble(clock=clock.monotonic, tick_interval=None)
    yield double, clock
    double.close()


def test_registration_is_decoded_case_insensitively_and_appears_in_health(consul):
    status, _, _ = call(consul, "PUT", "/v1/agent/service/register", {
        "name": "web", "id": "web-1", "port": 8080, "tags": ["v1"], "meta": {"model": "x"},
        "check": {"ttl": "10s", "status": "passing", "deregister_critical_service_after": "90m"},
    })  # fmt: skip
    assert status == 200
    status, headers, entries = call(consul, "GET", "/v1/health/service/web?passing=1")
    assert status == 200 and int(headers["X-Consul-Index"]) > 1
    (entry,) = entries
    assert entry["Service"]["ID"] == "web-1" and entry["Service"]["Address"] == ""  # empty: use the node's
    assert entry["Node"]["Address"] == "127.0.0.1"
    assert entry["Service"]["Weights"] == {"Passing": 1, "Warning": 1}
    assert {c["CheckID"] for c in entry["Checks"]} == {"serfHealth", "service:web-1"}
    _, _, catalog = call(consul, "GET", "/v1/catalog/services")
    assert catalog == {"web": ["v1"]}


def test_a_blocking_query_hangs_until_a_change_and_returns_the_new_index(consul):
    consul.add_instance("web", 8001)
    _, headers, _ = call(consul, "GET", "/v1/health/service/web")
    index = int(headers["X-Consul-Index"])
    result: dict = {}

    def blocked() -> None:
        start = time.monotonic()
        result["answer"] = call(consul, "GET", f"/v1/health/service/web?index={index}&wait=5s")
        result["took"] = time.monotonic() - start

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    assert "answer" not in result
    consul.add_instance("web", 8002)
    t.join(5)
    _, headers, entries = result["answer"]
    assert int(headers["X-Consul-Index"]) > index and len(entries) == 2
    assert 0.2 <= result["took"] < 2
    # No change: the query returns after wait (plus at most wait/16).
    start = time.monotonic()
    _, headers2, _ = call(consul, "GET", f"/v1/health/service/web?index={headers['X-Consul-Index']}&wait=300ms")
    assert 0.3 <= time.monotonic() - start < 0.6
    assert headers2["X-Consul-Index"] == headers["X-Consul-Index"]


def test_ttl_check_goes_critical_and_the_service_is_reaped_after_at_least_a_minute(manual):
    double, clock = manual
    call(double, "PUT", "/v1/agent/service/register", {
        "Name": "web", "ID": "web-1", "Port": 80,
        "Check": {"CheckID": "service:web-1", "TTL": "2s", "Status": "passing", "DeregisterCriticalServiceAfter": "10s"},
    })  # fmt: skip
    assert len(call(double, "GET", "/v1/health/service/web?passing")[2]) == 1
    clock.advance(1.5)
    assert call(double, "PUT", "/v1/agent/check/pass/service:web-1")[0] == 200
    clock.advance(1.5)
    double.tick()
    assert double.check_status("service:web-1") == "passing"  # the pass reset the TTL
    clock.advance(1.0)
    double.tick()
    assert double.check_status("service:web-1") == "critical"
    assert call(double, "GET", "/v1/health/service/web?passing")[2] == []
    assert len(call(double, "GET", "/v1/health/service/web")[2]) == 1  # still registered
    clock.advance(30)  # past the asked 10s, but Consul's minimum is 1m
    double.tick()
    assert "web-1" in double.service_ids()
    clock.advance(31)
    double.tick()
    assert double.service_ids() == set()


def test_a_check_starts_critical_unless_a_status_is_given(consul):
    call(consul, "PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80, "Check": {"TTL": "30s"}})
    assert consul.check_status("service:web") == "critical"
    assert call(consul, "GET", "/v1/health/service/web?passing")[2] == []


def test_passing_an_unknown_check_is_a_500_naming_it(consul):
    status, _, text = call(consul, "PUT", "/v1/agent/check/pass/service:nope")
    assert status == 500 and text == 'CheckID "service:nope" does not have associated TTL'


def test_acl_token_is_required_when_acls_are_on():
    with ConsulDouble(acl_token="s3cret") as double:
        assert call(double, "GET", "/v1/catalog/services")[:1] == (403,)
        status, _, text = call(double, "GET", "/v1/catalog/services", token="wrong")
        assert (status, text) == (403, "ACL not found")
        assert call(double, "GET", "/v1/catalog/services", token="s3cret")[0] == 200


def test_unknown_datacenter_and_unimplemented_parameters_are_errors(consul):
    assert call(consul, "GET", "/v1/health/service/web?dc=mars")[:3:2] == (500, "No path to datacenter")
    assert call(consul, "GET", "/v1/health/service/web?filter=Service.Port==80")[0] == 400


def test_node_health_counts_for_passing_and_http_checks_run(consul, agents):
    (agent,) = agents(1)
    call(consul, "PUT", "/v1/agent/service/register", {
        "Name": "web", "ID": "w", "Port": agent.port, "Check": {"HTTP": f"http://{agent.address}/health", "Interval": "100ms"},
    })  # fmt: skip
    deadline = time.monotonic() + 5
    while consul.check_status("service:w") != "passing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert consul.check_status("service:w") == "passing"
    agent.behaviour.status = 429
    while consul.check_status("service:w") != "warning" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert consul.check_status("service:w") == "warning"
    assert call(consul, "GET", "/v1/health/service/web?passing")[2] == []
    agent.behaviour.status = 200
    while consul.check_status("service:w") != "passing" and time.monotonic() < deadline:
        time.sleep(0.02)
    consul.set_node_health("critical")
    assert call(consul, "GET", "/v1/health/service/web?passing")[2] == []
