"""Hedging policy, with gRPC's semantics (gRFC A6).

The first attempt goes out at once; while no answer has arrived, another
goes out every ``delay`` seconds (each to a host not yet tried), up to
``max_attempts`` in all. The first answer that is not *non-fatal* wins and
every other attempt is cancelled. A non-fatal answer (an HTTP status or gRPC
status listed in ``non_fatal``, or a failure to connect) sends the next hedge
at once instead of waiting out the delay; if every attempt ends non-fatally,
the last answer is returned. Each hedge beyond the first is a retry for the
retry budget, and hedging applies only to idempotent requests (the retry
policy's rule): gRPC's hedging and retry policies are exclusive, so a
service with hedging enabled does not also retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["HedgePolicy", "NO_HEDGING", "parse_non_fatal", "GRPC_STATUS_NAMES"]

GRPC_STATUS_NAMES = frozenset(
    {
        "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    }
)
_ACCEPTED = "comma-separated HTTP status codes (100-599) and gRPC status names (UNAVAILABLE, ...)"


def parse_non_fatal(value: object, name: str) -> frozenset[int | str]:
    """``"503,UNAVAILABLE"`` or a list of codes and names."""
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if items is None:
        raise ConfigError(name, value, _ACCEPTED)
    out: set[int | str] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if text.isdigit() and 100 <= int(text) <= 599:
            out.add(int(text))
        elif text.upper() in GRPC_STATUS_NAMES:
            out.add(text.upper())
        else:
            raise ConfigError(name, value, _ACCEPTED, detail=f"{text!r} is neither")
    return frozenset(out)


@dataclass(frozen=True)
class HedgePolicy:
    max_attempts: int = 1
    delay: float = 0.0
    non_fatal: frozenset[int | str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 5:
            raise ConfigError("hedge_max_attempts", self.max_attempts, "a whole number from 1 (no hedging) to 5 (gRPC's cap)")
        if not self.delay >= 0:
            raise ConfigError("hedge_delay", self.delay, "a duration in seconds >= 0")
        object.__setattr__(self, "non_fatal", parse_non_fatal(self.non_fatal, "hedge_non_fatal"))

    @property
    def enabled(self) -> bool:
        return self.max_attempts > 1

    def is_non_fatal(self, status: int | None, grpc_status: str | None) -> bool:
        return (status is not None and status in self.non_fatal) or (grpc_status is not None and grpc_status in self.non_fatal)


NO_HEDGING = HedgePolicy()
