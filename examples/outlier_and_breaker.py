"""Endpoints taken out of rotation and brought back: outlier detection, active
health checks, and a circuit breaker opening, probing and closing.

1. ``catalog`` has three agents and one starts answering 503. After 3 in a
   row (``outlier_consecutive_5xx: 3``; Envoy's default is 5) outlier
   detection ejects it: ``mesh.endpoints()`` and ``mesh.stats()`` show it,
   and it takes no calls. (With three agents and ``max_ejection_percent`` 10,
   Envoy since 1.31 would eject nobody; meshlib's ``always_eject_one_host``
   lets one go.) The mesh runs on a ``ManualClock``: 31 s later by that
   clock, ``mesh.tick()`` runs the interval timer and the agent returns.
2. ``search`` checks ``/healthz`` on each agent every 100 ms. The first check
   decides at once, so a failing agent is out before it takes a call; two
   passing checks in a row bring it back.
3. ``ledger`` has a cluster breaker (``breaker: cluster``): once half the
   calls of its 4-call window fail it opens and calls fail fast with
   ``CircuitOpenError``, without touching the network. After
   ``breaker_wait_duration_open`` it lets 2 probe calls through (half-open)
   and closes when they pass.

    python examples/outlier_and_breaker.py
"""

from __future__ import annotations

import collections
import time

import meshlib

from _flaky import Flaky  # agents that fail on cue: examples/_flaky.py


def endpoint_stats(mesh: meshlib.Mesh, service: str, agent: Flaky) -> dict:
    return next(e for e in mesh.stats()["services"][service]["endpoints"] if e["address"] == agent.address)


def outlier_detection() -> None:
    agents = [Flaky("catalog-a"), Flaky("catalog-b"), Flaky("catalog-c")]
    bad = agents[0]
    clock = meshlib.ManualClock()
    config = {
        "lb_policy": "round_robin",
        "services": {
            "catalog": {
                "endpoints": [a.address for a in agents],
                "outlier_consecutive_5xx": 3,
                "outlier_base_ejection_time": "30s",
            }
        },
    }
    try:
        with meshlib.Mesh(config=config, clock=clock) as mesh, mesh.requests_session() as session:
            bad.status = 503
            statuses = [session.get("http://catalog/").status_code for _ in range(9)]
            print(f"9 calls while catalog-a answers 503: {statuses}")
            print(f"  {mesh.endpoints('catalog')}")
            ep = endpoint_stats(mesh, "catalog", bad)
            print(f"  catalog-a: state={ep['state']}, times_ejected={ep['times_ejected']}, "
                  f"reason={ep['last_ejection_reason']}, back in {ep['ejected_until'] - clock.monotonic():.0f}s or so")
            od = mesh.stats()["services"]["catalog"]["outlier_detection"]
            print(f"  outlier_detection: ejections_active={od['ejections_active']}, "
                  f"ejections_enforced_consecutive_5xx={od['ejections_enforced_consecutive_5xx']}")
            assert statuses.count(503) == 3 and ep["state"] == "ejected" and ep["ejected"]

            hits = bad.hits
            answered = collections.Counter(session.get("http://catalog/").json()["agent"] for _ in range(10))
            print(f"10 more calls answered by {dict(sorted(answered.items()))}; catalog-a got none")
            assert bad.hits == hits

            bad.status = 200
            clock.advance(31)
            mesh.tick()  # the interval timer; a Mesh thread also runs it ten times a second
            print(f"31 s later: {mesh.endpoints('catalog')}")
            events = mesh.stats()["services"]["catalog"]["outlier_detection"]["events"]
            print(f"  events: {[(e['event'], e['reason']) for e in events]}")
            assert not any(e.ejected for e in mesh.endpoints("catalog"))
            answered = collections.Counter(session.get("http://catalog/").json()["agent"] for _ in range(6))
            print(f"6 more calls answered by {dict(sorted(answered.items()))}")
            assert answered["catalog-a"] == 2
    finally:
        for a in agents:
            a.stop()


def wait_for(condition, seconds: float = 3.0) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.01)


def health_checks() -> None:
    sick, well = Flaky("search-sick", status=503), Flaky("search-well")
    config = {
        "services": {
            "search": {
                "endpoints": [sick.address, well.address],
                "health_check_path": "/healthz",
                "health_check_interval": "100ms",
                "health_check_healthy_threshold": 2,
            }
        }
    }
    try:
        with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:

            def sick_is_healthy() -> bool:
                return next(ep for ep in mesh.endpoints("search") if ep.port == sick.port).healthy

            wait_for(lambda: not sick_is_healthy())  # the first round runs when the Mesh starts
            print(f"after the first health check: {mesh.endpoints('search')}")
            answered = {session.get("http://search/").json()["agent"] for _ in range(6)}
            print(f"  6 calls answered by {sorted(answered)}")
            assert answered == {"search-well"}

            sick.status = 200
            wait_for(sick_is_healthy)  # two passing checks in a row
            ep = endpoint_stats(mesh, "search", sick)
            print(f"search-sick recovers: health_check={ep['health_check']}, checks={ep['checks']}, "
                  f"check_failures={ep['check_failures']}, state={ep['state']}")
    finally:
        sick.stop()
        well.stop()


def cluster_breaker() -> None:
    agent = Flaky("ledger-1", status=503)
    clock = meshlib.ManualClock()
    config = {
        "services": {
            "ledger": {
                "endpoints": [agent.address],
                "breaker": "cluster",
                "breaker_minimum_calls": 4,
                "breaker_window_size": 4,
                "breaker_wait_duration_open": "30s",
                "breaker_permitted_calls_half_open": 2,
                "outlier_detection": False,
            }
        }
    }
    try:
        with meshlib.Mesh(config=config, clock=clock) as mesh, mesh.requests_session() as session:

            def state() -> str:
                return mesh.stats()["services"]["ledger"]["breaker"]["state"]

            statuses = [session.get("http://ledger/").status_code for _ in range(4)]
            print(f"4 calls while ledger-1 answers 503: {statuses} -> breaker {state()}")
            try:
                session.get("http://ledger/")
            except meshlib.CircuitOpenError as exc:
                print(f"  next call: CircuitOpenError: {exc}")
            assert state() == "open" and agent.hits == 4  # failed fast, nothing sent

            agent.status = 200
            clock.advance(31)
            first = session.get("http://ledger/").status_code
            print(f"31 s later, probe 1: {first} -> breaker {state()}")
            second = session.get("http://ledger/").status_code
            print(f"probe 2: {second} -> breaker {state()}")
            stats = mesh.stats()["services"]["ledger"]
            print(f"  transitions={stats['breaker']['transitions']}, breaker_rejected={stats['breaker_rejected']}")
            assert state() == "closed" and stats["breaker_rejected"] == 1
    finally:
        agent.stop()


def main() -> None:
    outlier_detection()
    health_checks()
    cluster_breaker()


if __name__ == "__main__":
    main()
