"""``.future()`` of unary-response calls: a ``grpc.Future`` that is live at
once and can be cancelled while it runs, as grpcio's own.

The call's attempt loop (retries, hedges) runs on a worker thread; each
attempt hands its grpcio call to :meth:`FutureCall.track`, so ``cancel()``
reaches the attempt in progress, and no further attempt starts after it.
A caller that waits for the result without a timeout before a worker took
the call runs the loop on its own thread instead, which saves the thread hop.
(grpcio's blocking ``__call__`` / ``with_call`` through an interceptor needs
no future at all: the interceptor runs the call at once.)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import threading
from typing import Any, Callable

import grpc

from ...core.call import Call
from .errors import RpcStatusError
from .status import SC

__all__ = ["Cancelled", "FutureCall", "StatusOf", "Workers"]

#: grpcio's details for a call its caller cancelled.
CANCELLED_DETAILS = "Locally cancelled by application!"


class Cancelled(BaseException):
    """Raised inside a call's attempt loop once its caller cancelled it, so no
    further attempt is sent. A ``BaseException``: the attempt counts as
    cancelled (it says nothing about the host) and is never retried."""


class StatusOf:
    """``grpc.Call``'s status methods, read from the call ``_status_source()`` names."""

    _status_source: Callable[[], Any]

    def initial_metadata(self) -> Any:
        return self._status_source().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._status_source().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._status_source().code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._status_source().details()  # type: ignore[no-any-return]


class Workers:
    """Threads for ``.future()`` calls, made on first use and shut down by
    :meth:`close` (a Mesh closes it with itself)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._pool: cf.ThreadPoolExecutor | None = None

    def get(self) -> cf.ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = cf.ThreadPoolExecutor(max_workers=32, thread_name_prefix=f"meshlib-grpc-{self._name}")
                pool = self._pool
        return pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_CANCELLED_STATUS = RpcStatusError(SC.CANCELLED, CANCELLED_DETAILS)


class FutureCall(StatusOf, grpc.Future, grpc.Call):
    """A unary-response call as a ``grpc.Future`` and, once finished, a ``grpc.Call``.

    ``body(self)`` runs the whole call and returns ``(response, call)`` or
    raises its error; its attempts call :meth:`check` before sending and
    :meth:`track` / :meth:`untrack` around their grpcio call."""

    def __init__(self, body: Callable[["FutureCall"], tuple[Any, Any]], executor: cf.Executor, call: Call) -> None:
        self._body = body
        self.call = call
        self._future: cf.Future[tuple[Any, Any]] = cf.Future()
        self._claim = threading.Lock()
        self._lock = threading.Lock()
        self._cancelled = False
        self._rpcs: set[Any] = set()
        executor.submit(contextvars.copy_context().run, self._drive)

    def _drive(self) -> None:
        """Run the call, unless another thread took it (or it was cancelled first)."""
        if not self._claim.acquire(blocking=False) or self._cancelled:
            return
        try:
            outcome = self._body(self)
        except BaseException as exc:
            self._settle(self._future.set_exception, exc)
            if not isinstance(exc, (Exception, Cancelled)):
                raise
        else:
            self._settle(self._future.set_result, outcome)

    @staticmethod
    def _settle(setter: Callable[[Any], None], value: Any) -> None:
        try:
            setter(value)
        except cf.InvalidStateError:  # cancelled meanwhile: the caller has its answer
            pass

    # -- what the attempts use ---------------------------------------------------

    def check(self) -> None:
        """Raise :class:`Cancelled` if the caller cancelled the call."""
        if self._cancelled:
            raise Cancelled()

    def track(self, rpc: Any) -> None:
        """An attempt's grpcio call started: ``cancel()`` cancels it from now on."""
        with self._lock:
            if not self._cancelled:
                self._rpcs.add(rpc)
                return
        rpc.cancel()

    def untrack(self, rpc: Any) -> None:
        with self._lock:
            self._rpcs.discard(rpc)

    # -- grpc.Future ---------------------------------------------------------------

    def cancel(self) -> bool:
        with self._lock:
            if self._future.done():
                return False
            self._cancelled = True
            rpcs = list(self._rpcs)
        cancelled = self._future.cancel()  # done callbacks run now, as grpcio's
        if cancelled:
            self._future.set_running_or_notify_cancel()  # wakes those waiting in result()
        for rpc in rpcs:
            rpc.cancel()
        return cancelled

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def running(self) -> bool:
        return not self._future.done()

    def done(self) -> bool:
        return self._future.done()

    def _wait(self, timeout: float | None) -> None:
        """Wait until the call is over; raise grpcio's errors for a timeout or a cancelled call."""
        future = self._future
        if not future.done():
            if timeout is None:
                self._drive()
            if not cf.wait((future,), timeout).done:
                raise grpc.FutureTimeoutError()
        if future.cancelled():
            raise grpc.FutureCancelledError()

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        return self._future.result()[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._future.exception()

    def traceback(self, timeout: float | None = None) -> Any:
        exc = self.exception(timeout)
        return None if exc is None else exc.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    # -- grpc.Call -----------------------------------------------------------------

    def _status_source(self) -> Any:
        try:
            exc = self.exception()
        except grpc.FutureCancelledError:
            return _CANCELLED_STATUS
        return exc if exc is not None else self._future.result()[1]

    def is_active(self) -> bool:
        return not self._future.done()

    def time_remaining(self) -> float | None:
        call = self.call
        return None if call.deadline is None else max(0.0, call.remaining() or 0.0)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._future.done():
            return False
        self._future.add_done_callback(lambda _f: callback())
        return True
