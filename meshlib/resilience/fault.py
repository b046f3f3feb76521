"""Client-side fault injection, as Envoy's HTTP fault filter, for resilience tests.

Before a call's first attempt, with probability ``delay_percent`` % the call
waits ``delay`` seconds; then, with probability ``abort_percent`` %, it is
not sent at all and answers ``abort_status`` (HTTP) or ``abort_grpc_status``
(gRPC) instead. As in Envoy, the fault sits in front of the router: a delay
passes before the service timeout starts (a caller's own deadline keeps
running), and an aborted call is not retried, touches no endpoint and is not
a request for the retry budget. Both default to 0 %, which injects nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["FaultConfig", "FaultDecision", "NO_FAULT"]


@dataclass(frozen=True)
class FaultConfig:
    delay_percent: float = 0.0
    delay: float = 0.0
    abort_percent: float = 0.0
    abort_status: int = 503
    abort_grpc_status: str = "UNAVAILABLE"

    def __post_init__(self) -> None:
        for name in ("delay_percent", "abort_percent"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
                raise ConfigError(name, v, "a percentage from 0 to 100")
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise ConfigError("delay", self.delay, "a duration in seconds >= 0")
        if not isinstance(self.abort_status, int) or not 200 <= self.abort_status <= 599:
            raise ConfigError("abort_status", self.abort_status, "an HTTP status from 200 to 599 (Envoy's range)")

    @property
    def enabled(self) -> bool:
        return (self.delay_percent > 0 and self.delay > 0) or self.abort_percent > 0

    def decide(self, rng: random.Random) -> "FaultDecision":
        """Draw this call's fault: how long to delay, and whether to abort."""
        delay = self.delay if self.delay_percent > 0 and rng.random() * 100.0 < self.delay_percent else 0.0
        abort = self.abort_percent > 0 and rng.random() * 100.0 < self.abort_percent
        return FaultDecision(delay, self.abort_status if abort else None, self.abort_grpc_status if abort else None)


@dataclass(frozen=True, slots=True)
class FaultDecision:
    delay: float
    abort_status: int | None
    abort_grpc_status: str | None


NO_FAULT = FaultConfig()
