"""Per-endpoint channels: one ordinary channel per endpoint of a service,
made on first use and closed when the endpoint leaves the service's
snapshot (after the calls on it finish) or when the Mesh closes."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Hashable, Sequence

import grpc

from ...core.cluster import Cluster
from ...endpoint import Endpoint, EndpointSnapshot
from ...errors import MeshError
from .future import Workers

__all__ = ["Subchannel", "ChannelPool", "channel_options", "follow_tls", "pool_key", "STATE_RANK"]

log = logging.getLogger("meshlib")

#: Connectivity states, most hopeful first: a channel over several endpoints
#: reports the best of theirs.
STATE_RANK: dict[grpc.ChannelConnectivity, int] = {
    grpc.ChannelConnectivity.READY: 0,
    grpc.ChannelConnectivity.CONNECTING: 1,
    grpc.ChannelConnectivity.IDLE: 2,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: 3,
    grpc.ChannelConnectivity.SHUTDOWN: 4,
}


class Subchannel:
    """One endpoint's underlying channel, with the calls in flight on it.

    ``retire()`` (the endpoint left the snapshot) closes it once the last call
    releases it; ``close()`` closes it at once. No lock on a call's way: the
    calls in flight are a list each acquire appends to and each release pops
    from (one C call each, atomic, as ``Host.inflight``); an acquire that
    finds the channel retired after counting itself lets go again, so a
    retired channel is closed exactly once, by whoever leaves it idle."""

    __slots__ = ("endpoint", "channel", "callables", "_closer", "_lock", "_refs", "_retired", "_closed")

    def __init__(self, endpoint: Endpoint, channel: Any, closer: Callable[[Any], None]) -> None:
        self.endpoint = endpoint
        self.channel = channel
        #: Multicallables made on this channel, by (kind, method, serializers).
        self.callables: dict[Hashable, Any] = {}
        self._closer = closer
        self._lock = threading.Lock()  # closing only
        self._refs: list[None] = []
        self._retired = False
        self._closed = False

    def acquire(self) -> bool:
        if self._retired:
            return False
        self._refs.append(None)
        if self._retired:  # retired between the check and the count
            self.release()
            return False
        return True

    def release(self) -> None:
        refs = self._refs
        refs.pop()
        if self._retired and not refs:
            self._close_once()

    def retire(self) -> None:
        self._retired = True
        if not self._refs:
            self._close_once()

    def close(self) -> None:
        self._retired = True
        self._close_once()

    def _close_once(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closer(self.channel)

    def callable(self, key: Hashable, make: Callable[[Any], Any]) -> Any:
        found = self.callables.get(key)
        if found is None:
            found = self.callables.setdefault(key, make(self.channel))
        return found

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def active(self) -> int:
        return len(self._refs)


class ChannelPool:
    """A service's per-endpoint channels for one channel configuration.

    ``make(endpoint)`` opens a channel, ``closer(channel)`` closes one. Channels
    are made on first use; an endpoint leaving the snapshot retires its
    channel (closed once its calls finish)."""

    def __init__(self, cluster: Cluster, make: Callable[[Endpoint], Any], closer: Callable[[Any], None]) -> None:
        self.cluster = cluster
        self._make = make
        self._closer = closer
        self._subs: dict[tuple[str, int], Subchannel] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._users = 0
        self.workers = Workers(cluster.name)  # for .future() calls
        self._unwatch = cluster.watch(self._update)

    def acquire(self, endpoint: Endpoint) -> Subchannel:
        """The endpoint's channel, held for one call: :meth:`Subchannel.release` it."""
        sub = self._subs.get(endpoint.key)
        if sub is not None and not sub._retired:  # sub.acquire(), inline: this runs on every attempt
            sub._refs.append(None)
            if not sub._retired:
                return sub
            sub.release()  # retired between the check and the count
        with self._lock:
            if self._closed:
                raise MeshError(f"the gRPC channels of {self.cluster.name!r} are closed (the Mesh or the channel was closed)")
            sub = self._subs.get(endpoint.key)
            if sub is None or not sub.acquire():
                sub = Subchannel(endpoint, self._make(endpoint), self._closer)
                sub.acquire()
                self._subs[endpoint.key] = sub
                if all(h.key != endpoint.key for h in self.cluster.hosts):
                    # The endpoint left between the pick and now: serve this call, then close.
                    del self._subs[endpoint.key]
                    sub.retire()
        return sub

    def _update(self, snapshot: EndpointSnapshot) -> None:
        keys = {ep.key for ep in snapshot}
        with self._lock:
            gone = [self._subs.pop(k) for k in list(self._subs) if k not in keys]
        for sub in gone:
            log.debug("meshlib: %s endpoint %s left; its gRPC channel closes after %d call(s)", self.cluster.name, sub.endpoint.address, sub.active)
            sub.retire()

    def subchannels(self) -> list[Subchannel]:
        return list(self._subs.values())

    def retire_all(self) -> None:
        """Retire every endpoint channel (a TLS identity rotation): calls in
        flight finish on it, the next call opens a new one."""
        with self._lock:
            subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub.retire()

    def attach(self) -> None:
        with self._lock:
            self._users += 1

    def detach(self) -> None:
        """A channel using this pool was closed; the last one closes every endpoint channel."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs, self._subs = list(self._subs.values()), {}
        self._unwatch()
        for sub in subs:
            sub.close()
        self.workers.close()


def channel_options(service: str, options: Sequence[tuple[str, Any]], secure: bool) -> tuple[tuple[str, Any], ...]:
    """The per-endpoint channel arguments: the caller's, plus the service name
    as ``:authority`` and (with TLS) as the name the certificate must carry."""
    opts = [tuple(o) for o in options]
    names = {o[0] for o in opts}
    if "grpc.default_authority" not in names:
        opts.append(("grpc.default_authority", service))
    if secure and "grpc.ssl_target_name_override" not in names:
        opts.append(("grpc.ssl_target_name_override", service))
    return tuple(opts)  # type: ignore[arg-type]


def follow_tls(tls: Any, pool: ChannelPool) -> ChannelPool:
    """With mesh TLS (a ``meshlib.security.ClientTls``), ``pool``'s channels are
    retired after each identity rotation; without, ``pool`` as it is."""
    return pool if tls is None else tls.grpc().follow(pool)


def pool_key(kind: str, service: str, credentials: Any, options: tuple[Any, ...], compression: Any) -> Hashable:
    try:
        hash(options)
    except TypeError:
        options = (object(),)  # unhashable channel arguments: a pool of its own
    return (kind, service, id(credentials) if credentials is not None else None, options, compression)


