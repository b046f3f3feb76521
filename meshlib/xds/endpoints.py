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

import sys
from array import array
from dataclasses import dataclass, field
from types import MappingProxyType
from operator import attrgetter
from typing import Any, Mapping

from envoy.config.core.v3 import health_check_pb2

from ..endpoint import Endpoint, EndpointSnapshot
from ._proto import ResourceError, fraction

__all__ = ["Assignment", "assignment"]

_UNHEALTHY = frozenset({health_check_pb2.UNHEALTHY, health_check_pb2.DRAINING, health_check_pb2.TIMEOUT})
_U32 = 0xFFFFFFFF
_NO_META: Mapping[str, str] = MappingProxyType({})
_ADDRESS = attrgetter("address")


@dataclass(frozen=True)
class Assignment:
    """A validated ClusterLoadAssignment: the endpoints, the locality weights,
    the overprovisioning factor (as meshlib's float, 1.4 = Envoy's 140) and
    drop_overloads as (category, fraction).

    ``wire`` is every ``LbEndpoint`` as serialised, end to end, and ``ends``
    where each one ends (``endpoints[i]`` came from ``wire[ends[i-1]:ends[i]]``):
    about 30 bytes per endpoint, so the next update can reuse an endpoint whose
    bytes did not change without reading its fields again."""

    endpoints: tuple[Endpoint, ...]
    locality_weights: Mapping[str, int]
    overprovisioning_factor: float = 1.4
    drops: tuple[tuple[str, float], ...] = ()
    wire: bytes = field(default=b"", compare=False, repr=False)
    ends: array = field(default_factory=lambda: array("I"), compare=False, repr=False)

    def snapshot(self, service: str, version: int, locality_weighted: bool = False) -> EndpointSnapshot:
        """The endpoints as meshlib's snapshot; with locality weighting on, a
        locality without a weight is left out (as gRPC and Envoy)."""
        eps = self.endpoints
        if locality_weighted:
            eps = tuple(ep for ep in eps if ep.zone in self.locality_weights)
        # The addresses were checked unique when the assignment was validated.
        return EndpointSnapshot.unique(service, eps, version=version, source="xds")


def _locality_name(loc: Any) -> str:
    parts = [loc.region, loc.zone, loc.sub_zone]
    while parts and not parts[-1]:
        parts.pop()
    return sys.intern("/".join(parts))  # one string per locality, however many updates


def assignment(msg: Any, where: str, previous: "Assignment | None" = None) -> Assignment:
    """Validate and translate.

    An endpoint is reused from ``previous`` (the cached copy) when its
    serialised ``LbEndpoint`` is byte for byte the one at the same place in
    ``previous`` (and its locality and priority are the same): equal bytes
    decode to equal fields, already validated. Any other endpoint is read
    field by field, and still reused if equal to ``previous``'s endpoint at
    that address. So an update that moves one endpoint of 10,000 reads one
    endpoint's fields and builds one Endpoint (and the cluster one Host)."""
    old = previous.endpoints if previous is not None else ()
    old_wire = previous.wire if previous is not None else b""
    old_ends = previous.ends if previous is not None else array("I")
    n_old = len(old)
    by_address: dict[str, int] | None = None  # made at the first endpoint that moved
    j, pos = 0, 0  # where in ``old`` (and in its wire) the next endpoint is expected
    startswith = old_wire.startswith
    endpoints: list[Endpoint] = []
    add = endpoints.append
    wire = bytearray()
    ends = array("I")
    mark, total = ends.append, 0
    weights: dict[str, int] = {}
    seen_pairs: set[tuple[str, int]] = set()
    ports: dict[int, int] = {}  # one int object per port number (10,000 endpoints often share one)
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
        for lb in lle.lb_endpoints:
            raw = lb.SerializeToString()
            size = len(raw)
            wire += raw
            total += size
            mark(total)
            if j < n_old and old_ends[j] - pos == size and startswith(raw, pos):
                same = old[j]
                if same.zone == zone and same.priority == prio:
                    add(same)
                    j += 1
                    pos += size
                    continue
            if by_address is None:
                by_address = {e.address: k for k, e in enumerate(old)}
            ep = _endpoint(lb, zone, prio, where, i, ports)
            k = by_address.get(ep.address)
            if k is not None:  # the endpoints after it are expected next (one was removed, or they moved)
                j, pos = k + 1, old_ends[k]
                same = old[k]
                if (same.weight, same.healthy, same.zone, same.priority) == (ep.weight, ep.healthy, zone, prio) and same.metadata == ep.metadata:
                    ep = same
            add(ep)
    addresses = list(map(_ADDRESS, endpoints))
    if len(addresses) != len(set(addresses)):
        seen: set[str] = set()
        for address in addresses:
            if address in seen:
                raise ResourceError(f"{where}: address {address} appears twice")
            seen.add(address)
    if sums and sorted(sums) != list(range(len(sums))):
        raise ResourceError(f"{where}: priorities {sorted(sums)} have a gap")
    policy = msg.policy
    factor = 1.4
    if policy.HasField("overprovisioning_factor"):
        factor = policy.overprovisioning_factor.value / 100.0
        if not 1.0 <= factor <= 100.0:
            raise ResourceError(f"{where}: overprovisioning_factor {policy.overprovisioning_factor.value} is not 100..10000")
    drops = tuple((d.category, fraction(d.drop_percentage)) for d in policy.drop_overloads)
    return Assignment(tuple(endpoints), MappingProxyType(weights), factor, drops, bytes(wire), ends)


def _endpoint(lb: Any, zone: str, prio: int, where: str, i: int, ports: dict[int, int]) -> Endpoint:
    """One ``LbEndpoint``, validated, read field by field."""
    ep = lb.endpoint
    sa = ep.address.socket_address
    host, port = sa.address, sa.port_value
    if not host or not 0 < port < 65536:
        raise ResourceError(f"{where}: endpoints[{i}] has an lb_endpoint without a socket address and port")
    weight = 1  # unset is 1; an explicit 0 is invalid
    if lb.HasField("load_balancing_weight"):
        weight = lb.load_balancing_weight.value
        if weight < 1:
            raise ResourceError(f"{where}: endpoint {host}:{port} has weight 0")
        weight = min(weight, 1_000_000)
    hostname = ep.hostname
    meta = MappingProxyType({"hostname": hostname}) if hostname else _NO_META
    return Endpoint(host, ports.setdefault(port, port), weight, zone, prio, metadata=meta, healthy=lb.health_status not in _UNHEALTHY)
