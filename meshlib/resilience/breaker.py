"""A classic circuit breaker (closed -> open -> half-open) with resilience4j's semantics.

``CLOSED``: every call is permitted; outcomes go into a sliding window. Once the
window holds at least ``minimum_calls`` outcomes, the breaker opens if the
failure rate reaches ``failure_rate_threshold`` or the slow-call rate reaches
``slow_call_rate_threshold`` (both ``>=``, as resilience4j). A call is slow when
its duration is *greater than* ``slow_call_duration`` (resilience4j compares
with ``>``); a failed call can be slow too and then counts towards both rates.

``OPEN``: ``try_acquire()`` returns False (the caller raises
``CircuitOpenError`` without touching the network) until ``wait_duration_open``
has passed; the first ``try_acquire()`` after that moves to ``HALF_OPEN``
(resilience4j's default, ``automaticTransitionFromOpenToHalfOpenEnabled=false``).
Outcomes reported while open are ignored.

``HALF_OPEN``: ``permitted_calls_half_open`` trial calls are admitted, the rest
refused. Their outcomes fill a fresh count window of that size; once
``min(minimum_calls, permitted_calls_half_open)`` have been reported, the same
thresholds decide: below both -> ``CLOSED`` (fresh window), else -> ``OPEN``.
A permit taken but not used (the call was never made) is given back with
:meth:`CircuitBreaker.release`, or the breaker waits in half-open for ever
(resilience4j's ``maxWaitDurationInHalfOpenState`` 0 s; meshlib has no such timer).

Defaults, meshlib (resilience4j ``CircuitBreakerConfig``):

==========================  ============  ==========================================
field                       meshlib       resilience4j
==========================  ============  ==========================================
failure_rate_threshold      50 (%)        failureRateThreshold 50
slow_call_rate_threshold    100 (%)       slowCallRateThreshold 100
slow_call_duration          60 s          slowCallDurationThreshold 60 s
wait_duration_open          60 s          waitDurationInOpenState 60 s
permitted_calls_half_open   10            permittedNumberOfCallsInHalfOpenState 10
minimum_calls               100           minimumNumberOfCalls 100
window_type                 count_based   slidingWindowType COUNT_BASED
window_size                 100           slidingWindowSize 100 (calls, or seconds
                                          for TIME_BASED)
==========================  ============  ==========================================

For a count window, ``minimum_calls`` is capped at ``window_size`` (as
resilience4j). A time window keeps one bucket per whole second of the clock and
covers the current second and the ``window_size - 1`` before it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError

__all__ = ["BreakerConfig", "CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN", "COUNT_BASED", "TIME_BASED"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
COUNT_BASED = "count_based"
TIME_BASED = "time_based"

Listener = Callable[[str, str], None]


@dataclass(frozen=True)
class BreakerConfig:
    """The breaker's settings; see the module docstring for each default."""

    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration: float = 60.0
    wait_duration_open: float = 60.0
    permitted_calls_half_open: int = 10
    minimum_calls: int = 100
    window_type: str = COUNT_BASED
    window_size: int = 100

    def __post_init__(self) -> None:
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            v = getattr(self, name)
            if not 0 < v <= 100:
                raise ConfigError(name, v, "a percentage in (0, 100]")
        for name in ("slow_call_duration", "wait_duration_open"):
            v = getattr(self, name)
            if not v >= 0:
                raise ConfigError(name, v, "a duration >= 0 seconds")
        for name in ("permitted_calls_half_open", "minimum_calls", "window_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(name, v, "a whole number >= 1")
        if self.window_type not in (COUNT_BASED, TIME_BASED):
            raise ConfigError("window_type", self.window_type, f"{COUNT_BASED!r} or {TIME_BASED!r}")


# -- sliding windows: running totals of (calls, failures, slow calls) --------------


class _CountWindow:
    """The last ``size`` outcomes, each stored as bit flags (1 failed, 2 slow)."""

    __slots__ = ("_slots", "_next", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._slots: list[int | None] = [None] * size
        self._next = 0
        self.calls = self.failures = self.slow = 0

    def record(self, now: float, failed: bool, slow: bool) -> None:
        old = self._slots[self._next]
        if old is not None:
            self.calls -= 1
            self.failures -= old & 1
            self.slow -= old >> 1
        self._slots[self._next] = int(failed) | (int(slow) << 1)
        self._next = (self._next + 1) % len(self._slots)
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def expire(self, now: float) -> None:
        """Count windows never expire."""


class _TimeWindow:
    """Per-second buckets over the last ``size`` seconds of ``now``."""

    __slots__ = ("_buckets", "_head", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._buckets = [[0, 0, 0] for _ in range(size)]
        self._head: int | None = None  # the newest second the buckets cover
        self.calls = self.failures = self.slow = 0

    def expire(self, now: float) -> None:
        sec = int(now)
        head = self._head
        if head is None:
            self._head = sec
            return
        if sec <= head:
            return
        n = len(self._buckets)
        for s in range(head + 1, head + 1 + min(sec - head, n)):
            b = self._buckets[s % n]
            self.calls -= b[0]
            self.failures -= b[1]
            self.slow -= b[2]
            b[0] = b[1] = b[2] = 0
        self._head = sec

    def record(self, now: float, failed: bool, slow: bool) -> None:
        self.expire(now)
        b = self._buckets[int(now) % len(self._buckets)]
        b[0] += 1
        b[1] += failed
        b[2] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow


class CircuitBreaker:
    """One breaker per scope (a cluster, or one endpoint). Thread-safe."""

    def __init__(self, config: BreakerConfig | None = None, *, clock: Clock = SYSTEM_CLOCK, name: str = "") -> None:
        self.config = config or BreakerConfig()
        self.name = name
        self.transitions = 0
        self.not_permitted = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._state = CLOSED
        self._opened_at = 0.0
        self._permits = 0
        self._window: _CountWindow | _TimeWindow
        self._minimum = 0
        self._reset_window(CLOSED)

    # -- the call path ----------------------------------------------------------

    def try_acquire(self) -> bool:
        """May a call go out now? Never blocks, never touches the network."""
        if self._state == CLOSED:  # lock-free fast path: a str read is atomic
            return True
        fired = None
        with self._lock:
            if self._state == OPEN:
                if self._clock.monotonic() - self._opened_at < self.config.wait_duration_open:
                    self.not_permitted += 1
                    return False
                fired = self._move(HALF_OPEN)
            if self._state == CLOSED:
                ok = True
            elif self._permits > 0:
                self._permits -= 1
                ok = True
            else:
                self.not_permitted += 1
                ok = False
        self._fire(fired)
        return ok

    def probe_due(self) -> bool:
        """Open, and the wait is over: the next ``try_acquire`` goes half-open."""
        return self._state == OPEN and self._clock.monotonic() - self._opened_at >= self.config.wait_duration_open

    def release(self) -> None:
        """Give back a permit taken by ``try_acquire`` for a call that was never made."""
        with self._lock:
            if self._state == HALF_OPEN and self._permits < self.config.permitted_calls_half_open:
                self._permits += 1

    def on_result(self, success: bool, duration: float) -> None:
        """Report a permitted call's outcome and its duration in seconds."""
        cfg = self.config
        slow = duration > cfg.slow_call_duration
        fired = None
        with self._lock:
            if self._state == OPEN:
                return
            w = self._window
            w.record(self._clock.monotonic(), not success, slow)
            if w.calls >= self._minimum:
                tripped = w.failures * 100.0 >= cfg.failure_rate_threshold * w.calls or w.slow * 100.0 >= cfg.slow_call_rate_threshold * w.calls
                if tripped:
                    fired = self._move(OPEN)
                elif self._state == HALF_OPEN:
                    fired = self._move(CLOSED)
        self._fire(fired)

    # -- state ------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (open stays open until a
        ``try_acquire`` after the wait)."""
        return self._state

    def on_transition(self, listener: Listener) -> Listener:
        """Call ``listener(old, new)`` after every state change (outside the lock);
        returns it, so it can be used as a decorator."""
        with self._lock:
            self._listeners.append(listener)
        return listener

    def snapshot(self) -> dict[str, object]:
        """State, counters and the current window's rates (None below the minimum)."""
        with self._lock:
            w = self._window
            w.expire(self._clock.monotonic())
            enough = w.calls >= self._minimum and w.calls > 0
            return {
                "state": self._state,
                "transitions": self.transitions,
                "not_permitted": self.not_permitted,
                "calls": w.calls,
                "failures": w.failures,
                "slow_calls": w.slow,
                "failure_rate": 100.0 * w.failures / w.calls if enough else None,
                "slow_call_rate": 100.0 * w.slow / w.calls if enough else None,
                "half_open_permits": self._permits if self._state == HALF_OPEN else None,
            }

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state})"

    # -- internals (lock held) ------------------------------------------------------

    def _reset_window(self, state: str) -> None:
        cfg = self.config
        if state == HALF_OPEN:
            self._window = _CountWindow(cfg.permitted_calls_half_open)
            self._minimum = min(cfg.minimum_calls, cfg.permitted_calls_half_open)
        elif cfg.window_type == TIME_BASED:
            self._window = _TimeWindow(cfg.window_size)
            self._minimum = cfg.minimum_calls
        else:
            self._window = _CountWindow(cfg.window_size)
            self._minimum = min(cfg.minimum_calls, cfg.window_size)

    def _move(self, new: str) -> tuple[str, str]:
        old = self._state
        self._state = new
        self.transitions += 1
        if new == OPEN:
            self._opened_at = self._clock.monotonic()
        elif new == HALF_OPEN:
            self._permits = self.config.permitted_calls_half_open
        if new != OPEN:
            self._reset_window(new)
        return old, new

    def _fire(self, change: tuple[str, str] | None) -> None:
        if change is None:
            return
        for listener in tuple(self._listeners):
            listener(*change)
