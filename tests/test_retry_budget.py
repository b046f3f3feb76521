"""Retry budgets: exhaustion, expiry, the ratio budget's invariant under any
interleaving (hypothesis), and the load multiplier under a total outage."""

from __future__ import annotations

import heapq
import math
import random
import threading
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.clock import ManualClock
from meshlib.errors import ConfigError
from meshlib.outcome import Outcome
from meshlib.resilience.budget import (
    NO_BUDGET,
    UNLIMITED_BUDGET,
    ConcurrencyRetryBudget,
    RatioRetryBudget,
    RetryBudget,
)
from meshlib.outcome import AttemptResult
from meshlib.resilience.retry import RetryPolicy

# ManualClock starts at 1000 s, a whole number of 10 s / 16 = 0.625 s slices.
START = 1000.0


def test_every_budget_is_a_retry_budget() -> None:
    for budget in (RatioRetryBudget(clock=ManualClock()), ConcurrencyRetryBudget(), UNLIMITED_BUDGET, NO_BUDGET):
        assert isinstance(budget, RetryBudget)


def test_null_budgets() -> None:
    for _ in range(1000):
        UNLIMITED_BUDGET.deposit()
        assert UNLIMITED_BUDGET.try_withdraw()
        assert not NO_BUDGET.try_withdraw()
    assert UNLIMITED_BUDGET.balance() > 10**9
    assert NO_BUDGET.balance() == 0


# ------------------------------------------------------------- ratio budget


def test_ratio_defaults_are_finagles_and_linkerds() -> None:
    b = RatioRetryBudget(clock=ManualClock())
    assert (b.ratio, b.min_retries_per_sec, b.ttl) == (0.2, 10, 10.0)
    assert b.balance() == 100  # the floor: 10 retries/s x 10 s


def test_floor_alone_is_exhausted_then_refills_after_the_window() -> None:
    clock = ManualClock(START)
    b = RatioRetryBudget(ratio=0.0, min_retries_per_sec=10, ttl=10.0, clock=clock)
    assert sum(b.try_withdraw() for _ in range(150)) == 100
    assert b.balance() == 0 and not b.try_withdraw()
    clock.advance(10.0)  # a withdrawal counts for ttl plus up to one slice
    assert not b.try_withdraw()
    clock.advance(0.625)
    assert b.balance() == 100
    assert b.try_withdraw()


def test_ratio_alone_pays_one_retry_per_five_requests() -> None:
    clock = ManualClock(START)
    b = RatioRetryBudget(ratio=0.2, min_retries_per_sec=0, ttl=10.0, clock=clock)
    assert not b.try_withdraw()  # no requests, no floor: nothing to spend
    for _ in range(10):
        b.deposit()
    assert b.balance() == 2
    assert [b.try_withdraw() for _ in range(3)] == [True, True, False]
    for _ in range(4):
        b.deposit()
    assert not b.try_withdraw()
    b.deposit()  # the 15th request pays for the 3rd retry
    assert b.try_withdraw()


def test_deposits_count_for_ttl_and_no_longer() -> None:
    clock = ManualClock(START)
    b = RatioRetryBudget(ratio=1.0, min_retries_per_sec=0, ttl=10.0, clock=clock)
    b.deposit()
    clock.advance(9.99)
    assert b.balance() == 1
    clock.advance(0.01)
    assert b.balance() == 0 and not b.try_withdraw()


def test_zero_ratio_and_zero_floor_never_allow() -> None:
    b = RatioRetryBudget(ratio=0.0, min_retries_per_sec=0, clock=ManualClock())
    for _ in range(100):
        b.deposit()
    assert not b.try_withdraw()
    assert b.balance() == 0


def test_ratio_above_one_allows_several_retries_per_request() -> None:
    b = RatioRetryBudget(ratio=2.5, min_retries_per_sec=0, clock=ManualClock())
    for _ in range(2):
        b.deposit()
    assert sum(b.try_withdraw() for _ in range(10)) == 5


