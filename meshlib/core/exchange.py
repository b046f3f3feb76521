"""How the drivers read one client library's results (one subclass per adapter)."""

from __future__ import annotations

import ssl
from typing import Any, Callable

from ..outcome import AttemptResult, Outcome

__all__ = ["Exchange", "End", "outcome_of"]

#: ``end(outcome=None, nbytes=None)``: a streamed answer is over (see ``Call.ended_later``).
End = Callable[..., None]
_SUCCESS = AttemptResult(Outcome.SUCCESS)


class Exchange:
    """How the drivers read one client library's results. Subclass per adapter."""

    def classify(self, exc: BaseException) -> str:
        return Outcome.ERROR

    def judge(self, result: Any) -> AttemptResult:
        return _SUCCESS

    def discard(self, result: Any) -> None:
        """Let go of a response that will not be returned (its retry goes out)."""

    def rewind(self) -> bool:
        """Make the request ready to be sent again (a body rewound to its
        start); False if it cannot be, then no further attempt is made."""
        return True

    def defer(self, result: Any, end: End) -> bool:
        """``result`` goes back to the caller. Return True if its body is still
        to be read: the adapter then calls ``end(outcome=None, nbytes=None)``
        once, when the body is fully read, closed or dropped (``outcome`` an
        :class:`~meshlib.outcome.Outcome` if it broke mid-body); until then the
        attempt counts as in flight. False: the attempt is over now."""
        return False


def outcome_of(ex: Exchange, exc: BaseException) -> str:
    """The adapter's classification of ``exc``; one it leaves unclassified
    (``ERROR``) whose chain holds an ``ssl.SSLError`` (a certificate that
    failed verification, a SPIFFE ID not accepted, a refused handshake) is a
    ``TLS_FAILURE``: local origin for outlier detection, never retried."""
    # KeyboardInterrupt, CancelledError and the like say nothing about the host.
    if not isinstance(exc, Exception):
        return Outcome.CANCELLED
    outcome = ex.classify(exc)
    if outcome == _ERROR and tls_refused(exc):
        return Outcome.TLS_FAILURE
    return outcome


_ERROR = Outcome.ERROR


def tls_refused(exc: BaseException) -> bool:
    """Whether an ``ssl.SSLError`` is in ``exc``'s chain (its ``reason``, as
    urllib3's MaxRetryError has, its cause, or its context)."""
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, ssl.SSLError):
            return True
        reason = getattr(e, "reason", None)
        e = reason if isinstance(reason, BaseException) else (e.__cause__ or e.__context__)
    return False
