"""The attempt loop, once for sync and once for async callers.

Both drivers are the same few lines around :class:`~meshlib.core.cluster.Call`,
which holds every decision. An adapter supplies ``send(endpoint, timeout)``
(perform one attempt against an endpoint within ``timeout`` seconds, None for
no limit) and an :class:`Exchange` that reads its library's results: the
:class:`~meshlib.outcome.Outcome` of an exception, the
:class:`~meshlib.resilience.retry.AttemptResult` of a response, and how to let
go of a response that is being retried; optionally ``abort``, the response a
call aborted by fault injection answers.

Hedged calls run their attempts concurrently: on the Mesh's thread pool for
sync callers (each attempt in a copy of the caller's context), as tasks for
async ones. The first answer that is not non-fatal wins; the others are
cancelled (async) or abandoned and closed when they finish (sync).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import time
from time import perf_counter
from typing import Any, Awaitable, Callable, TypeVar

from .cluster import Call
from ..endpoint import Endpoint
from ..errors import FaultInjectedError
from ..outcome import Outcome
from .host import Host
from ..resilience.backoff import DO_NOT_RETRY, MAX_RETRY_AFTER
from ..resilience.fault import FaultDecision
from ..outcome import AttemptResult

T = TypeVar("T")

#: Outcomes after which a hedged call sends its next attempt at once.
_NON_FATAL_OUTCOMES = frozenset({Outcome.CONNECT_FAILURE, Outcome.REFUSED_STREAM, Outcome.TIMEOUT})


class Exchange:
    """How the drivers read one client library's results. Subclass per adapter."""

    def classify(self, exc: BaseException) -> str:
        return Outcome.ERROR

    def judge(self, result: Any) -> AttemptResult:
        return _SUCCESS

    def discard(self, result: Any) -> None:
        """Let go of a response that will not be returned (its retry goes out)."""

    #: False when the request's body can go out only once (a generator, a
    #: stream that cannot seek): the call then never hedges, since hedges
    #: would share the body.
    replayable = True

    def rewind(self) -> bool:
        """Make the request's body ready to be sent again, before every attempt
        after the first; False if it cannot be (a one-shot body an attempt
        began to send): the call then returns the previous answer or raises
        the previous error, and counts ``retries_skipped_body``."""
        return True


Abort = Callable[[FaultDecision], Any]


def _abort(call: Call, fault: FaultDecision, abort: Abort | None) -> Any:
    """What a call aborted by fault injection answers: the adapter's
    synthesized response, or ``FaultInjectedError`` where there is none."""
    if abort is None:
        raise FaultInjectedError(call.cluster.name, fault.abort_status or 0)
    return abort(fault)


def sit_out_fault(call: Call, fault: FaultDecision) -> bool:
    """Sleep out an injected delay (the service timeout then starts afresh,
    as behind Envoy's fault filter); True if the call is to be aborted."""
    if fault.delay:
        call.cluster.clock.sleep(fault.delay)
        call.fault_delayed()
    return fault.abort_status is not None


async def sit_out_fault_async(call: Call, fault: FaultDecision) -> bool:
    """:func:`sit_out_fault` for asyncio callers."""
    if fault.delay:
        await asyncio.sleep(fault.delay)
        call.fault_delayed()
    return fault.abort_status is not None


_SUCCESS = AttemptResult(Outcome.SUCCESS)
_NONE = object()


def _outcome(ex: Exchange, exc: BaseException) -> str:
    # KeyboardInterrupt, CancelledError and the like say nothing about the host.
    return ex.classify(exc) if isinstance(exc, Exception) else Outcome.CANCELLED


class _Attempts:
    """One call's attempts in sequence: every decision between two attempts,
    shared by :func:`run` and :func:`run_async` (which only send and sleep).
    The drivers make one only once a first attempt did not simply succeed."""

    __slots__ = ("call", "ex", "failure", "previous")

    def __init__(self, call: Call, ex: Exchange) -> None:
        self.call = call
        self.ex = ex
        self.failure: BaseException | None = None  # the last attempt's exception
        self.previous: Any = _NONE  # a response being retried, returned if no attempt can follow

    def _may_resend(self) -> bool:
        """A retry was granted: rewind the body for it, or hand the retry back."""
        if self.ex.rewind():
            return True
        self.call.skip_retry()
        return False

    def next_host(self) -> Host | None:
        """The next attempt's host; None when the call should return ``previous``."""
        try:
            host = self.call.pick(self.failure)
        except Exception:
            if self.previous is not _NONE:
                return None
            raise
        if self.previous is not _NONE:
            self.ex.discard(self.previous)
            self.previous = _NONE
        return host

    def failed(self, host: Host, started: float, exc: BaseException) -> float | None:
        """The attempt raised: the delay before the next one, or None to re-raise
        (``DeadlineExceededError`` instead, if the call's deadline has passed)."""
        call = self.call
        delay = call.done(host, started, AttemptResult(_outcome(self.ex, exc)))
        if delay is None or not self._may_resend() or not call.enter_pending():
            if call.is_expired():
                call.expired(exc)
            return None
        self.failure = exc
        return delay

    def retrying(self, result: Any) -> bool:
        """The attempt answered and its verdict asks for a retry: hold the
        response while waiting for it; False to return the response now."""
        call = self.call
        if not self._may_resend() or not call.enter_pending():
            return False
        self.previous, self.failure = result, None
        return True


