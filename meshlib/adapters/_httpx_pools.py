"""The httpx mesh transports' wrapped transports (connection pools), and how
those of a previous workload identity are drained and closed after a rotation.

httpx pools connections by origin. An https mesh call gets one wrapped
transport per service name, so a connection verified for one service is
never reused for another that shares an endpoint. A ``TLS_MODE`` tls/mtls
service gets one transport per identity generation: the first call after a
rotation sees a new SSL context, makes a transport with it and *retires* the
previous one. A retired transport takes no new request; it is closed (its
idle connections with it) as soon as it is drained: no call of this client
is between picking it and the end of its attempt, and its pool has no
request in flight, nor a response still being read. That is checked at the
rotation and then on each call of the client until every retired transport
is closed (and, at the latest, when the client closes).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, TypeVar

import httpx

from ..errors import MeshError

__all__ = ["Pools", "TlsPool", "drained"]

T = TypeVar("T")


class TlsPool(Generic[T]):
    """A TLS_MODE service's transport for one SSL context (identity generation).

    ``busy`` holds one item per call of this client between picking the
    transport and the end of its attempts (list append and pop are atomic);
    ``closed`` is set, under the pools' lock, before it is closed."""

    __slots__ = ("context", "transport", "busy", "closed")

    def __init__(self, context: Any, transport: T) -> None:
        self.context = context
        self.transport = transport
        self.busy: list[None] = []
        self.closed = False


def drained(transport: Any) -> bool:
    """Whether httpx's transport has nothing in flight: its connection pool
    (httpcore) holds no request (one stays there until its response is
    closed) and every connection is idle or closed. A transport of another
    kind (no ``_pool``) is taken as drained."""
    pool = getattr(transport, "_pool", None)
    if pool is None:
        return True
    if getattr(pool, "_requests", None):
        return False
    return all(c.is_idle() or c.is_closed() for c in pool.connections)


class Pools(Generic[T]):
    """The wrapped transport for everything but https mesh calls, one per
    service name for those, and the TLS_MODE services' :class:`TlsPool`."""

    def __init__(self, default: T, make: Callable[..., T] | None) -> None:
        self.default = default
        self._make = make
        self._tls: dict[str, T] = {}
        self._mesh: dict[str, TlsPool[T]] = {}
        #: Transports of previous identities not closed yet (read without the lock: a list is swapped, never changed).
        self.retired: list[TlsPool[T]] = []
        self._lock = threading.Lock()

    def for_request(self, request: httpx.Request, service: str) -> T:
        if request.url.scheme != "https" or self._make is None:
            return self.default
        t = self._tls.get(service)
        if t is None:
            with self._lock:
                t = self._tls.get(service)
                if t is None:
                    t = self._tls[service] = self._make()
        return t

    def for_mesh_tls(self, tls: Any) -> TlsPool[T]:
        """The current transport for a TLS_MODE tls/mtls service, marked busy
        (the caller pops ``busy`` once its attempts are over)."""
        while True:
            ctx = tls.ssl_context()
            found = self._mesh.get(tls.service)
            if found is None or found.context is not ctx:
                found = self._renew(tls, ctx)
            found.busy.append(None)
            if not found.closed:
                return found
            found.busy.pop()  # retired and closed between the two lines above: take the current one

    def _renew(self, tls: Any, ctx: Any) -> TlsPool[T]:
        if self._make is None:
            raise MeshError(f"service {tls.service!r} has TLS_MODE {tls.mode}, which a client built with transport= cannot carry; leave transport= out")
        with self._lock:
            found = self._mesh.get(tls.service)
            if found is not None and found.context is ctx:
                return found
            fresh = self._mesh[tls.service] = TlsPool(ctx, self._make(verify=ctx))
            if found is not None:
                self.retired = [*self.retired, found]
            return fresh

    def take_drained(self) -> list[T]:
        """The retired transports that are drained, marked closed and taken off
        the list: the caller closes them (``close()`` or ``await aclose()``)."""
        done: list[T] = []
        with self._lock:
            keep = []
            for p in self.retired:
                if not p.busy and drained(p.transport):
                    p.closed = True
                    done.append(p.transport)
                else:
                    keep.append(p)
            self.retired = keep
        return done

    def all(self) -> list[T]:
        with self._lock:
            return [self.default, *self._tls.values(), *(p.transport for p in self._mesh.values()), *(p.transport for p in self.retired)]
