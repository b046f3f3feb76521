"""gRPC asyncio adapter: ``mesh.grpc_aio_channel(name)`` and the ``grpc.aio``
interceptors, on the caller's event loop.

The same design as :mod:`meshlib.adapters.grpc` (whose docstring says how
statuses count, how streams commit and how endpoint channels live), with the
attempt loop of ``core.driver.run_async``: hedged attempts are tasks, and the
losers are cancelled. Per-endpoint ``grpc.aio`` channels belong to the event
loop that made them; :meth:`MeshAioChannel.close` (or ``async with``) closes
them, and ``mesh.close()`` schedules their closing on that loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Sequence

import grpc
import grpc.aio

from ..core.driver import Exchange, run_async, sit_out_fault_async
from ..core.call import Call
from ..endpoint import Endpoint
from ..errors import MeshError
from ..outcome import Outcome
from ..outcome import AttemptResult
from ..core.services import Services
from .. import telemetry
from .grpc import (
    _ENDED,
    _NONE,
    _PULL,
    EXCHANGE,
    _STATE_RANK,
    PinnedStream,
    ReplayBuffer,
    ReplayExchange,
    SC,
    ChannelPool,
    InterceptorBase,
    _aborted,
    _Attempt,
    channel_options,
    hash_header,
    judge_rpc,
    rpc_error,
    settle,
    with_attempt,
)


__all__ = ["MeshAioChannel", "MeshAioClientInterceptor", "aio_channel", "aio_interceptors"]

_EOF = object()  # done_writing() in the request queue


class AsyncReplay(ReplayBuffer):
    """The asyncio :class:`~meshlib.adapters.grpc.Replay`: a request stream
    (an iterable, an async iterable, or the messages given to ``write()``)
    that retried attempts read again from the start, up to 256 KiB."""

    def __init__(self, source: Iterable[Any] | AsyncIterable[Any] | None) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Any] | None = None
        self._sync: Any = None
        self._async: Any = None
        if source is None:
            self._queue = asyncio.Queue()
        elif hasattr(source, "__aiter__"):
            self._async = source.__aiter__()  # type: ignore[union-attr]
        else:
            self._sync = iter(source)  # type: ignore[arg-type]
        self._pull = asyncio.Lock()

    async def write(self, message: Any) -> None:
        if self._queue is None:
            raise grpc.aio.UsageError("write() is for calls made without a request iterator")
        await self._queue.put(message)

    async def done_writing(self) -> None:
        if self._queue is None:
            raise grpc.aio.UsageError("done_writing() is for calls made without a request iterator")
        await self._queue.put(_EOF)

    async def _next(self) -> Any:
        if self._queue is not None:
            item = await self._queue.get()
            if item is _EOF:
                raise StopAsyncIteration
            return item
        if self._async is not None:
            return await self._async.__anext__()
        try:
            return next(self._sync)
        except StopIteration:
            raise StopAsyncIteration from None

    async def view(self) -> AsyncIterator[Any]:
        token = object()
        index = 0
        while True:
            item, index = self._step(index, token)
            if item is _ENDED:
                return
            if item is not _PULL:
                yield item
                continue
            async with self._pull:
                if index < len(self._buffer) or self._ended:
                    continue
                try:
                    item = await self._next()
                except StopAsyncIteration:
                    self._ended = True
                    continue
                self._keep(item, token)

    def commit(self) -> None:
        self.overflowed = True


def _closer(loop: asyncio.AbstractEventLoop) -> Callable[[Any], None]:
    """Close ``grpc.aio`` channels on the loop that owns them, from any thread."""
    tasks: set[asyncio.Task[Any]] = set()

    def close(ch: Any) -> None:
        if loop.is_closed():
            return

        def start() -> None:
            task = loop.create_task(ch.close())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            start()
        else:
            loop.call_soon_threadsafe(start)

    return close


class _AioMethod:
    __slots__ = ("owner", "key", "make")

    def __init__(self, owner: "MeshAioChannel", kind: str, method: str, ser: Any, deser: Any, extra: dict[str, Any]) -> None:
        self.owner = owner
        self.key = (kind, method, ser, deser, tuple(sorted(extra.items())))
        self.make = lambda ch: getattr(ch, kind)(method, request_serializer=ser, response_deserializer=deser, **extra)


class _Writes:
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


async def _answer(rpc: Any) -> Any:
    """A unary-response attempt's outcome: (response, rpc), or its RpcError."""
    try:
        response = await rpc
    except grpc.RpcError as err:
        return err
    return response, rpc


