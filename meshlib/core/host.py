"""Runtime state of one endpoint inside a cluster: load, latency and outcomes.

An :class:`Endpoint` says what discovery knows; a :class:`Host` adds what the
mesh has seen of it. Hosts live as long as their endpoint stays in the service,
so load statistics survive snapshot rebuilds.

No lock is taken on the way of a successful attempt. The attempts in flight
are a list that each start appends to and each end pops from (one C call
each, atomic in CPython), so the count is exact under any interleaving;
attempts started and succeeded are counted by ``itertools.count`` (one C call
each); failures, the rare path, are plain integers under one lock shared by
all hosts (two per host would cost more memory than they save); the
peak-EWMA state is one ``(cost, stamp)`` tuple swapped whole, so a reader
never sees half an update (two concurrent updates may keep only one of the
two observations, which an average can afford).
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import TYPE_CHECKING, Callable, NamedTuple

from ..clock import SYSTEM_CLOCK, Clock
from ..endpoint import Endpoint
from ..outcome import Outcome

if TYPE_CHECKING:
    from ..outcome import AttemptRecord

__all__ = ["Host", "PACE_WEIGHT"]


class _Timed(NamedTuple):
    """The fields of an attempt record the load metric reads."""

    started: float
    first_byte: float
    outcome: str
    ended: float

def _position(counter: Callable[[], int]) -> int:
    """How many times a bound ``itertools.count().__next__`` has been called
    (its ``repr``, ``count(7)``, is the one public view of the position)."""
    return int(repr(counter.__self__)[6:-1])  # type: ignore[attr-defined]


#: Weight of each new attempt in ``Host.pace`` (an average over about the last 5).
PACE_WEIGHT = 0.2
_FAILURES_LOCK = threading.Lock()
_exp = math.exp
_SUCCESS = Outcome.SUCCESS
_CANCELLED = Outcome.CANCELLED
_CONNECT_FAILURE = Outcome.CONNECT_FAILURE


class Host:
    """One endpoint's live statistics; the unit every picker returns."""

    __slots__ = (
        "endpoint",
        "key",
        "inflight",
        "_started",
        "_succeeded",
        "_failures",
        "_connect_failures",
        "latency_total",
        "ewma_state",
        "decay",
        "default_rtt",
        "_penalty",
        "_now",
        "load",
        "pace",
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
        # Attempts started and succeeded: the bound ``__next__`` of an
        # ``itertools.count`` (one C call per count, no lock; see _tally).
        self._started = itertools.count().__next__
        self._succeeded = itertools.count().__next__
        # Failures are the rare path: plain integers under one shared lock.
        self._failures = 0
        self._connect_failures = 0
        self.latency_total = 0.0
        self._now = clock.monotonic
        #: Peak-EWMA latency in seconds (0.0 = never observed) and when it was
        #: last updated (``monotonic``): one tuple, swapped whole.
        self.ewma_state = (0.0, self._now())
        #: Decay time of the EWMA, and the latency assumed before any observation.
        self.decay = decay
        self.default_rtt = default_rtt
        self._penalty = failure_penalty
        #: The endpoint's latest load report (``balancing.load.LoadReport``), or None.
        self.load: object = None
        #: Average whole time of a successful attempt (a stream until its end), in
        #: seconds, each new one weighing ``PACE_WEIGHT`` (0.0 = none yet): how
        #: long this endpoint holds a request (``llm`` compares endpoints' paces).
        self.pace = 0.0

    # -- feedback (one call per attempt, start and done) ----------------------

    def start(self) -> None:
        """An attempt goes out to this host."""
        self.inflight.append(None)
        self._started()

    def done(self, latency: float, outcome: str) -> None:
        """Record one finished attempt: its latency in seconds (time to the
        answer's first byte) and its :class:`~meshlib.outcome.Outcome`."""
        self.attempt_ended(_Timed(0.0, latency, outcome, latency))

    def attempt_ended(self, record: "AttemptRecord | _Timed") -> None:
        """The load metric, as an observer of one finished attempt (the
        cluster calls ``Host.attempt_ended(host, record)``): the attempt
        leaves the in-flight count, its outcome is counted, and its time to
        first byte (a stream's whole duration does not count) feeds the EWMA;
        a success's whole time (a stream's included) feeds ``pace``."""
        try:
            self.inflight.pop()
        except IndexError:  # more ends than starts: never below zero
            pass
        outcome = record.outcome
        if outcome == _SUCCESS:
            self._succeeded()
            rtt = record.first_byte - record.started
            self.latency_total += rtt
            took = record.ended - record.started
            pace = self.pace
            self.pace = took if pace == 0.0 else pace + PACE_WEIGHT * (took - pace)
        elif outcome == _CANCELLED:
            return
        else:
            with _FAILURES_LOCK:
                self._failures += 1
                if outcome == _CONNECT_FAILURE:
                    self._connect_failures += 1
            rtt = record.first_byte - record.started
            if rtt < self._penalty:
                rtt = self._penalty
        # Peak EWMA (Finagle): a slower observation replaces the average at
        # once; faster ones pull it down with weight exp(-elapsed / decay).
        now = self._now()
        cost, stamp = self.ewma_state
        if rtt > cost:
            self.ewma_state = (rtt, now)
        else:
            elapsed = now - stamp
            w = _exp(-elapsed / self.decay) if elapsed > 0.0 else 1.0
            self.ewma_state = (cost * w + rtt * (1.0 - w), now)

    # -- reads (lock-free) -----------------------------------------------------

    @property
    def active(self) -> int:
        """Attempts in flight on this host now."""
        return len(self.inflight)

    @property
    def requests(self) -> int:
        """Attempts sent to this host so far."""
        return _position(self._started)

    @property
    def successes(self) -> int:
        return _position(self._succeeded)

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def connect_failures(self) -> int:
        return self._connect_failures

    def ewma(self, now: float | None = None) -> float:
        """The latency average decayed to ``now``; ``default_rtt`` before any observation."""
        cost, stamp = self.ewma_state
        if cost == 0.0:
            return self.default_rtt
        if now is None:
            now = self._now()
        return cost * math.exp(-max(now - stamp, 0.0) / self.decay)

    @property
    def last_observed(self) -> float:
        """When the latency average last took an observation (``monotonic``)."""
        return self.ewma_state[1]

    @property
    def observed(self) -> bool:
        """Whether any attempt on this host has been timed yet."""
        return self.ewma_state[0] != 0.0

    @property
    def mean_latency(self) -> float:
        n = self.successes
        return self.latency_total / n if n else 0.0

    def __repr__(self) -> str:
        return f"Host({self.endpoint.address}, active={self.active}, requests={self.requests})"
