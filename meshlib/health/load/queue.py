"""The client-side wait queue of ``load_saturation=wait``: when every endpoint
is saturated, a call waits here for one to free up instead of piling onto a
saturated server.

A call's first attempt picks through :func:`first_pick` (sync) or
:func:`first_pick_async` (asyncio). With no queue (``spill``, ``fail``) that
is the call's own pick. With one, a pick that finds every endpoint saturated
(the picker raises ``EndpointsSaturatedError``) joins the queue, unless
``load_wait_queue`` calls already wait: then it fails fast with
``EndpointsSaturatedError`` saying the queue is full. Waiters are served in
arrival order: only the head picks again, and a new call queues behind
waiters instead of taking a freed endpoint from them. The head wakes when
something may have freed an endpoint: a load report arrived, an attempt
ended (``LoadReports`` calls :meth:`SaturationQueue.wake`), or the earliest
fresh report goes stale; and each waiter wakes at its deadline, which it
never waits past (then ``DeadlineExceededError``). A call leaving the queue
(served, expired or cancelled) wakes the next head. Every wait is on the
cluster's clock (``Clock.wait`` / ``wait_async``), so a ``ManualClock`` makes
it exact. Retries and hedges do not queue: like ``fail``, they end the call
with the previous attempt's answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections import deque
from typing import Any, Callable, Iterable

from ...clock import Clock
from ...errors import EndpointsSaturatedError

__all__ = ["SaturationQueue", "first_pick", "first_pick_async"]

#: A head re-checks this long after the earliest fresh report goes stale (reports are stale only when strictly older).
_PAST = 0.001


class _Waiter:
    """One waiting call: the future its current wait is on (sync or asyncio)."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: Any = None

    def arm(self) -> Any:
        """A fresh future to wait on (made before the head picks, so a wake between its pick and its wait is kept)."""
        self.future = cf.Future() if self.loop is None else self.loop.create_future()
        return self.future

    def wake(self) -> None:
        future = self.future
        if future is None:
            return
        if self.loop is None:
            if not future.done():
                try:
                    future.set_result(None)
                except cf.InvalidStateError:  # woken twice at once
                    pass
        else:
            try:
                self.loop.call_soon_threadsafe(_set, future)
            except RuntimeError:  # its loop is closed: nobody waits any more
                pass


def _set(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class SaturationQueue:
    """One service's wait queue (held by its ``LoadReports``, which wakes it)."""

    def __init__(self, service: str, size: int, clock: Clock, hosts: Callable[[], Iterable[Any]], max_age: float) -> None:
        self.service = service
        self.size = size
        self._clock = clock
        self._hosts = hosts
        self._max_age = max_age
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        #: Calls that waited, were served after waiting, were refused (queue full), ran out of time waiting.
        self.waited = self.served = self.rejected = self.expired = 0
        self.deepest = 0

    # -- events ----------------------------------------------------------------

    def wake(self) -> None:
        """Something may have freed an endpoint: the head picks again."""
        if not self._waiters:  # the common case, no lock
            return
        with self._lock:
            if self._waiters:
                self._waiters[0].wake()

    def wake_all(self) -> None:
        """Every waiter looks again (the service was reconfigured or closed)."""
        with self._lock:
            for waiter in self._waiters:
                waiter.wake()

    # -- waiting ---------------------------------------------------------------

    def _join(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter:
        with self._lock:
            waiting = len(self._waiters)
            if waiting >= self.size:
                self.rejected += 1
                raise EndpointsSaturatedError(self.service, "wait", waiting=waiting)
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
            self.waited += 1
            self.deepest = max(self.deepest, waiting + 1)
            return waiter

    def _leave(self, waiter: _Waiter) -> None:
        with self._lock:
            head = bool(self._waiters) and self._waiters[0] is waiter
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            if head and self._waiters:
                self._waiters[0].wake()  # the next in line looks now

    def _is_head(self, waiter: _Waiter) -> bool:
        with self._lock:
            return self._waiters[0] is waiter

    def _recheck(self) -> float:
        """Seconds until the earliest fresh report goes stale (a stale report
        no longer saturates its endpoint); ``max_age`` if none is fresh."""
        now = self._clock.monotonic()
        max_age = self._max_age
        soonest = max_age
        for host in self._hosts():
            report = host.load
            if report is not None and now - report.at <= max_age:
                soonest = min(soonest, report.at + max_age - now)
        return max(soonest, 0.0) + _PAST

    def _turn(self, call: Any, waiter: _Waiter) -> tuple[Any, float | None]:
        """One look: (the host, if the head got one; else how long to wait)."""
        left = call.remaining()
        if left is not None and left <= 0:
            with self._lock:
                self.expired += 1
            call.expired()
        if self._is_head(waiter):
            try:
                host = call.pick(None)
            except EndpointsSaturatedError:
                recheck = self._recheck()
                return None, recheck if left is None or recheck < left else left
            with self._lock:
                self.served += 1
            return host, None
        return None, left

    def _at_once(self, call: Any) -> Any:
        """The host, when nobody waits and an endpoint has room now; else None (queue up)."""
        if self._waiters:
            return None
        try:
            return call.pick(None)
        except EndpointsSaturatedError:
            return None

    def pick(self, call: Any) -> Any:
        """``call``'s first host, waiting (blocking this thread) while every endpoint is saturated."""
        host = self._at_once(call)
        if host is not None:
            return host
        waiter = self._join(None)
        try:
            while True:
                future = waiter.arm()
                host, timeout = self._turn(call, waiter)
                if host is not None:
                    return host
                self._clock.wait((future,), timeout)
        finally:
            self._leave(waiter)

    async def pick_async(self, call: Any) -> Any:
        """:meth:`pick` for a call on an event loop (the loop keeps running while it waits)."""
        host = self._at_once(call)
        if host is not None:
            return host
        waiter = self._join(asyncio.get_running_loop())
        try:
            while True:
                future = waiter.arm()
                host, timeout = self._turn(call, waiter)
                if host is not None:
                    return host
                await self._clock.wait_async((future,), timeout)
        finally:
            waiter.future = None
            self._leave(waiter)

    def stats(self) -> dict[str, int]:
        return {
            "size": self.size, "waiting": len(self._waiters), "deepest": self.deepest, "waited": self.waited,
            "served": self.served, "rejected": self.rejected, "expired": self.expired,
        }  # fmt: skip


def _queue(call: Any) -> SaturationQueue | None:
    reports = call.cluster.load_reports
    return None if reports is None else reports.queue


def first_pick(call: Any) -> Any:
    """The host of a call's first attempt: ``call.pick(None)``, or, with
    ``load_saturation=wait``, through the service's wait queue."""
    queue = _queue(call)
    return call.pick(None) if queue is None else queue.pick(call)


async def first_pick_async(call: Any) -> Any:
    """:func:`first_pick` for asyncio callers."""
    queue = _queue(call)
    return call.pick(None) if queue is None else await queue.pick_async(call)
