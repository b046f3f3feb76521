"""How a gRPC status counts: its HTTP equivalent, its outcome class, the
server's pushback, and the exchange the attempt drivers read results through.

The status's HTTP equivalent, by Envoy's ``Grpc::Utility::grpcToHttpStatus``
(``source/common/grpc/status.cc``), is what outlier detection counts, as
Envoy's router does for gRPC responses; ``retry_on`` matches the status name
(``unavailable``, ``deadline-exceeded``, ...).

A status received from the server is never a connect failure, whatever its
text (``backend db: Connection refused`` is the server's answer). Only the
status grpc-core makes itself when a pick found no connection (details that
begin ``failed to connect to all addresses`` or ``DNS resolution failed``)
proves the RPC never left, and counts as a connect failure (the default
``retry_on`` retries it on another endpoint, like gRPC's transparent
retries); if its words say the TLS handshake was refused (the server's
certificate failed verification or its name check), it is a TLS failure,
local origin too but never retried. One raised because the connection broke
is a reset; a locally expired per-attempt deadline is a timeout.
"""

from __future__ import annotations

import ssl
from typing import Any

import grpc

from ...core.call import Call
from ...core.cluster import Cluster
from ...core.exchange import Exchange
from ...health.load import orca_trailer, with_load_report
from ...outcome import AttemptResult, Outcome
from ...resilience.backoff import parse_grpc_pushback

__all__ = ["SC", "GRPC_TO_HTTP", "OK_RESULT", "judge_rpc", "judge_finished", "code_of", "GrpcExchange", "EXCHANGE", "NoReportsExchange", "NO_REPORTS", "hash_header", "with_attempt", "time_left", "due"]

SC = grpc.StatusCode

#: Envoy's gRPC -> HTTP status mapping (``Grpc::Utility::grpcToHttpStatus``):
#: what outlier detection counts for a gRPC answer.
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    SC.OK: 200,
    SC.CANCELLED: 499,
    SC.UNKNOWN: 500,
    SC.INVALID_ARGUMENT: 400,
    SC.DEADLINE_EXCEEDED: 504,
    SC.NOT_FOUND: 404,
    SC.ALREADY_EXISTS: 409,
    SC.PERMISSION_DENIED: 403,
    SC.RESOURCE_EXHAUSTED: 429,
    SC.FAILED_PRECONDITION: 400,
    SC.ABORTED: 409,
    SC.OUT_OF_RANGE: 400,
    SC.UNIMPLEMENTED: 501,
    SC.INTERNAL: 500,
    SC.UNAVAILABLE: 503,
    SC.DATA_LOSS: 500,
    SC.UNAUTHENTICATED: 401,
}

#: Statuses a ``retry_on`` condition names: never a success, whatever their HTTP code.
_RETRYABLE_CODES = frozenset({SC.CANCELLED, SC.DEADLINE_EXCEEDED, SC.RESOURCE_EXHAUSTED, SC.INTERNAL, SC.UNAVAILABLE})

#: How grpc-core's own status begins when a pick found no connection (the
#: RPC never left this process). Matched at the start only: the same words
#: inside a server's message are that server's answer.
_NEVER_SENT = ("failed to connect to all addresses", "DNS resolution failed")
#: grpc-core's words, after ``_NEVER_SENT``, for a handshake it refused: a
#: certificate that failed verification, a host name not in it.
_TLS_REFUSED = ("handshake failed", "Handshake failed", "CERTIFICATE_VERIFY_FAILED", "Verification Check failed", "Peer name")
#: grpc-core's words for a connection that broke after the RPC was sent.
_CONNECTION_LOST = ("Socket closed", "Connection reset", "Broken pipe", "Stream removed", "GOAWAY", "Connection timed out", "keepalive watchdog")

PUSHBACK_KEY = "grpc-retry-pushback-ms"
#: Envoy's attempt header (``include_request_attempt_count``), sent on retries
#: and hedges. (gRFC A6's ``grpc-previous-rpc-attempts`` is reserved: grpc-core
#: strips it from application metadata and sends it only for its own retries.)
ATTEMPT_COUNT_KEY = "x-envoy-attempt-count"
#: The per-call retry buffer for request streams (gRPC's per_rpc_retry_buffer_size).


def code_of(name: str) -> grpc.StatusCode:
    """The status code called ``name`` (``"unavailable"``, ``"UNAVAILABLE"``)."""
    return SC[name.strip().upper()]


OK_RESULT = AttemptResult(Outcome.SUCCESS, 200, "OK")
_PLAIN: dict[tuple[grpc.StatusCode, str], AttemptResult] = {}


