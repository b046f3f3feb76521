"""What the sync and asyncio response streams share: one call pinned to the
endpoint of its current attempt, committed by its first message.

Streams (``unary_stream``, ``stream_stream``) are pinned to the endpoint
picked when they start. Until the first response message arrives they are
not committed (gRFC A6) and a failed attempt may be retried elsewhere, with
the request messages sent so far replayed (see :mod:`.replay`); after that
an error reaches the caller. Streams do not hedge.

Every decision between two attempts is the core's (``core.driver.Attempts``,
as for unary calls); a stream only reads and sleeps. The committed attempt's
answer is deferred (``Exchange.defer``): it stays in flight, holding its
``max_requests`` slot and its host's active count, until the stream ends —
read to the end, failed mid-stream, cancelled or dropped — and the load
metric sees its time to the first message.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc

from ... import telemetry
from ...core.call import Call
from ...core.driver import Attempts
from ...core.exchange import End
from ...core.host import Host
from ...outcome import AttemptResult, Outcome
from .errors import RpcStatusError, rpc_error, settle
from .future import CANCELLED_DETAILS
from .pool import Subchannel
from .replay import ReplayBuffer
from .status import OK_RESULT, SC, GrpcExchange, due, hash_header, with_attempt

__all__ = ["Attempt", "PinnedStream", "StreamExchange", "END", "NONE"]

END = object()  # a stream that ended before its first message
NONE = object()  # no first message held back
_CANCELLED = AttemptResult(Outcome.CANCELLED)
_ERROR = AttemptResult(Outcome.ERROR)


class Attempt:
    """One attempt of a response stream: its host, channel and library call;
    once committed, ``end`` reports its end to the core."""

    __slots__ = ("host", "sub", "rpc", "started", "terminated", "booked", "end")

    def __init__(self, host: Host, sub: Subchannel, rpc: Any, started: float) -> None:
        self.host = host
        self.sub = sub
        self.rpc = rpc
        self.started = started
        self.terminated = False  # the library says the call is over
        self.booked = False  # its record went to the core (or is on its way)
        self.end: End | None = None


class StreamExchange(GrpcExchange):
    """A response stream's results: a failed attempt is judged by its status;
    a request stream can be sent again while its replay buffer holds it; an
    answer that began is deferred until the stream ends."""

    def __init__(self, requests: ReplayBuffer | None) -> None:
        self.requests = requests

    def rewind(self) -> bool:
        return self.requests is None or not self.requests.overflowed

    def defer(self, result: Any, end: End) -> bool:
        result.end = end  # the committed Attempt
        return True


class PinnedStream:
    """The attempts of one response stream, read by a sync or asyncio reader."""

    _m: Any
    #: Has the library report when an attempt is over (each stream class says how).
    _watch: Callable[[Attempt], None]
    #: Makes meshlib's errors the library's (grpc.aio: ``AioRpcError``).
    _convert: Callable[[BaseException], BaseException] = staticmethod(rpc_error)

    def _setup(self, m: Any, request: Any, requests: ReplayBuffer | None, timeout: float | None, metadata: Any, kw: dict[str, Any]) -> None:
        self._m = m
        self._request = request
        self._requests = requests
        self._metadata = metadata
        self._kw = kw
        self._finished = False
        self._committed = False
        self._cancelled = False
        self._first: Any = NONE
        self._error: BaseException | None = None
        self._attempt: Attempt | None = None
        cluster = m.owner.cluster
        #: Telemetry's scope of the stream (entered around its start; its
        #: attempts' records name it, so it ends with the stream).
        self._scope = telemetry.call(cluster, rpc=m.method, headers=metadata, stream=True)
        self._scope.start()
        self._call: Call = cluster.start_call(hash_header(cluster, metadata), True, timeout)
        self._until = due(self._call, timeout)
        self._attempts = Attempts(self._call, StreamExchange(requests))

    def _over(self) -> None:
        """The call is finished (a hook for done-callbacks)."""

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._finished = self._committed = True
        self._call.finish()
        self._scope.close(error)
        self._over()

    def _launch(self, host: Host) -> None:
        """Start an attempt on ``host`` (picked by the core)."""
        call = self._call
        started = call.cluster.clock.perf_counter()
        m = self._m
        try:
            sub = m.owner.pool.acquire(host.endpoint)
        except BaseException:
            call.ended(host, started, _ERROR)
            raise
        try:
            mc = sub.callable(m.key, m.make)
            request = self._requests.view() if self._requests is not None else self._request
            rpc = mc(request, timeout=call.remaining(), metadata=telemetry.inject(list(with_attempt(self._metadata, call.attempt) or ()), host.endpoint, self._scope), **self._kw)
        except BaseException:
            sub.release()
            call.ended(host, started, _ERROR)
            raise
        self._attempt = attempt = Attempt(host, sub, rpc, started)
        self._watch(attempt)

    def _failed_early(self, attempt: Attempt, err: grpc.RpcError) -> float | None:
        """An uncommitted attempt failed: the delay before the next one, or
        None (``err``, or the deadline, is the answer)."""
        if attempt.booked:
            self._answer(err)
            return None
        attempt.booked = True
        attempt.sub.release()
        if self._cancelled:
            self._call.ended(attempt.host, attempt.started, _CANCELLED)
            delay = None
        else:
            delay = self._attempts.answered(attempt.host, attempt.started, err)
        if delay is None:
            self._answer(err)
        return delay

    def _next_attempt(self) -> None:
        """After the back-off: the next attempt, or the last answer if none can
        follow (CANCELLED, if the caller cancelled the stream meanwhile)."""
        if self._cancelled:
            self._fail(self._convert(RpcStatusError(SC.CANCELLED, CANCELLED_DETAILS)))
            return
        host = self._attempts.next_host()
        if host is None:
            self._answer(self._attempts.result())
        else:
            self._launch(host)

    def _answer(self, err: BaseException) -> None:
        """The call ends with ``err`` (an expired deadline as meshlib's error)."""
        try:
            settle(self._call, err, self._convert)
        except BaseException as final:
            err = final
        self._fail(err)

    def _commit_to(self, attempt: Attempt, first: Any) -> bool:
        """The first message (or the end) arrived: commit. The attempt stays
        in flight until the stream ends. True if it is already over and its
        end still to be reported."""
        self._first = first
        self._committed = True
        if self._requests is not None:
            self._requests.commit()
        self._attempts.answered(attempt.host, attempt.started, attempt, OK_RESULT)
        self._call.finish()  # the call is over; its answer is still streaming
        self._scope.close()
        return attempt.terminated and not attempt.booked

    def _ended(self, attempt: Attempt, verdict: AttemptResult) -> None:
        """The committed attempt's stream is over: report how it ended."""
        attempt.booked = True
        attempt.sub.release()
        if attempt.end is not None:
            attempt.end(None if verdict.outcome == Outcome.SUCCESS else verdict.outcome)
        self._finished = True
        self._over()

    def _cancel_pending(self) -> bool:
        """``cancel()`` found no attempt to cancel: True if the stream is
        between two attempts (no further one will start), as grpcio's cancel
        of a call still running."""
        return not self._finished and not self._committed

    def _dropped(self, attempt: Attempt) -> None:
        """Nobody reads the stream any more: its attempt ends as cancelled."""
        if self._committed:
            self._ended(attempt, _CANCELLED)
            return
        attempt.booked = True
        attempt.sub.release()
        self._call.ended(attempt.host, attempt.started, _CANCELLED)
        self._finished = True
        self._call.finish()
        self._scope.close()
