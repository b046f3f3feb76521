"""How an attempt ended: the vocabulary every policy, observer and adapter shares.

:class:`Outcome` names the kinds of ending in Envoy's outlier-detection terms;
:class:`AttemptResult` is the verdict the retry policy reads (adapters produce
both at their boundary); :class:`AttemptRecord` is the one record of a
finished attempt that the cluster hands to its observers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .endpoint import Endpoint

__all__ = ["Outcome", "AttemptResult", "AttemptRecord"]


class Outcome:
    """How an attempt ended, in the vocabulary of Envoy's outlier detection."""

    SUCCESS = "success"
    #: The server answered with an error (HTTP 5xx, a failing gRPC status).
    FAILURE = "failure"
    #: No connection could be made: the request provably never reached the server.
    CONNECT_FAILURE = "connect_failure"
    #: The TLS handshake failed: the server's certificate failed verification,
    #: or it is not an identity the service may present (``TLS_SPIFFE_IDS``, or
    #: the DNS name). Local origin, like a connect failure: nothing was sent.
    #: Never retried (the same endpoint would present the same certificate).
    TLS_FAILURE = "tls_failure"
    #: The connection broke after the request was sent.
    RESET = "reset"
    #: The server refused an HTTP/2 stream before processing it (safe to retry).
    REFUSED_STREAM = "refused_stream"
    TIMEOUT = "timeout"
    #: The wrapped function raised something meshlib does not classify.
    ERROR = "error"
    #: A hedged attempt abandoned because another one answered first: no verdict.
    CANCELLED = "cancelled"

    LOCAL_ORIGIN = frozenset({CONNECT_FAILURE, TLS_FAILURE, RESET, REFUSED_STREAM, TIMEOUT})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended, as the retry policy sees it.

    ``outcome`` is a ``Outcome`` value (or :data:`REFUSED_STREAM`);
    ``status`` the HTTP status if a response arrived; ``grpc_status`` the gRPC
    status name (``"UNAVAILABLE"``; a numeric ``"14"`` is read too);
    ``retry_after`` the server's pushback in seconds (``parse_retry_after``,
    ``parse_grpc_pushback``), ``DO_NOT_RETRY`` if it asked for no retry;
    ``load`` the server's raw load report of this response, if it sent one
    (``endpoint-load-metrics`` header or ORCA trailer; parsed by its observer).
    """

    outcome: str
    status: int | None = None
    grpc_status: str | None = None
    retry_after: float | None = None
    load: str | bytes | None = None


class AttemptRecord(NamedTuple):
    """One finished attempt, as every observer sees it (immutable).

    Times are the cluster clock's ``perf_counter`` readings: ``started`` when
    the attempt went out, ``first_byte`` when its answer began (response
    headers, the first message; the end, for an attempt that failed before
    any answer), ``ended`` when the answer was over (a streamed body fully
    read, closed or dropped). ``retry`` / ``hedge`` say whether the attempt
    was a retry or a hedge of the call; ``attempt`` is its number in the call
    (1 for the first); ``bytes`` the response body size where known;
    ``load`` the server's raw load report (see :class:`AttemptResult`);
    ``tag`` whatever was current in ``core.call.call_tag`` when the call
    began (telemetry's scope of the call: an observer finds the call an
    attempt belongs to from its record, even when a stream ends it later).
    """

    endpoint: Endpoint
    started: float
    first_byte: float
    ended: float
    outcome: str
    status: int | None = None
    grpc_status: str | None = None
    attempt: int = 1
    retry: bool = False
    hedge: bool = False
    bytes: int | None = None
    load: str | bytes | None = None
    tag: object = None

    @property
    def latency(self) -> float:
        """Time to first byte: what the load metric (EWMA) sees."""
        return self.first_byte - self.started

    @property
    def duration(self) -> float:
        """The attempt's whole time, streamed body included."""
        return self.ended - self.started