class _UnaryResponseCall(_Writes, grpc.aio.UnaryUnaryCall, grpc.aio.StreamUnaryCall):
    """A unary-response mesh call: a task running the attempt loop, started
    at once on the caller's loop; awaiting it gives the response."""

    def __init__(self, m: _AioMethod, request: Any, streaming: bool, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: bool | None, compression: Any) -> None:
        owner = m.owner
        cluster = owner.cluster
        key, make = m.key, m.make
        self._requests = requests = AsyncReplay(request) if streaming else None
        call = cluster.start_call(hash_header(cluster, metadata), True, timeout)
        self._rpc = (m.key[1], metadata)  # telemetry: the call's RPC name and metadata

        async def send(ep: Endpoint, limit: float | None) -> Any:
            sub = owner.pool.acquire(ep)
            try:
                mc = sub.callable(key, make)
                md = telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)  # telemetry: the attempt's span and trace metadata
                rpc = mc(request if requests is None else requests.view(), timeout=limit, metadata=md, credentials=credentials, wait_for_ready=wait_for_ready, compression=compression)
                return await _answer(rpc)
            finally:
                sub.release()

        self._start(call, send)

    def _start(self, call: Call, send: Callable[[Endpoint, float | None], Any]) -> None:
        self._final: Any = None
        self._callbacks: list[Callable[[Any], None]] = []
        self._deadline: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(call, send))
        self._task.add_done_callback(self._fire)

    async def _run(self, call: Call, send: Callable[[Endpoint, float | None], Any]) -> Any:
        requests = self._requests
        exchange: Exchange = EXCHANGE if requests is None else ReplayExchange(requests)
        try:
            with telemetry.call(call.cluster, rpc=self._rpc[0], headers=self._rpc[1]):  # telemetry: the call's scope
                result = await run_async(call, send, exchange, _aborted)
            self._deadline = call.deadline
            self._final = result if isinstance(result, grpc.RpcError) else result[1]
            return settle(call, result)[0]
        except grpc.RpcError as err:
            self._final = err
            raise
        except MeshError as exc:
            err = rpc_error(exc)
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
        return self._task.cancel()

    def cancelled(self) -> bool:
        return self._task.cancelled()

    def done(self) -> bool:
        return self._task.done()

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._task.done():
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> Any:
        final = await self._finished()
        return grpc.aio.Metadata() if final is None else await _maybe_await(final.initial_metadata())

    async def trailing_metadata(self) -> Any:
        final = await self._finished()
        return grpc.aio.Metadata() if final is None else await _maybe_await(final.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        final = await self._finished()
        if final is None:
            return SC.CANCELLED
        return await _maybe_await(final.code())  # type: ignore[no-any-return]

    async def details(self) -> str:
        final = await self._finished()
        if final is None:
            return "cancelled"
        return await _maybe_await(final.details())  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await self._finished()


class _InterceptedUnaryResponse(_UnaryResponseCall):
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
            rpc = await continuation(_aio_details(details, limit, telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)), requests.view())  # telemetry
            return await _answer(rpc)

        self._start(call, send)


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future) else value


