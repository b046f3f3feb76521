"""The core on its own: one feedback path, hedge timing on a manual clock,
streamed answers in flight until they end, bodies that cannot be resent.

A scripted ``send`` stands in for the network; the cluster, the call, the
driver and every policy under test are meshlib's own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from meshlib import Endpoint, EndpointSnapshot, ManualClock
from meshlib.config import load_config
from meshlib.core import observers as observers_mod
from meshlib.core.cluster import Cluster
from meshlib.core.driver import Exchange, run, run_async
from meshlib.outcome import AttemptRecord, AttemptResult, Outcome


class StatusExchange(Exchange):
    def judge(self, status: int) -> AttemptResult:
        return AttemptResult(Outcome.FAILURE if status >= 500 else Outcome.SUCCESS, status)


class Recorder:
    def __init__(self) -> None:
        self.records: list[AttemptRecord] = []

    def attempt_ended(self, host: Any, record: AttemptRecord) -> None:
        self.records.append(record)


def make(clock: ManualClock, *, pool: ThreadPoolExecutor | None = None, observers: tuple = (), n: int = 3, **keys: object) -> Cluster:
    cfg = load_config(environ={}, overrides=keys).service("svc")
    cluster = Cluster("svc", cfg, clock=clock, rng=random.Random(7), executor=(lambda: pool) if pool else None, observers=observers)
    cluster.update(EndpointSnapshot("svc", [Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)]))
    return cluster


# -- one feedback path --------------------------------------------------------------


def test_every_attempt_reaches_each_observer_as_one_record() -> None:
    clock = ManualClock()
    rec = Recorder()
    cluster = make(clock, observers=(lambda c: rec,), lb_policy="round_robin", retry_on="5xx", num_retries=2, retry_budget="none")
    answers = iter([503, 200])

    def send(ep: Endpoint, timeout: float | None) -> int:
        clock.advance(0.25)
        return next(answers)

    assert run(cluster.start_call(), send, StatusExchange()) == 200
    assert [r.status for r in rec.records] == [503, 200]
    first, second = rec.records
    assert (first.attempt, first.retry, first.outcome) == (1, False, Outcome.FAILURE)
    assert (second.attempt, second.retry, second.outcome) == (2, True, Outcome.SUCCESS)
    assert first.endpoint != second.endpoint  # a retry goes to another host
    assert first.latency == pytest.approx(0.25) and first.duration == pytest.approx(0.25)
    assert all(h.active == 0 for h in cluster.hosts)


def test_an_observer_that_raises_never_fails_the_call_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    after = Recorder()

    class Broken:
        def attempt_ended(self, host: Any, record: AttemptRecord) -> None:
            raise RuntimeError("observer bug")

    cluster = make(clock, observers=(lambda c: Broken(), lambda c: after))
    before = observers_mod.observer_errors.value
    with caplog.at_level(logging.ERROR, logger="meshlib"):
        for _ in range(3):
            assert run(cluster.start_call(), lambda ep, t: 200, StatusExchange()) == 200
    assert observers_mod.observer_errors.value - before == 3
    assert len([r for r in caplog.records if "observer" in r.getMessage()]) == 1
    assert len(after.records) == 3  # the observers after it still ran
    assert all(h.active == 0 for h in cluster.hosts)


def test_policies_that_are_off_are_absent_not_checked() -> None:
    plain = make(ManualClock())
    assert plain.gates == ()
    assert [getattr(o, "__qualname__", "") for o in plain.observers] == ["Host.attempt_ended", "Thresholds.attempt_ended", "OutlierDetector.attempt_ended"]
    full = make(ManualClock(), rate_limit=100, breaker="cluster", fault_abort_percent=1, outlier_detection=False)
    assert [type(g).__name__ for g in full.gates] == ["RateLimitGate", "BreakerGate", "FaultGate"]
    assert [getattr(o, "__qualname__", "") for o in full.observers] == ["Host.attempt_ended", "Thresholds.attempt_ended"]


# -- hedging on the injected clock -----------------------------------------------------


def test_sync_hedges_go_out_exactly_hedge_delay_apart_on_a_manual_clock() -> None:
    clock = ManualClock(start=100.0)
    gate = threading.Event()
    launched: list[float] = []

    def send(ep: Endpoint, timeout: float | None) -> int:
        launched.append(clock.monotonic())
        if len(launched) < 3:
            gate.wait(5)  # the first two hang until the call is over
            return 500
        return 200

    with ThreadPoolExecutor(4) as pool:
        cluster = make(clock, pool=pool, hedge_max_attempts=3, hedge_delay="40ms", retry_budget="none", max_retries=5)
        try:
            assert run(cluster.start_call(), send, StatusExchange()) == 200
        finally:
            gate.set()
    assert launched == [100.0, pytest.approx(100.04), pytest.approx(100.08)]
    assert cluster.counters["hedges"] == 2


async def test_async_hedges_go_out_exactly_hedge_delay_apart_on_a_manual_clock() -> None:
    clock = ManualClock(start=100.0)
    launched: list[float] = []
    answered = asyncio.Event()

    async def send(ep: Endpoint, timeout: float | None) -> int:
        launched.append(clock.monotonic())
        if len(launched) < 3:
            await answered.wait()
            return 500
        answered.set()
        return 200

    cluster = make(clock, hedge_max_attempts=3, hedge_delay="25ms", retry_budget="none", max_retries=5)
    assert await run_async(cluster.start_call(), send, StatusExchange()) == 200
    assert launched == [100.0, pytest.approx(100.025), pytest.approx(100.05)]
    await asyncio.sleep(0)
    assert all(h.active == 0 for h in cluster.hosts)  # the losers were cancelled and booked


# -- streams: in flight until the body ends ---------------------------------------------


class Stream:
    def __init__(self, status: int) -> None:
        self.status = status
        self.end: Any = None


class StreamExchange(StatusExchange):
    def judge(self, result: Stream) -> AttemptResult:  # type: ignore[override]
        return super().judge(result.status)

    def defer(self, result: Stream, end: Any) -> bool:
        result.end = end
        return True


def test_a_streamed_answer_is_in_flight_until_its_body_ends() -> None:
    clock = ManualClock()
    rec = Recorder()
    cluster = make(clock, n=1, observers=(lambda c: rec,), max_requests=1)
    stream = run(cluster.start_call(), lambda ep, t: (clock.advance(0.01), Stream(200))[1], StreamExchange())
    (host,) = cluster.hosts
    assert host.active == 1 and rec.records == []
    assert cluster.thresholds.snapshot()["requests"] == 1
    with pytest.raises(Exception, match="max_requests"):  # the slot is still held
        run(cluster.start_call(), lambda ep, t: Stream(200), StreamExchange())
    clock.advance(2.0)
    stream.end(None, 1234)
    stream.end(None, 1234)  # once only
    assert host.active == 0 and cluster.thresholds.snapshot()["requests"] == 0
    (record,) = rec.records
    assert record.latency == pytest.approx(0.01)  # time to first byte feeds the load metric
    assert record.duration == pytest.approx(2.01) and record.bytes == 1234


def test_a_stream_that_breaks_mid_body_is_a_reset_for_outlier_detection() -> None:
    clock = ManualClock()
    rec = Recorder()
    cluster = make(clock, n=1, observers=(lambda c: rec,))
    stream = run(cluster.start_call(), lambda ep, t: Stream(200), StreamExchange())
    stream.end(Outcome.RESET)
    assert rec.records[0].outcome == Outcome.RESET and rec.records[0].status == 200
    assert cluster.hosts[0].failures == 1


# -- bodies that cannot be resent ------------------------------------------------------


class OneShotExchange(StatusExchange):
    def rewind(self) -> bool:
        return False


def test_a_body_that_cannot_be_resent_is_never_retried_and_the_skip_is_counted() -> None:
    clock = ManualClock()
    cluster = make(clock, retry_on="5xx,connect-failure", num_retries=3)
    sent = []

    def send(ep: Endpoint, timeout: float | None) -> int:
        sent.append(ep)
        return 503

    assert run(cluster.start_call(), send, OneShotExchange()) == 503  # the answer in hand
    assert len(sent) == 1 and cluster.counters["retries_skipped_body"] == 1

    def refuse(ep: Endpoint, timeout: float | None) -> int:
        sent.append(ep)
        raise ConnectionRefusedError("refused")

    class Refusing(OneShotExchange):
        def classify(self, exc: BaseException) -> str:
            return Outcome.CONNECT_FAILURE

    with pytest.raises(ConnectionRefusedError):  # the original error
        run(cluster.start_call(), refuse, Refusing())
    assert len(sent) == 2 and cluster.counters["retries_skipped_body"] == 2
    assert cluster.resilience_stats()["thresholds"]["retries"] == 0
