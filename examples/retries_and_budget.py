"""Retries: a 5xx retried on another agent, POST kept safe, Retry-After, and a
retry budget capping the load of an outage.

1. ``inventory`` has three agents, one of them answering 503. With
   ``retry_on: 5xx`` every GET that lands on it is retried on an agent not yet
   tried, so every GET succeeds. A POST that got a 503 may already have done
   its work, so it comes back to the caller as is. ``ledger`` keeps the
   default policy (``connect-failure,refused-stream``, two retries): a POST
   whose connection was refused never reached anyone and is retried.
2. An agent answering 503 with ``Retry-After: 2``: the retry waits exactly
   2 s instead of the jittered back-off (on a ``ManualClock``, so instantly).
3. ``search`` is down, every agent answering 503, and each call may retry 3
   times. Without a budget that is 4 attempts per call; the default ratio
   budget allows retries of 20 % of recent requests plus a small floor per
   second, so the outage is not sent four times its load.

    python examples/retries_and_budget.py
"""

from __future__ import annotations

import meshlib

from _agents import closed_port  # a port where nothing listens: examples/_agents.py
from _flaky import Flaky  # agents that fail on cue: examples/_flaky.py


def retry_on_5xx() -> None:
    bad, ok1, ok2 = Flaky("inventory-bad", status=503), Flaky("inventory-1"), Flaky("inventory-2")
    dead = f"127.0.0.1:{closed_port()}"
    config = {
        "lb_policy": "round_robin",
        "services": {
            "inventory": {
                "endpoints": [bad.address, ok1.address, ok2.address],
                "retry_on": "5xx",
                "num_retries": 2,
                "outlier_detection": False,  # keep the bad agent in rotation (see outlier_and_breaker.py)
            },
            "ledger": {"endpoints": [dead, ok1.address]},  # the default retry policy
        },
    }
    try:
        with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
            statuses = [session.get("http://inventory/items").status_code for _ in range(6)]
            retries = mesh.stats()["services"]["inventory"]["retries"]
            print(f"6 GETs: {statuses}; retries: {retries}, one per GET that reached inventory-bad ({bad.hits})")
            assert statuses == [200] * 6 and retries == bad.hits >= 1

            posts = [session.post("http://inventory/orders", data=b"{}") for _ in range(3)]
            print("3 POSTs: " + ", ".join(f"{r.status_code} from {r.json()['agent']}" for r in posts))
            print("  the 503 may have done its work: returned, not retried")
            assert sorted(r.status_code for r in posts) == [200, 200, 503]
            assert mesh.stats()["services"]["inventory"]["retries"] == retries

            posts = [session.post("http://ledger/entries", data=b"{}") for _ in range(2)]
            ledger = mesh.stats()["services"]["ledger"]
            print(f"2 POSTs to ledger (one endpoint refuses connections): {[r.status_code for r in posts]}, "
                  f"retries: {ledger['retries']} (connect-failure is retried for any method)")
            assert [r.status_code for r in posts] == [200, 200] and ledger["retries"] >= 1
    finally:
        for agent in (bad, ok1, ok2):
            agent.stop()


def retry_after() -> None:
    busy, ok = Flaky("quota-busy", status=503, headers={"Retry-After": "2"}), Flaky("quota-1")
    clock = meshlib.ManualClock()  # back-off and Retry-After waits advance it instantly
    config = {
        "lb_policy": "round_robin",
        "services": {"quota": {"endpoints": [busy.address, ok.address], "retry_on": "5xx", "outlier_detection": False}},
    }
    try:
        with meshlib.Mesh(config=config, clock=clock) as mesh, mesh.requests_session() as session:
            waits = []
            for _ in range(2):
                before = clock.monotonic()
                r = session.get("http://quota/")
                waits.append(clock.monotonic() - before)
                print(f"GET http://quota/ -> {r.status_code} from {r.json()['agent']}, waited {waits[-1]:.1f}s")
                assert r.status_code == 200
            print("  a 503 with Retry-After: 2 was retried after exactly 2.0s")
            assert waits.count(2.0) == busy.hits >= 1 and waits.count(0.0) == 2 - busy.hits
    finally:
        busy.stop()
        ok.stop()


def budget_in_an_outage() -> None:
    down = [Flaky(f"search-{i}", status=503) for i in range(1, 4)]
    calls, floor, ttl, ratio = 100, 2, 10, 0.2
    keys = {
        "endpoints": [a.address for a in down],
        "retry_on": "5xx",
        "num_retries": 3,
        "outlier_detection": False,
        "retry_budget_min_per_sec": floor,  # default 10; smaller, so the cap shows in 100 calls
    }
    print(f"search is down; {calls} calls, each allowed 3 retries:")
    try:
        for kind in ("none", "ratio"):
            before = sum(a.hits for a in down)
            clock = meshlib.ManualClock()  # no time passes: the floor is min_per_sec x ttl = 20 retries
            with meshlib.Mesh(config={"services": {"search": {**keys, "retry_budget": kind}}}, clock=clock) as mesh:
                with mesh.requests_session() as session:
                    assert all(session.get("http://search/").status_code == 503 for _ in range(calls))
                stats = mesh.stats()["services"]["search"]
            attempts = sum(a.hits for a in down) - before
            print(f"  retry_budget={kind:5}  {attempts} attempts ({attempts / calls:.2f} per call), "
                  f"{stats['retries']} retries, {stats['retries_budget_exhausted']} refused by the budget")
            assert stats["retries"] == attempts - calls
            if kind == "none":
                assert attempts == 4 * calls
        bound = calls * (1 + ratio) + floor * ttl
        print(f"  budget bound: attempts <= requests x (1 + ratio) + floor x (elapsed + ttl) = {bound:g}")
        assert attempts <= bound and stats["retries_budget_exhausted"] > 0
    finally:
        for agent in down:
            agent.stop()


def main() -> None:
    retry_on_5xx()
    retry_after()
    budget_in_an_outage()


if __name__ == "__main__":
    main()
