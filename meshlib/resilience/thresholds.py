"""Envoy's per-cluster circuit-breaker thresholds: caps on concurrent work.

Four counters, each with a limit (defaults as Envoy's
``envoy.config.cluster.v3.CircuitBreakers.Thresholds``, priority DEFAULT):

=====================  =======  =======  ===========================================
threshold              meshlib  Envoy    on overflow (Envoy's stat)
=====================  =======  =======  ===========================================
max_connections        1024     1024     ``CircuitOpenError`` (upstream_cx_overflow)
max_pending_requests   1024     1024     ``CircuitOpenError`` from ``acquire_pending``; a Call
                                         waiting out a back-off skips the retry instead
                                         (upstream_rq_pending_overflow)
max_requests           1024     1024     ``CircuitOpenError`` (Envoy also counts it as
                                         upstream_rq_pending_overflow)
max_retries            3        3        ``acquire_retry()`` returns False: the retry is
                                         simply not attempted (upstream_rq_retry_overflow)
=====================  =======  =======  ===========================================

``max_retries`` caps retries *in flight across the cluster* at once, not
retries per request (Envoy's per-request ``num_retries`` is the retry policy's
business). A limit of 0 admits nothing. Each ``acquire_*`` that succeeds must be
paired with its ``release_*`` (use ``try``/``finally``); a release below zero is
ignored rather than going negative.

The per-attempt pair (:meth:`acquire_attempt` / :meth:`release_attempt`) takes
no lock: attempts in flight are a list each acquire appends to and each release
pops from (single C calls, atomic in CPython), so the count is exact. As in
Envoy, whose resource managers compare an atomic count with the limit and then
increment it, concurrent acquires may overshoot a limit by the number of
threads racing for its last slot; nothing is ever left held. The rarer pairs
(pending, retries, connections alone) and the overflow counts use a lock.
"""

from __future__ import annotations

import threading

from ..errors import CircuitOpenError, ConfigError

__all__ = ["Thresholds"]

_REQUESTS, _PENDING, _RETRIES, _CONNECTIONS = range(4)
_NAMES = ("max_requests", "max_pending_requests", "max_retries", "max_connections")
_COUNTERS = ("requests", "pending_requests", "retries", "connections")


class Thresholds:
    """One cluster's circuit-breaker thresholds and their live counters."""

    __slots__ = ("service", "_limits", "_active", "_overflow", "_lock", "_attempts")

    def __init__(
        self,
        max_requests: int = 1024,
        max_pending_requests: int = 1024,
        max_retries: int = 3,
        max_connections: int = 1024,
        *,
        service: str = "",
    ) -> None:
        limits = (max_requests, max_pending_requests, max_retries, max_connections)
        for name, value in zip(_NAMES, limits):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, value, "a whole number >= 0")
        self.service = service
        self._limits = limits
        self._active = [0, 0, 0, 0]
        self._overflow = [0, 0, 0, 0]
        self._lock = threading.Lock()
        #: Attempts in flight: each holds a request and a connection.
        self._attempts: list[None] = []

    # -- the one mechanism ----------------------------------------------------

    def _try(self, i: int) -> bool:
        in_flight = len(self._attempts) if i in (_REQUESTS, _CONNECTIONS) else 0
        with self._lock:
            if self._active[i] + in_flight >= self._limits[i]:
                self._overflow[i] += 1
                return False
            self._active[i] += 1
            return True

    def _acquire_or_raise(self, i: int) -> None:
        if not self._try(i):
            raise CircuitOpenError(self.service, f"{_NAMES[i]} ({self._limits[i]}) reached")

    def _release(self, i: int) -> None:
        with self._lock:
            if self._active[i] > 0:
                self._active[i] -= 1

    # -- public pairs ---------------------------------------------------------

    def acquire_request(self) -> None:
        """Admit one request or raise ``CircuitOpenError`` naming ``max_requests``."""
        self._acquire_or_raise(_REQUESTS)

    def release_request(self) -> None:
        self._release(_REQUESTS)

    def acquire_pending(self) -> None:
        """Queue one request waiting for a connection, or raise naming ``max_pending_requests``."""
        self._acquire_or_raise(_PENDING)

    def release_pending(self) -> None:
        self._release(_PENDING)

    def acquire_attempt(self) -> None:
        """One attempt goes out: it takes a request and a connection together,
        or raises ``CircuitOpenError`` naming whichever limit is reached."""
        attempts = self._attempts
        if len(attempts) + self._active[_REQUESTS] < self._limits[_REQUESTS] and len(attempts) + self._active[_CONNECTIONS] < self._limits[_CONNECTIONS]:
            attempts.append(None)
            return
        active, limits = self._active, self._limits
        i = _REQUESTS if len(attempts) + active[_REQUESTS] >= limits[_REQUESTS] else _CONNECTIONS
        with self._lock:
            self._overflow[i] += 1
        raise CircuitOpenError(self.service, f"{_NAMES[i]} ({limits[i]}) reached")

    def release_attempt(self) -> None:
        try:
            self._attempts.pop()
        except IndexError:
            pass

    def attempt_ended(self, host: object, record: object) -> None:
        """As an observer of finished attempts: :meth:`release_attempt`."""
        try:
            self._attempts.pop()
        except IndexError:
            pass

    def acquire_retry(self) -> bool:
        """Start one retry; False (and an overflow counted) when ``max_retries`` are in flight."""
        return self._try(_RETRIES)

    def release_retry(self) -> None:
        self._release(_RETRIES)

    def acquire_connection(self) -> None:
        """Open one connection or raise ``CircuitOpenError`` naming ``max_connections``."""
        self._acquire_or_raise(_CONNECTIONS)

    def release_connection(self) -> None:
        self._release(_CONNECTIONS)

    # -- reads ----------------------------------------------------------------

    @property
    def limits(self) -> dict[str, int]:
        return dict(zip(_NAMES, self._limits))

    def snapshot(self) -> dict[str, int]:
        """Limits, current values and overflow counts, e.g. ``max_requests``,
        ``requests``, ``requests_overflow`` (likewise ``pending_requests``,
        ``retries``, ``connections``)."""
        with self._lock:
            active, overflow = list(self._active), list(self._overflow)
        attempts = len(self._attempts)
        active[_REQUESTS] += attempts
        active[_CONNECTIONS] += attempts
        out: dict[str, int] = {}
        for i, counter in enumerate(_COUNTERS):
            out[_NAMES[i]] = self._limits[i]
            out[counter] = active[i]
            out[f"{counter}_overflow"] = overflow[i]
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{c}={a}/{lim}" for c, a, lim in zip(_COUNTERS, self._active, self._limits))
        return f"Thresholds({self.service!r}, {parts})"