def judge_finished(rpc: Any) -> AttemptResult:
    """How a finished sync call counts: one the caller cancelled says nothing
    about the host (``CANCELLED``, as the asyncio adapter's ``verdict``);
    otherwise :func:`judge_rpc`."""
    cancelled = getattr(rpc, "cancelled", None)
    if cancelled is not None and cancelled():
        return _CANCELLED_RESULT
    return with_load_report(judge_rpc(rpc), orca_trailer(rpc))


_CANCELLED_RESULT = AttemptResult(Outcome.CANCELLED)


def judge_rpc(rpc: Any) -> AttemptResult:
    """How one finished gRPC attempt counts: ``rpc`` is a ``grpc.RpcError`` (or
    any object with ``code()``, ``details()`` and ``trailing_metadata()``)."""
    code = rpc.code()
    if code is SC.OK:
        return OK_RESULT
    outcome = Outcome.FAILURE
    if code is SC.UNAVAILABLE:
        details = rpc.details() or ""
        if details.startswith(_NEVER_SENT):
            outcome = Outcome.TLS_FAILURE if any(words in details for words in _TLS_REFUSED) else Outcome.CONNECT_FAILURE
        elif any(words in details for words in _CONNECTION_LOST):
            outcome = Outcome.RESET
    elif code is SC.DEADLINE_EXCEEDED:
        outcome = Outcome.TIMEOUT
    status = GRPC_TO_HTTP.get(code, 500)
    if outcome == Outcome.FAILURE and status < 500 and code not in _RETRYABLE_CODES:
        outcome = Outcome.SUCCESS  # the server answered (like an HTTP 4xx)
    pushback = _pushback(rpc)
    if pushback is None:
        key = (code, outcome)
        result = _PLAIN.get(key)
        if result is None:
            result = _PLAIN.setdefault(key, AttemptResult(outcome, status, code.name))
        return result
    return AttemptResult(outcome, status, code.name, retry_after=pushback)


def _pushback(rpc: Any) -> float | None:
    try:
        trailing = rpc.trailing_metadata()
    except Exception:  # a call that never started has none
        return None
    for key, value in trailing or ():
        if key == PUSHBACK_KEY:
            return parse_grpc_pushback(value.decode() if isinstance(value, bytes) else value)
    return None


# -- exchange -----------------------------------------------------------------------


class GrpcExchange(Exchange):
    """Attempts return their ``grpc.RpcError`` instead of raising it, so the
    status (not just an outcome) reaches the retry policy and outlier detection."""

    def classify(self, exc: BaseException) -> str:
        # What an attempt raises comes from before its RPC: the SPIFFE ID
        # pre-check's own connection (meshlib.security.grpc_tls) to an endpoint
        # that refuses it or does not answer is a connect failure (retried on
        # another endpoint, as grpc-core's own is); a refused handshake is a TLS
        # failure (``outcome_of``); anything else is unclassified.
        if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
            return Outcome.CONNECT_FAILURE
        return Outcome.ERROR

    def judge(self, result: Any) -> AttemptResult:
        if isinstance(result, grpc.RpcError):
            return judge_finished(result)  # one the caller cancelled is never retried
        return with_load_report(OK_RESULT, orca_trailer(result[1] if type(result) is tuple else result))


EXCHANGE = GrpcExchange()


class NoReportsExchange(GrpcExchange):
    """:class:`GrpcExchange` for a service that reads no load reports: an
    answer's trailers are not searched for one (nothing would read it)."""

    def judge(self, result: Any) -> AttemptResult:
        if isinstance(result, grpc.RpcError):
            return judge_finished(result)
        return OK_RESULT


NO_REPORTS = NoReportsExchange()


# -- call inputs --------------------------------------------------------------------


def hash_header(cluster: Cluster, metadata: Any) -> str | None:
    """The ring_hash / maglev key: the configured header's value in the call's metadata."""
    if not cluster.hashing or not metadata:
        return None
    name = cluster.config.hash_header
    if not name:
        return None
    for key, value in metadata:
        if key == name:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def with_attempt(metadata: Any, attempt: int) -> Any:
    """``metadata``, plus ``x-envoy-attempt-count`` on a retry or hedge (attempt 2 and up)."""
    if attempt <= 1:
        return metadata
    return (*(metadata or ()), (ATTEMPT_COUNT_KEY, str(attempt)))


def time_left(call: Call, until: float | None) -> float | None:
    """What is left of ``call``'s deadline; before the call began (``begin``
    fixes its deadline), of the caller's own timeout, due at ``until`` on the
    cluster's clock (None: no timeout)."""
    if call.deadline is not None:
        return call.remaining()
    return None if until is None else until - call.cluster.clock.monotonic()


def due(call: Call, timeout: float | None) -> float | None:
    """When a caller's ``timeout`` from now runs out, on ``call``'s cluster clock."""
    return None if timeout is None else call.cluster.clock.monotonic() + timeout
