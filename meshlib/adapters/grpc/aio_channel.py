"""The ``grpc.aio`` mesh channel: :class:`MeshAioChannel`, one ``grpc.aio``
channel per endpoint on the caller's event loop.

The same design as the sync :class:`~.channel.MeshChannel`. Per-endpoint
``grpc.aio`` channels belong to the event loop that made them;
:meth:`MeshAioChannel.close` (or ``async with``) closes them, and
``mesh.close()`` schedules their closing on that loop.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable, Sequence

import grpc
import grpc.aio

from ...core.services import Services
from ...endpoint import Endpoint
from .aio_calls import UnaryResponseCall
from .aio_stream import AioResponseStream
from .pool import STATE_RANK, ChannelPool, channel_options, follow_tls

__all__ = ["MeshAioChannel", "AioMethod", "aio_channel"]


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


class MeshAioChannel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` balancing every call over a mesh service's
    endpoints, with one ``grpc.aio`` channel per endpoint on the caller's loop."""

    def __init__(self, mesh: "Services", service: str, *, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (), compression: grpc.Compression | None = None) -> None:
        self.cluster = cluster = mesh.cluster(service)
        self.service = cluster.name
        tls = mesh.tls(cluster) if credentials is None else None  # TLS_MODE tls/mtls, unless credentials are given
        opts = channel_options(cluster.name, options, credentials is not None or tls is not None)

        def make(ep: Endpoint) -> grpc.aio.Channel:
            if credentials is not None:
                return grpc.aio.secure_channel(ep.address, credentials, options=opts, compression=compression)
            return grpc.aio.insecure_channel(ep.address, options=opts, compression=compression)

        if tls is not None:
            make = tls.grpc().factory(opts, compression, aio=True)

        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("mesh.grpc_aio_channel() binds to the running event loop: call it from a coroutine") from None
        self._mesh = mesh
        self._key = ("grpc-aio", next(_CHANNEL_IDS))
        self.pool: ChannelPool = mesh.resource(self._key, lambda: follow_tls(tls, ChannelPool(cluster, make, _closer(self._loop))))

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.UnaryUnaryMultiCallable:
        return _AioCallable(AioMethod(self, "unary_unary", method, request_serializer, response_deserializer, kwargs), UnaryResponseCall, False)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.UnaryStreamMultiCallable:
        return _AioCallable(AioMethod(self, "unary_stream", method, request_serializer, response_deserializer, kwargs), AioResponseStream, False)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.StreamUnaryMultiCallable:
        return _AioCallable(AioMethod(self, "stream_unary", method, request_serializer, response_deserializer, kwargs), UnaryResponseCall, True)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.aio.StreamStreamMultiCallable:
        return _AioCallable(AioMethod(self, "stream_stream", method, request_serializer, response_deserializer, kwargs), AioResponseStream, True)

    def _channels(self, connect: bool) -> list[Any]:
        if connect:
            for host in self.cluster.hosts:
                self.pool.acquire(host.endpoint).release()
        return [sub.channel for sub in self.pool.subchannels()]

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY when any endpoint's channel is, else the most hopeful state among them."""
        states = [ch.get_state(try_to_connect) for ch in self._channels(try_to_connect)]
        return min(states, key=STATE_RANK.__getitem__) if states else grpc.ChannelConnectivity.IDLE

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


class AioMethod:
    """What every call of one method on a MeshAioChannel shares."""

    __slots__ = ("owner", "method", "key", "make")

    def __init__(self, owner: "MeshAioChannel", kind: str, method: str, ser: Any, deser: Any, extra: dict[str, Any]) -> None:
        self.owner = owner
        self.method = method
        self.key = (kind, method, ser, deser, tuple(sorted(extra.items())))
        self.make = lambda ch: getattr(ch, kind)(method, request_serializer=ser, response_deserializer=deser, **extra)


class _AioCallable(
    grpc.aio.UnaryUnaryMultiCallable,
    grpc.aio.UnaryStreamMultiCallable,
    grpc.aio.StreamUnaryMultiCallable,
    grpc.aio.StreamStreamMultiCallable,
):
    """A MeshAioChannel's multicallable of any kind: ``call_class`` is the call
    it starts, ``streaming`` whether its requests are a stream."""

    def __init__(self, m: AioMethod, call_class: type, streaming: bool) -> None:
        self._m = m
        self._call_class = call_class
        self._streaming = streaming

    def __call__(self, request: Any = None, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self._call_class(self._m, request, self._streaming, timeout, metadata, credentials, wait_for_ready, compression)


_CHANNEL_IDS = itertools.count()
