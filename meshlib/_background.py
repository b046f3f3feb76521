"""Daemon worker threads owned by a Mesh and stopped by its ``close()``."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("meshlib")


class PeriodicWorker:
    """Runs ``fn`` every ``interval`` seconds on a daemon thread until stopped.

    An exception in ``fn`` is logged and the loop goes on: a discovery source
    that fails keeps the last good state rather than dying.
    """

    def __init__(self, name: str, interval: float, fn: Callable[[], None]) -> None:
        self.name = name
        self.interval = interval
        self._fn = fn
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"meshlib-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._run_once()

    def wake(self) -> None:
        """Run ``fn`` now rather than at the end of the current interval."""
        self._wake.set()

    def _run_once(self) -> None:
        try:
            self._fn()
        except Exception:
            log.exception("meshlib: %s failed; keeping the last good state", self.name)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
