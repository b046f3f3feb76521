"""meshlib's exceptions. Every one says what happened and what to do next."""

from __future__ import annotations

__all__ = [
    "MeshError",
    "ConfigError",
    "UnknownServiceError",
    "NoHealthyEndpointsError",
    "EndpointsSaturatedError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "RateLimitedError",
    "FaultInjectedError",
]


class MeshError(Exception):
    """Base class of every error meshlib raises."""


class ConfigError(MeshError, ValueError):
    """A configuration value was rejected.

    Carries the setting's name (an environment variable, a file key or a keyword
    argument), the offending value and what is accepted.
    """

    def __init__(self, name: str, value: object, accepted: str, *, detail: str = "") -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        msg = f"{name}={value!r} is invalid: {accepted}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class UnknownServiceError(MeshError, LookupError):
    """A call named a service the mesh does not know."""

    def __init__(self, service: str, known: list[str]) -> None:
        self.service = service
        shown = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"unknown mesh service {service!r}; known services: {shown}. "
            f"Declare it with MESHLIB_SERVICES__{service.upper().replace('-', '_')}__ENDPOINTS "
            "or publish it through the discovery source (MESHLIB_DISCOVERY)."
        )


class NoHealthyEndpointsError(MeshError):
    """The service has no endpoint to send the call to."""

    def __init__(self, service: str, reason: str = "no endpoints") -> None:
        self.service = service
        super().__init__(
            f"service {service!r} has {reason}; check that its agents are up and that "
            "the discovery source lists them (mesh.endpoints(name) shows what the mesh sees)."
        )


class EndpointsSaturatedError(NoHealthyEndpointsError):
    """Every endpoint of the service is saturated (by its load reports or its
    in-flight count) and the service fails fast (``load_saturation=fail``), or
    waits (``wait``) and its wait queue is full (``queue_full``)."""

    def __init__(self, service: str, mode: str = "fail", *, waiting: int | None = None) -> None:
        self.waiting = waiting
        if waiting is not None:
            why = (
                f"every endpoint saturated and the wait queue full ({waiting} calls waiting, load_wait_queue); "
                "retry later, add replicas or raise load_wait_queue"
            )
        else:
            why = f"every endpoint saturated (load_saturation={mode}); retry later, add replicas or set load_saturation=spill"
        super().__init__(service, why)


class CircuitOpenError(MeshError):
    """A circuit breaker refused the call without touching the network."""

    def __init__(self, service: str, threshold: str) -> None:
        self.service = service
        self.threshold = threshold
        super().__init__(f"circuit open for {service!r}: {threshold}; retry later or raise the limit")


class DeadlineExceededError(MeshError, TimeoutError):
    """The call's deadline passed before an answer arrived."""

    def __init__(self, service: str, timeout: float) -> None:
        self.service = service
        self.timeout = timeout
        super().__init__(f"call to {service!r} exceeded its deadline of {timeout:.3f}s")


class RateLimitedError(MeshError):
    """The service's local rate limit refused the call without sending it."""

    def __init__(self, service: str, rate: float) -> None:
        self.service = service
        self.rate = rate
        super().__init__(
            f"call to {service!r} refused by the local rate limit ({rate:g} calls/s); "
            "slow down or raise MESHLIB_RATE_LIMIT / rate_limit_burst"
        )


class FaultInjectedError(MeshError):
    """Fault injection aborted the call (raised where no response can be
    synthesized, e.g. by ``@mesh.call``); ``status`` is the configured status."""

    def __init__(self, service: str, status: int | str) -> None:
        self.service = service
        self.status = status
        super().__init__(f"call to {service!r} aborted by fault injection with {status} (fault_abort_percent is set)")
