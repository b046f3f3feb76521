"""What the sync and asyncio interceptors share: calls on the caller's own
channel, which chooses its server itself, so one stand-in Host per service
carries the statistics."""

from __future__ import annotations

from typing import Any

from ...core.call import Call
from ...core.cluster import Cluster
from ...core.host import Host
from ...core.services import Services
from ...endpoint import Endpoint

__all__ = ["ChannelCall", "InterceptorBase"]


class ChannelCall(Call):
    """A Call whose every attempt goes to the caller's own channel: admission,
    deadline, retries, budget and breakers as usual, but no balancing (the
    channel chooses its server): each attempt is pinned to the stand-in Host."""

    __slots__ = ("stand_in",)

    def __init__(self, cluster: Cluster, host: Host, timeout: float | None = None) -> None:
        super().__init__(cluster, None, True, timeout)
        self.stand_in = host

    def pick(self, failure: BaseException | None = None, host: Host | None = None) -> Host:
        return super().pick(failure, self.stand_in)


class InterceptorBase:
    """The service's cluster and the stand-in Host whose counters :meth:`stats` reports."""

    def __init__(self, mesh: Services, name: str, *, share: "InterceptorBase | None" = None) -> None:
        if share is not None:  # one of a set: the same cluster and statistics
            self.cluster, self.host = share.cluster, share.host
            return
        self.cluster = cluster = mesh.cluster(name)
        cfg = cluster.config
        self.host = Host(
            Endpoint(host=f"{cluster.name} (own channel)", port=0),
            decay=cfg.ewma_decay,
            default_rtt=cfg.ewma_default_rtt,
            failure_penalty=cfg.ewma_failure_penalty,
            clock=cluster.clock,
        )

    def start(self, timeout: float | None) -> ChannelCall:
        """A call with the caller's ``timeout`` (``ClientCallDetails.timeout``)."""
        return ChannelCall(self.cluster, self.host, timeout)

    def stats(self) -> dict[str, Any]:
        """Calls through this interceptor: attempts, outcomes and latency, plus
        the service's call counters (retries, budget, breaker)."""
        h = self.host
        return {
            "service": self.cluster.name,
            "attempts": h.requests,
            "active": h.active,
            "successes": h.successes,
            "failures": h.failures,
            "connect_failures": h.connect_failures,
            "mean_latency_ms": round(h.mean_latency * 1000, 3),
            **self.cluster.resilience_stats(),
        }
