"""Invariants of the whole attempt loop (cluster + driver), for any failure pattern.

The servers here are a scripted ``send`` (an answer per attempt drawn by
hypothesis), so millions of patterns run in seconds; the loop, the policies and
the bookkeeping under test are meshlib's own.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib import Endpoint, EndpointSnapshot, ManualClock
from meshlib.core.driver import Exchange, run
from meshlib.core.cluster import Cluster
from meshlib.config import load_config
from meshlib.outcome import Outcome
from meshlib.outcome import AttemptResult

ANSWERS = st.sampled_from([200, 500, 502, 503, 409, "refused", "reset", "timeout"])


class Refused(ConnectionRefusedError):
    pass


class Reset(ConnectionResetError):
    pass


class Exchange_(Exchange):
    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, Refused):
            return Outcome.CONNECT_FAILURE
        if isinstance(exc, Reset):
            return Outcome.RESET
        if isinstance(exc, TimeoutError):
            return Outcome.TIMEOUT
        return Outcome.ERROR

    def judge(self, status: int) -> AttemptResult:
        return AttemptResult(Outcome.FAILURE if status >= 500 else Outcome.SUCCESS, status)


EX = Exchange_()


def make(clock: ManualClock, pool: ThreadPoolExecutor | None = None, **keys: object) -> Cluster:
    cfg = load_config(environ={}, overrides=keys).service("svc")
    cluster = Cluster("svc", cfg, clock=clock, rng=random.Random(1), executor=(lambda: pool) if pool else None)
    cluster.update(EndpointSnapshot("svc", [Endpoint("10.0.0.%d" % i, 80) for i in range(1, 5)]))
    return cluster


def scripted(answers: list[object]):
    it = iter(answers)
    attempts = []

    def send(ep: Endpoint, timeout: float | None) -> int:
        attempts.append(ep)
        answer = next(it, 503)
        if answer == "refused":
            raise Refused()
        if answer == "reset":
            raise Reset()
        if answer == "timeout":
            raise TimeoutError()
        return answer  # type: ignore[return-value]

    return send, attempts


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.lists(ANSWERS, min_size=1, max_size=400),
    calls=st.integers(min_value=1, max_value=300),
    gaps=st.lists(st.floats(min_value=0, max_value=2.0), min_size=1, max_size=20),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    floor=st.sampled_from([0, 1, 10]),
)
def test_attempts_never_exceed_the_budget(pattern, calls, gaps, ratio, floor):
    """attempts <= requests x (1 + ratio) + floor x (elapsed + ttl), whatever fails how."""
    clock = ManualClock()
    start = clock.monotonic()
    cluster = make(clock, retry_on="5xx,reset,connect-failure,retriable-4xx", num_retries=4, retry_budget_ratio=ratio,
                   retry_budget_min_per_sec=floor, retry_budget_ttl="10s", outlier_detection=False)
    send, attempts = scripted(pattern * (1 + 4 * calls // len(pattern)))
    for i in range(calls):
        clock.advance(gaps[i % len(gaps)])
        try:
            run(cluster.start_call(None, True), send, EX)
        except (Refused, Reset, TimeoutError):
            pass
    elapsed = clock.monotonic() - start
    assert len(attempts) <= calls * (1 + ratio) + floor * (elapsed + 10.0) + 1e-9
    assert cluster.counters["retries"] == len(attempts) - calls


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.lists(ANSWERS, min_size=1, max_size=60),
    keys=st.fixed_dictionaries(
        {
            "retry_budget": st.sampled_from(["ratio", "concurrency", "none"]),
            "max_retries": st.integers(0, 3),
            "max_pending_requests": st.integers(0, 2),
            "breaker": st.sampled_from(["off", "cluster", "endpoint"]),
            "outlier_detection": st.booleans(),
        }
    ),
)
def test_nothing_is_left_held_after_calls_end(pattern, keys):
    """However calls end (success, failure, retries refused, breakers open),
    every threshold counter and every host's active count go back to zero."""
    clock = ManualClock()
    cluster = make(clock, retry_on="5xx,reset,connect-failure", num_retries=3, breaker_minimum_calls=3, breaker_window_size=3, **keys)
    send, attempts = scripted(pattern * 3)
    for _ in range(len(pattern)):
        try:
            run(cluster.start_call(None, True), send, EX)
        except Exception:
            pass
        clock.advance(0.5)
        cluster.tick()
    snap = cluster.thresholds.snapshot()
    assert (snap["requests"], snap["pending_requests"], snap["retries"], snap["connections"]) == (0, 0, 0, 0)
    assert all(h.active == 0 for h in cluster.hosts)
    if keys["retry_budget"] == "concurrency":
        assert cluster.budget.balance() >= cluster.config.retry_budget.min_retry_concurrency


@settings(max_examples=25, deadline=None)
@given(pattern=st.lists(st.sampled_from([200, 503, "refused", "reset"]), min_size=1, max_size=30), attempts=st.integers(2, 4))
def test_hedged_calls_release_everything_and_stay_in_budget(pattern, attempts):
    clock = ManualClock()
    with ThreadPoolExecutor(8) as pool:
        cluster = make(clock, pool, hedge_max_attempts=attempts, hedge_delay="0s", hedge_non_fatal="503",
                       retry_budget_min_per_sec=1, retry_budget_ratio=0.2, outlier_detection=False)
        send, sent = scripted(pattern * attempts * 2)
        calls = len(pattern)
        for _ in range(calls):
            try:
                run(cluster.start_call(None, True), send, EX)
            except Exception:
                pass
    assert len(sent) <= calls * 1.2 + 1 * 10
    snap = cluster.thresholds.snapshot()
    assert (snap["requests"], snap["connections"]) == (0, 0)
    assert all(h.active == 0 for h in cluster.hosts)
