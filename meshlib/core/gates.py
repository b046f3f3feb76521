"""Admission: what a call passes before its first attempt, and what it owes after.

A gate is a policy seen from the call path: ``enter(call)`` admits the call
(or raises without touching the network), ``leave(call)`` settles with the
policy when the call is over. The cluster keeps a tuple of the gates its
configuration turns on (local rate limit, cluster breaker, fault injection);
a policy that is off is not in the tuple, so the default call loops over
nothing. Per-endpoint breakers admit a *host* rather than a call:
:class:`EndpointBreakers` and its null object :data:`ANY_HOST`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..errors import CircuitOpenError, RateLimitedError
from ..resilience.breaker import CircuitBreaker
from ..resilience.fault import FaultConfig
from ..resilience.ratelimit import TokenBucket
from .host import Host

if TYPE_CHECKING:
    from .call import Call
    from .cluster import Cluster

__all__ = ["Gate", "RateLimitGate", "BreakerGate", "FaultGate", "EndpointBreakers", "AnyHost", "ANY_HOST", "breaker_reason"]


class Gate(Protocol):
    def enter(self, call: "Call") -> None: ...

    def leave(self, call: "Call") -> None: ...


class RateLimitGate:
    """The local rate limit (Envoy's local_ratelimit): a token per call."""

    __slots__ = ("limiter", "cluster")

    def __init__(self, limiter: TokenBucket, cluster: "Cluster") -> None:
        self.limiter = limiter
        self.cluster = cluster

    def enter(self, call: "Call") -> None:
        if not self.limiter.try_take():
            self.cluster.count("rate_limited")
            raise RateLimitedError(self.cluster.name, self.limiter.rate)

    def leave(self, call: "Call") -> None:
        pass  # a token is spent, never given back


class BreakerGate:
    """The cluster breaker (``breaker=cluster``): admits calls while closed, a
    few probes while half-open; the call's verdict is reported when it ends."""

    __slots__ = ("breaker", "cluster")

    def __init__(self, breaker: CircuitBreaker, cluster: "Cluster") -> None:
        self.breaker = breaker
        self.cluster = cluster

    def enter(self, call: "Call") -> None:
        if not self.breaker.try_acquire():
            self.cluster.count("breaker_rejected")
            raise CircuitOpenError(self.cluster.name, f"breaker open ({breaker_reason(self.breaker)})")

    def leave(self, call: "Call") -> None:
        if call.attempt == 0:
            self.breaker.release()  # refused before any attempt: no verdict
        else:
            self.breaker.on_result(call.ok, self.cluster.clock.monotonic() - call.started)


class FaultGate:
    """Fault injection (Envoy's fault filter): draws the call's delay and abort."""

    __slots__ = ("fault", "cluster")

    def __init__(self, fault: FaultConfig, cluster: "Cluster") -> None:
        self.fault = fault
        self.cluster = cluster

    def enter(self, call: "Call") -> None:
        decision = self.fault.decide(self.cluster.rng)
        if decision.delay:
            self.cluster.count("fault_delays")
        if decision.abort_status is not None:
            self.cluster.count("fault_aborts")
        call.fault = decision

    def leave(self, call: "Call") -> None:
        pass


class AnyHost:
    """No per-endpoint breakers: every picked host is admitted."""

    __slots__ = ()

    def admit(self, call: "Call", host: Host, failure: BaseException | None) -> Host:
        return host

    def release(self, host: Host) -> None:
        pass


ANY_HOST = AnyHost()


class EndpointBreakers:
    """Per-endpoint breakers (``breaker=endpoint``): a host whose breaker is
    open is passed over for another untried one."""

    __slots__ = ("cluster",)

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster

    def admit(self, call: "Call", host: Host, failure: BaseException | None) -> Host:
        breakers = self.cluster.endpoint_breakers
        breaker = breakers.get(host.key)
        if breaker is None or breaker.try_acquire():
            return host
        for other in self.cluster.hosts:
            b = breakers.get(other.key)
            if other is not host and other not in call.tried and (b is None or b.try_acquire()):
                return other
        self.cluster.count("breaker_rejected")
        if failure is not None:
            raise failure
        raise CircuitOpenError(self.cluster.name, "breaker open on every endpoint")

    def release(self, host: Host) -> None:
        """The permit taken for ``host`` was never used."""
        breaker = self.cluster.endpoint_breakers.get(host.key)
        if breaker is not None:
            breaker.release()


def breaker_reason(breaker: CircuitBreaker) -> str:
    snap = breaker.snapshot()
    cfg = breaker.config
    if snap["state"] == "half_open":
        return f"half-open, its {cfg.permitted_calls_half_open} probe calls are out"
    return (
        f"failure rate at or above {cfg.failure_rate_threshold:g}% or slow-call rate at or above "
        f"{cfg.slow_call_rate_threshold:g}%; probe calls go through {cfg.wait_duration_open:g}s after it opened"
    )
