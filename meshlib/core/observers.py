"""One feedback path: every finished attempt, as one record, to a tuple of observers.

The cluster builds its observer tuple once, from its configuration: the load
metric (the host's in-flight count and peak EWMA), the circuit-breaker
thresholds, outlier detection and per-endpoint breakers when they are on, and
whatever extra observers the Mesh adds (telemetry) — a policy that is off is
simply not in the tuple. Each attempt's end is one loop over it
(:func:`notify`), as grpc-go's wrapped pickers chain ``Done``.

An observer is anything with ``attempt_ended(host, record)``; the cluster
keeps the bound methods, so each observer costs one call per attempt (the
load metric is ``Host.attempt_ended``, the thresholds and the outlier detector
are their own observers). One that raises is logged once (per observer) and
counted in ``observer_errors``; it never fails the call, and the observers
after it still run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Hashable, Protocol, Sequence

from .._tally import Tally
from ..outcome import AttemptRecord, Outcome
from ..resilience.breaker import CircuitBreaker
from .host import Host

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Observer", "ObserverFactory", "AttemptEnded", "notify", "observer_errors", "observer_failed", "EndpointBreakerFeed"]

log = logging.getLogger("meshlib")


class Observer(Protocol):
    def attempt_ended(self, host: Host, record: AttemptRecord) -> None:
        """An attempt on ``host`` is over (its answer fully read); never blocks."""
        ...


#: What the cluster calls per finished attempt: an observer's bound ``attempt_ended``.
AttemptEnded = Callable[[Host, AttemptRecord], None]

#: Builds an extra observer for one cluster (``None``: nothing to observe there).
ObserverFactory = Callable[["Cluster"], "Observer | None"]

#: Observer failures since the process started (each failing observer is logged once).
observer_errors = Tally()
_logged: set[int] = set()


def notify(observers: Sequence[AttemptEnded], host: Host, record: AttemptRecord) -> None:
    for attempt_ended in observers:
        try:
            attempt_ended(host, record)
        except Exception:
            observer_failed(attempt_ended)


def observer_failed(attempt_ended: AttemptEnded) -> None:
    """Count an observer's failure; log it (with its traceback) the first time."""
    observer_errors.add()
    owner = getattr(attempt_ended, "__self__", attempt_ended)
    if id(owner) not in _logged:
        _logged.add(id(owner))
        log.exception("meshlib: observer %r failed; the call goes on (logged once per observer)", owner)


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
