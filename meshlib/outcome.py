"""How an attempt ended: the vocabulary every policy, observer and adapter shares.

:class:`Outcome` names the kinds of ending in Envoy's outlier-detection terms;
:class:`AttemptResult` is the verdict the retry policy reads; adapters produce
both at their boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Outcome", "AttemptResult"]


class Outcome:
    """How an attempt ended, in the vocabulary of Envoy's outlier detection."""

    SUCCESS = "success"
    #: The server answered with an error (HTTP 5xx, a failing gRPC status).
    FAILURE = "failure"
    #: No connection could be made: the request provably never reached the server.
    CONNECT_FAILURE = "connect_failure"
    #: The connection broke after the request was sent.
    RESET = "reset"
    #: The server refused an HTTP/2 stream before processing it (safe to retry).
    REFUSED_STREAM = "refused_stream"
    TIMEOUT = "timeout"
    #: The wrapped function raised something meshlib does not classify.
    ERROR = "error"
    #: A hedged attempt abandoned because another one answered first: no verdict.
    CANCELLED = "cancelled"

    LOCAL_ORIGIN = frozenset({CONNECT_FAILURE, RESET, REFUSED_STREAM, TIMEOUT})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended, as the retry policy sees it.

    ``outcome`` is a ``Outcome`` value (or :data:`REFUSED_STREAM`);
    ``status`` the HTTP status if a response arrived; ``grpc_status`` the gRPC
    status name (``"UNAVAILABLE"``; a numeric ``"14"`` is read too);
    ``retry_after`` the server's pushback in seconds (``parse_retry_after``,
    ``parse_grpc_pushback``), ``DO_NOT_RETRY`` if it asked for no retry.
    """

    outcome: str
    status: int | None = None
    grpc_status: str | None = None
    retry_after: float | None = None
