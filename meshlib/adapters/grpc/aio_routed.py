"""The ``grpc.aio`` counterpart of :mod:`meshlib.adapters.grpc.routed`: a
channel for a routed service that routes every call on its method path and
metadata, then makes it on a balanced ``MeshAioChannel`` for that route and
cluster (made on first use, on the caller's loop). Mirrored copies of
unary-request calls are tasks on the caller's loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import grpc
import grpc.aio

from ...core.call import hash_key
from .._mirror import mirror_async
from .routed import _UNARY_REQUEST, MAX_VIEWS, _Metadata, _Viewed, shadow_options

if TYPE_CHECKING:
    from ...core.services import Services

__all__ = ["routed_aio_channel", "RoutedAioChannel"]


class _RoutedAio:
    """An aio multi-callable of one kind and method that routes each call."""

    def __init__(self, owner: "RoutedAioChannel", kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._callables: dict[Any, Any] = {}

    def __call__(self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        routed = self._owner.mesh.route(self._owner.service, self._method, _Metadata(metadata))
        if getattr(routed, "mirrors", None) and self._kind in _UNARY_REQUEST:  # shadow traffic
            mirror_async(self._owner.mesh, routed.mirrors, self._owner.shadow(self._kind, self._method, self._args, self._kwargs, request, timeout, metadata))
        view = getattr(routed, "base", routed)
        mc = self._callables.get(view)
        if mc is None:
            if len(self._callables) >= MAX_VIEWS:
                self._callables = {}
            mc = self._callables[view] = getattr(self._owner.channel_for(view), self._kind)(self._method, *self._args, **self._kwargs)
        key = getattr(routed, "hash_key", None)
        if key is None:
            return mc(request, timeout=timeout, metadata=metadata, **kw)
        with hash_key(key):  # the call's task is created here and keeps the key
            return mc(request, timeout=timeout, metadata=metadata, **kw)


class RoutedAioChannel(grpc.aio.Channel):
    def __init__(self, mesh: "Services", service: str, make: Callable[["Services", str], Any], shadow_make: Callable[["Services", str], Any] | None = None) -> None:
        self.mesh = mesh
        self.service = service
        self._make = make
        self._shadow_make = shadow_make or make
        self._channels: dict[Any, Any] = {}
        self._shadows: dict[str, Any] = {}
        self._retired: list[Any] = []

    def shadow(self, kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], request: Any, timeout: float | None,
               metadata: Any) -> Callable[[str], Awaitable[None]]:  # fmt: skip
        """``send(cluster)``, awaited in a task: the call again on the mirror cluster's channel, its answer dropped."""

        async def send(cluster: str) -> None:
            ch = self._shadows.get(cluster)
            if ch is None:
                ch = self._shadows[cluster] = self._shadow_make(self.mesh, cluster)
            answer = getattr(ch, kind)(method, *args, **kwargs)(request, timeout=timeout, metadata=metadata)
            if kind == "unary_stream":
                async for _ in answer:
                    pass
            else:
                await answer

        return send

    def channel_for(self, view: Any) -> Any:
        ch = self._channels.get(view)
        if ch is None:
            if len(self._channels) >= MAX_VIEWS:  # route changes made new views: close the older channels later
                self._retired.extend(self._channels.values())
                self._channels = {}
            ch = self._channels[view] = self._make(_Viewed(self.mesh, view), view.name)
        return ch

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _RoutedAio(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _RoutedAio(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _RoutedAio(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _RoutedAio(self, "stream_stream", method, args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Always READY: routing picks a cluster's channel per call."""

    async def channel_ready(self) -> None:
        """Ready at once: each call's cluster channel connects on use."""

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = [*self._channels.values(), *self._retired, *self._shadows.values()], {}
        self._shadows = {}
        self._retired = []
        for ch in channels:
            await ch.close(grace)

    async def __aenter__(self) -> "RoutedAioChannel":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def routed_aio_channel(mesh: "Services", service: str, **options: Any) -> RoutedAioChannel:
    from .aio_channel import aio_channel

    opts = list(options.pop("options", ()))
    if not any(o[0] == "grpc.default_authority" for o in opts):
        opts.append(("grpc.default_authority", service))
    shadow_opts = shadow_options(opts)
    return RoutedAioChannel(mesh, service, lambda viewed, cluster: aio_channel(viewed, cluster, options=opts, **options),
                            lambda mesh_, cluster: aio_channel(mesh_, cluster, options=shadow_opts, **options))  # fmt: skip
