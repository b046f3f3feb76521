"""Back-off between retries: Envoy's fully jittered exponential back-off, and
the server's own pushback (``Retry-After``, ``grpc-retry-pushback-ms``).

Retry ``n`` (1-based) waits a uniform random time in
``[0, min((2**n - 1) * base_interval, max_interval))``:

==========================  =================  ==========================================
setting                     meshlib default    reference
==========================  =================  ==========================================
``base_interval``           25 ms              Envoy ``retry_back_off.base_interval`` 25 ms
                                               (gRPC A6: ``initialBackoff``, no default)
``max_interval``            10 x base (250 ms) Envoy: 10 x base_interval
                                               (gRPC A6: ``maxBackoff``, no default)
jitter                      full, [0, bound)   Envoy: full jitter; gRPC A6: full, random(0, bound)
pushback cap                300 s              Envoy ``rate_limited_retry_back_off``
                                               ``max_interval`` 300 s
==========================  =================  ==========================================

With the defaults the first retry waits 0-25 ms, the second 0-75 ms, the third
0-175 ms, and every later one 0-250 ms.

A server pushback, when present, *replaces* the jittered delay, capped at
:data:`MAX_RETRY_AFTER`. (Envoy jitters a rate-limited interval upwards by up to
50 %; meshlib waits exactly what the server asked, as gRPC does.) Pure logic: no
I/O, no sleeping; the RNG is passed in.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

from ..errors import ConfigError

__all__ = [
    "Backoff",
    "DEFAULT_BASE_INTERVAL",
    "MAX_RETRY_AFTER",
    "DO_NOT_RETRY",
    "parse_retry_after",
    "parse_grpc_pushback",
]

#: Envoy's default base interval (runtime ``upstream.base_retry_backoff_ms``).
DEFAULT_BASE_INTERVAL = 0.025
#: Cap on a server-requested delay: Envoy's rate-limited back-off max_interval.
MAX_RETRY_AFTER = 300.0
#: A pushback meaning "do not retry at all" (gRPC A6: a negative or unparseable
#: ``grpc-retry-pushback-ms``). ``RetryPolicy.should_retry`` refuses on it.
DO_NOT_RETRY = math.inf

# Beyond this exponent the bound is always the cap; it also keeps 2**n a small float.
_MAX_EXPONENT = 62
_DIGITS = re.compile(r"^[0-9]+$")
_SIGNED_INT = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True)
class Backoff:
    """Envoy's fully jittered exponential back-off.

    ``base_interval`` (seconds, > 0; Envoy 25 ms) and ``max_interval`` (seconds,
    >= base; ``None`` means 10 x base, as Envoy).
    """

    base_interval: float = DEFAULT_BASE_INTERVAL
    max_interval: float | None = None

    def __post_init__(self) -> None:
        base = self.base_interval
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) or base <= 0:
            raise ConfigError("base_interval", base, "a number of seconds greater than 0 (Envoy's default is 0.025)")
        cap = self.max_interval
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap) or cap < base
        ):
            raise ConfigError(
                "max_interval", cap, f"a number of seconds at least base_interval ({base}), or None for 10 x base_interval"
            )

    @property
    def cap(self) -> float:
        """The largest bound any retry's delay is drawn under."""
        return self.max_interval if self.max_interval is not None else 10.0 * self.base_interval

    def bound(self, retry_number: int) -> float:
        """The exclusive upper bound of retry ``retry_number``'s delay."""
        if retry_number < 1:
            raise ValueError(f"retry_number counts retries from 1, got {retry_number}")
        n = min(retry_number, _MAX_EXPONENT)
        return min((2.0**n - 1.0) * self.base_interval, self.cap)

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based): uniform in ``[0, bound)``."""
        return rng.random() * self.bound(retry_number)


def parse_retry_after(value: str, now_epoch: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value, capped at 300 s.

    Accepts delay-seconds (``"120"``) or an HTTP-date (IMF-fixdate, RFC 850 or
    asctime form), read against ``now_epoch`` (Unix seconds, injected so tests
    are deterministic). Returns ``None`` for a negative or malformed value, and
    for a date not in the future, so the caller falls back to the jittered
    back-off, as Envoy does when the header "cannot be parsed successfully".
    """
    text = value.strip()
    if not text:
        return None
    if _DIGITS.match(text):
        return min(float(int(text)), MAX_RETRY_AFTER)
    if text[0] in "+-" or text[0].isdigit():
        return None  # "-5", "1.5", "10s": not delay-seconds, and not a date
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime carries no zone; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    delta = when.timestamp() - now_epoch
    if not delta > 0:
        return None
    return min(delta, MAX_RETRY_AFTER)


def parse_grpc_pushback(value: str) -> float:
    """Seconds to wait from a ``grpc-retry-pushback-ms`` trailer (gRPC A6), capped at 300 s.

    A non-negative integer is a delay in milliseconds. gRPC reads a negative or
    unparseable value as the server asking the client not to retry at all:
    that returns :data:`DO_NOT_RETRY`.
    """
    text = value.strip()
    if not _SIGNED_INT.match(text):
        return DO_NOT_RETRY
    ms = int(text)
    if ms < 0:
        return DO_NOT_RETRY
    return min(ms / 1000.0, MAX_RETRY_AFTER)
