"""Retry policy: which failed attempts are tried again, how often, and after how long.

The conditions are Envoy's ``retry_on`` / ``retry_grpc_on`` names, matched as
Envoy's router does (``source/common/router/retry_state_impl.cc``). An attempt
that got *no response* is one whose outcome is a connect failure, a reset, a
refused stream or a per-try timeout:

=========================  ===================================================
condition                  retries an attempt that ...
=========================  ===================================================
``5xx``                    answered any 500-599, or got no response
``gateway-error``          answered 502, 503 or 504, or got no response (Envoy
                           counts every upstream reset, connect failures
                           included, as a gateway error: it becomes a 503)
``reset``                  got no response (disconnect, reset, per-try
                           timeout; connect failures and refused streams too)
``connect-failure``        could not connect (the request never left)
``refused-stream``         was refused by the server (HTTP/2 REFUSED_STREAM)
``retriable-4xx``          answered 409 (Envoy: 409 only)
``retriable-status-codes`` answered a code in ``retriable_status_codes``
``cancelled``              ended with gRPC status CANCELLED (1)
``deadline-exceeded``      ended with gRPC status DEADLINE_EXCEEDED (4)
``resource-exhausted``     ended with gRPC status RESOURCE_EXHAUSTED (8)
``internal``               ended with gRPC status INTERNAL (13)
``unavailable``            ended with gRPC status UNAVAILABLE (14)
=========================  ===================================================

An attempt whose outcome is ``Outcome.ERROR`` (the wrapped code raised
something meshlib does not classify) or ``Outcome.TLS_FAILURE`` (the
server's certificate or SPIFFE ID was refused: the same endpoint would
present it again) matches no condition, whatever its gRPC status. A ``TIMEOUT``
outcome must mean a per-try timeout: once the whole call's deadline has passed
the driver must stop, as Envoy never retries past the route timeout.

The class's own defaults, beside the references' (a Mesh service's default
policy is ``config.DEFAULT_RETRY``: ``connect-failure,refused-stream``, 2 retries):

=========================  ====================  ==================================
setting                    class default         reference
=========================  ====================  ==================================
``retry_on``               empty (no retries)    Envoy: no retries without a policy
``num_retries``            1                     Envoy 1; gRPC A6 maxAttempts <= 5
                                                 (= at most 4 retries)
``per_try_timeout``        None (no limit)       Envoy: no default; gRPC: none
``backoff``                25 ms base, 250 ms    Envoy (see ``backoff``)
``retry_non_idempotent``   False                 Envoy and gRPC retry any method
                                                 the policy names; meshlib is
                                                 safer by default (see below)
=========================  ====================  ==================================

Idempotency: an HTTP method other than GET, HEAD, OPTIONS, PUT, DELETE and
TRACE (RFC 9110's idempotent methods), such as POST or PATCH, is retried only
when the request provably never reached the server (connect failure, refused
stream), unless ``retry_non_idempotent``. A gRPC call, or a decorated
function not marked ``idempotent=False``, counts as idempotent: the policy
then applies as configured, as Envoy and gRPC apply theirs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..outcome import AttemptResult, Outcome
from .backoff import DO_NOT_RETRY, MAX_RETRY_AFTER, Backoff

__all__ = [
    "AttemptResult",
    "RetryPolicy",
    "NO_RETRIES",
    "REFUSED_STREAM",
    "RETRY_ON_CONDITIONS",
    "IDEMPOTENT_METHODS",
    "is_idempotent",
    "parse_retry_on",
    "parse_status_codes",
]

#: Outcome of an attempt the server refused before processing it (HTTP/2
#: REFUSED_STREAM, gRPC's "transparent retry" case).
REFUSED_STREAM: str = Outcome.REFUSED_STREAM

#: RFC 9110 section 9.2.2: methods whose repetition has the effect of one request.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def is_idempotent(method: str | bytes) -> bool:
    """Whether an HTTP request with ``method`` may be repeated (RFC 9110's idempotent methods)."""
    if method in IDEMPOTENT_METHODS:  # the usual spelling: no upper() per call
        return True
    if isinstance(method, bytes):
        method = method.decode("latin-1")
    return method.upper() in IDEMPOTENT_METHODS

_NO_RESPONSE = frozenset({Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT, REFUSED_STREAM})
_NEVER_SENT = frozenset({Outcome.CONNECT_FAILURE, REFUSED_STREAM})

_HTTP_CONDITIONS = (
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
)
_GRPC_CONDITIONS = {
    "cancelled": "CANCELLED",
    "deadline-exceeded": "DEADLINE_EXCEEDED",
    "internal": "INTERNAL",
    "resource-exhausted": "RESOURCE_EXHAUSTED",
    "unavailable": "UNAVAILABLE",
}
_GRPC_CODES = {"1": "CANCELLED", "4": "DEADLINE_EXCEEDED", "8": "RESOURCE_EXHAUSTED", "13": "INTERNAL", "14": "UNAVAILABLE"}
# Envoy conditions meshlib does not implement, named in the error message.
_NOT_IMPLEMENTED = ("retriable-headers", "envoy-ratelimited", "reset-before-request", "http3-post-connect-failure")

#: Every accepted ``retry_on`` condition.
RETRY_ON_CONDITIONS = frozenset(_HTTP_CONDITIONS) | frozenset(_GRPC_CONDITIONS)
_RETRY_ON_ACCEPTED = "comma-separated retry_on conditions from: " + ", ".join(
    _HTTP_CONDITIONS + tuple(_GRPC_CONDITIONS)
)
_STATUS_ACCEPTED = "comma-separated HTTP status codes from 100 to 599, e.g. 409,503"


def _grpc_name(status: str) -> str:
    name = status.strip().upper()
    if name.startswith("STATUSCODE."):
        name = name[len("STATUSCODE.") :]
    return _GRPC_CODES.get(name, name)


@dataclass(frozen=True)
class RetryPolicy:
    """Envoy's route retry policy, minus host selection (the cluster's ``Call``
    picks a host not yet tried) and the budget (``budget.RetryBudget``).

    Immutable and shared by every call of a service; per-call state (retries
    done) is passed in. ``retry_on`` and ``retriable_status_codes`` accept the
    forms :func:`parse_retry_on` and :func:`parse_status_codes` do.
    """

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float | None = None
    backoff: Backoff = Backoff()
    retriable_status_codes: frozenset[int] = frozenset()
    retry_non_idempotent: bool = False
    # Derived matchers, built once.
    _outcomes: frozenset[str] = field(init=False, repr=False, compare=False)
    _statuses: frozenset[int] = field(init=False, repr=False, compare=False)
    _any_5xx: bool = field(init=False, repr=False, compare=False)
    _grpc: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        retry_on = parse_retry_on(self.retry_on, "retry_on")
        codes = parse_status_codes(self.retriable_status_codes, "retriable_status_codes")
        n = self.num_retries
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError("num_retries", n, "a whole number from 0 up (Envoy's default is 1)")
        t = self.per_try_timeout
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0
        ):
            raise ConfigError("per_try_timeout", t, "a number of seconds greater than 0, or None for no per-try limit")
        if not isinstance(self.backoff, Backoff):
            raise ConfigError("backoff", self.backoff, "a meshlib.resilience.Backoff")
        if not isinstance(self.retry_non_idempotent, bool):
            raise ConfigError("retry_non_idempotent", self.retry_non_idempotent, "true or false")

        outcomes: set[str] = set()
        statuses: set[int] = set()
        if retry_on & {"5xx", "gateway-error", "reset"}:
            outcomes |= _NO_RESPONSE
        if "connect-failure" in retry_on:
            outcomes.add(Outcome.CONNECT_FAILURE)
        if "refused-stream" in retry_on:
            outcomes.add(REFUSED_STREAM)
        if "gateway-error" in retry_on:
            statuses |= {502, 503, 504}
        if "retriable-4xx" in retry_on:
            statuses.add(409)
        if "retriable-status-codes" in retry_on:
            statuses |= codes
        setattr_ = object.__setattr__
        setattr_(self, "retry_on", retry_on)
        setattr_(self, "retriable_status_codes", codes)
        setattr_(self, "_outcomes", frozenset(outcomes))
        setattr_(self, "_statuses", frozenset(statuses))
        setattr_(self, "_any_5xx", "5xx" in retry_on)
        setattr_(self, "_grpc", frozenset(_GRPC_CONDITIONS[c] for c in retry_on if c in _GRPC_CONDITIONS))

    @property
    def enabled(self) -> bool:
        """Whether this policy can ever retry."""
        return self.num_retries > 0 and bool(self.retry_on)

    def matches(self, result: AttemptResult) -> bool:
        """Whether ``result`` meets one of the ``retry_on`` conditions (ignoring
        retries left, idempotency and pushback)."""
        outcome = result.outcome
        if outcome in self._outcomes:
            return True
        if outcome == Outcome.ERROR or outcome == Outcome.TLS_FAILURE:
            return False
        status = result.status
        if status is not None and (status in self._statuses or (self._any_5xx and 500 <= status <= 599)):
            return True
        grpc_status = result.grpc_status
        return grpc_status is not None and bool(self._grpc) and _grpc_name(grpc_status) in self._grpc

    def should_retry(self, result: AttemptResult, *, idempotent: bool, retries_done: int) -> bool:
        """Whether to make another attempt after ``result``.

        True only if fewer than ``num_retries`` retries were made, the server did
        not ask for no retry, a condition matches, and the request is safe to
        repeat: an ``idempotent`` request (see :func:`is_idempotent`),
        ``retry_non_idempotent``, or an attempt that never reached the server. The budget is asked after
        this, by the caller.
        """
        if retries_done >= self.num_retries:
            return False
        if result.retry_after == DO_NOT_RETRY or not self.matches(result):
            return False
        if idempotent or self.retry_non_idempotent:
            return True
        return result.outcome in _NEVER_SENT

    def next_delay(self, result: AttemptResult, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based): the server's
        pushback when it sent one (capped at 300 s), else the jittered back-off."""
        pushback = result.retry_after
        if pushback is not None and 0.0 <= pushback < DO_NOT_RETRY:
            return min(pushback, MAX_RETRY_AFTER)
        return self.backoff.delay(retry_number, rng)


def parse_retry_on(value: str | Iterable[str], name: str) -> frozenset[str]:
    """Conditions from ``"5xx,reset"`` (Envoy's ``x-envoy-retry-on`` form) or a
    list of names. Case and surrounding spaces are ignored; empty items skipped.
    Raises ``ConfigError`` naming every accepted condition on an unknown one."""
    if isinstance(value, str):
        items: list[object] = value.split(",")
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise ConfigError(name, value, _RETRY_ON_ACCEPTED)
    found: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(name, value, _RETRY_ON_ACCEPTED, detail=f"{item!r} is not a condition name")
        token = item.strip().lower()
        if not token:
            continue
        if token not in RETRY_ON_CONDITIONS:
            why = (
                f"{token!r} is an Envoy condition meshlib does not implement"
                if token in _NOT_IMPLEMENTED
                else f"unknown condition {token!r}"
            )
            raise ConfigError(name, value, _RETRY_ON_ACCEPTED, detail=why)
        found.add(token)
    return frozenset(found)


def parse_status_codes(value: str | int | Iterable[int | str], name: str) -> frozenset[int]:
    """HTTP status codes from ``"409,503"``, a single code, or a list of codes
    (ints or digit strings), each from 100 to 599."""
    if isinstance(value, bool):
        raise ConfigError(name, value, _STATUS_ACCEPTED)
    if isinstance(value, int):
        items: list[object] = [value]
    elif isinstance(value, str):
        items = [t for t in value.split(",") if t.strip()]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise ConfigError(name, value, _STATUS_ACCEPTED)
    codes: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            code = None
        elif isinstance(item, int):
            code = item
        elif isinstance(item, str) and item.strip().isascii() and item.strip().isdigit():
            code = int(item.strip())
        else:
            code = None
        if code is None or not 100 <= code <= 599:
            raise ConfigError(name, value, _STATUS_ACCEPTED, detail=f"{item!r} is not a status code")
        codes.add(code)
    return frozenset(codes)


#: The null policy: never retries.
NO_RETRIES = RetryPolicy(num_retries=0)