class AioResponseStream(PinnedStream, _Writes, grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):
    """A ``grpc.aio`` response stream pinned to one endpoint; see
    :class:`meshlib.adapters.grpc.ResponseStream` for when it commits and retries."""

    def __init__(self, m: _AioMethod, request: Any, streaming: bool, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: bool | None, compression: Any) -> None:
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}
        self._setup(m, request, AsyncReplay(request) if streaming else None, timeout, metadata, kw)
        self._callbacks: list[Callable[[Any], None]] = []
        self._opening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        call = self._call
        try:
            fault = call.begin()
        except MeshError as exc:
            self._error = rpc_error(exc)
            self._finished = self._committed = True
            self._over()
            return
        try:
            if fault is not None and await sit_out_fault_async(call, fault):
                self._fail(_aborted(fault))
                return
            self._launch(None)
        except Exception as exc:
            self._fail(rpc_error(exc))
        except BaseException:
            self._fail(grpc.aio.AioRpcError(SC.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), "cancelled"))
            raise

    def _watch(self, attempt: _Attempt) -> None:
        attempt.rpc.add_done_callback(lambda _rpc: self._terminated(attempt))

    def _terminated(self, attempt: _Attempt) -> None:
        attempt.terminated = True
        if attempt is self._attempt and not attempt.booked and self._committed:
            self._book_done(attempt)

    def _book_done(self, attempt: _Attempt) -> None:
        attempt.booked = True  # claimed: booked once its status is read
        _book_later(lambda v: self._book(attempt, v), attempt.rpc)

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
                delay = self._retry_delay(attempt, err)
                if delay is None:
                    return
                try:
                    await self._call.sleep_async(delay)
                    self._launch(err)
                except Exception as exc:
                    self._fail(rpc_error(exc))
                    return
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
        if first is not _NONE:
            self._first = _NONE
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
        return attempt is not None and attempt.rpc.cancel()

    def cancelled(self) -> bool:
        attempt = self._attempt
        return self._cancelled and (attempt is None or attempt.rpc.cancelled())

    def done(self) -> bool:
        return self._finished

    def time_remaining(self) -> float | None:
        return self._call.remaining()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._finished:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> Any:
        return await _maybe_await((await self._final()).initial_metadata())

    async def trailing_metadata(self) -> Any:
        return await _maybe_await((await self._final()).trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        return await _maybe_await((await self._final()).code())  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await _maybe_await((await self._final()).details())  # type: ignore[no-any-return]

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
    return judge_rpc(_Status(await rpc.code(), await rpc.details() or "", await rpc.trailing_metadata()))


def _book_later(book: Callable[[AttemptResult], Any], rpc: Any) -> None:
    """Book a finished aio call from a done-callback: read its status on the loop first."""

    async def later() -> None:
        book(await verdict(rpc))

    task = asyncio.get_running_loop().create_task(later())
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Task[Any]] = set()


