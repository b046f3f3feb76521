"""Request mirroring (Envoy's ``request_mirror_policies``): shadow traffic.

For each mirror policy of the route a call took, sampled by its fraction, a
copy of the request goes to the mirror cluster on a mesh-owned thread, fire
and forget: its answer is dropped, its failure only logged at debug, and it
never delays or fails the real call. As Envoy, the copy's ``Host`` /
``:authority`` gets ``-shadow`` appended. At most ``MAX_IN_FLIGHT`` copies are
in flight; beyond that copies are dropped (and counted), so shadow traffic
cannot pile up behind a slow mirror.

The requests and urllib3 adapters send their copies on the mirror threads;
httpx's sync client too (:func:`mirror_httpx`). Async callers (httpx's
AsyncClient, grpc.aio) send them as tasks on their own loop
(:func:`mirror_async`), counted against the same limit. gRPC channels
mirror unary-request calls (a request stream cannot be sent twice), with
``-shadow`` appended to the ``:authority``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

if TYPE_CHECKING:
    from ..core.services import Services
    from ..routing import MirrorPolicy

__all__ = ["mirror", "mirror_async", "mirror_httpx", "mirror_httpx_async", "MirrorPool", "MAX_IN_FLIGHT"]

log = logging.getLogger("meshlib")
MAX_IN_FLIGHT = 64


class MirrorPool:
    """The mesh-owned threads that send shadow copies."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="meshlib-mirror")
        self._lock = threading.Lock()
        self.in_flight = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._tasks: set[asyncio.Future[Any]] = set()

    def submit(self, fn: Callable[[], Any]) -> None:
        if not self._take():
            return
        try:
            self._pool.submit(self._run, fn)
        except RuntimeError:  # shut down: the mesh is closing
            with self._lock:
                self.in_flight -= 1

    def _take(self) -> bool:
        with self._lock:
            if self.in_flight >= MAX_IN_FLIGHT:
                self.dropped += 1
                return False
            self.in_flight += 1
            return True

    def _done(self, ok: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.sent += ok
            self.failed += not ok

    def _run(self, fn: Callable[[], Any]) -> None:
        ok = False
        try:
            fn()
            ok = True
        except Exception as exc:  # a shadow copy's failure is never the caller's
            log.debug("meshlib: a mirrored request failed: %s", exc)
        finally:
            self._done(ok)

    def submit_async(self, make: Callable[[], Awaitable[Any]]) -> None:
        """Run ``make()`` as a task on the running loop (held until done)."""
        if not self._take():
            return
        task = asyncio.ensure_future(self._run_async(make))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_async(self, make: Callable[[], Awaitable[Any]]) -> None:
        ok = False
        try:
            await make()
            ok = True
        except Exception as exc:  # a shadow copy's failure is never the caller's
            log.debug("meshlib: a mirrored request failed: %s", exc)
        finally:  # cancelled with its loop too
            self._done(ok)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def mirror(mesh: "Services", policies: Sequence["MirrorPolicy"], send: Callable[[str], Any]) -> None:
    """Send ``send(cluster)`` in the background for each sampled policy."""
    pool = mesh.resource(MirrorPool, MirrorPool)
    for p in policies:
        if p.fraction >= 1.0 or random.random() < p.fraction:
            pool.submit(lambda cluster=p.cluster: send(cluster))


def mirror_async(mesh: "Services", policies: Sequence["MirrorPolicy"], send: Callable[[str], Awaitable[Any]]) -> None:
    """As :func:`mirror`, for a caller on an event loop: each sampled copy is a
    task on that loop (``send(cluster)`` is awaited there), never awaited by
    the call."""
    pool = mesh.resource(MirrorPool, MirrorPool)
    for p in policies:
        if p.fraction >= 1.0 or random.random() < p.fraction:
            pool.submit_async(lambda cluster=p.cluster: send(cluster))


def _httpx_copy(request: Any, target: str) -> Any:
    """An httpx request's copy for the mirror cluster ``target``, its ``Host``
    with ``-shadow``; None for a body that cannot be sent twice."""
    import httpx

    if not isinstance(request.stream, httpx.ByteStream):
        return None
    headers = request.headers.copy()
    headers["Host"] = f"{request.headers.get('host', request.url.host)}-shadow"
    extensions = {"timeout": request.extensions["timeout"]} if "timeout" in request.extensions else {}
    return httpx.Request(request.method, request.url.copy_with(host=target, port=None), headers=headers, content=request.content, extensions=extensions)


def mirror_httpx(mesh: "Services", policies: Sequence["MirrorPolicy"], request: Any, handle: Callable[[Any], Any]) -> None:
    """httpx's sync transport: copies of ``request`` through ``handle`` (the
    mesh transport's ``handle_request``) on the mirror threads."""

    def send(target: str) -> None:
        copy = _httpx_copy(request, target)
        if copy is not None:
            response = handle(copy)
            try:
                response.read()
            finally:
                response.close()

    mirror(mesh, policies, send)


def mirror_httpx_async(mesh: "Services", policies: Sequence["MirrorPolicy"], request: Any, handle: Callable[[Any], Awaitable[Any]]) -> None:
    """httpx's async transport: copies of ``request`` through ``handle`` as tasks on the caller's loop."""

    async def send(target: str) -> None:
        copy = _httpx_copy(request, target)
        if copy is not None:
            response = await handle(copy)
            try:
                await response.aread()
            finally:
                await response.aclose()

    mirror_async(mesh, policies, send)
