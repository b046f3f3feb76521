"""Retry policy and back-off: pure logic, seeded RNG, no network."""

from __future__ import annotations

import calendar
import dataclasses
import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import ConfigError
from meshlib.outcome import Outcome
from meshlib.resilience.backoff import (
    DO_NOT_RETRY,
    MAX_RETRY_AFTER,
    Backoff,
    parse_grpc_pushback,
    parse_retry_after,
)
from meshlib.resilience.retry import (
    IDEMPOTENT_METHODS,
    NO_RETRIES,
    REFUSED_STREAM,
    RETRY_ON_CONDITIONS,
    AttemptResult,
    RetryPolicy,
    is_idempotent,
    parse_retry_on,
    parse_status_codes,
)

# ------------------------------------------------------------------ back-off


def test_backoff_defaults_are_envoys() -> None:
    b = Backoff()
    assert b.base_interval == 0.025
    assert b.cap == pytest.approx(0.25)
    # Envoy's router docs: 0-24 ms, 0-74 ms, 0-174 ms, then capped at 250 ms.
    assert [b.bound(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.025, 0.075, 0.175, 0.25, 0.25])
    assert b.bound(10_000) == pytest.approx(0.25)  # no overflow for huge retry numbers


def test_backoff_explicit_max_interval() -> None:
    b = Backoff(base_interval=0.1, max_interval=0.5)
    assert [b.bound(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.3, 0.5, 0.5])


def test_backoff_draws_stay_in_bounds_and_mean_grows() -> None:
    rng = random.Random(20240601)
    b = Backoff()
    means = []
    for n in range(1, 7):
        draws = [b.delay(n, rng) for _ in range(20_000)]
        bound = b.bound(n)
        assert all(0.0 <= d < bound for d in draws)
        assert max(draws) > 0.99 * bound  # the whole range is used
        assert statistics.fmean(draws) == pytest.approx(bound / 2, rel=0.03)  # uniform
        means.append(statistics.fmean(draws))
    assert means[0] < means[1] < means[2] < means[3]  # grows until the cap ...
    assert means[4] == pytest.approx(means[3], rel=0.03)  # ... then stays there
    assert all(m < b.cap for m in means)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 500),
    base=st.floats(1e-4, 10.0),
    factor=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_never_reaches_the_cap(n: int, base: float, factor: float, seed: int) -> None:
    b = Backoff(base_interval=base, max_interval=base * factor)
    d = b.delay(n, random.Random(seed))
    assert 0.0 <= d < b.bound(n) <= b.cap


def test_backoff_largest_draw_is_below_bound() -> None:
    class Top:
        def random(self) -> float:
            return math.nextafter(1.0, 0.0)

    b = Backoff()
    assert b.delay(1, Top()) < 0.025  # type: ignore[arg-type]


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    b = Backoff()
    assert [b.delay(3, random.Random(5)) for _ in range(3)] == [b.delay(3, random.Random(5))] * 3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"base_interval": 0}, "base_interval"),
        ({"base_interval": -0.1}, "base_interval"),
        ({"base_interval": math.nan}, "base_interval"),
        ({"base_interval": True}, "base_interval"),
        ({"base_interval": "25ms"}, "base_interval"),
        ({"base_interval": 0.1, "max_interval": 0.05}, "max_interval"),
        ({"max_interval": math.inf}, "max_interval"),
    ],
)
def test_backoff_rejects_bad_settings(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        Backoff(**kwargs)
    assert err.value.name == name


def test_backoff_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        Backoff().delay(0, random.Random(1))


# ------------------------------------------------------------ Retry-After

_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
_DATE_EPOCH = calendar.timegm((1994, 11, 6, 8, 49, 37))


@pytest.mark.parametrize(
    "value, expected",
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("300", 300.0), ("301", MAX_RETRY_AFTER), ("99999999999", MAX_RETRY_AFTER)],
)
def test_retry_after_delay_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, now_epoch=0.0) == expected


@pytest.mark.parametrize("value", ["-1", "1.5", "10s", "", "   ", "soon", "+5", "0x10", "1e3", "Sun, 32 Nov 1994 08:49:37 GMT"])
def test_retry_after_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value, now_epoch=_DATE_EPOCH - 10) is None


