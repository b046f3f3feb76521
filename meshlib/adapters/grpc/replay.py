"""Request streams that retried attempts read again from the start.

Messages are buffered as attempts pull them from the caller's iterator (or,
with ``grpc.aio``, from ``write()``), up to :data:`RETRY_BUFFER_BYTES`
(gRPC's ``grpc.per_rpc_retry_buffer_size``); a new attempt's view replays
them first. Past the limit the stream is committed to the attempt that
pulled the last message and no other attempt may follow.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator


import grpc.aio

from .status import GrpcExchange

__all__ = ["RETRY_BUFFER_BYTES", "ReplayBuffer", "Replay", "AsyncReplay", "ReplayExchange"]

#: The per-call retry buffer for request streams (gRPC's per_rpc_retry_buffer_size).
RETRY_BUFFER_BYTES = 256 * 1024


def _size_of(message: Any) -> int:
    size = getattr(message, "ByteSize", None)
    if size is not None:
        try:
            return int(size())
        except Exception:
            return 64
    try:
        return len(message)
    except TypeError:
        return 64


_PULL = object()
_ENDED = object()


class ReplayBuffer:
    """The messages of a request stream kept for replay, up to
    :data:`RETRY_BUFFER_BYTES`; shared by the sync and asyncio replays."""

    def __init__(self) -> None:
        self._buffer: list[Any] = []
        self._size = 0
        self._ended = False
        self.overflowed = False
        self._owner: object | None = None

    def _step(self, index: int, token: object) -> tuple[Any, int]:
        """What the view ``token`` at ``index`` reads next: a buffered message
        (and the index after it), :data:`_PULL` (the caller's iterator must be
        read) or :data:`_ENDED`. Shared by the sync and asyncio views; the
        sync one calls it under its lock and yields outside it."""
        if self._owner is not None and self._owner is not token:
            raise RuntimeError("meshlib: this request stream was committed to another attempt")
        if index < len(self._buffer):
            item = self._buffer[index]
            index += 1
            if self._owner is token:  # committed to this view: nothing to keep
                del self._buffer[:index]
                index = 0
            return item, index
        return (_ENDED if self._ended else _PULL), index

    def _keep(self, item: Any, token: object) -> None:
        """Buffer a message the view ``token`` pulled; past the limit, the
        stream is that view's alone."""
        self._buffer.append(item)
        if self._owner is None and not self.overflowed:
            self._size += _size_of(item)
            if self._size > RETRY_BUFFER_BYTES:
                self.overflowed = True
                self._owner = token


class Replay(ReplayBuffer):
    """A request stream that retried attempts read again from the start.

    Messages are buffered as attempts pull them from the caller's iterator;
    a new attempt's :meth:`view` replays them first. Past
    :data:`RETRY_BUFFER_BYTES` the stream is committed to the attempt that
    pulled the last message (``overflowed``; no more retries), and the buffer
    is dropped. Thread-safe: grpcio reads each attempt's requests on a thread
    of its own."""

    def __init__(self, source: Iterable[Any]) -> None:
        super().__init__()
        self._source = iter(source)
        self._lock = threading.Lock()
        self._pull = threading.Lock()  # one reader of the caller's iterator at a time

    def view(self) -> Iterator[Any]:
        token = object()
        index = 0
        while True:
            with self._lock:
                item, index = self._step(index, token)
            if item is _ENDED:
                return
            if item is not _PULL:
                yield item  # outside the lock: grpcio may block here on flow control
                continue
            with self._pull:
                with self._lock:
                    if index < len(self._buffer) or self._ended:
                        continue
                try:
                    item = next(self._source)
                except StopIteration:
                    with self._lock:
                        self._ended = True
                    continue
                with self._lock:
                    self._keep(item, token)

    def commit(self) -> None:
        """The call committed: nothing needs replaying any more."""
        with self._lock:
            self.overflowed = True


_EOF = object()  # done_writing() in the request queue


class AsyncReplay(ReplayBuffer):
    """The asyncio :class:`Replay`: a request stream
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




class ReplayExchange(GrpcExchange):
    """A request-streaming unary call: no further attempt (retry or hedge)
    once its retry buffer overflowed (sync and asyncio alike)."""

    def __init__(self, requests: ReplayBuffer) -> None:
        self.requests = requests

    def rewind(self) -> bool:
        """Whether the request stream can be sent again from its start (the
        driver's hook before a next attempt): not once the buffer overflowed."""
        return not self.requests.overflowed
