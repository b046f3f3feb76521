"""Outlier detection with Envoy's semantics (unit: manual clock, seeded rng)."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.clock import ManualClock
from meshlib.errors import ConfigError
from meshlib.outcome import Outcome
from meshlib.resilience.outlier import OutlierConfig, OutlierDetector, success_rate_threshold

HOSTS = [f"h{i}" for i in range(10)]


def detector(n: int = 10, **kw: object) -> tuple[OutlierDetector, ManualClock]:
    clock = ManualClock(start=0.0)
    d = OutlierDetector(OutlierConfig(**kw), clock, random.Random(7))  # type: ignore[arg-type]
    d.set_hosts(f"h{i}" for i in range(n))
    return d, clock


def hit(d: OutlierDetector, key: str, times: int, outcome: str = Outcome.FAILURE, status: int | None = 500) -> list[bool]:
    return [d.record(key, outcome, status) for _ in range(times)]


def run_until_returned(d: OutlierDetector, clock: ManualClock, key: str) -> float:
    """Tick every interval until ``key`` is back; the time it was out."""
    start = clock.monotonic()
    while d.is_ejected(key):
        clock.advance(d.config.interval)
        d.tick()
    return clock.monotonic() - start


def test_defaults_are_envoys() -> None:
    c = OutlierConfig()
    assert (c.consecutive_5xx, c.consecutive_gateway_failure, c.consecutive_local_origin_failure) == (5, 5, 5)
    assert (c.interval, c.base_ejection_time, c.max_ejection_time, c.max_ejection_percent) == (10.0, 30.0, 300.0, 10)
    assert (c.enforcing_consecutive_5xx, c.enforcing_consecutive_gateway_failure, c.enforcing_consecutive_local_origin_failure) == (100, 0, 100)
    assert (c.enforcing_success_rate, c.success_rate_minimum_hosts, c.success_rate_request_volume, c.success_rate_stdev_factor) == (100, 5, 100, 1900)
    assert (c.failure_percentage_threshold, c.failure_percentage_minimum_hosts, c.failure_percentage_request_volume) == (85, 5, 50)
    assert (c.enforcing_failure_percentage, c.enforcing_failure_percentage_local_origin, c.enforcing_local_origin_success_rate) == (0, 0, 100)
    assert c.split_external_local_origin_errors is False and c.successful_active_health_check_uneject_host is True


@pytest.mark.parametrize("field, value", [("max_ejection_percent", 101), ("interval", 0), ("consecutive_5xx", -1), ("enforcing_success_rate", 150), ("split_external_local_origin_errors", "yes")])
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        OutlierConfig(**{field: value})  # type: ignore[arg-type]


# -- consecutive detectors ----------------------------------------------------------------


def test_consecutive_5xx_ejects_inline() -> None:
    d, clock = detector()
    assert hit(d, "h1", 5) == [False] * 4 + [True]
    assert d.is_ejected("h1") and d.ejected() == {"h1"}
    stats = d.host_stats("h1")
    assert stats["last_ejection_reason"] == "consecutive_5xx" and stats["times_ejected"] == 1
    assert stats["ejected_until"] == 30.0
    assert d.events == [(0.0, "h1", "eject", "consecutive_5xx")]


def test_success_and_4xx_reset_the_consecutive_count() -> None:
    d, _ = detector()
    hit(d, "h1", 4)
    d.record("h1", Outcome.SUCCESS, 200)
    hit(d, "h1", 4)
    d.record("h1", Outcome.FAILURE, 404)  # a 4xx is not an outlier signal
    hit(d, "h1", 4)
    assert not d.is_ejected("h1")
    assert d.host_stats("h1")["consecutive_5xx"] == 4


def test_local_origin_failures_count_as_5xx_without_split() -> None:
    d, _ = detector()
    for outcome in (Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT, Outcome.ERROR):
        assert not d.record("h2", outcome)
    assert d.record("h2", Outcome.FAILURE)  # status None means 500
    assert d.host_stats("h2")["last_ejection_reason"] == "consecutive_5xx"


def test_gateway_failure_is_detected_but_not_enforced_by_default() -> None:
    d, _ = detector(consecutive_5xx=100)
    assert hit(d, "h1", 5, status=503) == [False] * 5
    assert not d.is_ejected("h1")
    s = d.stats()
    assert s["ejections_detected_consecutive_gateway_failure"] == 1
    assert s["ejections_enforced_consecutive_gateway_failure"] == 0
    assert d.host_stats("h1")["consecutive_gateway_failure"] == 0  # restarts after a detection


def test_gateway_failures_eject_through_consecutive_5xx_by_default() -> None:
    d, _ = detector()
    assert hit(d, "h1", 5, status=502)[-1]
    assert d.host_stats("h1")["last_ejection_reason"] == "consecutive_5xx"


def test_gateway_failure_ejects_when_enforced() -> None:
    d, _ = detector(consecutive_5xx=100, enforcing_consecutive_gateway_failure=100)
    d.record("h1", Outcome.FAILURE, 503)
    d.record("h1", Outcome.FAILURE, 500)  # a non-gateway 5xx restarts the gateway count
    assert hit(d, "h1", 4, status=504) == [False] * 4
    assert d.record("h1", Outcome.TIMEOUT)  # a timeout counts as 504
    assert d.host_stats("h1")["last_ejection_reason"] == "consecutive_gateway_failure"


def test_consecutive_local_origin_failure_in_split_mode() -> None:
    d, _ = detector(split_external_local_origin_errors=True, max_ejection_percent=50)
    hit(d, "h1", 4, Outcome.CONNECT_FAILURE, None)
    d.record("h1", Outcome.FAILURE, 500)  # a response: the connection worked
    hit(d, "h1", 4, Outcome.RESET, None)
    assert not d.is_ejected("h1")
    stats = d.host_stats("h1")
    assert stats["consecutive_local_origin_failure"] == 4 and stats["consecutive_5xx"] == 1
    assert d.record("h1", Outcome.TIMEOUT)
    assert d.host_stats("h1")["last_ejection_reason"] == "consecutive_local_origin_failure"
    # external 5xx still eject on their own in split mode
    assert hit(d, "h2", 5)[-1]
    assert d.host_stats("h2")["last_ejection_reason"] == "consecutive_5xx"


def test_enforcing_percentage_uses_the_rng() -> None:
    class FixedRng(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__(0)
            self.value = value

        def random(self) -> float:
            return self.value

    for value, ejected in ((0.49, True), (0.50, False)):
        d = OutlierDetector(OutlierConfig(enforcing_consecutive_5xx=50), ManualClock(), FixedRng(value))
        d.set_hosts(HOSTS)
        assert hit(d, "h1", 5)[-1] is ejected


# -- success rate ----------------------------------------------------------------------------


def test_success_rate_threshold_worked_example() -> None:
    # Envoy's own example: rates {50, 100, 100, 100, 100} -> mean 90, variance 400,
    # stdev 20, threshold 90 - 1.9 x 20 = 52.
    mean, threshold = success_rate_threshold([50, 100, 100, 100, 100], 1.9)
    assert mean == 90.0 and threshold == pytest.approx(52.0)


def feed_rates(d: OutlierDetector, rates: dict[str, int], volume: int = 100) -> None:
    for key, ok in rates.items():
        for i in range(volume):
            d.record(key, Outcome.SUCCESS if i < ok else Outcome.FAILURE, None)


def test_success_rate_ejects_below_mean_minus_factor_stdev() -> None:
    d, _ = detector(n=5, consecutive_5xx=0)
    feed_rates(d, {"h0": 50, "h1": 100, "h2": 100, "h3": 100, "h4": 100})
    assert d.tick()
    assert d.ejected() == {"h0"}
    assert d.host_stats("h0")["last_ejection_reason"] == "success_rate"
    s = d.stats()
    assert s["success_rate_average"] == 90.0 and s["success_rate_ejection_threshold"] == pytest.approx(52.0)


def test_success_rate_spares_hosts_above_the_threshold() -> None:
    # mean 92, variance (2x12^2 + 3x8^2)/5 = 96, stdev 9.8, threshold 92 - 18.6 = 73.4
    d, _ = detector(n=5, consecutive_5xx=0)
    feed_rates(d, {"h0": 80, "h1": 80, "h2": 100, "h3": 100, "h4": 100})
    assert not d.tick()
    assert d.ejected() == frozenset()
    assert d.stats()["success_rate_ejection_threshold"] == pytest.approx(92 - 1.9 * math.sqrt(96))


def test_success_rate_needs_request_volume_and_minimum_hosts() -> None:
    d, _ = detector(n=5, consecutive_5xx=0)
    feed_rates(d, {"h0": 50, "h1": 100, "h2": 100, "h3": 100})
    feed_rates(d, {"h4": 99}, volume=99)  # below request_volume: only 4 hosts qualify
    assert not d.tick()
    assert d.stats()["success_rate_average"] is None
    # the counts were reset: the next interval starts from nothing
    assert not d.tick()


def test_success_rate_in_split_mode_uses_local_origin_counts() -> None:
    d, _ = detector(n=5, split_external_local_origin_errors=True, consecutive_local_origin_failure=0)
    for key in HOSTS[:5]:
        for i in range(100):
            if key == "h0" and i % 2:
                d.record(key, Outcome.CONNECT_FAILURE)
            else:
                d.record(key, Outcome.SUCCESS)
    assert d.tick()
    assert d.ejected() == {"h0"}
    assert d.host_stats("h0")["last_ejection_reason"] == "success_rate_local_origin"


# -- failure percentage ----------------------------------------------------------------------


def test_failure_percentage_is_detected_but_not_enforced_by_default() -> None:
    d, _ = detector(n=5, consecutive_5xx=0)
    feed_rates(d, {"h0": 0, "h1": 50, "h2": 50, "h3": 50, "h4": 50}, volume=50)
    assert not d.tick()
    assert d.stats()["ejections_detected_failure_percentage"] == 1


def test_failure_percentage_ejects_at_or_above_threshold() -> None:
    d, _ = detector(n=6, consecutive_5xx=0, enforcing_failure_percentage=100, max_ejection_percent=100)
    # 50 requests each (below success-rate volume 100): failures 90%, 85%, 84%, 0%...
    feed_rates(d, {"h0": 5, "h1": 7, "h2": 8, "h3": 50, "h4": 50, "h5": 50}, volume=50)
    assert d.tick()
    assert d.ejected() == {"h0", "h1"}
    assert d.host_stats("h0")["last_ejection_reason"] == "failure_percentage"


def test_failure_percentage_needs_minimum_hosts() -> None:
    d, _ = detector(n=5, consecutive_5xx=0, enforcing_failure_percentage=100)
    feed_rates(d, {"h0": 0, "h1": 50, "h2": 50, "h3": 50}, volume=50)
    assert not d.tick()  # only 4 hosts with volume


# -- ejection time, return, multiplier -------------------------------------------------------


def test_ejected_host_returns_automatically() -> None:
    d, clock = detector()
    hit(d, "h1", 5)
    clock.advance(20)
    assert not d.tick()  # 20 s < 30 s
    clock.advance(10)
    assert d.tick()
    assert not d.is_ejected("h1")
    assert d.events[-1] == (30.0, "h1", "uneject", "ejection_time_elapsed")
    assert d.host_stats("h1")["consecutive_5xx"] == 0


def test_ejection_time_grows_and_is_capped() -> None:
    d, clock = detector()
    durations = []
    for _ in range(12):
        hit(d, "h1", 5)
        durations.append(d.host_stats("h1")["ejected_until"] - clock.monotonic())  # type: ignore[operator]
        assert run_until_returned(d, clock, "h1") == durations[-1]
    assert durations == [30.0 * k for k in range(1, 11)] + [300.0, 300.0]
    assert d.host_stats("h1")["times_ejected"] == 12


def test_cap_is_base_when_base_exceeds_max() -> None:
    d, clock = detector(base_ejection_time=400, max_ejection_time=300)
    hit(d, "h1", 5)
    assert run_until_returned(d, clock, "h1") == 400
    hit(d, "h1", 5)
    assert d.host_stats("h1")["ejected_until"] == clock.monotonic() + 400


def test_multiplier_decays_each_healthy_interval() -> None:
    d, clock = detector()
    for _ in range(3):
        hit(d, "h1", 5)
        run_until_returned(d, clock, "h1")
    assert d.host_stats("h1")["ejection_multiplier"] == 3
    multipliers = []
    for _ in range(4):
        clock.advance(10)
        d.tick()
        multipliers.append(d.host_stats("h1")["ejection_multiplier"])
    assert multipliers == [2, 1, 0, 0]
    hit(d, "h1", 5)
    assert d.host_stats("h1")["ejected_until"] == clock.monotonic() + 30


def test_jitter_adds_to_ejection_time() -> None:
    d, clock = detector(max_ejection_time_jitter=5)
    hit(d, "h1", 5)
    until = d.host_stats("h1")["ejected_until"]
    assert 30 <= until <= 35  # type: ignore[operator]


def test_maybe_tick_runs_once_per_interval() -> None:
    d, clock = detector(base_ejection_time=5)
    hit(d, "h1", 5)
    clock.advance(9)
    assert not d.maybe_tick() and d.is_ejected("h1")
    clock.advance(1)
    assert d.maybe_tick() and not d.is_ejected("h1")


# -- max_ejection_percent --------------------------------------------------------------------


def test_max_ejection_percent_caps_ejections() -> None:
    d, _ = detector(n=20)  # 10% of 20 = 2
    assert hit(d, "h1", 5)[-1] and hit(d, "h2", 5)[-1]
    assert not hit(d, "h3", 5)[-1]
    assert d.ejected() == {"h1", "h2"}
    assert d.stats()["ejections_overflow"] == 1


def test_at_least_one_host_can_be_ejected() -> None:
    d, _ = detector(n=5)  # 10% of 5 rounds down to 0
    assert hit(d, "h1", 5)[-1]
    assert not hit(d, "h2", 5)[-1]
    assert d.ejected() == {"h1"}


def test_without_always_eject_one_host_small_clusters_eject_nothing() -> None:
    d, _ = detector(n=5, always_eject_one_host=False)  # Envoy >= 1.31 default
    assert not hit(d, "h1", 5)[-1]
    assert d.stats()["ejections_overflow"] == 1


# -- host set, health checks, events ---------------------------------------------------------


def test_set_hosts_forgets_hosts_that_left() -> None:
    d, _ = detector(n=3)
    hit(d, "h1", 5)
    hit(d, "h2", 3)
    assert d.set_hosts(["h0", "h2", "h9"])
    assert d.ejected() == frozenset() and d.stats()["ejections_active"] == 0
    assert d.host_stats("h2")["consecutive_5xx"] == 3  # kept
    assert not d.record("h1", Outcome.FAILURE, 500)  # unknown now: ignored
    with pytest.raises(KeyError):
        d.host_stats("h1")
    d.set_hosts(["h0", "h1"])
    assert d.host_stats("h1")["times_ejected"] == 0  # back as a new host


def test_active_health_check_unejects() -> None:
    d, clock = detector()
    hit(d, "h1", 5)
    assert not d.health_check_passed("h2")  # not ejected: nothing to do
    clock.advance(3)
    assert d.health_check_passed("h1")
    assert not d.is_ejected("h1")
    assert d.events[-1] == (3.0, "h1", "uneject", "active_health_check")
    assert d.host_stats("h1")["ejection_multiplier"] == 1  # kept: a relapse is ejected longer


def test_active_health_check_uneject_can_be_disabled() -> None:
    d, _ = detector(successful_active_health_check_uneject_host=False)
    hit(d, "h1", 5)
    assert not d.health_check_passed("h1")
    assert d.is_ejected("h1")


def test_events_are_bounded() -> None:
    clock = ManualClock(start=0.0)
    d = OutlierDetector(OutlierConfig(base_ejection_time=10), clock, random.Random(1), max_events=3)
    d.set_hosts(HOSTS)
    for _ in range(3):
        hit(d, "h1", 5)
        run_until_returned(d, clock, "h1")
    assert len(d.events) == 3
    assert [e[2] for e in d.events] == ["uneject", "eject", "uneject"]


# -- the max_ejection_percent invariant ------------------------------------------------------

_OUTCOMES = [
    (Outcome.SUCCESS, 200),
    (Outcome.FAILURE, 500),
    (Outcome.FAILURE, 503),
    (Outcome.FAILURE, 404),
    (Outcome.CONNECT_FAILURE, None),
    (Outcome.RESET, None),
    (Outcome.TIMEOUT, None),
    (Outcome.ERROR, None),
]

_op = st.one_of(
    st.tuples(st.just("record"), st.integers(0, 24), st.integers(0, len(_OUTCOMES) - 1), st.integers(1, 8)),
    st.tuples(st.just("tick"), st.floats(0, 120)),
    st.tuples(st.just("health"), st.integers(0, 24)),
)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 25),
    pct=st.integers(0, 100),
    one=st.booleans(),
    split=st.booleans(),
    seed=st.integers(0, 2**16),
    ops=st.lists(_op, max_size=60),
)
def test_ejections_never_exceed_max_ejection_percent(n: int, pct: int, one: bool, split: bool, seed: int, ops: list[tuple]) -> None:
    cfg = OutlierConfig(
        consecutive_5xx=2,
        consecutive_gateway_failure=2,
        consecutive_local_origin_failure=2,
        split_external_local_origin_errors=split,
        max_ejection_percent=pct,
        always_eject_one_host=one,
        enforcing_consecutive_gateway_failure=100,
        enforcing_failure_percentage=100,
        enforcing_failure_percentage_local_origin=100,
        success_rate_minimum_hosts=1,
        success_rate_request_volume=2,
        failure_percentage_minimum_hosts=1,
        failure_percentage_request_volume=2,
        base_ejection_time=10,
        max_ejection_time=40,
    )
    clock = ManualClock(start=0.0)
    d = OutlierDetector(cfg, clock, random.Random(seed))
    keys = list(range(n))
    d.set_hosts(keys)
    bound = max(1, pct * n // 100) if one else pct * n // 100
    for op in ops:
        if op[0] == "record":
            _, i, o, times = op
            outcome, status = _OUTCOMES[o]
            for _ in range(times):
                d.record(keys[i % n], outcome, status)
        elif op[0] == "tick":
            clock.advance(op[1])
            d.tick()
        else:
            d.health_check_passed(keys[op[1] % n])
        ejected = d.ejected()
        assert len(ejected) <= bound
        assert d.stats()["ejections_active"] == len(ejected)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        OutlierConfig().interval = 1  # type: ignore[misc]


# -- hosts that count their own successes (the cluster's Host) -------------------------------


class _CountingHost:
    """What the cluster hands over: a key, and successes counted by the host itself."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.successes = 0


