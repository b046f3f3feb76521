"""The routing model: route configurations, virtual hosts, routes and their actions.

Frozen snapshots, as Envoy's ``RouteConfiguration``: a route configuration
holds virtual hosts (chosen by the request's authority), each an ordered list
of routes; the first route whose match holds decides the call's cluster (or
weighted split) and its per-route policies. Fields left ``None`` fall back to
the virtual host's, then to the cluster's own settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..resilience.fault import FaultConfig
from ..resilience.retry import RetryPolicy
from .matchers import HeaderMatcher, PathMatcher

__all__ = ["HashPolicy", "MirrorPolicy", "RouteAction", "Route", "VirtualHost", "RouteConfig"]


@dataclass(frozen=True)
class HashPolicy:
    """One entry of Envoy's ``RouteAction.hash_policy``, client-side: ``kind``
    is ``header`` (``name`` the header) or ``query_parameter`` (``name`` the
    parameter). ``terminal`` stops the chain once this entry yields a key."""

    kind: str
    name: str
    terminal: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("header", "query_parameter"):
            raise ConfigError("hash_policy", self.kind, "header or query_parameter")
        if not self.name:
            raise ConfigError(f"hash_policy.{self.kind}", self.name, "a name")
        if self.kind == "header":
            object.__setattr__(self, "name", self.name.lower())


@dataclass(frozen=True)
class MirrorPolicy:
    """Envoy's ``request_mirror_policies`` entry: a copy of the request goes to
    ``cluster`` with probability ``fraction``, and its answer is dropped."""

    cluster: str
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not self.cluster:
            raise ConfigError("request_mirror_policy.cluster", self.cluster, "a cluster name")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError("request_mirror_policy.runtime_fraction", self.fraction, "a fraction from 0 to 1")


@dataclass(frozen=True)
class RouteAction:
    """Where a matched call goes and how: one ``cluster``, or ``weighted``
    ``(cluster, weight)`` pairs (a canary or A/B split), plus the route's
    ``retry`` policy, ``timeout`` (whole call, seconds), ``max_stream_duration``,
    ``hash_policies``, ``fault`` and ``mirrors``. ``None`` keeps the cluster's own."""

    cluster: str = ""
    weighted: tuple[tuple[str, int], ...] = ()
    retry: RetryPolicy | None = None
    timeout: float | None = None
    max_stream_duration: float | None = None
    hash_policies: tuple[HashPolicy, ...] = ()
    fault: FaultConfig | None = None
    mirrors: tuple[MirrorPolicy, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.cluster) == bool(self.weighted):
            raise ConfigError("route.action", self.cluster or self.weighted, "exactly one of a cluster or weighted clusters")
        total = 0
        for name, weight in self.weighted:
            if not name or isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise ConfigError("route.weighted_clusters", (name, weight), "cluster names with whole weights >= 0")
            total += weight
        if self.weighted and total <= 0:
            raise ConfigError("route.weighted_clusters", self.weighted, "weights summing to more than 0")
        for what in ("timeout", "max_stream_duration"):
            v = getattr(self, what)
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise ConfigError(f"route.{what}", v, "a duration in seconds >= 0")

    @property
    def clusters(self) -> tuple[str, ...]:
        """Every cluster this action can send a call to (mirrors included)."""
        names = (self.cluster,) if self.cluster else tuple(n for n, _ in self.weighted)
        return names + tuple(m.cluster for m in self.mirrors)

    @property
    def effective_timeout(self) -> float | None:
        """The call's limit: the shorter of ``timeout`` and ``max_stream_duration``
        (0 is no limit, as in Envoy and gRFC A31)."""
        limits = [v for v in (self.timeout, self.max_stream_duration) if v]
        return min(limits) if limits else (0.0 if self.timeout == 0 or self.max_stream_duration == 0 else None)


@dataclass(frozen=True)
class Route:
    """A match (``path``, every one of ``headers``, and ``fraction`` of the
    calls — Envoy's ``runtime_fraction`` default value) and its ``action``.
    ``query_never_matches`` marks a route whose query-parameter matchers meshlib
    does not evaluate: as gRPC, it never matches."""

    path: PathMatcher = PathMatcher()
    action: RouteAction = field(default_factory=lambda: RouteAction(cluster="?"))
    headers: tuple[HeaderMatcher, ...] = ()
    fraction: float = 1.0
    name: str = ""
    query_never_matches: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError("route.runtime_fraction", self.fraction, "a fraction from 0 to 1")


@dataclass(frozen=True)
class VirtualHost:
    """Envoy's ``VirtualHost``: the ``domains`` it answers for (exact, ``*.suffix``,
    ``prefix.*`` or ``*``), its ordered ``routes`` and defaults for them."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    retry: RetryPolicy | None = None
    hash_policies: tuple[HashPolicy, ...] = ()

    def __post_init__(self) -> None:
        if not self.domains:
            raise ConfigError(f"virtual_host[{self.name}].domains", self.domains, "at least one domain")
        for d in self.domains:
            if not d or ("*" in d and d != "*" and not (d.startswith("*") or d.endswith("*"))) or d.count("*") > 1:
                raise ConfigError(f"virtual_host[{self.name}].domains", d, "a name, *.suffix, prefix.* or *")


@dataclass(frozen=True)
class RouteConfig:
    """Envoy's ``RouteConfiguration``: named, with its virtual hosts."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]

    @property
    def clusters(self) -> frozenset[str]:
        return frozenset(c for vh in self.virtual_hosts for r in vh.routes for c in r.action.clusters)
