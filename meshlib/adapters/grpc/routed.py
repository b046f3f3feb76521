"""A ``grpc.Channel`` for a routed service: every call is routed on its method
path and metadata (Listener → virtual host → route → cluster, or a weighted
split), then made on a balanced channel for that route and cluster.

Those are the usual ``MeshChannel`` (balancing, breakers and statistics per
cluster, the endpoints' connections shared), one per route action and
cluster, made on first use: a route with its own retry policy, timeout or
fault settings hands the channel its view of the cluster (``RoutedCluster``),
so they apply as on the HTTP adapters. The route's hash policy sets the
ring_hash / maglev key of each call. Calls keep the routed name as their
``:authority``, as Envoy and grpcio's xDS client do. A route's
``request_mirror_policies`` send a copy of each unary-request call to the
mirror cluster (``:authority`` with ``-shadow``), fire and forget
(``adapters._mirror``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

import grpc

from ...core.call import hash_key
from .._mirror import mirror

if TYPE_CHECKING:
    from ...core.services import Services

__all__ = ["routed_channel", "RoutedChannel"]

#: Route-and-cluster channels kept per routed channel before the older ones are closed.
MAX_VIEWS = 64
#: The kinds whose request is one message, so a copy can be mirrored.
_UNARY_REQUEST = ("unary_unary", "unary_stream")


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

    def _target(self, metadata: Any, timeout: float | None, request: Any = None) -> tuple[Any, float | None, str | None]:
        routed = self._owner.mesh.route(self._owner.service, self._method, _Metadata(metadata))
        if getattr(routed, "mirrors", None) and self._kind in _UNARY_REQUEST:  # shadow traffic
            send = self._owner.shadow(self._kind, self._method, self._args, self._kwargs, request, timeout, metadata)
            mirror(self._owner.mesh, routed.mirrors, send)
        view = getattr(routed, "base", routed)  # a Cluster, or the route's shared RoutedCluster
        mc = self._callables.get(view)
        if mc is None:
            if len(self._callables) >= MAX_VIEWS:
                self._callables = {}
            mc = self._callables[view] = getattr(self._owner.channel_for(view), self._kind)(self._method, *self._args, **self._kwargs)
        return mc, timeout, getattr(routed, "hash_key", None)

    def _invoke(self, how: str, request: Any, timeout: float | None, metadata: Any, kw: dict[str, Any]) -> Any:
        mc, timeout, key = self._target(metadata, timeout, request)
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
    def __init__(self, mesh: "Services", service: str, make: Callable[["Services", str], grpc.Channel],
                 shadow_make: Callable[["Services", str], grpc.Channel] | None = None) -> None:  # fmt: skip
        self.mesh = mesh
        self.service = service
        self._make = make
        self._shadow_make = shadow_make or make
        self._channels: dict[Any, grpc.Channel] = {}
        self._shadows: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def shadow(self, kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], request: Any, timeout: float | None,
               metadata: Any) -> Callable[[str], None]:  # fmt: skip
        """``send(cluster)`` for the mirror threads: the call again, on the
        mirror cluster's channel (``:authority`` with ``-shadow``), its answer
        read and dropped."""

        def send(cluster: str) -> None:
            with self._lock:
                ch = self._shadows.get(cluster)
                if ch is None:
                    ch = self._shadows[cluster] = self._shadow_make(self.mesh, cluster)
            answer = getattr(ch, kind)(method, *args, **kwargs)(request, timeout=timeout, metadata=metadata)
            if kind == "unary_stream":
                for _ in answer:
                    pass

        return send

    def channel_for(self, view: Any) -> grpc.Channel:
        """The balanced channel for ``view`` (a Cluster or a route's view of one).
        Route changes make new views: past ``MAX_VIEWS`` the older channels are
        closed (their endpoints' connections stay in the mesh's shared pool)."""
        ch = self._channels.get(view)
        if ch is None:
            with self._lock:
                ch = self._channels.get(view)
                if ch is None:
                    if len(self._channels) >= MAX_VIEWS:
                        old, self._channels = self._channels, {}
                        for stale in old.values():
                            stale.close()
                    ch = self._channels[view] = self._make(_Viewed(self.mesh, view), view.name)
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
            channels, self._channels = [*self._channels.values(), *self._shadows.values()], {}
            self._shadows = {}
        for ch in channels:
            ch.close()

    def __enter__(self) -> "RoutedChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Viewed:
    """The mesh as one MeshChannel sees it: ``cluster()`` answers the route's view."""

    def __init__(self, mesh: "Services", view: Any) -> None:
        self._mesh = mesh
        self._view = view

    def cluster(self, name: str) -> Any:
        return self._view

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mesh, name)


def routed_channel(mesh: "Services", service: str, **options: Any) -> RoutedChannel:
    from .channel import channel

    opts = list(options.pop("options", ()))
    if not any(o[0] == "grpc.default_authority" for o in opts):
        opts.append(("grpc.default_authority", service))  # the routed name, as Envoy and grpcio keep it
    shadow_opts = shadow_options(opts)
    return RoutedChannel(mesh, service, lambda viewed, cluster: channel(viewed, cluster, options=opts, **options),
                         lambda mesh_, cluster: channel(mesh_, cluster, options=shadow_opts, **options))  # fmt: skip


def shadow_options(opts: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A mirror channel's options: the ``:authority`` with ``-shadow``, as Envoy's mirrored requests."""
    return [(k, f"{v}-shadow" if k == "grpc.default_authority" else v) for k, v in opts]
