"""Deadlines that travel with the work.

A deadline is an absolute point on the monotonic clock held in a contextvar,
so a call made while serving a request never outlives that request: nested
``deadline()`` blocks only ever shorten it, and every outgoing call made
inside carries what is left (``x-envoy-expected-rq-timeout-ms`` for HTTP,
``grpc-timeout`` for gRPC). A server reads the caller's deadline from its
request headers with :func:`incoming_deadline`.
"""

from __future__ import annotations

import contextvars
import re
from typing import Mapping

from ..clock import SYSTEM_CLOCK, Clock

__all__ = [
    "deadline",
    "incoming_deadline",
    "remaining",
    "current_deadline",
    "timeout_from_headers",
    "encode_grpc_timeout",
    "parse_grpc_timeout",
    "ENVOY_TIMEOUT_HEADER",
    "encode_envoy_timeout",
    "deadline_headers",
]

ENVOY_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
GRPC_TIMEOUT_HEADER = "grpc-timeout"

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("meshlib_deadline", default=None)


#: ``current_deadline()``: the active deadline on the monotonic clock, or None.
#: It is the ContextVar's own ``get`` (read on every call, so no Python frame).
current_deadline = _DEADLINE.get


def remaining(clock: Clock = SYSTEM_CLOCK) -> float | None:
    """Seconds left before the active deadline (may be negative), or None."""
    d = _DEADLINE.get()
    return None if d is None else d - clock.monotonic()


class deadline:
    """Bound everything inside the block to ``seconds`` from now (or less, if
    an enclosing deadline is sooner)::

        with meshlib.deadline(2.0):
            session.get("http://inventory/")   # carries at most 2000 ms
    """

    __slots__ = ("_seconds", "_clock", "_token")

    def __init__(self, seconds: float | None, clock: Clock = SYSTEM_CLOCK) -> None:
        if seconds is not None and seconds != seconds:  # NaN
            raise ValueError("deadline seconds must be a number")
        self._seconds = seconds
        self._clock = clock

    def __enter__(self) -> "deadline":
        outer = _DEADLINE.get()
        new = outer
        if self._seconds is not None:
            mine = self._clock.monotonic() + self._seconds
            new = mine if outer is None else min(outer, mine)
        self._token = _DEADLINE.set(new)
        return self

    def __exit__(self, *exc: object) -> None:
        _DEADLINE.reset(self._token)


def deadline_headers(clock: Clock = SYSTEM_CLOCK) -> dict[str, str]:
    """Headers that carry the active deadline to a server (for protocols
    meshlib does not wrap, e.g. inside ``@mesh.call``); empty without one::

        requests.get(url, headers=meshlib.deadline_headers(), timeout=meshlib.remaining())
    """
    left = remaining(clock)
    if left is None:
        return {}
    return {ENVOY_TIMEOUT_HEADER: encode_envoy_timeout(left)}


def encode_envoy_timeout(seconds: float) -> str:
    """The value of ``x-envoy-expected-rq-timeout-ms`` for ``seconds`` (at least 1 ms)."""
    return str(max(1, int(seconds * 1000)))


_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_GRPC_RE = re.compile(r"^(\d{1,8})([HMSmun])$")


def parse_grpc_timeout(value: str) -> float | None:
    """``grpc-timeout`` (up to 8 digits and a unit H M S m u n) in seconds; None if malformed."""
    m = _GRPC_RE.match(value.strip())
    if not m:
        return None
    return int(m.group(1)) * _GRPC_UNITS[m.group(2)]


def encode_grpc_timeout(seconds: float) -> str:
    """The shortest exact-enough ``grpc-timeout`` value for ``seconds`` (at least 1n)."""
    nanos = max(1, int(seconds * 1e9))
    for unit, scale in (("n", 1), ("u", 1_000), ("m", 1_000_000), ("S", 1_000_000_000), ("M", 60_000_000_000), ("H", 3_600_000_000_000)):
        value = -(-nanos // scale)  # round up: never shorten the caller's budget to zero
        if value < 100_000_000:
            return f"{value}{unit}"
    return "99999999H"


def timeout_from_headers(headers: Mapping[str, str]) -> float | None:
    """The caller's remaining time in seconds from ``grpc-timeout`` or
    ``x-envoy-expected-rq-timeout-ms`` (the shorter if both), or None."""
    found: list[float] = []
    lowered = {k.lower(): v for k, v in headers.items()}
    grpc = lowered.get(GRPC_TIMEOUT_HEADER)
    if grpc:
        t = parse_grpc_timeout(grpc)
        if t is not None:
            found.append(t)
    envoy = lowered.get(ENVOY_TIMEOUT_HEADER)
    if envoy:
        try:
            ms = int(envoy.strip())
        except ValueError:
            ms = -1
        if ms >= 0:
            found.append(ms / 1000.0)
    return min(found) if found else None


def incoming_deadline(headers: Mapping[str, str], clock: Clock = SYSTEM_CLOCK) -> deadline:
    """A ``deadline`` block for a request being served: calls made inside it
    never outlive the caller's deadline. No deadline header: no limit::

        def handle(request):
            with meshlib.incoming_deadline(request.headers):
                session.get("http://inventory/")
    """
    return deadline(timeout_from_headers(headers), clock)