@pytest.mark.parametrize(
    "value",
    [_DATE, "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],  # IMF-fixdate, RFC 850, asctime
)
def test_retry_after_http_date(value: str) -> None:
    assert parse_retry_after(value, now_epoch=_DATE_EPOCH - 30) == pytest.approx(30.0)


def test_retry_after_date_in_the_past_or_now_is_none() -> None:
    assert parse_retry_after(_DATE, now_epoch=_DATE_EPOCH) is None
    assert parse_retry_after(_DATE, now_epoch=_DATE_EPOCH + 5) is None


def test_retry_after_far_date_is_capped() -> None:
    assert parse_retry_after(_DATE, now_epoch=_DATE_EPOCH - 86_400) == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    "value, expected",
    [("250", 0.25), ("0", 0.0), (" 1000 ", 1.0), ("999999999", MAX_RETRY_AFTER), ("-1", DO_NOT_RETRY), ("soon", DO_NOT_RETRY), ("", DO_NOT_RETRY), ("1.5", DO_NOT_RETRY)],
)
def test_grpc_pushback(value: str, expected: float) -> None:
    assert parse_grpc_pushback(value) == expected


# ---------------------------------------------------------- retry_on conditions

OK = AttemptResult(Outcome.SUCCESS, 200)
CONNECT = AttemptResult(Outcome.CONNECT_FAILURE)
RESET = AttemptResult(Outcome.RESET)
TIMEOUT = AttemptResult(Outcome.TIMEOUT)
REFUSED = AttemptResult(REFUSED_STREAM)
ERROR = AttemptResult(Outcome.ERROR)


def http(status: int) -> AttemptResult:
    return AttemptResult(Outcome.FAILURE if status >= 500 else Outcome.SUCCESS, status)


def grpc(status: str) -> AttemptResult:
    return AttemptResult(Outcome.FAILURE, 200, grpc_status=status)


