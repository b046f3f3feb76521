"""Injectable time. Everything time-based in meshlib takes a ``Clock``.

The core reads time and waits only through its cluster's clock: ``monotonic``
for deadlines and windows, ``perf_counter`` for latencies, ``sleep`` /
``sleep_async`` for back-off and injected delays, and ``wait`` / ``wait_async``
for a hedged call waiting on its attempts or its next hedge, whichever
comes first. :class:`ManualClock` makes all of them deterministic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from typing import Any, Collection, Protocol

__all__ = ["Clock", "SystemClock", "ManualClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def perf_counter(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def sleep_async(self, seconds: float) -> None: ...

    def wait(self, futures: Collection["cf.Future[Any]"], timeout: float | None) -> set["cf.Future[Any]"]:
        """The futures done within ``timeout`` seconds (at least one unless it ran out)."""
        ...

    async def wait_async(self, tasks: Collection["asyncio.Future[Any]"], timeout: float | None) -> set["asyncio.Future[Any]"]: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.perf_counter``, ``time.sleep``."""

    __slots__ = ()
    monotonic = staticmethod(time.monotonic)
    perf_counter = staticmethod(time.perf_counter)
    sleep = staticmethod(time.sleep)

    @staticmethod
    async def sleep_async(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @staticmethod
    def wait(futures: Collection["cf.Future[Any]"], timeout: float | None) -> set["cf.Future[Any]"]:
        if not futures:
            time.sleep(timeout or 0.0)
            return set()
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return done

    @staticmethod
    async def wait_async(tasks: Collection["asyncio.Future[Any]"], timeout: float | None) -> set["asyncio.Future[Any]"]:
        if not tasks:
            await asyncio.sleep(timeout or 0.0)
            return set()
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return done


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to; every wait advances it instantly.

    A public test seam: pass it to ``Mesh(clock=...)`` or to a policy to make
    windows, decay and back-off deterministic. ``sleep(s)`` and
    ``sleep_async(s)`` advance the clock by ``s``; ``wait(futures, timeout)``
    returns the futures already done, or else advances the clock by
    ``timeout`` and returns none — so a hedged call launches its hedges at
    exactly its hedge delays on this clock, whatever the machine does.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._now

    perf_counter = monotonic

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would
        self.advance(max(0.0, seconds))

    def wait(self, futures: Collection["cf.Future[Any]"], timeout: float | None) -> set["cf.Future[Any]"]:
        done = {f for f in futures if f.done()}
        if done or not futures:
            if not futures and timeout:
                self.sleep(timeout)
            return done
        if timeout is None:
            return set(cf.wait(futures, return_when=cf.FIRST_COMPLETED)[0])
        self.sleep(timeout)
        return set()

    async def wait_async(self, tasks: Collection["asyncio.Future[Any]"], timeout: float | None) -> set["asyncio.Future[Any]"]:
        await asyncio.sleep(0)  # let the tasks run up to their first wait
        done = {t for t in tasks if t.done()}
        if done or not tasks:
            if not tasks and timeout:
                self.advance(timeout)
            return done
        if timeout is None:
            return set((await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED))[0])
        self.advance(timeout)
        return set()


