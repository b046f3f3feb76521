"""load_saturation=wait: when every endpoint is saturated, calls wait in a
bounded client-side queue until a load report or an ended attempt frees an
endpoint, never past their deadline; a full queue fails fast. Real servers on
127.0.0.1 (a controllable reporter, and the model-server simulator), sync and
asyncio callers; deadlines on a ManualClock where time is asserted exactly."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import meshlib
from meshlib import ManualClock
from meshlib.errors import DeadlineExceededError, EndpointsSaturatedError

from .llm_sim import Fleet, SimConfig


class _Reporter(BaseHTTPRequestHandler):
    """Answers with its name; reports ``waiting`` = ``server.level`` in the
    ``endpoint-load-metrics`` header and on ``/metrics``; ``/slow`` answers
    when ``server.release`` is set."""

    def do_GET(self):  # noqa: N802
        server = self.server
        if self.path.startswith("/metrics"):
            body = f"vllm:num_requests_waiting {server.level}\nvllm:kv_cache_usage_perc 0.1\n".encode()
        else:
            server.hits += 1
            if self.path.startswith("/slow"):
                server.release.wait(10)
            body = server.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("endpoint-load-metrics", f"TEXT named_metrics.num_requests_waiting={server.level}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def reporters():
    servers = []

    def make(*names):
        for name in names:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Reporter)
            server.daemon_threads = True
            server.name, server.level, server.hits, server.release = name, 0, 0, threading.Event()
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        return servers[-len(names):]

    yield make
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def _service(servers, **keys):
    eps = ",".join(f"127.0.0.1:{s.server_address[1]}" for s in servers)
    return {"services": {"model": {"endpoints": eps, "lb_policy": "least_loaded", "load_saturation": "wait", **keys}}}


def _until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def _queue(mesh):
    return mesh.stats()["services"]["model"]["load_reports"]["wait_queue"]


def test_a_call_waits_out_saturation_until_its_deadline_exactly(reporters):
    (server,) = reporters("a")
    clock = ManualClock()
    with meshlib.Mesh(config=_service([server], load_reports="header", load_report_max_age="60s", timeout="2s"), clock=clock) as mesh:
        s = mesh.requests_session()
        server.level = 9
        assert s.get("http://model/").text == "a"  # no report yet: sent; its answer says 9 waiting
        start = clock.monotonic()
        with pytest.raises(DeadlineExceededError):
            s.get("http://model/")
        assert clock.monotonic() - start == 2.0  # waited exactly to its deadline, not a moment more
        assert server.hits == 1  # never sent to the saturated server
        stats = mesh.stats()["services"]["model"]
        assert stats["load_reports"]["wait_queue"] == {"size": 64, "waiting": 0, "deepest": 1, "waited": 1, "served": 0, "rejected": 0, "expired": 1}
        assert stats["deadline_exceeded"] == 1


def test_a_hedged_call_queues_for_its_first_attempt_too(reporters):
    (server,) = reporters("a")
    hedge = {"hedge_max_attempts": 2, "hedge_delay": "5s"}
    with meshlib.Mesh(config=_service([server], load_reports="header", load_report_max_age="60s", timeout="300ms", **hedge)) as mesh:
        s = mesh.requests_session()
        server.level = 9
        s.get("http://model/")
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            s.get("http://model/")
        assert 0.3 <= time.monotonic() - began < 1.5
        assert server.hits == 1
        assert _queue(mesh)["expired"] == 1


def test_a_stale_report_frees_its_endpoint_and_the_waiting_call_goes(reporters):
    (server,) = reporters("a")
    clock = ManualClock()
    with meshlib.Mesh(config=_service([server], load_reports="header", load_report_max_age="1s", timeout="5s"), clock=clock) as mesh:
        s = mesh.requests_session()
        server.level = 9
        s.get("http://model/")
        reported = clock.monotonic()
        server.level = 0
        assert s.get("http://model/").text == "a"
        assert clock.monotonic() - reported == pytest.approx(1.001, abs=1e-9)  # the report went stale (older than 1s): re-checked then
        assert server.hits == 2
        assert _queue(mesh)["served"] == 1


@pytest.mark.parametrize("client", ["requests", "httpx_async"])
def test_a_load_report_frees_an_endpoint_and_wakes_the_waiting_call(reporters, client):
    a, b = reporters("a", "b")
    a.level = b.level = 9
    with meshlib.Mesh(config=_service([a, b], load_reports="metrics", load_metrics_interval="20ms", timeout="10s")) as mesh:
        cluster = mesh.cluster("model")
        assert _until(lambda: all(h.load is not None and h.load.waiting == 9 for h in cluster.hosts))
        answer: list[str] = []

        def call() -> None:
            if client == "requests":
                answer.append(mesh.requests_session().get("http://model/").text)
            else:

                async def go() -> str:
                    async with mesh.httpx_async_client() as c:
                        return (await c.get("http://model/")).text

                answer.append(asyncio.run(go()))

        t = threading.Thread(target=call)
        t.start()
        assert _until(lambda: _queue(mesh)["waiting"] == 1)
        time.sleep(0.1)  # several scrapes later, still saturated: still waiting
        assert answer == [] and a.hits == b.hits == 0
        b.level = 0  # b's next scrape frees it
        t.join(5)
        assert answer == ["b"] and a.hits == 0
        assert _queue(mesh) == {"size": 64, "waiting": 0, "deepest": 1, "waited": 1, "served": 1, "rejected": 0, "expired": 0}


def test_an_ended_attempt_whose_report_frees_its_endpoint_wakes_the_waiting_call(reporters):
    (server,) = reporters("a")
    with meshlib.Mesh(config=_service([server], load_reports="header", load_report_max_age="60s", timeout="10s")) as mesh:
        s = mesh.requests_session()
        slow: list[str] = []
        t_slow = threading.Thread(target=lambda: slow.append(s.get("http://model/slow").text))
        t_slow.start()  # in flight, answers when released
        assert _until(lambda: server.hits == 1)
        server.level = 9
        s.get("http://model/")  # its answer saturates the endpoint
        waited: list[str] = []
        t = threading.Thread(target=lambda: waited.append(mesh.requests_session().get("http://model/").text))
        t.start()
        assert _until(lambda: _queue(mesh)["waiting"] == 1)
        server.level = 0
        server.release.set()  # the slow attempt ends, its answer reporting an empty queue
        t.join(5)
        t_slow.join(5)
        assert slow == ["a"] and waited == ["a"] and server.hits == 3
        assert _queue(mesh)["served"] == 1


def test_a_full_queue_fails_fast_with_a_clear_error(reporters):
    (server,) = reporters("a")
    with meshlib.Mesh(config=_service([server], load_reports="header", load_report_max_age="60s", load_wait_queue=1, timeout="1s")) as mesh:
        s = mesh.requests_session()
        server.level = 9
        s.get("http://model/")
        first: list[BaseException] = []

        def wait() -> None:
            try:
                mesh.requests_session().get("http://model/")
            except BaseException as exc:
                first.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        assert _until(lambda: _queue(mesh)["waiting"] == 1)
        began = time.monotonic()
        with pytest.raises(EndpointsSaturatedError, match=r"every endpoint saturated and the wait queue full \(1 calls waiting, load_wait_queue\)") as err:
            s.get("http://model/")
        assert time.monotonic() - began < 0.5 and err.value.waiting == 1
        t.join(5)
        assert isinstance(first[0], DeadlineExceededError)  # the waiting one ran out of time
        assert server.hits == 1
        assert _queue(mesh) == {"size": 1, "waiting": 0, "deepest": 1, "waited": 1, "served": 0, "rejected": 1, "expired": 1}


def test_a_burst_waits_client_side_instead_of_piling_onto_the_simulator():
    """20 async calls at once to one simulated replica (batch 4): with
    ``wait`` its queue stays within three of the threshold; with ``spill`` the
    burst lands in its queue."""
    fleet = Fleet((1.0,), SimConfig(batch_limit=4))
    try:
        port = fleet.ports[0]
        deepest = {}
        for mode in ("wait", "spill"):
            svc = {
                "endpoints": f"127.0.0.1:{port}", "lb_policy": "least_loaded", "load_reports": "header,metrics",
                "load_metrics_interval": "20ms", "load_queue_threshold": 1, "load_saturation": mode, "timeout": "30s",
            }  # fmt: skip
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/reset", method="POST"), timeout=5).read()
            with meshlib.Mesh(config={"services": {"model": svc}}) as mesh:
                cluster = mesh.cluster("model")
                assert _until(lambda: cluster.hosts[0].load is not None)

                async def burst() -> list[int]:
                    body = {"system": "s", "system_tokens": 32, "user_tokens": 16, "max_tokens": 2, "stream": False}
                    async with mesh.httpx_async_client() as c:
                        answers = await asyncio.gather(*(c.post("http://model/v1/completions", json=body) for _ in range(20)))
                    return [r.status_code for r in answers]

                assert asyncio.run(burst()) == [200] * 20
                stats = mesh.stats()["services"]["model"]["load_reports"]
                if mode == "wait":
                    assert stats["wait_queue"]["waited"] > 0 and stats["wait_queue"]["served"] == stats["wait_queue"]["waited"]
            deepest[mode] = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5).read())["deepest_queue"]
        # threshold 1: the client sends while its estimate (reported + sent since) is at most 1;
        # requests still in transit when a report is made (more of them on a busy machine) add to it.
        assert deepest["wait"] <= 4, deepest
        assert deepest["spill"] >= 10
    finally:
        fleet.close()
