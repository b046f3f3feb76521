"""A token bucket: the local rate limit per service (as Envoy's
local_ratelimit filter), and the pace of a registry's query loops.

``rate`` tokens are added per second up to ``burst``; each call takes one. A
service call that finds the bucket empty is refused at once with
:class:`~meshlib.errors.RateLimitedError` (Envoy answers 429 without
forwarding); a query loop waits for its token instead (:meth:`TokenBucket.wait`).
The bucket starts full. A service rate of 0 means no limit.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..errors import ConfigError

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held; thread-safe."""

    __slots__ = ("rate", "burst", "refused", "_tokens", "_stamp", "_now", "_lock")

    def __init__(self, rate: float, burst: float | None = None, *, now: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ConfigError("rate_limit", rate, "a number of calls per second greater than 0")
        burst = max(1.0, float(rate)) if burst is None or burst == 0 else burst
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) or burst < 1:
            raise ConfigError("rate_limit_burst", burst, "a number of calls from 1 up")
        self.rate = float(rate)
        self.burst = float(burst)
        self.refused = 0
        self._tokens = self.burst
        self._now = now
        self._stamp = now()
        self._lock = threading.Lock()

    def _take(self) -> float:
        """Refill and take one token if there is one (lock held): 0.0 if taken,
        else the seconds until one will be there (one refusal counted)."""
        now = self._now()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        self.refused += 1
        return (1.0 - tokens) / self.rate

    def try_take(self) -> bool:
        """Take one token; False (and one refusal counted) if none is left."""
        with self._lock:
            return self._take() == 0.0

    def wait(self, stop: threading.Event) -> bool:
        """Take one token, waiting for it (``refused`` counts the waits); False
        if ``stop`` is set first."""
        while not stop.is_set():
            with self._lock:
                pause = self._take()
            if pause == 0.0:
                return True
            stop.wait(pause)
        return False

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            tokens = min(self.burst, self._tokens + (self._now() - self._stamp) * self.rate)
            return {"rate": self.rate, "burst": self.burst, "tokens": round(tokens, 3), "refused": self.refused}
