"""Runtime state of one endpoint inside a cluster: load, latency and outcomes.

An :class:`Endpoint` says what discovery knows; a :class:`Host` adds what the
mesh has seen of it. Hosts live as long as their endpoint stays in the service,
so load statistics survive snapshot rebuilds. Pickers read ``active`` and the
latency average without a lock; only updates take the host's own lock.
"""

from __future__ import annotations

import math
import threading

from ..clock import SYSTEM_CLOCK, Clock
from ..endpoint import Endpoint
from ..outcome import Outcome

__all__ = ["Host"]


class Host:
    """One endpoint's live statistics; the unit every picker returns."""

    __slots__ = (
        "endpoint",
        "key",
        "active",
        "requests",
        "successes",
        "failures",
        "connect_failures",
        "latency_total",
        "_cost",
        "_stamp",
        "_decay",
        "_default_rtt",
        "_penalty",
        "_clock",
        "_lock",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        decay: float = 10.0,
        default_rtt: float = 0.030,
        failure_penalty: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.endpoint = endpoint
        #: ``endpoint.key``, fixed for the host's life (a cluster keys its hosts by it).
        self.key = endpoint.key
        self.active = 0
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.connect_failures = 0
        self.latency_total = 0.0
        self._cost = 0.0  # peak-EWMA latency in seconds; 0 = never observed
        self._stamp = clock.monotonic()
        self._decay = decay
        self._default_rtt = default_rtt
        self._penalty = failure_penalty
        self._clock = clock
        self._lock = threading.Lock()

    # -- feedback (one call per attempt, start and done) ----------------------

    # Locks are taken with acquire() and try/finally release() rather than
    # ``with``: on the per-call path the with-statement costs twice as much.

    def start(self) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self.active += 1
            self.requests += 1
        finally:
            lock.release()

    def done(self, latency: float, outcome: str) -> None:
        """Record one finished attempt: latency in seconds and its :class:`Outcome`."""
        lock = self._lock
        if outcome == Outcome.CANCELLED:
            lock.acquire()
            try:
                self.active -= 1
            finally:
                lock.release()
            return
        now = self._clock.monotonic()
        ok = outcome == Outcome.SUCCESS
        rtt = latency if ok or latency > self._penalty else self._penalty
        lock.acquire()
        try:
            self.active -= 1
            if ok:
                self.successes += 1
                self.latency_total += latency
            else:
                self.failures += 1
                if outcome == Outcome.CONNECT_FAILURE:
                    self.connect_failures += 1
            # Peak EWMA (Finagle): a slower observation replaces the average at
            # once; faster ones pull it down with weight exp(-elapsed / decay).
            cost = self._cost
            if rtt > cost:
                self._cost = rtt
            else:
                elapsed = now - self._stamp
                w = math.exp(-elapsed / self._decay) if elapsed > 0.0 else 1.0
                self._cost = cost * w + rtt * (1.0 - w)
            self._stamp = now
        finally:
            lock.release()

    # -- reads (lock-free) -----------------------------------------------------

    def ewma(self, now: float | None = None) -> float:
        """The latency average decayed to ``now``; ``default_rtt`` before any observation."""
        cost = self._cost
        if cost == 0.0:
            return self._default_rtt
        if now is None:
            now = self._clock.monotonic()
        return cost * math.exp(-max(now - self._stamp, 0.0) / self._decay)

    @property
    def mean_latency(self) -> float:
        return self.latency_total / self.successes if self.successes else 0.0

    def __repr__(self) -> str:
        return f"Host({self.endpoint.address}, active={self.active}, requests={self.requests})"
