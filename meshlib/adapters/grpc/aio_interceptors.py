"""The ``grpc.aio`` client interceptors: a service's policies around a
``grpc.aio`` channel of the caller's own."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import grpc
import grpc.aio

from ...core.driver import run_async, sit_out_fault_async
from ...core.services import Services
from ...endpoint import Endpoint
from ... import telemetry
from ...errors import MeshError
from ...outcome import AttemptResult
from .aio_calls import UnaryResponseCall, answer
from .aio_stream import book_later
from .errors import aio_aborted, aio_rpc_error, settle
from .own_channel import InterceptorBase
from .replay import AsyncReplay
from .status import EXCHANGE, with_attempt

__all__ = ["MeshAioClientInterceptor", "aio_interceptors"]


def _aio_details(details: Any, timeout: float | None, metadata: Any) -> Any:
    md = metadata if metadata is None or isinstance(metadata, grpc.aio.Metadata) else grpc.aio.Metadata.from_tuple(tuple(metadata))
    return details._replace(timeout=timeout, metadata=md)


class _InterceptedUnaryResponse(UnaryResponseCall):
    """A client-streaming call through :class:`MeshAioClientInterceptor`: the
    attempt loop over ``continuation``, each attempt reading the request
    stream again from the start. Returned to grpc.aio before the call ends,
    because grpc.aio routes ``write()`` through the interceptor's call."""

    #: grpc.aio's intercepted calls read this of the call an interceptor returns.
    _done_writing_flag = False

    def __init__(self, interceptor: InterceptorBase, continuation: Callable[..., Any], details: Any, request_iterator: Any) -> None:
        self._requests = requests = AsyncReplay(request_iterator)
        call = interceptor.start(details.timeout)
        metadata = details.metadata
        self._rpc = (details.method, metadata)  # telemetry: the call's RPC name and metadata

        async def send(ep: Endpoint, limit: float | None) -> Any:
            rpc = await continuation(_aio_details(details, limit, telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)), requests.view())
            return await answer(rpc)

        self._start(call, send, details.timeout)



class MeshAioClientInterceptor(InterceptorBase):
    """The ``grpc.aio`` counterpart of
    :class:`~meshlib.adapters.grpc.MeshClientInterceptor`. grpc.aio files each
    interceptor under one kind of call, so ``mesh.grpc_interceptors("svc",
    aio=True)`` returns four, one per kind, sharing their statistics: pass them
    all to ``grpc.aio.insecure_channel(target, interceptors=...)``.
    Unary-response calls are retried and hedged (a request stream is replayed
    to each attempt, up to 256 KiB, as on the mesh channel); response streams
    get admission, the deadline and bookkeeping."""

    async def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        call = self.start(client_call_details.timeout)
        metadata = client_call_details.metadata

        async def send(ep: Endpoint, limit: float | None) -> Any:
            details = _aio_details(client_call_details, limit, telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep))
            rpc = await continuation(details, request)
            try:
                await rpc
            except grpc.RpcError as err:
                return err
            return rpc

        try:
            with telemetry.call(call.cluster, rpc=client_call_details.method, headers=metadata):  # telemetry: the call's scope
                result = await run_async(call, send, EXCHANGE, aio_aborted)
            return settle(call, result, aio_rpc_error)
        except MeshError as exc:
            raise aio_rpc_error(exc) from exc.__cause__

    async def _stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        with telemetry.call(self.cluster, rpc=details.method, headers=details.metadata, stream=True):  # telemetry: the stream's scope, ended with it
            return await self._start_stream(continuation, details, request)

    async def _start_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        call = self.start(details.timeout)
        try:
            fault = call.begin()
        except MeshError as exc:
            raise aio_rpc_error(exc) from exc.__cause__
        try:
            if fault is not None and await sit_out_fault_async(call, fault):
                raise aio_aborted(fault)
            host = call.pick(None)
        except BaseException as exc:
            call.finish()
            if isinstance(exc, MeshError):
                raise aio_rpc_error(exc) from exc.__cause__
            raise
        perf_counter = call.cluster.clock.perf_counter
        started = perf_counter()
        rpc = await continuation(_aio_details(details, call.remaining(), telemetry.inject(list(details.metadata or ()), host.endpoint)), request)
        first: list[float] = []  # when the answer's headers (initial metadata) came: its first byte

        async def headers() -> None:
            try:
                await rpc.initial_metadata()
            except (Exception, asyncio.CancelledError):  # it failed first: its end is its first byte
                return
            first.append(perf_counter())

        heard = asyncio.get_running_loop().create_task(headers())

        def book(result: AttemptResult, heard: Any = heard) -> None:  # (holds the task)
            call.done(host, started, result, decide=False, first_byte=first[0] if first else None)
            call.finish()

        rpc.add_done_callback(lambda _rpc: book_later(book, rpc))
        return rpc

    async def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return await self._stream(continuation, client_call_details, request)

    async def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any) -> Any:
        return _InterceptedUnaryResponse(self, continuation, client_call_details, request_iterator)

    async def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any) -> Any:
        return await self._stream(continuation, client_call_details, request_iterator)


class AioUnaryUnaryInterceptor(MeshAioClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    pass


class AioUnaryStreamInterceptor(MeshAioClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    pass


class AioStreamUnaryInterceptor(MeshAioClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    pass


class AioStreamStreamInterceptor(MeshAioClientInterceptor, grpc.aio.StreamStreamClientInterceptor):
    pass


def aio_interceptors(mesh: "Services", name: str) -> list[MeshAioClientInterceptor]:
    first = AioUnaryUnaryInterceptor(mesh, name)
    rest = [cls(mesh, name, share=first) for cls in (AioUnaryStreamInterceptor, AioStreamUnaryInterceptor, AioStreamStreamInterceptor)]
    return [first, *rest]