class _AioCallable(
    grpc.aio.UnaryUnaryMultiCallable,
    grpc.aio.UnaryStreamMultiCallable,
    grpc.aio.StreamUnaryMultiCallable,
    grpc.aio.StreamStreamMultiCallable,
):
    """A MeshAioChannel's multicallable of any kind: ``call_class`` is the call
    it starts, ``streaming`` whether its requests are a stream."""

    def __init__(self, m: _AioMethod, call_class: type, streaming: bool) -> None:
        self._m = m
        self._call_class = call_class
        self._streaming = streaming

    def __call__(self, request: Any = None, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self._call_class(self._m, request, self._streaming, timeout, metadata, credentials, wait_for_ready, compression)


_CHANNEL_IDS = itertools.count()


class MeshAioChannel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` balancing every call over a mesh service's
    endpoints, with one ``grpc.aio`` channel per endpoint on the caller's loop."""

    def __init__(self, mesh: "Services", service: str, *, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (), compression: grpc.Compression | None = None) -> None:
        self.cluster = cluster = mesh.cluster(service)
        self.service = cluster.name
        opts = channel_options(cluster.name, options, credentials is not None)

        def make(ep: Endpoint) -> grpc.aio.Channel:
            if credentials is not None:
                return grpc.aio.secure_channel(ep.address, credentials, options=opts, compression=compression)
            return grpc.aio.insecure_channel(ep.address, options=opts, compression=compression)

        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("mesh.grpc_aio_channel() binds to the running event loop: call it from a coroutine") from None
        self._mesh = mesh
        self._key = ("grpc-aio", next(_CHANNEL_IDS))
        self.pool: ChannelPool = mesh.resource(self._key, lambda: ChannelPool(cluster, make, _closer(self._loop)))

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.UnaryUnaryMultiCallable:
        return _AioCallable(_AioMethod(self, "unary_unary", method, request_serializer, response_deserializer, kwargs), _UnaryResponseCall, False)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.UnaryStreamMultiCallable:
        return _AioCallable(_AioMethod(self, "unary_stream", method, request_serializer, response_deserializer, kwargs), AioResponseStream, False)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.StreamUnaryMultiCallable:
        return _AioCallable(_AioMethod(self, "stream_unary", method, request_serializer, response_deserializer, kwargs), _UnaryResponseCall, True)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.StreamStreamMultiCallable:
        return _AioCallable(_AioMethod(self, "stream_stream", method, request_serializer, response_deserializer, kwargs), AioResponseStream, True)

    def _channels(self, connect: bool) -> list[Any]:
        if connect:
            for host in self.cluster.hosts:
                self.pool.acquire(host.endpoint).release()
        return [sub.channel for sub in self.pool.subchannels()]

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY when any endpoint's channel is, else the most hopeful state among them."""
        states = [ch.get_state(try_to_connect) for ch in self._channels(try_to_connect)]
        return min(states, key=_STATE_RANK.__getitem__) if states else grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        """Wait until one endpoint's channel is READY."""
        state = self.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(state)
            state = self.get_state(try_to_connect=True)

    async def close(self, grace: float | None = None) -> None:
        """Close every endpoint channel (calls in flight end, as grpc.aio's
        ``close``: cancelled, or given ``grace`` seconds)."""
        channels = [sub.channel for sub in self.pool.subchannels()]
        self._mesh.drop_resource(self._key)
        self.pool.close()
        await asyncio.gather(*(ch.close(grace) for ch in channels), return_exceptions=True)

    async def __aenter__(self) -> "MeshAioChannel":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<MeshAioChannel service={self.service!r} endpoints={len(self.cluster.hosts)}>"


def aio_channel(mesh: "Services", name: str, *, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (), compression: grpc.Compression | None = None) -> MeshAioChannel:
    return MeshAioChannel(mesh, name, credentials=credentials, options=options, compression=compression)


# -- interceptors -------------------------------------------------------------------


def _aio_details(details: Any, timeout: float | None, metadata: Any) -> Any:
    md = metadata if metadata is None or isinstance(metadata, grpc.aio.Metadata) else grpc.aio.Metadata.from_tuple(tuple(metadata))
    return details._replace(timeout=timeout, metadata=md)


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
            details = _aio_details(client_call_details, limit, telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep))  # telemetry
            rpc = await continuation(details, request)
            try:
                await rpc
            except grpc.RpcError as err:
                return err
            return rpc

        try:
            with telemetry.call(call.cluster, rpc=client_call_details.method, headers=metadata):  # telemetry: the call's scope
                result = await run_async(call, send, EXCHANGE, _aborted)
            return settle(call, result)
        except MeshError as exc:
            raise rpc_error(exc) from exc.__cause__

    async def _stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        call = self.start(details.timeout)
        try:
            fault = call.begin()
        except MeshError as exc:
            raise rpc_error(exc) from exc.__cause__
        try:
            if fault is not None and await sit_out_fault_async(call, fault):
                raise _aborted(fault)
            host = call.pick(None)
        except BaseException as exc:
            call.finish()
            if isinstance(exc, MeshError):
                raise rpc_error(exc) from exc.__cause__
            raise
        started = time.perf_counter()
        rpc = await continuation(_aio_details(details, call.remaining(), telemetry.inject(list(details.metadata or ()))), request)  # telemetry: trace metadata

        def book(result: AttemptResult) -> None:
            call.done(host, started, result, decide=False)
            call.finish()

        rpc.add_done_callback(lambda _rpc: _book_later(book, rpc))
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
