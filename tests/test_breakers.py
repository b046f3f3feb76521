"""Circuit breakers: Envoy's thresholds and the resilience4j-style breaker (unit, manual clock)."""

from __future__ import annotations

import threading

import pytest

from meshlib.clock import ManualClock
from meshlib.errors import CircuitOpenError, ConfigError
from meshlib.resilience.breaker import CLOSED, HALF_OPEN, OPEN, TIME_BASED, BreakerConfig, CircuitBreaker
from meshlib.resilience.thresholds import Thresholds

# -- Envoy thresholds ------------------------------------------------------------------


def test_thresholds_defaults_are_envoys() -> None:
    assert Thresholds().limits == {"max_requests": 1024, "max_pending_requests": 1024, "max_retries": 3, "max_connections": 1024}


@pytest.mark.parametrize(
    "kind, threshold",
    [("request", "max_requests"), ("pending", "max_pending_requests"), ("connection", "max_connections")],
)
def test_threshold_overflow_raises_naming_the_threshold(kind: str, threshold: str) -> None:
    t = Thresholds(**{threshold: 2}, service="inventory")
    acquire, release = getattr(t, f"acquire_{kind}"), getattr(t, f"release_{kind}")
    acquire()
    acquire()
    with pytest.raises(CircuitOpenError) as err:
        acquire()
    assert err.value.threshold == f"{threshold} (2) reached"
    assert err.value.service == "inventory"
    assert f"{threshold} (2) reached" in str(err.value)
    release()
    acquire()  # room again after a release
    counter = {"request": "requests", "pending": "pending_requests", "connection": "connections"}[kind]
    snap = t.snapshot()
    assert snap[counter] == 2 and snap[f"{counter}_overflow"] == 1 and snap[threshold] == 2


def test_retry_overflow_returns_false_and_counts() -> None:
    t = Thresholds()
    assert [t.acquire_retry() for _ in range(4)] == [True, True, True, False]
    assert t.snapshot()["retries_overflow"] == 1
    t.release_retry()
    assert t.acquire_retry()
    assert t.snapshot()["retries"] == 3


def test_zero_limit_admits_nothing_and_release_never_goes_negative() -> None:
    t = Thresholds(max_requests=0)
    with pytest.raises(CircuitOpenError, match=r"max_requests \(0\) reached"):
        t.acquire_request()
    t.release_connection()
    assert t.snapshot()["connections"] == 0


def test_thresholds_reject_bad_limits() -> None:
    with pytest.raises(ConfigError, match="max_retries"):
        Thresholds(max_retries=-1)


def test_thresholds_are_never_exceeded_under_threads() -> None:
    t = Thresholds(max_requests=5)
    peak = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            try:
                t.acquire_request()
            except CircuitOpenError:
                continue
            with lock:
                peak[0] = max(peak[0], t.snapshot()["requests"])
            t.release_request()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak[0] <= 5
    assert t.snapshot()["requests"] == 0


# -- classic breaker -----------------------------------------------------------------------


def make(clock: ManualClock, **kw: object) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**kw), clock=clock)  # type: ignore[arg-type]


def feed(b: CircuitBreaker, pattern: str, duration: float = 0.01) -> None:
    """``S`` success, ``F`` failure, each permitted first."""
    for c in pattern:
        assert b.try_acquire()
        b.on_result(c == "S", duration)


def test_breaker_defaults_are_resilience4js() -> None:
    c = BreakerConfig()
    assert (c.failure_rate_threshold, c.slow_call_rate_threshold, c.slow_call_duration) == (50.0, 100.0, 60.0)
    assert (c.wait_duration_open, c.permitted_calls_half_open, c.minimum_calls) == (60.0, 10, 100)
    assert (c.window_type, c.window_size) == ("count_based", 100)


def test_minimum_calls_respected_with_defaults() -> None:
    b = CircuitBreaker(clock=ManualClock())
    feed(b, "F" * 99)
    assert b.state == CLOSED and b.snapshot()["failure_rate"] is None
    feed(b, "F")
    assert b.state == OPEN


def test_closed_to_open_on_failure_rate() -> None:
    b = make(ManualClock(), minimum_calls=10, window_size=10)
    feed(b, "SFSFSFSFS")  # 9 calls: below the minimum
    assert b.state == CLOSED
    feed(b, "F")  # 5 of 10 failed: 50% >= 50%
    assert b.state == OPEN
    assert b.transitions == 1


def test_failure_rate_below_threshold_stays_closed() -> None:
    b = make(ManualClock(), minimum_calls=10, window_size=10)
    feed(b, "SSSSSSFFFF")  # 40%
    assert b.state == CLOSED
    assert b.snapshot()["failure_rate"] == 40.0


def test_count_window_slides() -> None:
    b = make(ManualClock(), minimum_calls=4, window_size=4)
    feed(b, "SSSF")  # 25%
    feed(b, "F")  # window SSFF: 50% (2 of 5 would be 40%)
    assert b.state == OPEN