class _Record:
    def __init__(self, outcome: str, status: int | None) -> None:
        self.outcome, self.status = outcome, status


def _feed(d: OutlierDetector, host: _CountingHost, outcome: str, status: int | None) -> None:
    """One attempt as the cluster reports it: the Host counts a success first, then the detector hears."""
    if outcome == Outcome.SUCCESS:
        host.successes += 1
    d.attempt_ended(host, _Record(outcome, status))


_ATTEMPTS = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from([(Outcome.SUCCESS, 200), (Outcome.SUCCESS, 404), (Outcome.FAILURE, 500), (Outcome.FAILURE, 503),
                         (Outcome.CONNECT_FAILURE, None), (Outcome.TIMEOUT, None), (Outcome.CANCELLED, None), (Outcome.FAILURE, 429)]),
        st.booleans(),  # an interval ends after this attempt
    ),
    max_size=300,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(_ATTEMPTS, st.sampled_from([1, 3, 5]), st.integers(1, 40))
def test_counted_hosts_decide_exactly_as_counting_every_attempt(attempts, consecutive, volume) -> None:
    """A detector reading successes from the hosts ejects, returns and reports
    exactly as one that counts every success itself, whatever the sequence."""
    kw = dict(consecutive_5xx=consecutive, consecutive_gateway_failure=consecutive, enforcing_consecutive_gateway_failure=100,
              success_rate_request_volume=volume, success_rate_minimum_hosts=3, failure_percentage_request_volume=volume,
              failure_percentage_minimum_hosts=3, enforcing_failure_percentage=100, max_ejection_percent=100)  # fmt: skip
    plain, clock_a = detector(6, **kw)
    counted, clock_b = detector(0, **kw)
    hosts = {f"h{i}": _CountingHost(f"h{i}") for i in range(6)}
    counted.set_hosts(hosts)
    for i, (outcome, status), tick in attempts:
        key = f"h{i}"
        if outcome != Outcome.CANCELLED:
            plain.record(key, outcome, status)
        _feed(counted, hosts[key], outcome, status)
        if tick:
            clock_a.advance(10)
            clock_b.advance(10)
            assert plain.tick() == counted.tick()
        assert plain.ejected() == counted.ejected()
        assert [plain.host_stats(k) for k in hosts] == [counted.host_stats(k) for k in hosts]
    assert plain.stats() == counted.stats()


def test_a_counted_hosts_success_ends_a_run_of_5xx() -> None:
    d, _ = detector(0, consecutive_5xx=3)
    host = _CountingHost("h0")
    d.set_hosts({"h0": host})
    for outcome, status in [(Outcome.FAILURE, 500), (Outcome.FAILURE, 500), (Outcome.SUCCESS, 200), (Outcome.FAILURE, 500), (Outcome.FAILURE, 500)]:
        _feed(d, host, outcome, status)
    assert not d.is_ejected("h0") and d.host_stats("h0")["consecutive_5xx"] == 2
    _feed(d, host, Outcome.SUCCESS, 200)
    assert d.host_stats("h0")["consecutive_5xx"] == 0  # shown as reset at once
    for _ in range(3):
        _feed(d, host, Outcome.FAILURE, 500)
    assert d.is_ejected("h0")
