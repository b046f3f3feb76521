"""The balancer contract: a policy builds a picker from hosts; a picker picks.

A picker is built off the hot path whenever the host set changes and is then
read-only (any per-pick state is a lock-free counter). ``pick`` takes the
request's hash (``None`` when the call has no hash key) and returns a Host.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence, Sized

from ..clock import Clock
from ..endpoint import Endpoint
from ..errors import NoHealthyEndpointsError
from .settings import LbSettings

__all__ = ["Host", "Picker", "PolicyBuilder", "EmptyPicker", "cumulative"]


class Host(Protocol):
    """What a picker reads of a host: its endpoint and its load.
    ``meshlib.core.host.Host`` is the implementation the cluster hands over."""

    endpoint: Endpoint
    key: tuple[str, int]
    #: The attempts in flight on this host now (``len(host.inflight)``; one
    #: C call, no property in the way, as pickers read it on every pick).
    inflight: Sized
    #: The endpoint's latest load report (``balancing.load.LoadReport``) or None.
    load: Any
    #: Attempts sent to this host so far.
    requests: int
    #: Whether any attempt on this host has been timed yet, and when last.
    observed: bool
    last_observed: float
    #: The peak-EWMA latency (0.0 before any observation) and when it was last
    #: updated (``monotonic``), one tuple; its decay time; the latency assumed
    #: before any observation (read together on every peak_ewma pick).
    ewma_state: tuple[float, float]
    decay: float
    default_rtt: float
    #: Average whole time of a successful attempt, streams included (0.0: none yet).
    pace: float

    def ewma(self, now: float | None = None) -> float:
        """The host's peak-EWMA latency in seconds, decayed to ``now``."""
        ...


class Picker(Protocol):
    def pick(self, hash_value: int | None) -> Host: ...


#: ``build(hosts, settings, rng, clock) -> Picker``; ``hosts`` is never empty.
PolicyBuilder = Callable[[Sequence[Host], LbSettings, random.Random, Clock], Picker]


class EmptyPicker:
    """Picker for a service with nothing to pick: every pick raises."""

    __slots__ = ("service", "reason")

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        self.reason = reason

    def pick(self, hash_value: int | None) -> Host:
        raise NoHealthyEndpointsError(self.service, self.reason)


def cumulative(weights: Sequence[float]) -> list[float]:
    """Running totals, for weighted random choice with ``bisect``."""
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out