NO_RESPONSE = [CONNECT, RESET, TIMEOUT, REFUSED]
GRPC_STATUSES = ["CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "UNKNOWN", "NOT_FOUND"]

# condition -> (attempts it retries, attempts it does not)
CASES: dict[str, tuple[list[AttemptResult], list[AttemptResult]]] = {
    "5xx": (
        [http(500), http(501), http(502), http(503), http(504), http(599), *NO_RESPONSE],
        [OK, http(409), http(404), http(429), ERROR, AttemptResult(Outcome.ERROR, 503), grpc("UNAVAILABLE"), grpc("INTERNAL")],
    ),
    "gateway-error": (
        [http(502), http(503), http(504), *NO_RESPONSE],
        [OK, http(500), http(501), http(409), http(429), ERROR, grpc("UNAVAILABLE")],
    ),
    "reset": ([RESET, TIMEOUT, CONNECT, REFUSED], [OK, http(500), http(503), http(409), ERROR, grpc("UNAVAILABLE")]),
    "connect-failure": ([CONNECT], [OK, RESET, TIMEOUT, REFUSED, http(503), ERROR, grpc("UNAVAILABLE")]),
    "refused-stream": ([REFUSED], [OK, CONNECT, RESET, TIMEOUT, http(503), ERROR]),
    "retriable-4xx": ([http(409)], [OK, http(400), http(404), http(429), http(503), RESET, CONNECT]),
    "cancelled": ([grpc("CANCELLED"), grpc("cancelled"), grpc("1"), grpc("StatusCode.CANCELLED")], [grpc("UNAVAILABLE"), http(503), RESET, OK]),
    "deadline-exceeded": ([grpc("DEADLINE_EXCEEDED"), grpc("4")], [grpc("CANCELLED"), grpc("INTERNAL"), TIMEOUT, http(504), OK]),
    "internal": ([grpc("INTERNAL"), grpc("13")], [grpc("UNKNOWN"), grpc("UNAVAILABLE"), http(500), RESET, OK]),
    "resource-exhausted": ([grpc("RESOURCE_EXHAUSTED"), grpc("8")], [grpc("UNAVAILABLE"), http(429), OK]),
    "unavailable": ([grpc("UNAVAILABLE"), grpc(" unavailable "), grpc("14")], [grpc("INTERNAL"), grpc("NOT_FOUND"), http(503), CONNECT, RESET, OK]),
}


def _flatten() -> list:
    rows = []
    for cond, (yes, no) in CASES.items():
        rows += [pytest.param(cond, r, True, id=f"{cond}-retries-{r.outcome}-{r.status}-{r.grpc_status}") for r in yes]
        rows += [pytest.param(cond, r, False, id=f"{cond}-not-{r.outcome}-{r.status}-{r.grpc_status}") for r in no]
    return rows


@pytest.mark.parametrize("condition, result, expected", _flatten())
def test_each_retry_on_condition(condition: str, result: AttemptResult, expected: bool) -> None:
    policy = RetryPolicy(retry_on=frozenset({condition}))
    assert policy.matches(result) is expected
    assert policy.should_retry(result, idempotent=True, retries_done=0) is expected


def test_every_condition_has_cases() -> None:
    assert set(CASES) | {"retriable-status-codes"} == RETRY_ON_CONDITIONS


@pytest.mark.parametrize(
    "result, expected",
    [(http(429), True), (http(503), True), (http(500), False), (http(409), False), (RESET, False), (OK, False)],
)
def test_retriable_status_codes(result: AttemptResult, expected: bool) -> None:
    policy = RetryPolicy(retry_on="retriable-status-codes", retriable_status_codes=frozenset({429, 503}))
    assert policy.should_retry(result, idempotent=True, retries_done=0) is expected


def test_status_codes_without_their_condition_do_nothing() -> None:
    policy = RetryPolicy(retry_on="reset", retriable_status_codes=frozenset({503}))
    assert not policy.matches(http(503))
    assert not RetryPolicy(retry_on="retriable-status-codes").matches(http(503))


def test_conditions_combine() -> None:
    policy = RetryPolicy(retry_on="connect-failure,retriable-4xx,unavailable")
    for r in (CONNECT, http(409), grpc("UNAVAILABLE")):
        assert policy.matches(r)
    for r in (RESET, http(503), grpc("INTERNAL"), OK):
        assert not policy.matches(r)


# ----------------------------------------------------------------- num_retries


def test_num_retries_default_is_envoys_one() -> None:
    policy = RetryPolicy(retry_on="5xx")
    assert policy.num_retries == 1
    assert policy.should_retry(http(503), idempotent=True, retries_done=0)
    assert not policy.should_retry(http(503), idempotent=True, retries_done=1)


def test_retries_stop_after_num_retries() -> None:
    policy = RetryPolicy(retry_on="5xx", num_retries=3)
    assert [policy.should_retry(RESET, idempotent=True, retries_done=n) for n in range(5)] == [True, True, True, False, False]


def test_null_policies_never_retry() -> None:
    for policy in (NO_RETRIES, RetryPolicy(), RetryPolicy(retry_on="5xx", num_retries=0)):
        assert not policy.enabled
        for r in (CONNECT, RESET, http(503), grpc("UNAVAILABLE")):
            assert not policy.should_retry(r, idempotent=True, retries_done=0)
    assert RetryPolicy(retry_on="5xx").enabled


def test_server_asking_for_no_retry_is_obeyed() -> None:
    policy = RetryPolicy(retry_on="unavailable", num_retries=3)
    refused = AttemptResult(Outcome.FAILURE, grpc_status="UNAVAILABLE", retry_after=DO_NOT_RETRY)
    assert not policy.should_retry(refused, idempotent=True, retries_done=0)


# ------------------------------------------------------------------ POST safety

ALL_FAILURES = [http(502), http(503), http(500), RESET, TIMEOUT, CONNECT, REFUSED]


@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS) + ["get", "Put"])
def test_idempotent_methods_retry_every_matching_failure(method: str) -> None:
    policy = RetryPolicy(retry_on="5xx")
    assert all(policy.should_retry(r, idempotent=is_idempotent(method), retries_done=0) for r in ALL_FAILURES)


@pytest.mark.parametrize("method", ["POST", "PATCH", "post", "CONNECT", "PROPFIND", "LOCK"])
def test_non_idempotent_methods_retry_only_what_never_reached_the_server(method: str) -> None:
    policy = RetryPolicy(retry_on="5xx", num_retries=2)
    for r in (http(502), http(503), http(500), RESET, TIMEOUT):
        assert not policy.should_retry(r, idempotent=is_idempotent(method), retries_done=0), r
    for r in (CONNECT, REFUSED):
        assert policy.should_retry(r, idempotent=is_idempotent(method), retries_done=0), r