def test_closed_to_open_on_slow_call_rate() -> None:
    b = make(ManualClock(), minimum_calls=4, window_size=4, slow_call_rate_threshold=50, slow_call_duration=1.0)
    feed(b, "SS", duration=1.0)  # exactly the threshold is not slow (resilience4j: >)
    feed(b, "S", duration=1.5)
    assert b.state == CLOSED
    feed(b, "S", duration=2.0)  # 2 of 4 slow, all successful
    assert b.state == OPEN
    assert b.snapshot()["slow_calls"] == 2


def test_open_fails_fast_then_half_open_after_wait() -> None:
    clock = ManualClock()
    b = make(clock, minimum_calls=2, window_size=2)
    feed(b, "FF")
    assert b.state == OPEN
    assert not b.try_acquire()
    clock.advance(59.9)
    assert not b.try_acquire()
    assert b.snapshot()["not_permitted"] == 2
    b.on_result(False, 0.1)  # a late result while open is ignored
    clock.advance(0.1)
    assert b.state == OPEN  # moves only when a call asks
    assert b.try_acquire()
    assert b.state == HALF_OPEN


def _half_open(clock: ManualClock, **kw: object) -> CircuitBreaker:
    b = make(clock, minimum_calls=2, window_size=2, permitted_calls_half_open=3, **kw)
    feed(b, "FF")
    clock.advance(60)
    return b


def test_half_open_to_closed() -> None:
    clock = ManualClock()
    b = _half_open(clock)
    # minimum in half-open is min(minimum_calls, permitted) = 2: decided after 2 results.
    assert b.try_acquire() and b.try_acquire()
    assert b.state == HALF_OPEN
    b.on_result(True, 0.01)
    assert b.state == HALF_OPEN
    b.on_result(True, 0.01)
    assert b.state == CLOSED
    assert b.snapshot()["calls"] == 0  # fresh window


def test_half_open_to_open_and_wait_again() -> None:
    clock = ManualClock()
    b = _half_open(clock)
    assert b.try_acquire() and b.try_acquire()
    b.on_result(True, 0.01)
    b.on_result(False, 0.01)  # 50% >= 50%
    assert b.state == OPEN
    assert not b.try_acquire()
    clock.advance(60)
    assert b.try_acquire() and b.state == HALF_OPEN


def test_half_open_permits_only_the_trial_calls() -> None:
    clock = ManualClock()
    b = make(clock, minimum_calls=100, window_size=100)
    feed(b, "F" * 100)
    clock.advance(60)
    assert [b.try_acquire() for _ in range(11)] == [True] * 10 + [False]
    b.release()  # one trial never went out
    assert b.try_acquire()
    for _ in range(9):
        b.on_result(True, 0.01)
    assert b.state == HALF_OPEN  # 10 results needed
    b.on_result(True, 0.01)
    assert b.state == CLOSED


def test_transition_listener_and_counter() -> None:
    clock = ManualClock()
    seen: list[tuple[str, str]] = []
    b = make(clock, minimum_calls=2, window_size=2, permitted_calls_half_open=1)
    b.on_transition(lambda old, new: seen.append((old, new)))
    feed(b, "FF")
    clock.advance(60)
    feed(b, "F")
    clock.advance(60)
    feed(b, "S")
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert b.transitions == 5


def test_listener_may_read_the_breaker() -> None:
    b = make(ManualClock(), minimum_calls=1, window_size=1)
    states: list[object] = []
    b.on_transition(lambda old, new: states.append(b.snapshot()["state"]))  # no deadlock
    feed(b, "F")
    assert states == [OPEN]


def test_time_window_expires_old_calls() -> None:
    clock = ManualClock(start=1000.0)
    b = make(clock, window_type=TIME_BASED, window_size=10, minimum_calls=4)
    feed(b, "FFF")
    clock.advance(10)  # the calls at second 1000 leave the window [1001, 1010]
    feed(b, "F")
    assert b.state == CLOSED
    assert b.snapshot()["calls"] == 1
    feed(b, "FFF")
    assert b.state == OPEN


def test_time_window_counts_calls_within_it() -> None:
    clock = ManualClock(start=1000.0)
    b = make(clock, window_type=TIME_BASED, window_size=10, minimum_calls=4)
    feed(b, "FFF")
    clock.advance(9.5)  # still inside the 10-second window
    feed(b, "S")
    assert b.state == OPEN  # 3 of 4 failed


def test_time_window_long_idle_clears_everything() -> None:
    clock = ManualClock(start=1000.0)
    b = make(clock, window_type=TIME_BASED, window_size=5, minimum_calls=100)
    feed(b, "FFSS")
    clock.advance(3600)
    assert b.snapshot()["calls"] == 0


@pytest.mark.parametrize(
    "field, value",
    [("failure_rate_threshold", 0), ("failure_rate_threshold", 101), ("minimum_calls", 0), ("window_type", "sliding"), ("wait_duration_open", -1)],
)
def test_breaker_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        BreakerConfig(**{field: value})  # type: ignore[arg-type]