def run(call: Call, send: Callable[[Endpoint, float | None], T], ex: Exchange, abort: Abort | None = None) -> T:
    fault = call.begin()
    try:
        if fault is not None and sit_out_fault(call, fault):
            return _abort(call, fault, abort)  # type: ignore[no-any-return]
        if call.cluster.hedges and call.hedging and ex.replayable:
            return _hedged(call, send, ex)
        attempts: _Attempts | None = None  # made only if a retry is considered
        host: Host | None = call.pick(None)
        while host is not None:
            started = perf_counter()
            try:
                result = send(host.endpoint, call.attempt_timeout())
            except BaseException as exc:
                attempts = attempts or _Attempts(call, ex)
                if (delay := attempts.failed(host, started, exc)) is None:
                    raise
            else:
                if (delay := call.done(host, started, ex.judge(result))) is None:
                    return result
                attempts = attempts or _Attempts(call, ex)
                if not attempts.retrying(result):
                    return result
            call.sleep(delay)
            host = attempts.next_host()
        return attempts.previous  # type: ignore[union-attr, no-any-return]
    finally:
        call.finish()


async def run_async(call: Call, send: Callable[[Endpoint, float | None], Awaitable[T]], ex: Exchange, abort: Abort | None = None) -> T:
    fault = call.begin()
    try:
        if fault is not None and await sit_out_fault_async(call, fault):
            return _abort(call, fault, abort)  # type: ignore[no-any-return]
        if call.cluster.hedges and call.hedging and ex.replayable:
            return await _hedged_async(call, send, ex)
        attempts: _Attempts | None = None  # made only if a retry is considered
        host: Host | None = call.pick(None)
        while host is not None:
            started = perf_counter()
            try:
                result = await send(host.endpoint, call.attempt_timeout())
            except BaseException as exc:
                attempts = attempts or _Attempts(call, ex)
                if (delay := attempts.failed(host, started, exc)) is None:
                    raise
            else:
                if (delay := call.done(host, started, ex.judge(result))) is None:
                    return result
                attempts = attempts or _Attempts(call, ex)
                if not attempts.retrying(result):
                    return result
            await call.sleep_async(delay)
            host = attempts.next_host()
        return attempts.previous  # type: ignore[union-attr, no-any-return]
    finally:
        call.finish()


# -- hedging -------------------------------------------------------------------------


class _Hedge:
    """The state of one hedged call, shared by the sync and async loops."""

    __slots__ = ("call", "ex", "policy", "launched", "next_at", "last", "have_result", "error")

    def __init__(self, call: Call, ex: Exchange) -> None:
        self.call = call
        self.ex = ex
        self.policy = call.cluster.hedge
        self.launched = 0
        self.next_at = 0.0
        self.last: Any = None
        self.have_result = False
        self.error: BaseException | None = None

    def may_launch(self) -> bool:
        return self.launched < self.policy.max_attempts

    def pick(self) -> Host | None:
        """The next attempt's host, or None if the budget (or the cluster) says no more."""
        call = self.call
        if self.launched > 0 and not (self.ex.rewind() and call.grant_retry("hedges")):
            self.launched = self.policy.max_attempts  # the budget is spent: no more hedges
            return None
        try:
            host = call.pick(None)
        except Exception:
            if self.launched == 0:
                raise
            call.retry_finished()
            self.launched = self.policy.max_attempts
            return None
        self.launched += 1
        self.next_at = time.monotonic() + self.policy.delay
        return host

    def wait_time(self) -> float | None:
        waits = []
        if self.may_launch():
            waits.append(max(0.0, self.next_at - time.monotonic()))
        left = self.call.remaining()
        if left is not None:
            waits.append(max(0.0, left))
        return min(waits) if waits else None

    def finished(self, host: Host, started: float, hedge: bool, result: Any, exc: BaseException | None) -> bool:
        """Book one finished attempt; True if it decides the call."""
        call, ex = self.call, self.ex
        if exc is not None:
            outcome = _outcome(ex, exc)
            call.done(host, started, AttemptResult(outcome), decide=False)
            if hedge:
                call.retry_finished()
            if self.have_result:
                return False
            self.error = exc
            if outcome in _NON_FATAL_OUTCOMES:
                self.next_at = 0.0
                return False
            return True
        verdict = ex.judge(result)
        call.done(host, started, verdict, decide=False)
        if hedge:
            call.retry_finished()
        if self.have_result:
            ex.discard(self.last)
        self.last, self.have_result, self.error = result, True, None
        if self.policy.is_non_fatal(verdict.status, verdict.grpc_status):
            self._pushed_back(verdict.retry_after)
            return False
        return True

    def _pushed_back(self, pushback: float | None) -> None:
        """After a non-fatal answer, the next hedge goes out at once, unless
        the server pushed back (gRFC A6): then after its delay, or never if it
        asked for no more attempts."""
        if pushback is None:
            self.next_at = 0.0
        elif pushback >= DO_NOT_RETRY:
            self.launched = self.policy.max_attempts
        else:
            self.next_at = time.monotonic() + min(pushback, MAX_RETRY_AFTER)

    def abandoned(self, host: Host, started: float, hedge: bool, result: Any = None) -> None:
        """A losing attempt is over (cancelled, or finished after the winner)."""
        self.call.done(host, started, AttemptResult(Outcome.CANCELLED), decide=False)
        if hedge:
            self.call.retry_finished()
        if result is not None:
            self.ex.discard(result)

    def outcome(self) -> Any:
        if self.error is not None and not self.have_result:
            raise self.error
        return self.last