def test_post_still_needs_a_matching_condition() -> None:
    policy = RetryPolicy(retry_on="retriable-4xx")
    assert not policy.should_retry(CONNECT, idempotent=False, retries_done=0)
    assert not policy.should_retry(REFUSED, idempotent=False, retries_done=0)
    assert RetryPolicy(retry_on="refused-stream").should_retry(REFUSED, idempotent=False, retries_done=0)
    assert not RetryPolicy(retry_on="refused-stream").should_retry(CONNECT, idempotent=False, retries_done=0)


def test_post_retries_everything_when_the_user_opts_in() -> None:
    policy = RetryPolicy(retry_on="5xx", retry_non_idempotent=True)
    assert all(policy.should_retry(r, idempotent=False, retries_done=0) for r in ALL_FAILURES)


def test_idempotent_methods_are_rfc_9110s_in_any_case() -> None:
    assert [is_idempotent(m) for m in ("GET", "head", b"PUT", "Delete", "OPTIONS", "TRACE")] == [True] * 6
    assert [is_idempotent(m) for m in ("POST", "patch", b"CONNECT", "PROPFIND")] == [False] * 4


def test_an_idempotent_call_gets_the_policy_as_configured() -> None:
    policy = RetryPolicy(retry_on="5xx,unavailable")
    assert all(policy.should_retry(r, idempotent=True, retries_done=0) for r in ALL_FAILURES + [grpc("UNAVAILABLE")])


@settings(max_examples=300, deadline=None)
@given(
    conditions=st.frozensets(st.sampled_from(sorted(RETRY_ON_CONDITIONS))),
    outcome=st.sampled_from([Outcome.SUCCESS, Outcome.FAILURE, Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT, Outcome.ERROR, REFUSED_STREAM]),
    status=st.one_of(st.none(), st.integers(100, 599)),
    grpc_status=st.one_of(st.none(), st.sampled_from(GRPC_STATUSES)),
    method=st.one_of(st.none(), st.sampled_from(["GET", "PUT", "DELETE", "POST", "PATCH"])),
    num_retries=st.integers(0, 5),
    retries_done=st.integers(0, 6),
    opt_in=st.booleans(),
)
def test_retry_decision_properties(conditions, outcome, status, grpc_status, method, num_retries, retries_done, opt_in) -> None:
    policy = RetryPolicy(retry_on=conditions, num_retries=num_retries, retry_non_idempotent=opt_in, retriable_status_codes=frozenset({429}))
    result = AttemptResult(outcome, status, grpc_status)
    decision = policy.should_retry(result, idempotent=method is None or is_idempotent(method), retries_done=retries_done)
    if decision:
        assert retries_done < num_retries
        assert policy.matches(result)
        assert outcome != Outcome.ERROR
        if method in ("POST", "PATCH") and not opt_in:
            assert outcome in (Outcome.CONNECT_FAILURE, REFUSED_STREAM)
    elif retries_done < num_retries and policy.matches(result) and (method in (None, "GET", "PUT", "DELETE") or opt_in):
        pytest.fail("a matching failure of a safe request was not retried")


# ------------------------------------------------------------------ next_delay


def test_next_delay_uses_the_jittered_backoff() -> None:
    policy = RetryPolicy(retry_on="5xx", num_retries=3)
    rng = random.Random(3)
    for n in (1, 2, 3, 9):
        d = policy.next_delay(http(503), n, rng)
        assert 0.0 <= d < policy.backoff.bound(n)
    assert policy.next_delay(RESET, 2, random.Random(11)) == Backoff().delay(2, random.Random(11))