def test_ratio_budget_ignores_concurrency_reports() -> None:
    b = RatioRetryBudget(ratio=0.0, min_retries_per_sec=1, ttl=2.0, clock=ManualClock())
    assert b.try_withdraw() and b.try_withdraw()
    b.retry_done()
    b.request_done()
    assert not b.try_withdraw()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ttl": 0.5}, "ttl"),
        ({"ttl": 61}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"ttl": "10s"}, "ttl"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": 1000.5}, "ratio"),
        ({"ratio": math.inf}, "ratio"),
        ({"ratio": True}, "ratio"),
        ({"min_retries_per_sec": -1}, "min_retries_per_sec"),
        ({"min_retries_per_sec": None}, "min_retries_per_sec"),
    ],
)
def test_ratio_budget_rejects_bad_settings(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        RatioRetryBudget(clock=ManualClock(), **kwargs)
    assert err.value.name == name
    assert "default" in str(err.value)


def test_ratio_budget_bounds_are_accepted() -> None:
    for kwargs in ({"ttl": 1}, {"ttl": 60}, {"ratio": 0}, {"ratio": 1000}, {"min_retries_per_sec": 0}):
        RatioRetryBudget(clock=ManualClock(), **kwargs)


def test_ratio_budget_is_thread_safe() -> None:
    b = RatioRetryBudget(ratio=0.5, min_retries_per_sec=0, ttl=10.0, clock=ManualClock())
    granted = [0] * 8

    def work(i: int) -> None:
        for _ in range(2000):
            b.deposit()
            granted[i] += b.try_withdraw()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 8000  # exactly half of 16000 requests: no lost updates
    assert not b.try_withdraw()


# ------------------------------------------- the invariant, under any interleaving

_op = st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 40)),
    st.tuples(st.just("withdraw"), st.integers(1, 40)),
    st.tuples(
        st.just("advance"),
        st.one_of(
            st.sampled_from([0.0, 1 / 16, 15 / 16, 1.0, 17 / 16, 0.5, 2.0]),  # multiples of ttl, at slice edges
            st.floats(0.0, 2.5),
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    ratio=st.one_of(st.sampled_from([0.0, 0.2, 1.0, 0.1]), st.floats(0.0, 5.0)),
    floor=st.one_of(st.sampled_from([0, 1, 10]), st.floats(0.0, 20.0)),
    ttl=st.one_of(st.sampled_from([1.0, 10.0, 60.0]), st.floats(1.0, 60.0)),
    start=st.one_of(st.just(START), st.floats(0.0, 1e6)),
    ops=st.lists(_op, max_size=60),
)
def test_ratio_budget_invariant(ratio: float, floor: float, ttl: float, start: float, ops: list) -> None:
    """The guarantee documented on RatioRetryBudget, checked in exact arithmetic:

    1. at every grant at time t: R((t-ttl, t]) <= ratio x D((t-ttl, t]) + floor x ttl;
    2. for every interval [a, b]: R([a, b]) <= ratio x D((a-ttl, b]) + floor x (b - a + ttl);
       so attempts <= requests x (1 + ratio) + floor x (elapsed + ttl);
    and the budget is not needlessly strict: it grants whenever
    R([t-ttl-slice, t]) + 1 <= ratio x D([t-ttl+slice, t]) + floor x ttl.
    """
    clock = ManualClock(start)
    budget = RatioRetryBudget(ratio=ratio, min_retries_per_sec=floor, ttl=ttl, clock=clock)
    R, F, T = Fraction(ratio), Fraction(floor), Fraction(ttl)
    W = T / 16
    deposits: list[Fraction] = []
    grants: list[Fraction] = []

    def count(times: list[Fraction], lo: Fraction, hi: Fraction, *, closed_lo: bool) -> int:
        return sum(1 for x in times if (x >= lo if closed_lo else x > lo) and x <= hi)

    for kind, arg in ops:
        if kind == "advance":
            clock.advance(arg * ttl)
            continue
        for _ in range(arg):
            now = Fraction(clock.monotonic())
            if kind == "deposit":
                budget.deposit()
                deposits.append(now)
                continue
            loose = count(grants, now - T - W, now, closed_lo=True) + 1 <= R * count(deposits, now - T + W, now, closed_lo=True) + F * T
            if budget.try_withdraw():
                grants.append(now)
                # (1) the window ending at this grant
                assert count(grants, now - T, now, closed_lo=False) <= R * count(deposits, now - T, now, closed_lo=False) + F * T
            else:
                assert not loose, "refused a retry the budget had room for"

    # (2) every interval between event times, and the whole run
    times = sorted(set(deposits + grants))
    for i, a in enumerate(times):
        for b in times[i:]:
            assert count(grants, a, b, closed_lo=True) <= R * count(deposits, a - T, b, closed_lo=False) + F * (b - a + T)
    elapsed = Fraction(clock.monotonic()) - Fraction(start)
    requests = len(deposits)
    assert requests + len(grants) <= requests * (1 + R) + F * (elapsed + T)


# -------------------------------------------------------- total outage

def _outage(rate: float, requests: int, *, budget_kind: str = "ratio") -> dict[str, float]:
    """Every attempt fails with 503; each request wants up to 3 retries, spaced
    by the policy's jittered back-off. Runs on the manual clock until every
    request has finished; returns attempts, requests, refusals and elapsed time."""
    clock = ManualClock(START)
    rng = random.Random(42)
    policy = RetryPolicy(retry_on="5xx", num_retries=3)
    budget: RetryBudget = RatioRetryBudget(clock=clock) if budget_kind == "ratio" else UNLIMITED_BUDGET
    failure = AttemptResult(Outcome.FAILURE, 503)
    # (time, seq, retries_done): an attempt to make at `time`
    queue: list[tuple[float, int, int]] = [(START + i / rate, i, 0) for i in range(requests)]
    heapq.heapify(queue)
    seq = requests
    attempts = refused = 0
    last = START
    while queue:
        at, _, done = heapq.heappop(queue)
        clock.advance(at - clock.monotonic())
        last = at
        if done == 0:
            budget.deposit()
        attempts += 1  # the attempt fails at once: a total outage
        if done > 0:
            budget.retry_done()
        if not policy.should_retry(failure, idempotent=True, retries_done=done):
            budget.request_done()
            continue
        if not budget.try_withdraw():
            refused += 1
            budget.request_done()
            continue
        heapq.heappush(queue, (at + policy.next_delay(failure, done + 1, rng), seq, done + 1))
        seq += 1
    return {"attempts": attempts, "requests": requests, "refused": refused, "elapsed": last - START}


@pytest.mark.parametrize("rate, requests", [(100.0, 1000), (100.0, 2000), (50.0, 1000)])
def test_total_outage_load_multiplier(rate: float, requests: int, record_property) -> None:
    run = _outage(rate, requests)
    multiplier = run["attempts"] / run["requests"]
    floor_share = 10 * (run["elapsed"] + 10.0) / run["requests"]  # min_retries_per_sec x (elapsed + ttl) / requests
    record_property("load_multiplier", round(multiplier, 4))
    print(f"\ntotal outage {rate:.0f} req/s, {requests} requests: load multiplier {multiplier:.3f} "
          f"(bound 1.2 + floor share {floor_share:.3f}), {run['refused']} retries refused by the budget")
    assert multiplier <= 1.2 + floor_share
    assert run["refused"] > 0
    unbudgeted = _outage(rate, requests, budget_kind="unlimited")
    assert unbudgeted["attempts"] / unbudgeted["requests"] == 4.0  # what the budget saves


# ------------------------------------------------------- concurrency budget


def test_concurrency_defaults_are_envoys() -> None:
    b = ConcurrencyRetryBudget()
    assert (b.budget_percent, b.min_retry_concurrency) == (20.0, 3)
    assert b.balance() == 3


def test_concurrency_budget_floor_then_percentage() -> None:
    b = ConcurrencyRetryBudget(budget_percent=20.0, min_retry_concurrency=3)
    for _ in range(10):
        b.deposit()  # 20 % of 10 = 2 < 3: the floor rules
    assert [b.try_withdraw() for _ in range(4)] == [True, True, True, False]
    b.retry_done()
    assert b.try_withdraw() and not b.try_withdraw()
    for _ in range(40):
        b.deposit()  # 50 in flight: 20 % = 10
    assert b.balance() == 7
    assert sum(b.try_withdraw() for _ in range(20)) == 7
    for _ in range(45):
        b.request_done()  # 5 in flight: back to the floor of 3, with 10 retries out
    assert b.balance() == 0 and not b.try_withdraw()
    for _ in range(8):
        b.retry_done()
    assert b.balance() == 1


def test_concurrency_budget_truncates_like_envoy() -> None:
    b = ConcurrencyRetryBudget(budget_percent=29.0, min_retry_concurrency=0)
    for _ in range(100):
        b.deposit()
    assert b.balance() == 29
    c = ConcurrencyRetryBudget(budget_percent=20.0, min_retry_concurrency=0)
    for _ in range(9):
        c.deposit()
    assert c.balance() == 1  # floor(1.8)


def test_concurrency_budget_zero_means_none() -> None:
    b = ConcurrencyRetryBudget(budget_percent=0.0, min_retry_concurrency=0)
    for _ in range(100):
        b.deposit()
    assert not b.try_withdraw()


def test_concurrency_budget_reports_never_go_negative() -> None:
    b = ConcurrencyRetryBudget(min_retry_concurrency=1)
    b.retry_done()
    b.request_done()
    assert b.try_withdraw() and not b.try_withdraw()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"budget_percent": -1}, "budget_percent"),
        ({"budget_percent": 100.5}, "budget_percent"),
        ({"budget_percent": math.nan}, "budget_percent"),
        ({"min_retry_concurrency": -1}, "min_retry_concurrency"),
        ({"min_retry_concurrency": 2.5}, "min_retry_concurrency"),
        ({"min_retry_concurrency": True}, "min_retry_concurrency"),
    ],
)
def test_concurrency_budget_rejects_bad_settings(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        ConcurrencyRetryBudget(**kwargs)
    assert err.value.name == name
