"""The ``grpc.aio`` response stream (``unary_stream``, ``stream_stream`` on a
MeshAioChannel), and how a finished ``grpc.aio`` call is booked."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import grpc
import grpc.aio

from ...core.driver import sit_out_fault_async
from ...health.load.queue import first_pick_async
from ...errors import MeshError
from ...outcome import AttemptResult, Outcome
from .aio_calls import Writes, maybe_await
from .errors import aio_aborted, aio_rpc_error
from .future import CANCELLED_DETAILS
from .pinned import NONE, Attempt, PinnedStream
from .replay import AsyncReplay
from ...health.load import orca_trailer, with_load_report
from .status import SC, judge_rpc, time_left

if TYPE_CHECKING:
    from .aio_channel import AioMethod

__all__ = ["AioResponseStream", "verdict", "book_later"]


class AioResponseStream(PinnedStream, Writes, grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):
    """A ``grpc.aio`` response stream pinned to one endpoint; see
    :class:`~.stream.ResponseStream` for when it commits and retries."""

    _convert = staticmethod(aio_rpc_error)

    def __init__(self, m: "AioMethod", request: Any, streaming: bool, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: bool | None, compression: Any) -> None:
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}
        self._setup(m, request, AsyncReplay(request) if streaming else None, timeout, metadata, kw)
        self._callbacks: list[Callable[[Any], None]] = []
        self._opening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        with self._scope.current():  # telemetry: the stream's scope, current while it starts (closed when its call ends)
            await self._start()

    async def _start(self) -> None:
        call = self._call
        try:
            fault = call.begin()
        except MeshError as exc:
            self._error = aio_rpc_error(exc)
            self._finished = self._committed = True
            self._scope.close(exc)
            self._over()
            return
        try:
            if fault is not None and await sit_out_fault_async(call, fault):
                self._fail(aio_aborted(fault))
                return
            self._launch(await first_pick_async(call))
        except Exception as exc:
            self._fail(aio_rpc_error(exc))
        except BaseException:
            self._fail(grpc.aio.AioRpcError(SC.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), CANCELLED_DETAILS))
            raise

    def _watch(self, attempt: Attempt) -> None:
        attempt.rpc.add_done_callback(lambda _rpc: self._terminated(attempt))

    def _terminated(self, attempt: Attempt) -> None:
        attempt.terminated = True
        if attempt is self._attempt and not attempt.booked and self._committed:
            self._book_done(attempt)

    def _book_done(self, attempt: Attempt) -> None:
        attempt.booked = True  # claimed: booked once its status is read
        book_later(lambda v: self._ended(attempt, v), attempt.rpc)

    def _over(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    async def _commit(self) -> None:
        await self._opening
        while not self._committed:
            attempt = self._attempt
            assert attempt is not None
            try:
                first = await attempt.rpc.read()
            except grpc.RpcError as err:
                delay = self._failed_early(attempt, err)
                if delay is None:
                    return
                try:
                    await self._call.sleep_async(delay)
                    self._next_attempt()
                except Exception as exc:
                    self._fail(aio_rpc_error(exc))
                    return
                except BaseException:  # the reader was cancelled in the back-off
                    self._fail(grpc.aio.AioRpcError(SC.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), CANCELLED_DETAILS))
                    raise
                continue
            if self._committed:  # another reader got there first
                if first is not grpc.aio.EOF:
                    self._first = first
                return
            if self._commit_to(attempt, first):
                self._book_done(attempt)

    # -- reading -----------------------------------------------------------------

    async def read(self) -> Any:
        if not self._committed:
            await self._commit()
        if self._error is not None:
            raise self._error
        first = self._first
        if first is not NONE:
            self._first = NONE
            return first
        assert self._attempt is not None
        return await self._attempt.rpc.read()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        while True:
            message = await self.read()
            if message is grpc.aio.EOF:
                return
            yield message

    # -- grpc.aio.Call -----------------------------------------------------------

    async def _final(self) -> Any:
        if not self._committed:
            await self._commit()
        if self._error is not None:
            return self._error
        assert self._attempt is not None
        return self._attempt.rpc

    def cancel(self) -> bool:
        self._cancelled = True
        if not self._opening.done():
            return self._opening.cancel()
        attempt = self._attempt
        if attempt is not None and attempt.rpc.cancel():
            return True
        return self._cancel_pending()

    def cancelled(self) -> bool:
        attempt = self._attempt
        return self._cancelled and (attempt is None or attempt.rpc.cancelled() or not self._committed)

    def done(self) -> bool:
        return self._finished

    def time_remaining(self) -> float | None:
        return time_left(self._call, self._until)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._finished:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> Any:
        return await maybe_await((await self._final()).initial_metadata())

    async def trailing_metadata(self) -> Any:
        return await maybe_await((await self._final()).trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        return await maybe_await((await self._final()).code())  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await maybe_await((await self._final()).details())  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await self._opening
        if self._attempt is not None:
            await self._attempt.rpc.wait_for_connection()


class _Status:
    """The status of a finished ``grpc.aio`` call, with grpc.RpcError's synchronous methods."""

    __slots__ = ("_code", "_details", "_trailing")

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


async def verdict(rpc: Any) -> AttemptResult:
    """How a finished ``grpc.aio`` call counts (its status methods are coroutines)."""
    if rpc.cancelled():
        return AttemptResult(Outcome.CANCELLED)
    status = _Status(await rpc.code(), await rpc.details() or "", await rpc.trailing_metadata())
    return with_load_report(judge_rpc(status), orca_trailer(status))


def book_later(book: Callable[[AttemptResult], Any], rpc: Any) -> None:
    """Book a finished aio call from a done-callback: read its status on the loop first."""

    async def later() -> None:
        book(await verdict(rpc))

    task = asyncio.get_running_loop().create_task(later())
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Task[Any]] = set()
