"""One feedback path: every finished attempt, as one record, to a tuple of observers.

The cluster builds its observer tuple once, from its configuration: the load
metric (the host's in-flight count and peak EWMA), the circuit-breaker
thresholds, outlier detection and per-endpoint breakers when they are on, and
whatever extra observers the Mesh adds (telemetry) — a policy that is off is
simply not in the tuple. Each attempt's end is one loop over it
(:func:`notify`), as grpc-go's wrapped pickers chain ``Done``.

An observer is anything with ``attempt_ended(host, record)``. One that raises
is logged once (per observer) and counted in ``observer_errors``; it never
fails the call, and the observers after it still run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Hashable, Protocol, Sequence

from .._tally import Tally
from ..outcome import AttemptRecord, Outcome
from ..resilience.breaker import CircuitBreaker
from ..resilience.outlier import OutlierDetector
from ..resilience.thresholds import Thresholds
from .host import Host

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Observer", "ObserverFactory", "notify", "observer_errors", "LoadMetric", "ThresholdRelease", "OutlierFeed", "EndpointBreakerFeed"]

log = logging.getLogger("meshlib")


class Observer(Protocol):
    def attempt_ended(self, host: Host, record: AttemptRecord) -> None:
        """An attempt on ``host`` is over (its answer fully read); never blocks."""
        ...


#: Builds an extra observer for one cluster (``None``: nothing to observe there).
ObserverFactory = Callable[["Cluster"], "Observer | None"]

#: Observer failures since the process started (each failing observer is logged once).
observer_errors = Tally()
_logged: set[int] = set()


def notify(observers: Sequence[Observer], host: Host, record: AttemptRecord) -> None:
    for observer in observers:
        try:
            observer.attempt_ended(host, record)
        except Exception:
            observer_failed(observer)


def observer_failed(observer: Observer) -> None:
    """Count an observer's failure; log it (with its traceback) the first time."""
    observer_errors.add()
    if id(observer) not in _logged:
        _logged.add(id(observer))
        log.exception("meshlib: observer %r failed; the call goes on (logged once per observer)", observer)


class LoadMetric:
    """The host's own statistics: in-flight count, outcomes, peak EWMA of the
    time to first byte (what peak_ewma and least_request read)."""

    __slots__ = ()

    def attempt_ended(self, host: Host, record: AttemptRecord) -> None:
        host.done(record.first_byte - record.started, record.outcome)


class ThresholdRelease:
    """Gives back the request and connection an attempt held (Envoy's
    circuit-breaker thresholds), once the answer is over."""

    __slots__ = ("_release",)

    def __init__(self, thresholds: Thresholds) -> None:
        self._release = thresholds.release_attempt

    def attempt_ended(self, host: Host, record: AttemptRecord) -> None:
        self._release()


class OutlierFeed:
    """Outlier detection counts every attempt with a verdict; an ejection
    rebuilds the cluster's picker at once."""

    __slots__ = ("_record", "_cluster")

    def __init__(self, detector: OutlierDetector, cluster: "Cluster") -> None:
        self._record = detector.record
        self._cluster = cluster

    def attempt_ended(self, host: Host, record: AttemptRecord) -> None:
        outcome = record.outcome
        if outcome != Outcome.CANCELLED and self._record(host.key, outcome, record.status):
            log.warning("meshlib: %s endpoint %s ejected (outlier detection)", self._cluster.name, host.endpoint.address)
            self._cluster.rebuild()


class EndpointBreakerFeed:
    """Per-endpoint breakers (``breaker=endpoint``) see each attempt on their endpoint."""

    __slots__ = ("_breakers",)

    def __init__(self, breakers: Callable[[], dict[Hashable, CircuitBreaker]]) -> None:
        self._breakers = breakers

    def attempt_ended(self, host: Host, record: AttemptRecord) -> None:
        if record.outcome == Outcome.CANCELLED:
            return
        breaker = self._breakers().get(host.key)
        if breaker is not None:
            breaker.on_result(record.outcome == Outcome.SUCCESS, record.first_byte - record.started)
