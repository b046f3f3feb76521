"""Access logs through structlog into the standard ``logging`` tree, and
per-attempt metrics for streamed answers."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

import meshlib
from meshlib import telemetry
from meshlib.core.driver import Exchange, run
from meshlib.outcome import AttemptResult, Outcome


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[dict]:
        return [json.loads(r.getMessage()) for r in self.records]


@pytest.fixture
def access_log():
    logger = logging.getLogger("meshlib.access")
    handler = Capture()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_one_json_event_per_call_with_attempts_and_timing(access_log, agents):
    a = agents(1)[0]
    a.behaviour.script = [503]
    cfg = {"tracing": "native", "services": {"logged": {"endpoints": a.address, "retry_on": "5xx", "num_retries": 1, "retry_backoff_base": "1ms"}}}
    with meshlib.Mesh(config=cfg) as mesh:
        mesh.requests_session().get("http://logged/orders/7?token=hidden")
    [event] = access_log.events()
    assert event["event"] == "meshlib.access" and event["service"] == "logged"
    assert event["method"] == "GET" and event["path"] == "/orders/7"  # never the query string
    assert event["status"] == 200 and event["outcome"] == "success" and event["endpoint"] == a.address
    assert event["attempts"] == 2 and event["retries"] == 1
    assert event["duration_ms"] >= event["ttfb_ms"] >= 0 and len(event["trace_id"]) == 32 and len(event["span_id"]) == 16
    assert access_log.records[0].levelno == logging.INFO and access_log.records[0].access["service"] == "logged"
    assert "timestamp" in event


def test_retries_show_in_the_call_event(access_log, agents):
    a = agents(1)[0]
    a.behaviour.script = [503, 503]
    cfg = {"tracing": "native", "services": {"again": {"endpoints": a.address, "retry_on": "5xx", "num_retries": 2, "retry_backoff_base": "1ms"}}}
    with meshlib.Mesh(config=cfg) as mesh:
        mesh.requests_session().get("http://again/")
    [event] = access_log.events()
    assert event["attempts"] == 3 and event["retries"] == 2 and event["status"] == 200


def test_per_attempt_events_sampling_and_errors(access_log, agents):
    ok, bad = agents(2)
    bad.behaviour.status = 500
    cfg = {"tracing": "native", "access_log_per": "attempt", "access_log_sample": 0.0, "services": {
        "ok": {"endpoints": ok.address}, "bad": {"endpoints": bad.address, "outlier_detection": False}}}  # fmt: skip
    with meshlib.Mesh(config=cfg) as mesh:
        s = mesh.requests_session()
        for _ in range(5):
            s.get("http://ok/")
            s.get("http://bad/")
    events = access_log.events()
    assert len(events) == 5 and {e["service"] for e in events} == {"bad"} and {e["status"] for e in events} == {500}
    access_log.records.clear()
    with meshlib.Mesh(config={**cfg, "access_log_errors": False}) as mesh:
        mesh.requests_session().get("http://bad/")
    assert access_log.records == []


def test_off_and_console_rendering(access_log, agents):
    a = agents(1)[0]
    with meshlib.Mesh(config={"access_log": False, "services": {"quiet": {"endpoints": a.address}}}) as mesh:
        mesh.requests_session().get("http://quiet/")
    assert access_log.records == []
    with meshlib.Mesh(config={"access_log_format": "console", "services": {"pretty": {"endpoints": a.address}}}) as mesh:
        mesh.requests_session().get("http://pretty/")
    [record] = access_log.records
    text = record.getMessage()
    assert "meshlib.access" in text and "service=pretty" in text and "status=200" in text


def test_nothing_logged_or_rendered_when_logging_is_not_configured(agents):
    logger = logging.getLogger("meshlib.access")
    assert not logger.isEnabledFor(logging.INFO) or logger.level == logging.NOTSET
    a = agents(1)[0]
    with meshlib.Mesh(config={"services": {"silent": {"endpoints": a.address}}}) as mesh:
        mesh.requests_session().get("http://silent/")


class _Stream:
    end = None


class _StreamExchange(Exchange):
    def judge(self, result):
        return AttemptResult(Outcome.SUCCESS, 200)

    def defer(self, result, end):
        result.end = end
        return True


def test_a_streamed_answer_is_timed_to_its_end_and_logged_then(access_log):
    # The adapters mark streamed bodies with Exchange.defer; here the core's own seam.
    with meshlib.Mesh(config={"tracing": "native", "services": {"stream": {"endpoints": "127.0.0.1:9"}}}) as mesh:
        cluster = mesh.cluster("stream")
        headers: dict[str, str] = {}

        def send(ep, limit):
            telemetry.inject(headers, ep)
            return _Stream()

        with telemetry.http_call(cluster, "GET", "http://stream/chat"):
            stream = run(cluster.start_call(), send, _StreamExchange())
        assert access_log.records == []  # the call is not over: its body is still streaming
        time.sleep(0.05)
        stream.end(None, 2048)
        stats = mesh.stats()["telemetry"]["services"]["stream"]
    [event] = access_log.events()
    assert event["duration_ms"] >= 50 > event["ttfb_ms"] and event["bytes"] == 2048
    assert event["trace_id"] == headers["traceparent"].split("-")[1]
    rq, ttfb = stats["rq_time"]["127.0.0.1:9"], stats["first_byte"]["127.0.0.1:9"]
    assert rq["count"] == ttfb["count"] == 1 and rq["sum"] >= 0.05 > ttfb["sum"]


def test_series_of_endpoints_that_left_are_dropped(agents, tmp_path):
    a, b = agents(2)
    path = tmp_path / "eps.json"
    path.write_text(json.dumps({"services": {"moving": [a.address, b.address]}}))
    cfg = {"discovery": f"file://{path}", "file_poll_interval": "50ms", "services": {"moving": {"lb_policy": "round_robin"}}}
    with meshlib.Mesh(config=cfg) as mesh:
        s = mesh.requests_session()
        s.get("http://moving/")
        s.get("http://moving/")
        assert set(mesh.stats()["telemetry"]["services"]["moving"]["rq_time"]) == {a.address, b.address}
        path.write_text(json.dumps({"services": {"moving": [b.address]}}))
        deadline = time.monotonic() + 5
        while len(mesh.endpoints("moving")) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        t = mesh.stats()["telemetry"]["services"]["moving"]
        assert set(t["rq_time"]) == {b.address} and t["discovery_updates"] >= 2


def test_the_sample_is_the_share_of_calls_logged(access_log):
    import random

    from meshlib.telemetry.accesslog import AccessLog
    from meshlib.telemetry.settings import TelemetryConfig

    log = AccessLog(TelemetryConfig(access_log_sample=0.1), random.Random(7))
    assert 800 < sum(log.wanted(False) for _ in range(10_000)) < 1200
    assert all(log.wanted(True) for _ in range(100))

    with meshlib.Mesh(config={"tracing": "native", "access_log_sample": 0.5, "services": {"half": {"endpoints": "127.0.0.1:9"}}}) as mesh:
        cluster = mesh.cluster("half")
        for _ in range(400):
            with telemetry.http_call(cluster, "GET", "http://half/"):
                run(cluster.start_call(), lambda ep, t: _Stream(), _OkExchange())
    assert 140 < len(access_log.records) < 260  # sampled once per call, not twice


class _OkExchange(Exchange):
    def judge(self, result):
        return AttemptResult(Outcome.SUCCESS, 200)


def test_grpc_method_labels_are_bounded():
    with meshlib.Mesh(config={"access_log": False, "services": {"many": {"endpoints": "127.0.0.1:9"}}}) as mesh:
        cluster = mesh.cluster("many")

        def send(ep, limit):
            telemetry.inject([], ep)
            return _Stream()

        for i in range(205):
            with telemetry.call(cluster, rpc=f"/pkg.Svc/Method{i}"):
                run(cluster.start_call(), send, _OkExchange())
        t = mesh.stats()["telemetry"]["services"]["many"]
    assert len(t["grpc_attempt_started"]) == 201 and t["grpc_attempt_started"]["other"] == 5
    assert len({row["method"] for row in t["grpc_attempt_duration"]}) == 201
    assert len({row["method"] for row in t["grpc_call_duration"]}) == 201


def test_without_structlog_the_standard_library_renders_the_same_event(monkeypatch):
    from meshlib.telemetry import accesslog

    event = {"event": "meshlib.access", "service": "svc", "status": 200, "duration_ms": 1.5}
    with_structlog = [p for p in accesslog.processors("json")]
    monkeypatch.setitem(__import__("sys").modules, "structlog", None)  # import structlog now raises ImportError
    without = accesslog.processors("json")
    rendered = {}
    for name, procs in (("structlog", with_structlog), ("stdlib", without)):
        out = dict(event)
        for proc in procs:
            out = proc(None, "info", out)
        rendered[name] = json.loads(out)
    stamps = {k: v.pop("timestamp") for k, v in rendered.items()}
    assert rendered["structlog"] == rendered["stdlib"] == event
    assert all(s.endswith("Z") and "T" in s for s in stamps.values())
    console = dict(event)
    for proc in accesslog.processors("console"):
        console = proc(None, "info", console)
    assert "meshlib.access" in console and "service='svc'" in console and "status=200" in console


def test_out_of_the_sample_only_failed_calls_are_logged_whole(access_log, agents):
    """Sample 0 with errors always logged: a call that fails after retries is
    logged with all its attempts, and one that cannot connect; a clean call
    and one that recovers by a retry are not."""
    a = agents(1)[0]
    cfg = {"tracing": "native", "access_log_sample": 0.0, "services": {
        "sampled": {"endpoints": a.address, "retry_on": "5xx", "num_retries": 2, "retry_backoff_base": "1ms"},
        "nowhere": {"endpoints": "127.0.0.1:9", "num_retries": 0},
    }}  # fmt: skip
    with meshlib.Mesh(config=cfg) as mesh:
        s = mesh.requests_session()
        assert s.get("http://sampled/").status_code == 200  # clean
        a.behaviour.script = [503]
        assert s.get("http://sampled/").status_code == 200  # recovered by a retry
        assert access_log.events() == []
        a.behaviour.script = [503, 502, 500]
        assert s.get("http://sampled/x").status_code == 500  # failed after two retries
        with pytest.raises(requests.ConnectionError):
            s.get("http://nowhere/")
    failed, refused = access_log.events()
    assert failed["attempts"] == 3 and failed["retries"] == 2 and failed["status"] == 500 and failed["path"] == "/x"
    assert refused["service"] == "nowhere" and refused["outcome"] == "connect_failure"
