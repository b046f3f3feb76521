"""A ``grpc.Channel`` for a routed service: every call is routed on its method
path and metadata (Listener → virtual host → route → cluster, or a weighted
split), then made on the chosen cluster's balanced channel.

The route's timeout (``timeout`` / ``max_stream_duration``) caps the call's
own; the per-cluster channels are the usual ``MeshChannel`` (balancing,
retries, breakers and statistics per cluster), made on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

import grpc

from ..core.call import hash_key

if TYPE_CHECKING:
    from ..core.services import Services

__all__ = ["routed_channel", "RoutedChannel"]


class _Metadata:
    """gRPC metadata as the router reads it: ``get(lower-case name)``; the
    content-type is application/grpc (gRFC A28)."""

    __slots__ = ("_md",)

    def __init__(self, md: Any) -> None:
        self._md = md

    def get(self, name: str) -> Any:
        if name == "content-type":
            return "application/grpc"
        values = [v for k, v in self._md or () if k == name and isinstance(v, str)]
        return None if not values else values[0] if len(values) == 1 else values


class _Routed:
    """A multi-callable of one kind and method that routes each call."""

    def __init__(self, owner: "RoutedChannel", kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._callables: dict[str, Any] = {}

    def _target(self, metadata: Any, timeout: float | None) -> tuple[Any, float | None, str | None]:
        routed = self._owner.mesh.route(self._owner.service, self._method, _Metadata(metadata))
        name = routed.name
        mc = self._callables.get(name)
        if mc is None:
            mc = self._callables[name] = getattr(self._owner.channel_for(name), self._kind)(self._method, *self._args, **self._kwargs)
        limit = getattr(routed, "action", None)
        route_timeout = limit.effective_timeout if limit is not None else None
        if route_timeout:
            timeout = route_timeout if timeout is None else min(timeout, route_timeout)
        return mc, timeout, getattr(routed, "hash_key", None)

    def _invoke(self, how: str, request: Any, timeout: float | None, metadata: Any, kw: dict[str, Any]) -> Any:
        mc, timeout, key = self._target(metadata, timeout)
        fn = mc if how == "__call__" else getattr(mc, how)
        if key is None:
            return fn(request, timeout=timeout, metadata=metadata, **kw)
        with hash_key(key):  # the route's hash policy decides the ring_hash / maglev key
            return fn(request, timeout=timeout, metadata=metadata, **kw)

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        return self._invoke("__call__", request, timeout, metadata, kw)

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        return self._invoke("with_call", request, timeout, metadata, kw)

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        return self._invoke("future", request, timeout, metadata, kw)


class RoutedChannel(grpc.Channel):
    def __init__(self, mesh: "Services", service: str, make: Callable[[str], grpc.Channel]) -> None:
        self.mesh = mesh
        self.service = service
        self._make = make
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def channel_for(self, cluster: str) -> grpc.Channel:
        ch = self._channels.get(cluster)
        if ch is None:
            with self._lock:
                ch = self._channels.get(cluster)
                if ch is None:
                    ch = self._channels[cluster] = self._make(cluster)
        return ch

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self, "stream_stream", method, args, kwargs)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        callback(grpc.ChannelConnectivity.READY)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        """Nothing to undo: subscribe answered once."""

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()

    def __enter__(self) -> "RoutedChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def routed_channel(mesh: "Services", service: str, **options: Any) -> RoutedChannel:
    from .grpc import channel

    return RoutedChannel(mesh, service, lambda cluster: channel(mesh, cluster, **options))
