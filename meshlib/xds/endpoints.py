"""ClusterLoadAssignment (EDS) → :class:`meshlib.EndpointSnapshot` (gRFC A27).

Each ``LbEndpoint`` becomes an :class:`Endpoint`: ``zone`` is the locality
(``region/zone/sub_zone``), ``priority`` the locality's, ``weight`` the
endpoint's ``load_balancing_weight`` (meshlib honours it, unlike gRPC),
``healthy`` from ``health_status`` (UNKNOWN and HEALTHY are healthy; DEGRADED is
kept as healthy, as Envoy routes to it when nothing better exists; others are
unhealthy and stay listed, so the panic threshold can use them). Validity rules
(A27): priorities without gaps, no repeated (locality, priority), unique
addresses, per-priority weight sums within uint32.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from envoy.config.core.v3 import health_check_pb2

from ..endpoint import Endpoint, EndpointSnapshot
from ._proto import ResourceError, fraction

__all__ = ["Assignment", "assignment"]

_UNHEALTHY = frozenset({health_check_pb2.UNHEALTHY, health_check_pb2.DRAINING, health_check_pb2.TIMEOUT})
_U32 = 0xFFFFFFFF
_NO_META: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Assignment:
    """A validated ClusterLoadAssignment: the endpoints, the locality weights,
    the overprovisioning factor (as meshlib's float, 1.4 = Envoy's 140) and
    drop_overloads as (category, fraction)."""

    endpoints: tuple[Endpoint, ...]
    locality_weights: Mapping[str, int]
    overprovisioning_factor: float = 1.4
    drops: tuple[tuple[str, float], ...] = ()

    def index(self) -> dict[tuple[Any, ...], Endpoint]:
        """Endpoints by every field the translation sets (made once, on first use)."""
        found = self.__dict__.get("_index")
        if found is None:
            found = {(e.host, e.port, e.weight, e.zone, e.priority, e.healthy, e.metadata.get("hostname", "")): e for e in self.endpoints}
            object.__setattr__(self, "_index", found)
        return found

    def snapshot(self, service: str, version: int, locality_weighted: bool = False) -> EndpointSnapshot:
        """The endpoints as meshlib's snapshot; with locality weighting on, a
        locality without a weight is left out (as gRPC and Envoy)."""
        eps = self.endpoints
        if locality_weighted:
            eps = tuple(ep for ep in eps if ep.zone in self.locality_weights)
        return EndpointSnapshot(service, eps, version=version, source="xds")


def _locality_name(loc: Any) -> str:
    parts = [loc.region, loc.zone, loc.sub_zone]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def assignment(msg: Any, where: str, previous: "Assignment | None" = None) -> Assignment:
    """Validate and translate; endpoints equal to ones of ``previous`` (the
    cached copy) are reused rather than built again."""
    reuse = previous.index() if previous is not None else {}
    endpoints: list[Endpoint] = []
    weights: dict[str, int] = {}
    seen_pairs: set[tuple[str, int]] = set()
    seen_addresses: set[tuple[str, int]] = set()
    sums: dict[int, int] = {}
    for i, lle in enumerate(msg.endpoints):
        zone = _locality_name(lle.locality)
        prio = lle.priority
        if (zone, prio) in seen_pairs:
            raise ResourceError(f"{where}: locality {zone!r} appears twice at priority {prio}")
        seen_pairs.add((zone, prio))
        if prio > 127:
            raise ResourceError(f"{where}: priority {prio} is over 127")
        lw = lle.load_balancing_weight.value if lle.HasField("load_balancing_weight") else 0
        sums[prio] = sums.get(prio, 0) + lw
        if sums[prio] > _U32:
            raise ResourceError(f"{where}: the locality weights of priority {prio} exceed uint32")
        if lw:
            weights[zone] = weights.get(zone, 0) + lw
        add = endpoints.append
        for lb in lle.lb_endpoints:
            ep = lb.endpoint
            sa = ep.address.socket_address
            host, port = sa.address, sa.port_value
            if not host or not 0 < port < 65536:
                raise ResourceError(f"{where}: endpoints[{i}] has an lb_endpoint without a socket address and port")
            key = (host, port)
            if key in seen_addresses:
                raise ResourceError(f"{where}: address {host}:{port} appears twice")
            seen_addresses.add(key)
            weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            if weight < 1:
                raise ResourceError(f"{where}: endpoint {host}:{port} has weight 0")
            hostname = ep.hostname
            healthy = lb.health_status not in _UNHEALTHY
            weight = weight if weight <= 1_000_000 else 1_000_000
            same = reuse.get((host, port, weight, zone, prio, healthy, hostname))
            if same is None:
                same = Endpoint(host, port, weight, zone, prio, metadata=MappingProxyType({"hostname": hostname}) if hostname else _NO_META, healthy=healthy)
            add(same)
    if sums and sorted(sums) != list(range(len(sums))):
        raise ResourceError(f"{where}: priorities {sorted(sums)} have a gap")
    policy = msg.policy
    factor = 1.4
    if policy.HasField("overprovisioning_factor"):
        factor = policy.overprovisioning_factor.value / 100.0
        if not 1.0 <= factor <= 100.0:
            raise ResourceError(f"{where}: overprovisioning_factor {policy.overprovisioning_factor.value} is not 100..10000")
    drops = tuple((d.category, fraction(d.drop_percentage)) for d in policy.drop_overloads)
    return Assignment(tuple(endpoints), MappingProxyType(weights), factor, drops)