def test_server_pushback_replaces_the_backoff() -> None:
    policy = RetryPolicy(retry_on="5xx")
    rng = random.Random(1)
    assert policy.next_delay(AttemptResult(Outcome.FAILURE, 503, retry_after=2.0), 1, rng) == 2.0
    assert policy.next_delay(AttemptResult(Outcome.FAILURE, 503, retry_after=0.0), 1, rng) == 0.0
    assert policy.next_delay(AttemptResult(Outcome.FAILURE, 503, retry_after=9_999.0), 1, rng) == MAX_RETRY_AFTER
    pushed = AttemptResult(Outcome.FAILURE, 503, retry_after=parse_retry_after("3", now_epoch=0.0))
    assert policy.next_delay(pushed, 1, rng) == 3.0
    garbage = AttemptResult(Outcome.FAILURE, 503, retry_after=parse_retry_after("soon", now_epoch=0.0))
    assert 0.0 <= policy.next_delay(garbage, 1, rng) < 0.025


# ------------------------------------------------------------------ parsing


def test_parse_retry_on_forms() -> None:
    assert parse_retry_on("5xx, Reset,,gateway-error ", "X") == {"5xx", "reset", "gateway-error"}
    assert parse_retry_on(["unavailable", "CANCELLED"], "X") == {"unavailable", "cancelled"}
    assert parse_retry_on("", "X") == frozenset()
    assert parse_retry_on(",".join(sorted(RETRY_ON_CONDITIONS)), "X") == RETRY_ON_CONDITIONS


@pytest.mark.parametrize("value", ["5xx,bogus", "5XX;reset", ["5xx", 3], 42, "retriable-headers", "envoy-ratelimited"])
def test_parse_retry_on_rejects_and_names_every_accepted_condition(value) -> None:
    with pytest.raises(ConfigError) as err:
        parse_retry_on(value, "MESHLIB_RETRY_ON")
    msg = str(err.value)
    assert err.value.name == "MESHLIB_RETRY_ON"
    assert msg.startswith("MESHLIB_RETRY_ON=")
    for condition in RETRY_ON_CONDITIONS:
        assert condition in msg


def test_parse_retry_on_says_which_envoy_conditions_are_not_implemented() -> None:
    with pytest.raises(ConfigError, match="Envoy condition meshlib does not implement"):
        parse_retry_on("reset-before-request", "retry_on")


def test_parse_status_codes_forms() -> None:
    assert parse_status_codes("409, 503", "X") == {409, 503}
    assert parse_status_codes([429, "503"], "X") == {429, 503}
    assert parse_status_codes(503, "X") == {503}
    assert parse_status_codes("", "X") == frozenset()


@pytest.mark.parametrize("value", ["99", "600", "abc", "503,x", True, [True], 5.0, [503.0], "٥٠٣", None])
def test_parse_status_codes_rejects(value) -> None:
    with pytest.raises(ConfigError) as err:
        parse_status_codes(value, "MESHLIB_RETRIABLE_STATUS_CODES")
    assert err.value.name == "MESHLIB_RETRIABLE_STATUS_CODES"
    assert "100 to 599" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"retry_on": "5xx,sometimes"}, "retry_on"),
        ({"retriable_status_codes": frozenset({700})}, "retriable_status_codes"),
        ({"num_retries": -1}, "num_retries"),
        ({"num_retries": 1.5}, "num_retries"),
        ({"num_retries": True}, "num_retries"),
        ({"per_try_timeout": 0}, "per_try_timeout"),
        ({"per_try_timeout": -1.0}, "per_try_timeout"),
        ({"per_try_timeout": math.nan}, "per_try_timeout"),
        ({"backoff": 0.025}, "backoff"),
        ({"retry_non_idempotent": "yes"}, "retry_non_idempotent"),
    ],
)
def test_policy_rejects_bad_settings(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        RetryPolicy(**kwargs)
    assert err.value.name == name


def test_policy_normalises_and_is_immutable() -> None:
    policy = RetryPolicy(retry_on="5xx,Reset", retriable_status_codes=[503], per_try_timeout=0.5)  # type: ignore[arg-type]
    assert policy.retry_on == frozenset({"5xx", "reset"})
    assert policy.retriable_status_codes == frozenset({503})
    assert policy == RetryPolicy(retry_on=["reset", "5xx"], retriable_status_codes="503", per_try_timeout=0.5)  # type: ignore[arg-type]
    assert hash(policy) == hash(RetryPolicy(retry_on="reset,5xx", retriable_status_codes=frozenset({503}), per_try_timeout=0.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.num_retries = 5  # type: ignore[misc]
