"""What the sync and asyncio response streams share: one call pinned to the
endpoint of its current attempt, committed by its first message.

Streams (``unary_stream``, ``stream_stream``) are pinned to the endpoint
picked when they start. Until the first response message arrives they are
not committed (gRFC A6) and a failed attempt may be retried elsewhere, with
the request messages sent so far replayed (see :mod:`.replay`); after that
an error reaches the caller. Streams do not hedge.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import grpc

from ...core.host import Host
from ...errors import DeadlineExceededError
from ...outcome import AttemptResult, Outcome
from .errors import rpc_error
from .pool import Subchannel
from .status import SC, hash_header, judge_rpc, with_attempt

__all__ = ["Attempt", "PinnedStream", "END", "NONE"]

END = object()  # a stream that ended before its first message
NONE = object()  # no first message held back


class Attempt:
    """One attempt of a response stream: its host, channel and grpcio call."""

    __slots__ = ("host", "sub", "rpc", "started", "terminated", "booked")

    def __init__(self, host: Host, sub: Subchannel, rpc: Any, started: float) -> None:
        self.host = host
        self.sub = sub
        self.rpc = rpc
        self.started = started
        self.terminated = False
        self.booked = False


class PinnedStream:
    """What the sync and aio response streams share: one call pinned to the
    endpoint of its current attempt, committed by its first message.

    An attempt that ends before committing is booked by the reader, who may
    retry it; the committed one is booked when the library reports it over,
    its latency being the time to the first message."""

    _m: Any
    #: Makes meshlib's errors the library's (grpc.aio: ``AioRpcError``).
    _convert: Callable[[BaseException], BaseException] = staticmethod(rpc_error)
    #: Has the library report when an attempt is over (each stream class says how).
    _watch: Callable[[Attempt], None]

    def _setup(self, m: Any, request: Any, requests: Any, timeout: float | None, metadata: Any, kw: dict[str, Any]) -> None:
        self._m = m
        self._request = request
        self._requests = requests
        self._metadata = metadata
        self._kw = kw
        self._finished = False
        self._committed = False
        self._cancelled = False
        self._first: Any = NONE
        self._first_at = 0.0
        self._error: BaseException | None = None
        self._attempt: Attempt | None = None
        cluster = m.owner.cluster
        self._call = cluster.start_call(hash_header(cluster, metadata), True, timeout)

    def _over(self) -> None:
        """The call is finished (a hook for done-callbacks)."""

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._finished = self._committed = True
        self._call.finish()
        self._over()

    def _launch(self, failure: BaseException | None) -> None:
        call = self._call
        host = call.pick(failure)
        started = time.perf_counter()
        m = self._m
        try:
            sub = m.owner.pool.acquire(host.endpoint)
        except BaseException:
            call.done(host, started, AttemptResult(Outcome.ERROR), decide=False)
            raise
        try:
            mc = sub.callable(m.key, m.make)
            request = self._requests.view() if self._requests is not None else self._request
            rpc = mc(request, timeout=call.remaining(), metadata=with_attempt(self._metadata, call.attempt), **self._kw)
        except BaseException:
            sub.release()
            call.done(host, started, AttemptResult(Outcome.ERROR), decide=False)
            raise
        self._attempt = attempt = Attempt(host, sub, rpc, started)
        self._watch(attempt)

    def _book(self, attempt: Attempt, verdict: AttemptResult, decide: bool = False) -> float | None:
        """Record a finished attempt; for an uncommitted failure, the retry delay."""
        attempt.booked = True
        attempt.sub.release()
        started = attempt.started
        if self._committed and verdict.outcome == Outcome.SUCCESS:
            started += time.perf_counter() - self._first_at  # latency: to the first message
        if self._requests is not None:
            verdict = self._requests.final(verdict)
        delay = self._call.done(attempt.host, started, verdict, decide=decide)
        if delay is None:
            self._finished = True
            self._call.finish()
            self._over()
        return delay

    def _commit_to(self, attempt: Attempt, first: Any) -> bool:
        """The first message (or the end) arrived: commit. True if the attempt
        is already over and still to be booked."""
        self._first = first
        self._first_at = time.perf_counter()
        self._committed = True
        if self._requests is not None:
            self._requests.commit()
        return attempt.terminated and not attempt.booked

    def _retry_delay(self, attempt: Attempt, err: grpc.RpcError) -> float | None:
        """An uncommitted attempt failed: book it and return the delay before
        the next one, or None (``err``, or the deadline, is the answer)."""
        if attempt.booked:
            self._error, self._committed = err, True
            return None
        if self._cancelled:
            self._book(attempt, AttemptResult(Outcome.CANCELLED))
            self._error, self._committed = err, True
            return None
        delay = self._book(attempt, judge_rpc(err), decide=True)
        if delay is not None and self._call.enter_pending():
            return delay
        if delay is not None:
            self._finished = True
            self._call.finish()
            self._over()
        self._error, self._committed = err, True
        if err.code() is SC.DEADLINE_EXCEEDED and self._call.is_expired():
            try:
                self._call.expired(err)
            except DeadlineExceededError as exc:
                self._error = self._convert(exc)
        return None


