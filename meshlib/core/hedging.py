"""Hedged calls (gRPC's hedging policy): attempts run side by side.

The first attempt goes out at once, each next one ``hedge_delay`` later (at
once after a non-fatal answer, later or never after a server pushback, gRFC
A6), up to ``max_attempts``; every hedge is a retry for the budget. The first
answer that is not non-fatal wins; the others are cancelled (async) or
abandoned and closed when they finish (sync). :class:`Hedge` holds every
decision; :func:`hedged` and :func:`hedged_async` only launch and wait, on the
cluster's clock (so a ``ManualClock`` fixes the exact hedge times).

Sync attempts run on the Mesh's thread pool, each in a copy of the caller's
context; async ones are tasks. A hedged attempt ends (for the observers) when
its answer arrives, streamed bodies included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
from typing import Any, Awaitable, Callable, TypeVar

from ..health.load.queue import first_pick, first_pick_async
from ..outcome import AttemptResult, Outcome
from ..resilience.backoff import DO_NOT_RETRY, MAX_RETRY_AFTER
from .call import Call
from .exchange import Exchange, outcome_of
from .host import Host

__all__ = ["Hedge", "hedged", "hedged_async"]

T = TypeVar("T")

#: Outcomes after which a hedged call sends its next attempt at once.
_NON_FATAL_OUTCOMES = frozenset({Outcome.CONNECT_FAILURE, Outcome.REFUSED_STREAM, Outcome.TIMEOUT})


class Hedge:
    """The state of one hedged call, shared by the sync and async loops."""

    __slots__ = ("call", "ex", "policy", "clock", "launched", "next_at", "last", "have_result", "error", "one_shot", "first")

    def __init__(self, call: Call, ex: Exchange) -> None:
        self.call = call
        self.ex = ex
        self.policy = call.cluster.hedge
        self.clock = call.cluster.clock
        self.launched = 0
        self.next_at = 0.0
        self.last: Any = None
        self.have_result = False
        self.error: BaseException | None = None
        self.one_shot = False
        #: The first attempt's host, picked before the loop (through the wait queue, if the service has one).
        self.first: Host | None = None

    def may_launch(self) -> bool:
        return self.launched < self.policy.max_attempts

    def _stop(self) -> None:
        self.launched = self.policy.max_attempts

    def pick(self) -> Host | None:
        """The next attempt's host, or None if the budget, the body or the
        cluster says no more."""
        call = self.call
        if self.launched > 0:
            if not self.ex.rewind():  # a body that cannot be sent twice never hedges
                call.cluster.count("retries_skipped_body")
                self._stop()
                return None
            if not call.grant_retry("hedges"):
                self._stop()  # the budget is spent: no more hedges
                return None
        try:
            host, self.first = (self.first, None) if self.first is not None else (call.pick(None), None)
        except Exception:
            if self.launched == 0:
                raise
            call.retry_finished()
            self._stop()
            return None
        self.launched += 1
        self.next_at = self.clock.monotonic() + self.policy.delay
        return host

    def wait_time(self) -> float | None:
        waits = []
        if self.may_launch():
            waits.append(max(0.0, self.next_at - self.clock.monotonic()))
        left = self.call.remaining()
        if left is not None:
            waits.append(max(0.0, left))
        return min(waits) if waits else None

    def due(self) -> bool:
        return self.may_launch() and self.clock.monotonic() >= self.next_at

    def finished(self, host: Host, started: float, hedge: bool, result: Any, exc: BaseException | None) -> bool:
        """Book one finished attempt; True if it decides the call."""
        call, ex = self.call, self.ex
        if exc is not None:
            outcome = outcome_of(ex, exc)
            call.ended(host, started, AttemptResult(outcome), hedge=hedge)
            call.ok = False
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
        call.ended(host, started, verdict, hedge=hedge)
        call.ok = verdict.outcome == Outcome.SUCCESS
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
            self._stop()
        else:
            self.next_at = self.clock.monotonic() + min(pushback, MAX_RETRY_AFTER)

    def abandoned(self, host: Host, started: float, hedge: bool, result: Any = None) -> None:
        """A losing attempt is over (cancelled, or finished after the winner)."""
        self.call.ended(host, started, AttemptResult(Outcome.CANCELLED), hedge=hedge)
        if hedge:
            self.call.retry_finished()
        if result is not None:
            self.ex.discard(result)

    def outcome(self) -> Any:
        if self.error is not None and not self.have_result:
            raise self.error
        return self.last


def hedged(call: Call, send: Callable[[Any, float | None], T], ex: Exchange) -> T:
    factory = call.cluster.executor
    if factory is None:
        raise RuntimeError("hedging needs a Cluster owned by a Mesh (for its thread pool)")
    pool: cf.Executor = factory()
    h = Hedge(call, ex)
    clock = h.clock
    pending: dict[cf.Future[Any], tuple[Host, float, bool]] = {}
    h.first = first_pick(call)

    def launch() -> None:
        host = h.pick()
        if host is not None:
            ctx = contextvars.copy_context()
            fut = pool.submit(ctx.run, send, host.endpoint, call.attempt_timeout())
            pending[fut] = (host, clock.perf_counter(), h.launched > 1)

    try:
        launch()
        while pending or h.may_launch():
            done = clock.wait(list(pending), h.wait_time())
            decided = False
            for fut in done:
                host, started, hedge = pending.pop(fut)
                exc = fut.exception()
                decided |= h.finished(host, started, hedge, None if exc is not None else fut.result(), exc)
            if decided:
                return h.outcome()  # type: ignore[no-any-return]
            if call.is_expired():
                call.expired(h.error)
            if h.due():
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


async def hedged_async(call: Call, send: Callable[[Any, float | None], Awaitable[T]], ex: Exchange) -> T:
    h = Hedge(call, ex)
    clock = h.clock
    pending: dict[asyncio.Future[Any], tuple[Host, float, bool]] = {}
    h.first = await first_pick_async(call)

    def launch() -> None:
        host = h.pick()
        if host is not None:
            task = asyncio.ensure_future(send(host.endpoint, call.attempt_timeout()))
            pending[task] = (host, clock.perf_counter(), h.launched > 1)

    try:
        launch()
        while pending or h.may_launch():
            done = await clock.wait_async(list(pending), h.wait_time())
            decided = False
            for task in done:
                host, started, hedge = pending.pop(task)
                exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
                decided |= h.finished(host, started, hedge, None if exc is not None else task.result(), exc)
            if decided:
                return h.outcome()  # type: ignore[no-any-return]
            if call.is_expired():
                call.expired(h.error)
            if h.due():
                launch()
        return h.outcome()  # type: ignore[no-any-return]
    finally:
        for task in pending:
            task.cancel()
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for (host, started, hedge), res in zip(pending.values(), results):
                h.abandoned(host, started, hedge, None if isinstance(res, BaseException) else res)
