"""Local rate limit: a token bucket per service, as Envoy's local_ratelimit filter.

``rate`` tokens are added per second up to ``burst``; each call takes one. A
call that finds the bucket empty is refused at once with
:class:`~meshlib.errors.RateLimitedError` (Envoy answers 429 without
forwarding). The bucket starts full. A rate of 0 means no limit.
"""

from __future__ import annotations

import threading

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held; thread-safe."""

    __slots__ = ("rate", "burst", "refused", "_tokens", "_stamp", "_clock", "_lock")

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ConfigError("rate_limit", rate, "a number of calls per second greater than 0")
        burst = max(1.0, float(rate)) if burst is None or burst == 0 else burst
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) or burst < 1:
            raise ConfigError("rate_limit_burst", burst, "a number of calls from 1 up")
        self.rate = float(rate)
        self.burst = float(burst)
        self.refused = 0
        self._tokens = self.burst
        self._clock = clock
        self._stamp = clock.monotonic()
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        """Take one token; False (and one refusal counted) if none is left."""
        with self._lock:
            now = self._clock.monotonic()
            tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if tokens < 1.0:
                self._tokens = tokens
                self.refused += 1
                return False
            self._tokens = tokens - 1.0
            return True

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            now = self._clock.monotonic()
            tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            return {"rate": self.rate, "burst": self.burst, "tokens": round(tokens, 3), "refused": self.refused}
