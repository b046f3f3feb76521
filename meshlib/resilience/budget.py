"""Retry budgets: a limit on retries shared by every call of a service, so a
failing service is not sent a multiple of its normal load.

A budget hears of each original request (``deposit``) and is asked before each
retry (``try_withdraw``); ``retry_done`` and ``request_done`` report finished
work to the budgets that count concurrency. Two kinds, plus null objects:

* :class:`RatioRetryBudget`: Finagle's ``RetryBudget`` and Linkerd's retry
  budget. Retries may be a ratio of recent requests plus a floor per second.
* :class:`ConcurrencyRetryBudget`: Envoy's ``retry_budget`` circuit-breaker
  threshold. Retries in flight may be a percentage of requests in flight.
* :data:`UNLIMITED_BUDGET` (Finagle's ``Infinite``) and :data:`NO_BUDGET`
  (Finagle's ``Empty``: never allows a retry).

Every budget is thread-safe behind one small lock: budgets are updated once per
request and once per retry, never read while picking a host.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

from .._tally import Tally
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError

__all__ = [
    "RetryBudget",
    "RatioRetryBudget",
    "ConcurrencyRetryBudget",
    "UNLIMITED_BUDGET",
    "NO_BUDGET",
    "BudgetConfig",
]


@runtime_checkable
class RetryBudget(Protocol):
    """What the call path tells a budget, and asks it."""

    #: Whether ``retry_done`` and ``request_done`` do anything (budgets that
    #: count concurrency); callers on the hot path may skip them when False.
    tracks_in_flight: bool

    def deposit(self) -> None:
        """An original request starts (once per logical call, not per attempt)."""

    def try_withdraw(self) -> bool:
        """A retry is wanted: True grants it and counts it; False refuses it and
        changes nothing (the caller returns the original failure)."""

    def retry_done(self) -> None:
        """A granted retry attempt finished, however it ended."""

    def request_done(self) -> None:
        """An original request finished, after all its attempts."""

    def balance(self) -> int:
        """How many retries would be granted now (a gauge for metrics)."""


def _number(value: object, name: str, lo: float, hi: float | None, accepted: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, value, accepted)
    x = float(value)
    if not math.isfinite(x) or x < lo or (hi is not None and x > hi):
        raise ConfigError(name, value, accepted)
    return x


class RatioRetryBudget:
    """Finagle's and Linkerd's retry budget: a ratio of recent requests plus a floor.

    ==========================  ===============  ===================================
    argument                    meshlib default  reference
    ==========================  ===============  ===================================
    ``ratio``                   0.2              Finagle ``percentCanRetry`` 0.2
                                                 (0..1000); Linkerd ``retryRatio`` 0.2
    ``min_retries_per_sec``     10               Finagle ``minRetriesPerSec`` 10;
                                                 Linkerd ``minRetriesPerSecond`` 10
    ``ttl``                     10 s             Finagle ``ttl`` 10 s (1..60 s);
                                                 Linkerd ``ttl`` 10 s
    ==========================  ===============  ===================================

    As Finagle's leaky token bucket, deposits and withdrawals are kept in a
    windowed counter of time slices and both expire after about ``ttl``; a
    retry is granted while ``retries <= ratio x requests + min_retries_per_sec
    x ttl`` over the window. Finagle counts 10 slices of whatever width
    ``ttl/10`` rounds to; meshlib counts 16 slices (``ttl/16`` is exact in
    binary floating point) and rounds conservatively: a deposit is counted only
    while its whole slice lies inside the last ``ttl``, a withdrawal while any
    part of it does. That makes the guarantee exact, at the price of a
    steady-state ratio about 6 % below ``ratio`` (deposits live 15-16 slices,
    withdrawals 16-17). Arithmetic is in exact integers, so ``ratio`` is the
    exact binary value of the float given.

    **Invariant** (for any pattern of calls and any clock that does not go
    backwards; ``D(I)`` and ``R(I)`` are deposits made and retries granted in
    the time interval ``I``; ``t0`` is when the budget was built):

    1. Whenever ``try_withdraw()`` returns True at time ``t``:
       ``R((t - ttl, t]) <= ratio x D((t - ttl, t]) + min_retries_per_sec x ttl``.
    2. Hence, for every interval ``[a, b]``:
       ``R([a, b]) <= ratio x D((a - ttl, b]) + min_retries_per_sec x (b - a + ttl)``,
       and over the budget's life up to ``T``:
       ``retries <= ratio x requests + min_retries_per_sec x (T - t0 + ttl)``,
       that is ``attempts <= requests x (1 + ratio) + floor x (elapsed + ttl)``.

    (2 follows from 1: read the floor as a steady stream of credit,
    ``min_retries_per_sec`` per second from ``t0 - ttl`` on, and each deposit as
    ``ratio`` credit; granting each retry the oldest unused credit of its own
    window never runs short, by 1, so distinct retries in ``[a, b]`` hold
    distinct credit from ``(a - ttl, b]``.) A window of retries cannot be bounded
    by the deposits of that same window alone: a retry is paid for by requests
    made before it.
    """

    SLICES = 16

    tracks_in_flight = False

    __slots__ = (
        "ratio",
        "min_retries_per_sec",
        "ttl",
        "_clock",
        "_width",
        "_unit",
        "_per_deposit",
        "_reserve",
        "_slices",
        "_current",
        "_now",
        "_retries",
        "_latest",
        "_lock",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_retries_per_sec: float = 10,
        ttl: float = 10.0,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ratio = _number(ratio, "ratio", 0.0, 1000.0, "a fraction of requests from 0 to 1000 (Finagle's bounds; default 0.2)")
        self.min_retries_per_sec = _number(
            min_retries_per_sec, "min_retries_per_sec", 0.0, None, "a number of retries per second from 0 up (default 10)"
        )
        self.ttl = _number(ttl, "ttl", 1.0, 60.0, "a number of seconds from 1 to 60 (Finagle's bounds; default 10)")
        self._clock = clock
        self._width = self.ttl / self.SLICES
        # Grant while (R + 1) <= p/q * D + a/b, i.e. (R + 1)*q*b <= p*b*D + a*q.
        p, q = Fraction(self.ratio).as_integer_ratio()
        a, b = (Fraction(self.min_retries_per_sec) * Fraction(self.ttl)).as_integer_ratio()
        self._unit = q * b
        self._per_deposit = p * b
        self._reserve = a * q
        # [slice index, deposits (a Tally), retries], oldest first; retries totalled.
        self._slices: deque[list[Any]] = deque()
        self._current: list[Any] | None = None  # the newest slice
        self._now = clock.monotonic
        self._retries = 0
        self._latest = int(clock.monotonic() // self._width)
        self._lock = threading.Lock()

    def _expire(self) -> tuple[int, int]:
        """Drop slices wholly older than the window; return the current slice
        index and the deposits counted now (the oldest, partial slice excluded)."""
        k = int(self._clock.monotonic() // self._width)
        if k < self._latest:
            k = self._latest
        self._latest = k
        oldest = k - self.SLICES
        slices = self._slices
        while slices and slices[0][0] < oldest:
            self._retries -= slices.popleft()[2]
        deposits = sum(s[1].value for s in slices if s[0] != oldest)
        return k, deposits

    def _slice(self, k: int) -> list[Any]:
        slices = self._slices
        if slices and slices[-1][0] == k:
            return slices[-1]
        s: list[Any] = [k, Tally(), 0]
        slices.append(s)
        self._current = s
        return s

    def deposit(self) -> None:
        # Within a slice, a deposit is one C call on that slice's Tally (no
        # lock); only the first deposit of a new slice takes the lock.
        current = self._current
        if current is not None and current[0] == int(self._now() // self._width):
            current[1].add()
            return
        with self._lock:
            k, _ = self._expire()
            self._slice(k)[1].add()

    def try_withdraw(self) -> bool:
        with self._lock:
            k, deposits = self._expire()
            if (self._retries + 1) * self._unit > self._per_deposit * deposits + self._reserve:
                return False
            self._slice(k)[2] += 1
            self._retries += 1
            return True

    def retry_done(self) -> None:
        """Nothing to do: this budget counts rates, not concurrency."""

    def request_done(self) -> None:
        """Nothing to do: this budget counts rates, not concurrency."""

    def balance(self) -> int:
        with self._lock:
            _, deposits = self._expire()
            allowed = (self._per_deposit * deposits + self._reserve) // self._unit
            return max(0, allowed - self._retries)

    def __repr__(self) -> str:
        return (
            f"RatioRetryBudget(ratio={self.ratio}, min_retries_per_sec={self.min_retries_per_sec}, "
            f"ttl={self.ttl}, balance={self.balance()})"
        )


class ConcurrencyRetryBudget:
    """Envoy's retry budget (``circuit_breakers.thresholds.retry_budget``).

    A retry is granted while retries in flight are fewer than
    ``max(min_retry_concurrency, floor(budget_percent % x requests in flight))``,
    as Envoy's resource manager computes it. Requests in flight are original
    requests deposited and not yet ``request_done`` (one per logical call
    whichever attempt it is on, as Envoy's active plus pending upstream
    requests); retries in flight are granted and not yet ``retry_done``.

    ==========================  ===============  ==================================
    argument                    meshlib default  reference
    ==========================  ===============  ==================================
    ``budget_percent``          20.0 (0..100)    Envoy ``budget_percent`` 20 %
    ``min_retry_concurrency``   3                Envoy ``min_retry_concurrency`` 3
    ==========================  ===============  ==================================
    """

    tracks_in_flight = True

    __slots__ = ("budget_percent", "min_retry_concurrency", "_requests", "_retries", "_lock")

    def __init__(self, budget_percent: float = 20.0, min_retry_concurrency: int = 3) -> None:
        self.budget_percent = _number(
            budget_percent, "budget_percent", 0.0, 100.0, "a percentage from 0 to 100 (Envoy's default is 20)"
        )
        if isinstance(min_retry_concurrency, bool) or not isinstance(min_retry_concurrency, int) or min_retry_concurrency < 0:
            raise ConfigError("min_retry_concurrency", min_retry_concurrency, "a whole number from 0 up (Envoy's default is 3)")
        self.min_retry_concurrency = min_retry_concurrency
        self._requests = 0
        self._retries = 0
        self._lock = threading.Lock()

    def _limit(self) -> int:
        return max(self.min_retry_concurrency, int(self.budget_percent * self._requests / 100.0))

    def deposit(self) -> None:
        with self._lock:
            self._requests += 1

    def try_withdraw(self) -> bool:
        with self._lock:
            if self._retries >= self._limit():
                return False
            self._retries += 1
            return True

    def retry_done(self) -> None:
        with self._lock:
            if self._retries > 0:
                self._retries -= 1

    def request_done(self) -> None:
        with self._lock:
            if self._requests > 0:
                self._requests -= 1

    def balance(self) -> int:
        with self._lock:
            return max(0, self._limit() - self._retries)

    def __repr__(self) -> str:
        return (
            f"ConcurrencyRetryBudget(budget_percent={self.budget_percent}, "
            f"min_retry_concurrency={self.min_retry_concurrency}, balance={self.balance()})"
        )


class _Unlimited:
    """Grants every retry; ``balance()`` is ``sys.maxsize`` (Finagle's ``Infinite`` says 100)."""

    tracks_in_flight = False

    __slots__ = ()

    def deposit(self) -> None: ...

    def try_withdraw(self) -> bool:
        return True

    def retry_done(self) -> None: ...

    def request_done(self) -> None: ...

    def balance(self) -> int:
        return sys.maxsize

    def __repr__(self) -> str:
        return "UNLIMITED_BUDGET"


class _NoBudget:
    """Refuses every retry (Finagle's ``Empty``)."""

    tracks_in_flight = False

    __slots__ = ()

    def deposit(self) -> None: ...

    def try_withdraw(self) -> bool:
        return False

    def retry_done(self) -> None: ...

    def request_done(self) -> None: ...

    def balance(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "NO_BUDGET"


#: The null budget that never limits retries (the retry policy's num_retries still does).
UNLIMITED_BUDGET: RetryBudget = _Unlimited()
#: The null budget that never allows a retry.
NO_BUDGET: RetryBudget = _NoBudget()


@dataclass(frozen=True)
class BudgetConfig:
    """Which retry budget a service uses, and its settings (see each class).

    ``kind``: ``"ratio"`` (:class:`RatioRetryBudget`, the default, as Finagle
    and Linkerd), ``"concurrency"`` (:class:`ConcurrencyRetryBudget`, Envoy's
    ``retry_budget``) or ``"none"`` (no budget: only ``max_retries`` limits
    retries, as Envoy without ``retry_budget``).
    """

    kind: str = "ratio"
    ratio: float = 0.2
    min_retries_per_sec: float = 10.0
    ttl: float = 10.0
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ConfigError("retry_budget", self.kind, "one of " + ", ".join(BUDGET_KINDS))
        self.build()  # validates the numbers with each class's own messages

    def build(self, clock: Clock = SYSTEM_CLOCK) -> RetryBudget:
        if self.kind == "ratio":
            return RatioRetryBudget(self.ratio, self.min_retries_per_sec, self.ttl, clock=clock)
        if self.kind == "concurrency":
            return ConcurrencyRetryBudget(self.budget_percent, self.min_retry_concurrency)
        return UNLIMITED_BUDGET


BUDGET_KINDS = ("ratio", "concurrency", "none")
