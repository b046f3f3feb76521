"""Unary-response ``grpc.aio`` calls on a MeshAioChannel: a task running
the attempt loop (``meshlib.core.driver.run_async``) on the caller's loop,
started at once; awaiting the call gives the response. Hedged attempts are
tasks, and the losers are cancelled. Errors are ``grpc.aio.AioRpcError``
(meshlib's own, such as an expired deadline, derive from it too)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Generator

import grpc
import grpc.aio

from ...core.call import Call
from ...core.driver import run_async
from ...core.exchange import Exchange
from ...endpoint import Endpoint
from ... import telemetry
from ...errors import MeshError
from .errors import aio_aborted, aio_rpc_error, settle
from .future import CANCELLED_DETAILS
from .replay import AsyncReplay, ReplayExchange
from .status import EXCHANGE, SC, due, hash_header, time_left, with_attempt

if TYPE_CHECKING:
    from .aio_channel import AioMethod

__all__ = ["UnaryResponseCall", "Writes", "answer", "maybe_await"]


class Writes:
    """``write()`` / ``done_writing()`` of a request-streaming aio call."""

    _requests: AsyncReplay | None

    async def write(self, request: Any) -> None:
        if self._requests is None:
            raise grpc.aio.UsageError("write() is for request-streaming calls")
        await self._requests.write(request)

    async def done_writing(self) -> None:
        if self._requests is None:
            raise grpc.aio.UsageError("done_writing() is for request-streaming calls")
        await self._requests.done_writing()


async def answer(rpc: Any) -> Any:
    """A unary-response attempt's outcome: (response, rpc), or its RpcError."""
    try:
        response = await rpc
    except grpc.RpcError as err:
        return err
    return response, rpc


class UnaryResponseCall(Writes, grpc.aio.UnaryUnaryCall, grpc.aio.StreamUnaryCall):
    """A unary-response mesh call: a task running the attempt loop, started
    at once on the caller's loop; awaiting it gives the response."""

    def __init__(self, m: "AioMethod", request: Any, streaming: bool, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: bool | None, compression: Any) -> None:
        owner = m.owner
        cluster = owner.cluster
        key, make = m.key, m.make
        self._requests = requests = AsyncReplay(request) if streaming else None
        call = cluster.start_call(hash_header(cluster, metadata), True, timeout)
        self._rpc = (key[1], metadata)  # telemetry: the call's RPC name and metadata

        async def send(ep: Endpoint, limit: float | None) -> Any:
            sub = owner.pool.acquire(ep)
            try:
                mc = sub.callable(key, make)
                md = telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)  # telemetry: the attempt's span and trace metadata
                rpc = mc(request if requests is None else requests.view(), timeout=limit, metadata=md, credentials=credentials, wait_for_ready=wait_for_ready, compression=compression)
                return await answer(rpc)
            finally:
                sub.release()

        self._start(call, send, timeout)

    def _start(self, call: Call, send: Callable[[Endpoint, float | None], Any], timeout: float | None) -> None:
        self._call = call
        self._until = due(call, timeout)
        self._final: Any = None
        self._callbacks: list[Callable[[Any], None]] = []
        self._cancelled = False
        self._task = asyncio.get_running_loop().create_task(self._run(call, send))
        self._task.add_done_callback(self._fire)

    async def _run(self, call: Call, send: Callable[[Endpoint, float | None], Any]) -> Any:
        requests = self._requests
        exchange: Exchange = EXCHANGE if requests is None else ReplayExchange(requests)
        try:
            with telemetry.call(call.cluster, rpc=self._rpc[0], headers=self._rpc[1]):  # telemetry: the call's scope
                result = await run_async(call, send, exchange, aio_aborted)
            self._final = result if isinstance(result, grpc.RpcError) else result[1]
            return settle(call, result, aio_rpc_error)[0]
        except grpc.RpcError as err:
            self._final = err
            raise
        except MeshError as exc:
            err = aio_rpc_error(exc)
            self._final = err
            raise err from exc.__cause__

    def _fire(self, _task: Any) -> None:
        for cb in self._callbacks:
            cb(self)
        self._callbacks = []

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    async def _finished(self) -> Any:
        try:
            await self._task
        except (grpc.RpcError, asyncio.CancelledError):
            pass
        return self._final

    # grpc.aio.Call
    def cancel(self) -> bool:
        if self._task.cancel():
            self._cancelled = True  # cancelled now, as grpc.aio's, not when the task next runs
        return self._cancelled

    def cancelled(self) -> bool:
        return self._cancelled or self._task.cancelled()

    def done(self) -> bool:
        return self._cancelled or self._task.done()

    def time_remaining(self) -> float | None:
        return time_left(self._call, self._until)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._task.done():
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> Any:
        final = await self._finished()
        return grpc.aio.Metadata() if final is None else await maybe_await(final.initial_metadata())

    async def trailing_metadata(self) -> Any:
        final = await self._finished()
        return grpc.aio.Metadata() if final is None else await maybe_await(final.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        final = await self._finished()
        if final is None:
            return SC.CANCELLED
        return await maybe_await(final.code())  # type: ignore[no-any-return]

    async def details(self) -> str:
        final = await self._finished()
        if final is None:
            return CANCELLED_DETAILS
        return await maybe_await(final.details())  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await self._finished()


async def maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future) else value
