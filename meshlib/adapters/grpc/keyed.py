"""``hash_key=fn`` on gRPC channels (see ``meshlib.adapters.keyed``): each
request-unary call (``unary_unary``, ``unary_stream``) gets ``fn(request
message)`` as its hash key, set as ``meshlib.hash_key`` sets it while the call
starts (sync and ``grpc.aio`` calls and response streams fix their key then).
Client-streaming calls keep the block's or the header's key."""

from __future__ import annotations

from typing import Any

import grpc

from ...core.call import hash_key
from ..keyed import KeyFn, key_of

__all__ = ["KeyedChannel", "KeyedAioChannel"]


class _Keyed:
    """A gRPC multicallable (request-unary) whose calls get ``fn(request)`` as key."""

    __slots__ = ("_inner", "_fn")

    def __init__(self, inner: Any, fn: KeyFn) -> None:
        self._inner = inner
        self._fn = fn

    def _with_key(self, method: str, request: Any, args: Any, kwargs: Any) -> Any:
        key = key_of(self._fn, request)
        if key is None:
            return getattr(self._inner, method)(request, *args, **kwargs)
        with hash_key(key):  # read when the call starts (aio calls and streams start here too)
            return getattr(self._inner, method)(request, *args, **kwargs)

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._with_key("__call__", request, args, kwargs)

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._with_key("with_call", request, args, kwargs)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._with_key("future", request, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _KeyedCalls:
    """What both keyed channels share: unary-request multicallables that key each call."""

    _inner: Any
    _fn: KeyFn

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Keyed(self._inner.unary_unary(method, *args, **kwargs), self._fn)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Keyed(self._inner.unary_stream(method, *args, **kwargs), self._fn)


class KeyedChannel(_KeyedCalls, grpc.Channel):
    """A mesh ``grpc.Channel`` whose unary-request calls get ``fn(request)`` as hash key."""

    def __init__(self, inner: grpc.Channel, fn: KeyFn) -> None:
        self._inner = inner
        self._fn = fn

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._inner.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._inner.unsubscribe(callback)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> "KeyedChannel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class KeyedAioChannel(_KeyedCalls):
    """The ``grpc.aio`` counterpart of :class:`KeyedChannel` (every other attribute is the channel's)."""

    def __init__(self, inner: Any, fn: KeyFn) -> None:
        self._inner = inner
        self._fn = fn

    async def __aenter__(self) -> "KeyedAioChannel":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
