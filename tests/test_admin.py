"""The admin endpoint on a real port: Prometheus text parsed by
prometheus_client's own parser, exact counters, JSON views, readiness,
read-only methods, loopback-only binding and a clean stop."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import meshlib
from meshlib import cli
from meshlib.admin import admin_url, fetch_stats
from tests.conftest import endpoints_of


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text, headers = get(url + "/stats/prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def admin_mesh(agents):
    made = []

    def make(services, **extra):
        mesh = meshlib.Mesh(config={"admin": "127.0.0.1:0", "services": services, **extra})
        made.append(mesh)
        return mesh, admin_url(mesh)

    yield make
    for m in made:
        m.close()


def test_prometheus_counters_match_exact_call_counts_with_retries(admin_mesh, agents):
    a, b = agents(2)
    a.behaviour.script = [503, 503]
    mesh, url = admin_mesh({"svc": {
        "endpoints": endpoints_of([a, b]), "lb_policy": "round_robin", "retry_on": "5xx", "num_retries": 2,
        "retry_backoff_base": "1ms", "outlier_detection": False,
    }})  # fmt: skip
    s = mesh.requests_session()
    for _ in range(4):
        assert s.get("http://svc/items/12345?session=abc").status_code == 200
    samples = scrape(url)
    assert value(samples, "meshlib_calls_total", service="svc") == 4
    total = a.hits + b.hits
    assert sum(v for (n, _), v in samples.items() if n == "meshlib_upstream_rq_total") == total == 6
    assert value(samples, "meshlib_upstream_rq_retry_total", service="svc") == 2
    assert value(samples, "meshlib_upstream_rq_retry_success_total", service="svc") == 2
    assert value(samples, "meshlib_upstream_rq_completed_total", service="svc", endpoint=a.address, outcome="failure", status_class="5xx", code="503") == 2
    ok = sum(v for (n, labels), v in samples.items() if n == "meshlib_upstream_rq_completed_total" and dict(labels)["code"] == "200")
    assert ok == 4
    assert value(samples, "meshlib_http_client_request_duration_seconds_count", server_address="svc", http_request_method="GET", server_port="80", http_response_status_code="503", error_type="503") == 2
    assert value(samples, "meshlib_upstream_rq_time_seconds_count", service="svc", endpoint=b.address) == b.hits
    # No label holds a path, a query or an id.
    for (name, labels), _ in samples.items():
        for _, v in labels:
            assert "/items" not in v and "12345" not in v and "session" not in v


def test_breaker_trips_and_ejections_are_counted(admin_mesh, agents):
    bad = agents(1)[0]
    bad.behaviour.status = 503
    mesh, url = admin_mesh({"trip": {
        "endpoints": bad.address, "breaker": "cluster", "breaker_minimum_calls": 3, "breaker_window_type": "count_based",
        "breaker_window_size": 3, "outlier_consecutive_5xx": 2, "outlier_max_ejection_percent": 100,
    }})  # fmt: skip
    s = mesh.requests_session()
    for _ in range(3):
        assert s.get("http://trip/").status_code == 503
    for _ in range(5):
        with pytest.raises(meshlib.CircuitOpenError):
            s.get("http://trip/")
    samples = scrape(url)
    assert value(samples, "meshlib_circuit_breaker_rejected_total", service="trip") == 5
    assert value(samples, "meshlib_circuit_breaker_open", service="trip") == 1.0
    assert value(samples, "meshlib_outlier_detection_ejections_enforced_total", service="trip", type="consecutive_5xx") == 1
    assert value(samples, "meshlib_outlier_detection_ejections_active", service="trip") == 1
    assert value(samples, "meshlib_membership", service="trip", state="ejected") == 1
    assert value(samples, "meshlib_calls_total", service="trip") == 3  # admitted calls; the 5 refused are counted apart
    assert bad.hits == 3


def test_json_views_readiness_and_read_only_methods(admin_mesh, agents, tmp_path):
    a = agents(1)[0]
    mesh, url = admin_mesh({"web": {"endpoints": a.address}})
    mesh.requests_session().get("http://web/")
    status, body, headers = get(url + "/stats")
    assert status == 200 and headers["Content-Type"] == "application/json"
    stats = json.loads(body)
    assert stats["services"]["web"]["calls"] == 1 and stats["telemetry"]["services"]["web"]["completed"][0]["count"] == 1
    status, body, _ = get(url + "/clusters")
    assert f"web::{a.address}::rq_total::1" in body and f"web::{a.address}::health::healthy" in body
    clusters = json.loads(get(url + "/clusters?format=json")[1])
    host = clusters["cluster_statuses"][0]["hosts"][0]
    assert host["address"] == a.address and host["rq_success"] == 1 and host["success_rate"] == 100.0 and "ewma_ms" in host
    dump = json.loads(get(url + "/config_dump")[1])
    assert dump["telemetry"]["admin"] == "127.0.0.1:0" and dump["services"]["web"]["lb_policy"] == "peak_ewma"
    assert get(url + "/ready")[:2] == (200, "LIVE\n")
    assert get(url + "/nope")[0] == 404
    for method in ("POST", "PUT", "DELETE", "HEAD", "PATCH"):
        req = urllib.request.Request(url + "/stats", data=b"x" if method in ("POST", "PUT", "PATCH") else None, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 405 and err.value.headers["Allow"] == "GET"
    assert json.loads(fetch_stats(url))["services"]["web"]["calls"] == 1
    assert "meshlib_calls_total" in fetch_stats(url + "/stats", prometheus=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["stats", "--url", url]) == 0
    assert json.loads(out.getvalue())["services"]["web"]["calls"] == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["stats", "--url", url, "--prometheus"]) == 0
    assert "meshlib_calls_total" in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["stats", "--url", "http://127.0.0.1:1"]) == 1
    assert "cannot read the admin endpoint" in err.getvalue()

    empty = tmp_path / "endpoints.json"
    empty.write_text("{}")
    _, url2 = admin_mesh({"later": {}}, discovery=f"file://{empty}")
    assert get(url2 + "/ready") == (503, "PRE_INITIALIZING\n", get(url2 + "/ready")[2])


def test_loopback_only_unless_allowed():
    with pytest.raises(meshlib.ConfigError, match="MESHLIB_ADMIN"):
        meshlib.Mesh.from_env({"MESHLIB_ADMIN": "0.0.0.0:9901"})
    with pytest.raises(meshlib.ConfigError, match="MESHLIB_ADMIN"):
        meshlib.Mesh.from_env({"MESHLIB_ADMIN": "not-an-address"})


def test_the_admin_thread_stops_with_the_mesh_and_never_leaks():
    before = {t.ident for t in threading.enumerate()}
    for _ in range(5):
        mesh = meshlib.Mesh(config={"admin": "127.0.0.1:0"})
        url = admin_url(mesh)
        assert get(url + "/ready")[0] == 200
        mesh.close()
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/ready", timeout=2)
    left = [t for t in threading.enumerate() if t.ident not in before and t.name == "meshlib-admin"]
    assert left == []
    with meshlib.Mesh(config={}) as plain:
        assert admin_url(plain) is None
