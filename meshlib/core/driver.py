"""The attempt loop: one decision core, a thin sync driver and a thin async one.

Every decision between two attempts lives in :class:`Attempts` (and, for a
hedged call, in ``core.hedging``): the next host, the answer or error being
retried, whether the request can be sent again, the delay. :func:`run` and
:func:`run_async` only send, wait and sleep — on the cluster's clock.

An adapter supplies ``send(endpoint, timeout)`` (one attempt against an
endpoint within ``timeout`` seconds, None for no limit) and an
:class:`Exchange` that reads its library's results: the
:class:`~meshlib.outcome.Outcome` of an exception, the
:class:`~meshlib.outcome.AttemptResult` of a response, how to let go of a
response that is being retried, whether the request can be sent again
(``rewind``), and whether an answer handed back is still streaming
(``defer``); optionally ``abort``, the response a call aborted by fault
injection answers.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from ..errors import FaultInjectedError
from ..health.load.queue import first_pick, first_pick_async
from ..outcome import AttemptResult, Outcome
from ..resilience.fault import FaultDecision
from .call import Call
from .exchange import Exchange, outcome_of
from .hedging import hedged, hedged_async
from .host import Host

__all__ = ["Exchange", "Attempts", "run", "run_async", "sit_out_fault", "sit_out_fault_async"]

T = TypeVar("T")

Abort = Callable[[FaultDecision], Any]
_NO_DEFER = Exchange.defer
_OK = Outcome.SUCCESS
_NONE = object()


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
        await call.cluster.clock.sleep_async(fault.delay)
        call.fault_delayed()
    return fault.abort_status is not None


class Attempts:
    """One call's attempts in sequence: every decision between two attempts,
    shared by :func:`run` and :func:`run_async` (and gRPC's pinned streams),
    which only send and sleep."""

    __slots__ = ("call", "ex", "failure", "previous", "streams")

    def __init__(self, call: Call, ex: Exchange) -> None:
        self.call = call
        self.ex = ex
        #: Whether this exchange's answers may stream (it overrides ``defer``).
        self.streams = type(ex).defer is not Exchange.defer
        self.failure: BaseException | None = None  # the last attempt's exception
        self.previous: Any = _NONE  # a response being retried, returned if no attempt can follow

    def answered(self, host: Host, started: float, result: Any, verdict: AttemptResult | None = None) -> float | None:
        """The attempt answered: the delay before a retry, or None to return
        ``result`` (its attempt then ends now, or when its stream ends)."""
        call, ex = self.call, self.ex
        if verdict is None:
            verdict = ex.judge(result)
        if verdict.outcome == _OK and (verdict.status is None or verdict.status < 400):
            call.ok = True
            if not (self.streams and ex.defer(result, call.ended_later(host, started, verdict))):
                call.ended(host, started, verdict)
            return None
        call.ended(host, started, verdict)
        delay = call.decide(verdict)
        if delay is None or not self._may_resend() or not call.enter_pending():
            return None
        self.previous, self.failure = result, None
        return delay

    def failed(self, host: Host, started: float, exc: BaseException) -> float | None:
        """The attempt raised: the delay before the next one, or None to re-raise
        (``DeadlineExceededError`` instead, if the call's deadline has passed)."""
        call = self.call
        verdict = AttemptResult(outcome_of(self.ex, exc))
        call.ended(host, started, verdict)
        delay = call.decide(verdict)
        if delay is None or not self._may_resend() or not call.enter_pending():
            if call.is_expired():
                call.expired(exc)
            return None
        self.failure = exc
        return delay

    def _may_resend(self) -> bool:
        if self.ex.rewind():
            return True
        self.call.skip_retry("retries_skipped_body")
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

    def result(self) -> Any:
        return self.previous


def run(call: Call, send: Callable[[Any, float | None], T], ex: Exchange, abort: Abort | None = None) -> T:
    fault = call.begin()
    try:
        if fault is not None and sit_out_fault(call, fault):
            return _abort(call, fault, abort)  # type: ignore[no-any-return]
        if call.hedging:
            return hedged(call, send, ex)
        perf_counter = call.cluster.clock.perf_counter
        reports = call.cluster.load_reports  # load_saturation=wait: the first pick goes through the wait queue
        host: Host | None = call.pick(None) if reports is None or reports.queue is None else first_pick(call)
        started = perf_counter()
        try:
            result = send(host.endpoint, call.attempt_timeout())  # type: ignore[union-attr]
        except BaseException as exc:
            attempts = Attempts(call, ex)
            if (delay := attempts.failed(host, started, exc)) is None:  # type: ignore[arg-type]
                raise
        else:
            # The common case first: one attempt, a clean answer, nothing streaming.
            verdict = ex.judge(result)
            if verdict.outcome == _OK and (verdict.status is None or verdict.status < 400) and type(ex).defer is _NO_DEFER:
                call.ok = True
                call.ended(host, started, verdict)  # type: ignore[arg-type]
                return result
            attempts = Attempts(call, ex)
            if (delay := attempts.answered(host, started, result, verdict)) is None:  # type: ignore[arg-type]
                return result
        while True:
            call.sleep(delay)
            host = attempts.next_host()
            if host is None:
                return attempts.result()  # type: ignore[no-any-return]
            started = perf_counter()
            try:
                result = send(host.endpoint, call.attempt_timeout())
            except BaseException as exc:
                if (delay := attempts.failed(host, started, exc)) is None:
                    raise
            else:
                if (delay := attempts.answered(host, started, result)) is None:
                    return result
    finally:
        call.finish()


async def run_async(call: Call, send: Callable[[Any, float | None], Awaitable[T]], ex: Exchange, abort: Abort | None = None) -> T:
    fault = call.begin()
    try:
        if fault is not None and await sit_out_fault_async(call, fault):
            return _abort(call, fault, abort)  # type: ignore[no-any-return]
        if call.hedging:
            return await hedged_async(call, send, ex)
        perf_counter = call.cluster.clock.perf_counter
        reports = call.cluster.load_reports  # load_saturation=wait: the first pick goes through the wait queue
        host: Host | None = call.pick(None) if reports is None or reports.queue is None else await first_pick_async(call)
        started = perf_counter()
        try:
            result = await send(host.endpoint, call.attempt_timeout())  # type: ignore[union-attr]
        except BaseException as exc:
            attempts = Attempts(call, ex)
            if (delay := attempts.failed(host, started, exc)) is None:  # type: ignore[arg-type]
                raise
        else:
            # The common case first: one attempt, a clean answer, nothing streaming.
            verdict = ex.judge(result)
            if verdict.outcome == _OK and (verdict.status is None or verdict.status < 400) and type(ex).defer is _NO_DEFER:
                call.ok = True
                call.ended(host, started, verdict)  # type: ignore[arg-type]
                return result
            attempts = Attempts(call, ex)
            if (delay := attempts.answered(host, started, result, verdict)) is None:  # type: ignore[arg-type]
                return result
        while True:
            await call.sleep_async(delay)
            host = attempts.next_host()
            if host is None:
                return attempts.result()  # type: ignore[no-any-return]
            started = perf_counter()
            try:
                result = await send(host.endpoint, call.attempt_timeout())
            except BaseException as exc:
                if (delay := attempts.failed(host, started, exc)) is None:
                    raise
            else:
                if (delay := attempts.answered(host, started, result)) is None:
                    return result
    finally:
        call.finish()
