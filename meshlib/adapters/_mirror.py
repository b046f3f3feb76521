"""Request mirroring (Envoy's ``request_mirror_policies``): shadow traffic.

For each mirror policy of the route a call took, sampled by its fraction, a
copy of the request goes to the mirror cluster on a mesh-owned thread, fire
and forget: its answer is dropped, its failure only logged at debug, and it
never delays or fails the real call. As Envoy, the copy's ``Host`` /
``:authority`` gets ``-shadow`` appended. At most ``MAX_IN_FLIGHT`` copies are
in flight; beyond that copies are dropped (and counted), so shadow traffic
cannot pile up behind a slow mirror.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from ..core.services import Services
    from ..routing import MirrorPolicy

__all__ = ["mirror", "MirrorPool", "MAX_IN_FLIGHT"]

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

    def submit(self, fn: Callable[[], Any]) -> None:
        with self._lock:
            if self.in_flight >= MAX_IN_FLIGHT:
                self.dropped += 1
                return
            self.in_flight += 1
        try:
            self._pool.submit(self._run, fn)
        except RuntimeError:  # shut down: the mesh is closing
            with self._lock:
                self.in_flight -= 1

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
            ok = True
        except Exception as exc:  # a shadow copy's failure is never the caller's
            log.debug("meshlib: a mirrored request failed: %s", exc)
            ok = False
        with self._lock:
            self.in_flight -= 1
            self.sent += ok
            self.failed += not ok

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def mirror(mesh: "Services", policies: Sequence["MirrorPolicy"], send: Callable[[str], Any]) -> None:
    """Send ``send(cluster)`` in the background for each sampled policy."""
    pool = mesh.resource(MirrorPool, MirrorPool)
    for p in policies:
        if p.fraction >= 1.0 or random.random() < p.fraction:
            pool.submit(lambda cluster=p.cluster: send(cluster))
