"""Runtime state of one endpoint inside a cluster: load, latency and outcomes.

An :class:`Endpoint` says what discovery knows; a :class:`Host` adds what the
mesh has seen of it. Hosts live as long as their endpoint stays in the service,
so load statistics survive snapshot rebuilds.

Nothing here takes a lock. The attempts in flight are a list that each start
appends to and each end pops from (one C call each, atomic in CPython), so the
count is exact under any interleaving; totals are :class:`Tally` counters; the
peak-EWMA state is one ``(cost, stamp)`` tuple swapped whole, so a reader
never sees half an update (two concurrent updates may keep only one of the
two observations, which an average can afford).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from .._tally import Tally
from ..clock import SYSTEM_CLOCK, Clock
from ..endpoint import Endpoint
from ..outcome import Outcome

if TYPE_CHECKING:
    from ..outcome import AttemptRecord

__all__ = ["Host"]


class _Timed(NamedTuple):
    """The fields of an attempt record the load metric reads."""

    started: float
    first_byte: float
    outcome: str

_SUCCESS = Outcome.SUCCESS
_CANCELLED = Outcome.CANCELLED
_CONNECT_FAILURE = Outcome.CONNECT_FAILURE


class Host:
    """One endpoint's live statistics; the unit every picker returns."""

    __slots__ = (
        "endpoint",
        "key",
        "inflight",
        "_requests",
        "_successes",
        "_failures",
        "_connect_failures",
        "latency_total",
        "_ewma",
        "_decay",
        "_default_rtt",
        "_penalty",
        "_clock",
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
        #: One entry per attempt in flight (``active`` is its length).
        self.inflight: list[None] = []
        self._requests = Tally()
        self._successes = Tally()
        self._failures = Tally()
        self._connect_failures = Tally()
        self.latency_total = 0.0
        self._ewma = (0.0, clock.monotonic())  # peak-EWMA latency in seconds (0 = never observed), when
        self._decay = decay
        self._default_rtt = default_rtt
        self._penalty = failure_penalty
        self._clock = clock

    # -- feedback (one call per attempt, start and done) ----------------------

    def start(self) -> None:
        """An attempt goes out to this host."""
        self.inflight.append(None)
        self._requests.add()

    def done(self, latency: float, outcome: str) -> None:
        """Record one finished attempt: its latency in seconds (time to the
        answer's first byte) and its :class:`~meshlib.outcome.Outcome`."""
        self.attempt_ended(_Timed(0.0, latency, outcome))

    def attempt_ended(self, record: "AttemptRecord | _Timed") -> None:
        """The load metric, as an observer of one finished attempt (the
        cluster calls ``Host.attempt_ended(host, record)``): the attempt
        leaves the in-flight count, its outcome is counted, and its time to
        first byte (a stream's whole duration does not count) feeds the EWMA."""
        try:
            self.inflight.pop()
        except IndexError:  # more ends than starts: never below zero
            pass
        outcome = record.outcome
        if outcome == _CANCELLED:
            return
        latency = record.first_byte - record.started
        if outcome == _SUCCESS:
            self._successes.add()
            self.latency_total += latency
            rtt = latency
        else:
            self._failures.add()
            if outcome == _CONNECT_FAILURE:
                self._connect_failures.add()
            rtt = latency if latency > self._penalty else self._penalty
        # Peak EWMA (Finagle): a slower observation replaces the average at
        # once; faster ones pull it down with weight exp(-elapsed / decay).
        now = self._clock.monotonic()
        cost, stamp = self._ewma
        if rtt > cost:
            self._ewma = (rtt, now)
        else:
            elapsed = now - stamp
            w = math.exp(-elapsed / self._decay) if elapsed > 0.0 else 1.0
            self._ewma = (cost * w + rtt * (1.0 - w), now)

    # -- reads (lock-free) -----------------------------------------------------

    @property
    def active(self) -> int:
        """Attempts in flight on this host now."""
        return len(self.inflight)

    @property
    def requests(self) -> int:
        return self._requests.value

    @property
    def successes(self) -> int:
        return self._successes.value

    @property
    def failures(self) -> int:
        return self._failures.value

    @property
    def connect_failures(self) -> int:
        return self._connect_failures.value

    def ewma(self, now: float | None = None) -> float:
        """The latency average decayed to ``now``; ``default_rtt`` before any observation."""
        cost, stamp = self._ewma
        if cost == 0.0:
            return self._default_rtt
        if now is None:
            now = self._clock.monotonic()
        return cost * math.exp(-max(now - stamp, 0.0) / self._decay)

    @property
    def observed(self) -> bool:
        """Whether any attempt on this host has been timed yet."""
        return self._ewma[0] != 0.0

    @property
    def mean_latency(self) -> float:
        n = self.successes
        return self.latency_total / n if n else 0.0

    def __repr__(self) -> str:
        return f"Host({self.endpoint.address}, active={self.active}, requests={self.requests})"