def _hedged(call: Call, send: Callable[[Endpoint, float | None], T], ex: Exchange) -> T:
    factory = call.cluster.executor
    if factory is None:
        raise RuntimeError("hedging needs a Cluster owned by a Mesh (for its thread pool)")
    pool: cf.Executor = factory()
    h = _Hedge(call, ex)
    pending: dict[cf.Future[Any], tuple[Host, float, bool]] = {}

    def launch() -> None:
        host = h.pick()
        if host is not None:
            ctx = contextvars.copy_context()
            fut = pool.submit(ctx.run, send, host.endpoint, call.attempt_timeout())
            pending[fut] = (host, time.perf_counter(), h.launched > 1)

    try:
        launch()
        while pending or h.may_launch():
            if pending:
                done, _ = cf.wait(list(pending), timeout=h.wait_time(), return_when=cf.FIRST_COMPLETED)
            else:  # every attempt so far was non-fatal and the server pushed back
                done = set()
                time.sleep(h.wait_time() or 0.0)
            decided = False
            for fut in done:
                host, started, hedge = pending.pop(fut)
                exc = fut.exception()
                decided |= h.finished(host, started, hedge, None if exc is not None else fut.result(), exc)
            if decided:
                return h.outcome()  # type: ignore[no-any-return]
            if call.is_expired():
                call.expired(h.error)
            if h.may_launch() and time.monotonic() >= h.next_at:
                launch()
        return h.outcome()  # type: ignore[no-any-return]
    finally:
        for fut, (host, started, hedge) in pending.items():
            if fut.cancel():
                h.abandoned(host, started, hedge)
            else:
                fut.add_done_callback(
                    lambda f, host=host, started=started, hedge=hedge: h.abandoned(
                        host, started, hedge, None if f.exception() is not None else f.result()
                    )
                )


async def _hedged_async(call: Call, send: Callable[[Endpoint, float | None], Awaitable[T]], ex: Exchange) -> T:
    h = _Hedge(call, ex)
    pending: dict[asyncio.Task[Any], tuple[Host, float, bool]] = {}

    def launch() -> None:
        host = h.pick()
        if host is not None:
            task = asyncio.ensure_future(send(host.endpoint, call.attempt_timeout()))
            pending[task] = (host, time.perf_counter(), h.launched > 1)

    try:
        launch()
        while pending or h.may_launch():
            if pending:
                done, _ = await asyncio.wait(list(pending), timeout=h.wait_time(), return_when=asyncio.FIRST_COMPLETED)
            else:  # every attempt so far was non-fatal and the server pushed back
                done = set()
                await asyncio.sleep(h.wait_time() or 0.0)
            decided = False
            for task in done:
                host, started, hedge = pending.pop(task)
                exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
                decided |= h.finished(host, started, hedge, None if exc is not None else task.result(), exc)
            if decided:
                return h.outcome()  # type: ignore[no-any-return]
            if call.is_expired():
                call.expired(h.error)
            if h.may_launch() and time.monotonic() >= h.next_at:
                launch()
        return h.outcome()  # type: ignore[no-any-return]
    finally:
        for task in pending:
            task.cancel()
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for (host, started, hedge), res in zip(pending.values(), results):
                h.abandoned(host, started, hedge, None if isinstance(res, BaseException) else res)
