"""Resilience through every client: retries, budgets, breakers, ejection,
health checks, deadlines, hedging, rate limit and fault injection, against
real servers on 127.0.0.1 that fail on cue."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
import requests

import meshlib
from meshlib import CircuitOpenError, DeadlineExceededError, FaultInjectedError, ManualClock, Mesh, RateLimitedError

from .conftest import endpoints_of


def mesh_for(endpoints: str, clock: Any = None, **keys: Any) -> Mesh:
    kw = {"clock": clock} if clock is not None else {}
    return Mesh(config={"lb_policy": "round_robin", "services": {"inventory": {"endpoints": endpoints, **keys}}}, **kw)


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


Send = Callable[[str, str], Reply]


def via_requests(mesh: Mesh) -> Send:
    s = mesh.requests_session()

    def send(method: str, url: str) -> Reply:
        r = s.request(method, url, data=b"x" if method == "POST" else None)
        return Reply(r.status_code, dict(r.headers), r.content)

    return send


def via_urllib3(mesh: Mesh) -> Send:
    pool = mesh.urllib3_pool()

    def send(method: str, url: str) -> Reply:
        r = pool.request(method, url, body=b"x" if method == "POST" else None)
        return Reply(r.status, dict(r.headers), r.data)

    return send


def via_httpx(mesh: Mesh) -> Send:
    client = mesh.httpx_client()

    def send(method: str, url: str) -> Reply:
        r = client.request(method, url, content=b"x" if method == "POST" else None)
        return Reply(r.status_code, dict(r.headers), r.content)

    return send


def via_httpx_async(mesh: Mesh) -> Send:
    async def once(method: str, url: str) -> Reply:
        async with mesh.httpx_async_client() as client:
            r = await client.request(method, url, content=b"x" if method == "POST" else None)
            return Reply(r.status_code, dict(r.headers), r.content)

    return lambda method, url: asyncio.run(once(method, url))


def via_decorator(mesh: Mesh) -> Send:
    raw = requests.Session()

    def send(method: str, url: str) -> Reply:
        path = "/" + url.split("/", 3)[3]

        @mesh.call("inventory", idempotent=method != "POST")
        def attempt(ep: meshlib.Endpoint) -> requests.Response:
            return raw.request(method, f"http://{ep.address}{path}", headers=meshlib.deadline_headers(), timeout=meshlib.remaining())

        r = attempt()
        return Reply(r.status_code, dict(r.headers), r.content)

    return send


CLIENTS = {"requests": via_requests, "urllib3": via_urllib3, "httpx": via_httpx, "httpx-async": via_httpx_async, "decorator": via_decorator}
every_client = pytest.mark.parametrize("client", list(CLIENTS))


def svc(mesh: Mesh) -> dict[str, Any]:
    return mesh.stats()["services"]["inventory"]


# -- retry_on conditions ----------------------------------------------------------------------


@every_client
@pytest.mark.parametrize(
    "retry_on, failing, retried",
    [
        ("5xx", 503, True),
        ("5xx", 500, True),
        ("gateway-error", 502, True),
        ("gateway-error", 500, False),
        ("retriable-4xx", 409, True),
        ("retriable-status-codes", 429, True),
        ("connect-failure", 503, False),
    ],
)
def test_retry_on_conditions(agents, client, retry_on, failing, retried):
    bad, good = agents(2)
    bad.behaviour.status = failing
    keys = {"retry_on": retry_on, "num_retries": 1, "outlier_detection": False}
    if retry_on == "retriable-status-codes":
        keys["retriable_status_codes"] = "429"
    with mesh_for(endpoints_of([bad, good]), **keys) as mesh:
        send = CLIENTS[client](mesh)
        statuses = [send("GET", "http://inventory/").status for _ in range(6)]
        if retried:
            assert statuses == [200] * 6 and good.hits == 6
            assert svc(mesh)["retries"] == bad.hits >= 3
        else:
            # round robin: every other call lands on the bad agent, and stays there
            assert statuses.count(failing) == 3 == bad.hits and good.hits == 3
            assert svc(mesh)["retries"] == 0


@every_client
def test_reset_is_retried_only_under_reset(agents, client):
    bad, good = agents(2)
    bad.behaviour.reset = True
    with mesh_for(endpoints_of([bad, good]), retry_on="reset", outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        assert [send("GET", "http://inventory/").status for _ in range(4)] == [200] * 4
    with mesh_for(endpoints_of([bad, good]), retry_on="retriable-4xx", outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        with pytest.raises(Exception):
            for _ in range(2):
                send("GET", "http://inventory/")


@every_client
def test_connect_failure_is_retried_by_default_even_for_post(agents, refused_port, client):
    (good,) = agents(1)
    with mesh_for(f"127.0.0.1:{refused_port},{good.address}", outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        assert [send("POST", "http://inventory/").status for _ in range(4)] == [200] * 4
        dead = next(e for e in svc(mesh)["endpoints"] if e["address"].endswith(f":{refused_port}"))
        assert svc(mesh)["retries"] == dead["connect_failures"] >= 2


@every_client
def test_post_is_not_retried_after_it_may_have_reached_the_server(agents, client):
    bad, good = agents(2)
    bad.behaviour.status = 503
    with mesh_for(endpoints_of([bad, good]), retry_on="5xx", outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        assert sorted(send("POST", "http://inventory/").status for _ in range(2)) == [200, 503]
        assert good.hits == 1 and bad.hits == 1 and svc(mesh)["retries"] == 0
    with mesh_for(endpoints_of([bad, good]), retry_on="5xx", retry_non_idempotent=True, outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        assert [send("POST", "http://inventory/").status for _ in range(2)] == [200, 200]
        assert svc(mesh)["retries"] == bad.hits - 1 >= 1


@every_client
def test_each_retry_goes_to_a_host_not_yet_tried(agents, client):
    bad1, bad2, good = agents(3)
    bad1.behaviour.status = bad2.behaviour.status = 503
    with mesh_for(endpoints_of([bad1, bad2, good]), lb_policy="random", retry_on="5xx", num_retries=2, outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        for i in range(1, 13):
            assert send("GET", "http://inventory/").status == 200
            # no call ever tried a failing agent twice: at most one hit each per call
            assert bad1.hits <= i and bad2.hits <= i
        assert good.hits == 12


@every_client
def test_per_try_timeout_moves_a_hung_attempt_to_another_host(agents, client):
    slow, fast = agents(2)
    slow.behaviour.delay = 2.0
    with mesh_for(endpoints_of([slow, fast]), retry_on="5xx", per_try_timeout="300ms", outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        started = time.monotonic()
        assert [send("GET", "http://inventory/").status for _ in range(2)] == [200, 200]
        assert time.monotonic() - started < 1.5  # one of the two started on the hung agent
        assert fast.hits == 2 and slow.hits >= 1


def test_retry_after_is_honoured_on_the_cluster_clock(agents):
    (agent,) = agents(1)
    agent.behaviour.script = [503]
    agent.behaviour.headers = {"Retry-After": "7"}
    clock = ManualClock()
    with mesh_for(agent.address, clock=clock, retry_on="5xx", outlier_detection=False) as mesh:
        before = clock.monotonic()
        assert mesh.requests_session().get("http://inventory/").status_code == 200
        assert clock.monotonic() - before == pytest.approx(7.0)


def test_backoff_between_retries_is_jittered_and_bounded(agents):
    bad1, bad2, bad3 = agents(3)
    for a in (bad1, bad2, bad3):
        a.behaviour.status = 503
    clock = ManualClock()
    with mesh_for(endpoints_of([bad1, bad2, bad3]), clock=clock, retry_on="5xx", num_retries=2, outlier_detection=False) as mesh:
        s = mesh.requests_session()
        waits = []
        for _ in range(20):
            before = clock.monotonic()
            assert s.get("http://inventory/").status_code == 503  # the last answer comes back
            waits.append(clock.monotonic() - before)
        # two retries: [0, 25ms) + [0, 75ms)
        assert all(0 <= w < 0.100 for w in waits) and len(set(waits)) > 10


# -- retry budget -------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["requests", "httpx", "decorator"])
def test_retry_budget_caps_load_during_a_total_outage(agents, client):
    down = agents(4)
    for a in down:
        a.behaviour.status = 503
    clock = ManualClock()  # no time passes: the floor is min_per_sec x ttl = 2 x 10 = 20 retries
    keys = dict(retry_on="5xx", num_retries=3, outlier_detection=False, retry_budget_min_per_sec=2)
    with mesh_for(endpoints_of(down), clock=clock, **keys) as mesh:
        send = CLIENTS[client](mesh)
        calls = 300
        for _ in range(calls):
            assert send("GET", "http://inventory/").status == 503
        attempts = sum(a.hits for a in down)
        stats = svc(mesh)
    multiplier = attempts / calls
    # Without a budget this would be 4.0 (1 + num_retries).
    assert attempts <= calls * 1.2 + 20
    assert multiplier < 1.3, multiplier
    assert stats["retries_budget_exhausted"] > 0
    assert stats["retries"] == attempts - calls


def test_concurrency_budget_and_no_budget_with_max_retries(agents):
    down = agents(2)
    for a in down:
        a.behaviour.status = 503
    with mesh_for(endpoints_of(down), retry_on="5xx", num_retries=1, outlier_detection=False, retry_budget="none", max_retries=0) as mesh:
        assert mesh.requests_session().get("http://inventory/").status_code == 503
        s = svc(mesh)
        assert s["retries"] == 0 and s["retries_overflow"] == 1
    with mesh_for(endpoints_of(down), retry_on="5xx", num_retries=1, outlier_detection=False, retry_budget="concurrency") as mesh:
        assert mesh.requests_session().get("http://inventory/").status_code == 503
        assert svc(mesh)["retries"] == 1  # min_retry_concurrency 3 allows it


# -- thresholds and breakers ----------------------------------------------------------------------


@pytest.mark.parametrize("client", ["requests", "urllib3", "httpx", "decorator"])
def test_max_requests_fails_fast_naming_the_threshold(agents, client):
    (slow,) = agents(1)
    slow.behaviour.delay = 0.5
    with mesh_for(slow.address, max_requests=1) as mesh:
        send = CLIENTS[client](mesh)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(send, "GET", "http://inventory/")
            deadline = time.monotonic() + 2
            while slow.hits == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(CircuitOpenError, match="max_requests"):
                send("GET", "http://inventory/")
            assert first.result().status == 200
        assert slow.hits == 1
        assert svc(mesh)["thresholds"]["requests_overflow"] == 1


@every_client
def test_cluster_breaker_opens_half_opens_and_closes(agents, client):
    (agent,) = agents(1)
    clock = ManualClock()
    keys = dict(breaker="cluster", breaker_minimum_calls=4, breaker_window_size=4, breaker_wait_duration_open="30s",
                breaker_permitted_calls_half_open=2, outlier_detection=False)
    with mesh_for(agent.address, clock=clock, **keys) as mesh:
        send = CLIENTS[client](mesh)
        agent.behaviour.status = 503
        for _ in range(4):
            assert send("GET", "http://inventory/").status == 503
        assert svc(mesh)["breaker"]["state"] == "open"
        with pytest.raises(CircuitOpenError, match="breaker open"):
            send("GET", "http://inventory/")
        assert agent.hits == 4  # open fails fast without touching the network
        clock.advance(31)
        agent.behaviour.status = 200
        assert send("GET", "http://inventory/").status == 200
        assert svc(mesh)["breaker"]["state"] == "half_open"
        assert send("GET", "http://inventory/").status == 200
        assert svc(mesh)["breaker"]["state"] == "closed"
        assert svc(mesh)["breaker_rejected"] == 1


def test_cluster_breaker_reopens_when_a_probe_fails(agents):
    (agent,) = agents(1)
    agent.behaviour.status = 500
    clock = ManualClock()
    keys = dict(breaker="cluster", breaker_minimum_calls=2, breaker_window_size=2, breaker_wait_duration_open="10s",
                breaker_permitted_calls_half_open=1, outlier_detection=False)
    with mesh_for(agent.address, clock=clock, **keys) as mesh:
        s = mesh.requests_session()
        s.get("http://inventory/"), s.get("http://inventory/")
        assert svc(mesh)["breaker"]["state"] == "open"
        clock.advance(11)
        assert s.get("http://inventory/").status_code == 500  # the probe
        assert svc(mesh)["breaker"]["state"] == "open"


@pytest.mark.parametrize("client", ["requests", "httpx", "decorator"])
def test_endpoint_breaker_takes_one_endpoint_out(agents, client):
    bad, good = agents(2)
    bad.behaviour.status = 503
    clock = ManualClock()
    keys = dict(breaker="endpoint", breaker_minimum_calls=2, breaker_window_size=2, breaker_wait_duration_open="20s", outlier_detection=False)
    with mesh_for(endpoints_of([bad, good]), clock=clock, **keys) as mesh:
        send = CLIENTS[client](mesh)
        for _ in range(4):
            send("GET", "http://inventory/")
        assert bad.hits == 2
        view = {ep.port: ep for ep in mesh.endpoints("inventory")}
        assert view[bad.port].ejected and not view[good.port].ejected
        assert [send("GET", "http://inventory/").status for _ in range(6)] == [200] * 6
        assert bad.hits == 2
        clock.advance(21)
        bad.behaviour.status = 200
        mesh.tick()  # the wait is over: half-open, back in rotation for probes
        for _ in range(6):
            send("GET", "http://inventory/")
        assert bad.hits > 2
        assert not {ep.port: ep for ep in mesh.endpoints("inventory")}[bad.port].ejected


# -- outlier detection -----------------------------------------------------------------------------


@every_client
def test_consecutive_5xx_ejects_and_the_host_returns_after_the_ejection_time(agents, client):
    bad, good1, good2 = agents(3)
    bad.behaviour.status = 503
    clock = ManualClock()
    with mesh_for(endpoints_of([bad, good1, good2]), clock=clock, outlier_consecutive_5xx=3, outlier_base_ejection_time="30s") as mesh:
        send = CLIENTS[client](mesh)
        for _ in range(9):
            send("GET", "http://inventory/")
        assert bad.hits == 3
        view = {ep.port: ep for ep in mesh.endpoints("inventory")}
        assert view[bad.port].ejected and not view[good1.port].ejected
        ep_stats = next(e for e in svc(mesh)["endpoints"] if e["address"] == bad.address)
        assert ep_stats["state"] == "ejected" and ep_stats["times_ejected"] == 1
        assert svc(mesh)["outlier_detection"]["ejections_enforced_consecutive_5xx"] == 1
        assert [send("GET", "http://inventory/").status for _ in range(10)] == [200] * 10
        assert bad.hits == 3
        clock.advance(31)
        mesh.tick()
        assert not {ep.port: ep for ep in mesh.endpoints("inventory")}[bad.port].ejected
        bad.behaviour.status = 200
        for _ in range(6):
            send("GET", "http://inventory/")
        assert bad.hits == 5


def test_max_ejection_percent_keeps_hosts_in_rotation(agents):
    down = agents(4)
    for a in down:
        a.behaviour.status = 503
    with mesh_for(endpoints_of(down), outlier_consecutive_5xx=2, outlier_max_ejection_percent=50) as mesh:
        s = mesh.requests_session()
        for _ in range(40):
            s.get("http://inventory/")
        ejected = [ep for ep in mesh.endpoints("inventory") if ep.ejected]
        assert len(ejected) == 2
        assert svc(mesh)["outlier_detection"]["ejections_overflow"] > 0


def test_local_origin_failures_eject_in_split_mode(agents, refused_port):
    (good,) = agents(1)
    keys = dict(outlier_split_external_local_origin_errors=True, outlier_consecutive_local_origin_failure=2, num_retries=1)
    with mesh_for(f"127.0.0.1:{refused_port},{good.address}", **keys) as mesh:
        s = mesh.requests_session()
        for _ in range(6):
            assert s.get("http://inventory/").status_code == 200
        dead = next(ep for ep in mesh.endpoints("inventory") if ep.port == refused_port)
        assert dead.ejected
        assert svc(mesh)["outlier_detection"]["ejections_enforced_consecutive_local_origin_failure"] == 1


def test_failure_percentage_and_success_rate_run_on_the_interval(agents):
    hosts = agents(5)
    hosts[0].behaviour.status = 500
    clock = ManualClock()
    keys = dict(lb_policy="round_robin", outlier_consecutive_5xx=0, outlier_enforcing_failure_percentage=100, outlier_enforcing_success_rate=0,
                outlier_failure_percentage_request_volume=5, outlier_success_rate_request_volume=5, outlier_interval="10s")
    with mesh_for(endpoints_of(hosts), clock=clock, **keys) as mesh:
        s = mesh.requests_session()
        for _ in range(50):
            s.get("http://inventory/")
        assert not any(ep.ejected for ep in mesh.endpoints("inventory"))  # only on the interval
        clock.advance(10)
        mesh.tick()
        (ejected,) = [ep for ep in mesh.endpoints("inventory") if ep.ejected]
        assert ejected.port == hosts[0].port
        od = svc(mesh)["outlier_detection"]
        # both detections fire; success rate is not enforced here, failure percentage is
        assert od["ejections_detected_success_rate"] == 1 and od["ejections_enforced_success_rate"] == 0
        assert od["ejections_detected_failure_percentage"] == 1 and od["ejections_enforced_failure_percentage"] == 1


# -- active health checks ------------------------------------------------------------------------------


def test_active_health_checks_take_a_failing_endpoint_out_and_back(agents):
    sick, well = agents(2)
    sick.behaviour.health = 503
    keys = dict(health_check_path="/healthz", health_check_interval="1h", health_check_unhealthy_threshold=2, health_check_healthy_threshold=2)
    with mesh_for(endpoints_of([sick, well]), **keys) as mesh:
        cluster = mesh.cluster("inventory")
        deadline = time.monotonic() + 5  # the first round runs at start-up and decides at once
        while {ep.port: ep for ep in mesh.endpoints("inventory")}[sick.port].healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not {ep.port: ep for ep in mesh.endpoints("inventory")}[sick.port].healthy
        s = mesh.requests_session()
        assert {s.get("http://inventory/").json()["agent"] for _ in range(6)} == {well.name}
        sick.behaviour.health = 200
        cluster.check_health()
        assert not {ep.port: ep for ep in mesh.endpoints("inventory")}[sick.port].healthy  # needs 2 passes
        cluster.check_health()
        assert {ep.port: ep for ep in mesh.endpoints("inventory")}[sick.port].healthy
        ep_stats = next(e for e in svc(mesh)["endpoints"] if e["address"] == sick.address)
        assert ep_stats["health_check"] == "passing" and ep_stats["check_failures"] == 1


def test_a_passing_health_check_returns_an_ejected_host(agents):
    bad, good = agents(2)
    bad.behaviour.status = 503
    keys = dict(health_check_path="/healthz", health_check_interval="1h", outlier_consecutive_5xx=2)
    with mesh_for(endpoints_of([bad, good]), **keys) as mesh:
        s = mesh.requests_session()
        for _ in range(4):
            s.get("http://inventory/")
        assert {ep.port: ep for ep in mesh.endpoints("inventory")}[bad.port].ejected
        mesh.cluster("inventory").check_health()  # /healthz passes: Envoy un-ejects at once
        assert not {ep.port: ep for ep in mesh.endpoints("inventory")}[bad.port].ejected


# -- deadlines -----------------------------------------------------------------------------------------


@every_client
def test_timeout_raises_deadline_exceeded_and_the_header_carries_it(agents, client):
    (slow,) = agents(1)
    slow.behaviour.delay = 1.5
    with mesh_for(slow.address, timeout="300ms") as mesh:
        send = CLIENTS[client](mesh)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="inventory"):
            send("GET", "http://inventory/")
        assert time.monotonic() - started < 1.2
        assert 0 < int(slow.behaviour.seen[0]["x-envoy-expected-rq-timeout-ms"]) <= 300
        assert svc(mesh)["deadline_exceeded"] == 1


@every_client
def test_an_enclosing_deadline_shortens_the_call(agents, client):
    (agent,) = agents(1)
    with mesh_for(agent.address, timeout="10s") as mesh:
        send = CLIENTS[client](mesh)
        with meshlib.deadline(0.5):
            assert send("GET", "http://inventory/").status == 200
        assert 0 < int(agent.behaviour.seen[0]["x-envoy-expected-rq-timeout-ms"]) <= 500
        assert send("GET", "http://inventory/").status == 200
        assert 9000 < int(agent.behaviour.seen[1]["x-envoy-expected-rq-timeout-ms"]) <= 10000


class _Frontend:
    """A server that serves each request by calling a backend through a Mesh,
    inside the caller's deadline (the middle hop of a two-hop chain)."""

    def __init__(self, mesh: Mesh) -> None:
        session = mesh.requests_session()
        gave_up = self.gave_up = []  # when the frontend's own backend call hit the deadline

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with meshlib.incoming_deadline(self.headers):
                    try:
                        r = session.get("http://backend/")
                        status, body = 200, r.content
                    except DeadlineExceededError as exc:
                        gave_up.append(time.monotonic())
                        status, body = 504, str(exc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_deadline_propagates_across_two_hops(agents):
    (backend,) = agents(1)
    with Mesh(config={"services": {"backend": {"endpoints": backend.address}}}) as inner:
        front = _Frontend(inner)
        try:
            with Mesh(config={"services": {"frontend": {"endpoints": front.address, "timeout": "800ms"}}}) as outer:
                s = outer.requests_session()
                assert s.get("http://frontend/").status_code == 200
                seen = int(backend.behaviour.seen[0]["x-envoy-expected-rq-timeout-ms"])
                assert 0 < seen <= 800  # the second hop carries what is left of the first's budget
                backend.behaviour.delay = 2.0
                started = time.monotonic()
                try:
                    assert s.get("http://frontend/").status_code == 504
                except DeadlineExceededError:
                    pass  # the caller's own deadline may fire first: both are fine
                deadline = time.monotonic() + 3
                while not front.gave_up and time.monotonic() < deadline:
                    time.sleep(0.01)
                # the middle hop abandoned its own call inside the caller's deadline
                assert front.gave_up and front.gave_up[0] - started < 1.0
                assert inner.stats()["services"]["backend"]["deadline_exceeded"] == 1
        finally:
            front.stop()


# -- hedging -----------------------------------------------------------------------------------------


@every_client
def test_hedging_answers_from_the_fast_host_and_abandons_the_slow_one(agents, client):
    slow, fast = agents(2)
    slow.behaviour.delay = 1.0
    with mesh_for(endpoints_of([slow, fast]), hedge_max_attempts=2, hedge_delay="50ms", outlier_detection=False) as mesh:
        send = CLIENTS[client](mesh)
        for _ in range(2):  # round robin: one of the two starts on the slow one
            started = time.monotonic()
            reply = send("GET", "http://inventory/")
            assert reply.status == 200 and reply.json()["agent"] == fast.name
            assert time.monotonic() - started < 0.8
        stats = svc(mesh)
        assert stats["hedges"] >= 1
        slow_stats = next(e for e in stats["endpoints"] if e["address"] == slow.address)
        assert slow_stats["failures"] == 0  # a cancelled loser is not a failure
        deadline = time.monotonic() + 3
        while next(e for e in svc(mesh)["endpoints"] if e["address"] == slow.address)["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert next(e for e in svc(mesh)["endpoints"] if e["address"] == slow.address)["active"] == 0


def test_async_hedging_cancels_the_loser(agents):
    slow, fast = agents(2)
    slow.behaviour.delay = 0.6
    with mesh_for(endpoints_of([slow, fast]), hedge_max_attempts=2, hedge_delay="50ms", outlier_detection=False) as mesh:

        async def main() -> list[str]:
            async with mesh.httpx_async_client() as client:
                return [str((await client.get("http://inventory/")).json()["agent"]) for _ in range(2)]

        assert asyncio.run(main()) == [fast.name, fast.name]  # one of them started on the slow agent
        assert next(e for e in svc(mesh)["endpoints"] if e["address"] == slow.address)["active"] == 0
        deadline = time.monotonic() + 3
        while slow.behaviour.abandoned == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slow.behaviour.abandoned == 1  # its connection was closed, not read


def test_hedging_sends_the_next_attempt_at_once_on_a_non_fatal_status(agents):
    bad, good = agents(2)
    bad.behaviour.status = 503
    with mesh_for(endpoints_of([bad, good]), hedge_max_attempts=2, hedge_delay="5s", hedge_non_fatal="503", outlier_detection=False) as mesh:
        started = time.monotonic()
        s = mesh.requests_session()
        assert [s.get("http://inventory/").status_code for _ in range(2)] == [200, 200]
        assert time.monotonic() - started < 1.0 and bad.hits >= 1
    with mesh_for(endpoints_of([bad, good]), hedge_max_attempts=2, hedge_delay="5s", outlier_detection=False) as mesh:
        s = mesh.requests_session()
        # a fatal 503 ends the call that started on the bad agent
        assert sorted(s.get("http://inventory/").status_code for _ in range(2)) == [200, 503]


def test_async_hedging_waits_out_a_retry_after_on_a_non_fatal_status(agents):
    bad, good = agents(2)
    bad.behaviour.status, bad.behaviour.headers = 503, {"Retry-After": "1"}
    with mesh_for(endpoints_of([bad, good]), hedge_max_attempts=2, hedge_delay="5s", hedge_non_fatal="503", outlier_detection=False) as mesh:

        async def timed() -> list[tuple[int, float]]:
            async with mesh.httpx_async_client() as client:
                out = []
                for _ in range(2):  # round robin: at least one of the two starts on the bad agent
                    started = time.monotonic()
                    status = (await client.get("http://inventory/")).status_code
                    out.append((status, time.monotonic() - started))
                return out

        answers = asyncio.run(timed())
        assert [status for status, _ in answers] == [200, 200]
        # the hedge went out after the server's 1 s, not at once nor after the 5 s delay
        assert 0.95 <= max(took for _, took in answers) < 3.0 and bad.hits >= 1


def test_hedging_is_not_used_for_post(agents):
    slow, fast = agents(2)
    slow.behaviour.delay = 0.3
    with mesh_for(endpoints_of([slow, fast]), hedge_max_attempts=2, hedge_delay="10ms", outlier_detection=False) as mesh:
        s = mesh.requests_session()
        answered = sorted(s.post("http://inventory/", data=b"x").json()["agent"] for _ in range(2))
        assert answered == sorted([slow.name, fast.name])  # the slow one answered its own call
        assert svc(mesh)["hedges"] == 0


# -- rate limit and fault injection ---------------------------------------------------------------------


@every_client
def test_local_rate_limit_refuses_without_sending(agents, client):
    (agent,) = agents(1)
    clock = ManualClock()
    with mesh_for(agent.address, clock=clock, rate_limit=2, rate_limit_burst=2) as mesh:
        send = CLIENTS[client](mesh)
        assert send("GET", "http://inventory/").status == 200
        assert send("GET", "http://inventory/").status == 200
        with pytest.raises(RateLimitedError, match="2 calls/s"):
            send("GET", "http://inventory/")
        assert agent.hits == 2
        clock.advance(0.5)
        assert send("GET", "http://inventory/").status == 200
        assert svc(mesh)["rate_limited"] == 1


@pytest.mark.parametrize("client", ["requests", "urllib3", "httpx", "httpx-async"])
def test_fault_abort_answers_without_sending(agents, client):
    (agent,) = agents(1)
    with mesh_for(agent.address, fault_abort_percent=100, fault_abort_status=418, retry_on="5xx,retriable-4xx") as mesh:
        reply = CLIENTS[client](mesh)("GET", "http://inventory/")
        assert reply.status == 418 and reply.headers["x-meshlib-fault"] == "abort"
        assert agent.hits == 0 and svc(mesh)["fault_aborts"] == 1


def test_fault_abort_raises_through_the_decorator_and_delay_uses_the_clock(agents):
    (agent,) = agents(1)
    with mesh_for(agent.address, fault_abort_percent=100) as mesh:
        with pytest.raises(FaultInjectedError, match="503"):
            via_decorator(mesh)("GET", "http://inventory/")
    clock = ManualClock()
    with mesh_for(agent.address, clock=clock, fault_delay_percent=100, fault_delay="3s") as mesh:
        before = clock.monotonic()
        assert mesh.requests_session().get("http://inventory/").status_code == 200
        assert clock.monotonic() - before == pytest.approx(3.0)
        assert svc(mesh)["fault_delays"] == 1


def test_fault_percentages_are_honoured_statistically(agents):
    (agent,) = agents(1)
    with Mesh(config={"services": {"inventory": {"endpoints": agent.address, "fault_abort_percent": 25}}}) as mesh:
        s = mesh.requests_session()
        aborted = sum(s.get("http://inventory/").status_code == 503 for _ in range(400))
        assert 60 <= aborted <= 140
        assert agent.hits == 400 - aborted


# -- configuration errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("retry_on", "5xx,teapot", "unknown condition 'teapot'"),
        ("num_retries", "-1", "whole number"),
        ("retry_backoff_max", "1ms", "at least base_interval"),
        ("breaker", "sometimes", "off, cluster, endpoint"),
        ("outlier_max_ejection_percent", "150", "0 to 100"),
        ("hedge_max_attempts", "9", "1 to 5"),
        ("health_check_path", "healthz", "starting with /"),
        ("health_check_expected_statuses", "200-700", "100-599"),
        ("fault_abort_status", "99", "200 to 599"),
        ("retry_budget", "infinite", "ratio, concurrency, none"),
        ("timeout", "soon", "duration"),
    ],
)
def test_bad_resilience_values_name_the_variable(key, value, fragment):
    var = f"MESHLIB_SERVICES__INVENTORY__{key.upper()}"
    with pytest.raises(meshlib.ConfigError) as err:
        Mesh.from_env({var: value, "MESHLIB_SERVICES__INVENTORY__ENDPOINTS": "127.0.0.1:1"})
    assert var in str(err.value) and fragment in str(err.value)
