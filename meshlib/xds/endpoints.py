"""ClusterLoadAssignment (EDS) → :class:`meshlib.EndpointSnapshot` (gRFC A27).

Each ``LbEndpoint`` becomes an :class:`Endpoint`: ``zone`` is the locality
(``region/zone/sub_zone``), ``priority`` the locality's, ``weight`` the
endpoint's ``load_balancing_weight`` (meshlib honours it, unlike gRPC),
``healthy`` from ``health_status`` (UNKNOWN and HEALTHY are healthy; DEGRADED is
kept as healthy, as Envoy routes to it when nothing better exists; others are
unhealthy and stay listed, so the panic threshold can use them). Validity rules
(A27): priorities without gaps, no repeated (locality, priority), unique
addresses, per-priority weight sums within uint32.

An update is read from its bytes: the ClusterLoadAssignment's top-level
fields and each locality's are walked (tags and lengths only), and an
``LbEndpoint`` whose bytes are those at the same place in the cached
assignment is the cached Endpoint, not parsed again; the run of unchanged
fields at a locality's start is found with a few byte comparisons, without
walking it. Only new or changed ``LbEndpoint`` messages go through the
protobuf parser, one at a time, so an update that moves one endpoint of
10,000 parses one and holds no 10,000-message parse tree (~270 bytes per
endpoint) even for a moment. Framing the walker does not take (groups, a
truncated field) sends the whole message through the parser, which either
refuses it (a NACK) or gives bytes the walker reads.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from operator import attrgetter
from typing import Any, Mapping

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf.message import DecodeError

from ..endpoint import Endpoint, EndpointSnapshot
from ._proto import ResourceError, fraction

__all__ = ["Assignment", "assignment", "split_assignment", "translate"]

_UNHEALTHY = frozenset({health_check_pb2.UNHEALTHY, health_check_pb2.DRAINING, health_check_pb2.TIMEOUT})
_U32 = 0xFFFFFFFF
_NO_META: Mapping[str, str] = MappingProxyType({})
_ADDRESS = attrgetter("address")


@dataclass(frozen=True)
class Assignment:
    """A validated ClusterLoadAssignment: the endpoints, the locality weights,
    the overprovisioning factor (as meshlib's float, 1.4 = Envoy's 140) and
    drop_overloads as (category, fraction). ``localities`` keeps each
    locality's bytes and where its fields end (about 35 bytes per endpoint),
    what the next update is compared with."""

    endpoints: tuple[Endpoint, ...]
    locality_weights: Mapping[str, int]
    overprovisioning_factor: float = 1.4
    drops: tuple[tuple[str, float], ...] = ()
    localities: tuple["_Locality", ...] = field(default=(), compare=False, repr=False)

    def snapshot(self, service: str, version: int, locality_weighted: bool = False) -> EndpointSnapshot:
        """The endpoints as meshlib's snapshot; with locality weighting on, a
        locality without a weight is left out (as gRPC and Envoy)."""
        eps = self.endpoints
        if locality_weighted:
            eps = tuple(ep for ep in eps if ep.zone in self.locality_weights)
        # The addresses were checked unique when the assignment was validated.
        return EndpointSnapshot.unique(service, eps, version=version, source="xds")


class _Locality:
    """One LocalityLbEndpoints as received: its bytes, where each top-level
    field ends, the Endpoint of each field that is an ``lb_endpoints`` entry
    (None for the others), the indexes of the others, its zone and priority."""

    __slots__ = ("data", "ends", "eps", "other", "zone", "prio")

    def __init__(self, data: bytes, ends: array, eps: tuple["Endpoint | None", ...], other: tuple[int, ...], zone: str, prio: int) -> None:
        self.data, self.ends, self.eps, self.other, self.zone, self.prio = data, ends, eps, other, zone, prio


class _Odd(Exception):
    """Framing the walker does not take: the protobuf parser decides."""


_CLA = endpoint_pb2.ClusterLoadAssignment
_LLE = endpoint_components_pb2.LocalityLbEndpoints
_LB = endpoint_components_pb2.LbEndpoint
_FIELD2 = 0x12  # field 2, length-delimited: a CLA's locality, a locality's lb_endpoints entry


def _varint(b: bytes, p: int) -> tuple[int, int]:
    x = shift = 0
    while True:
        c = b[p]
        p += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, p
        shift += 7
        if shift > 63:
            raise _Odd


def _field_end(b: bytes, p: int) -> tuple[int, int, int]:
    """(tag, where the value starts, where the field ends) of the field at ``p``."""
    tag = b[p]
    q = p + 1
    if tag >= 0x80:
        tag, q = _varint(b, p)
    wt = tag & 7
    if wt == 2:
        n = b[q]
        q += 1
        if n >= 0x80:
            n, q = _varint(b, q - 1)
        e = q + n
    elif wt == 0:
        e = _varint(b, q)[1]
    elif wt == 1:
        e = q + 8
    elif wt == 5:
        e = q + 4
    else:
        raise _Odd
    if e > len(b):
        raise _Odd
    return tag, q, e


def _walk(data: bytes, start: int = 0) -> list[tuple[int, int, int]]:
    out, p, n = [], start, len(data)
    try:
        while p < n:
            f = _field_end(data, p)
            out.append(f)
            p = f[2]
    except IndexError:
        raise _Odd from None
    return out


def _canonical(cls: Any, data: bytes) -> bytes:
    """``data`` parsed and written again without its unknown fields (the only
    ones that can be groups): bytes the walker reads."""
    msg = cls.FromString(data)
    msg.DiscardUnknownFields()
    return msg.SerializeToString()


def split_assignment(data: bytes) -> tuple[Any, list[bytes]]:
    """A serialised ClusterLoadAssignment as (its fields other than the
    localities, parsed: cluster_name, policy, ...; each locality's bytes).
    Raises DecodeError for bytes the protobuf parser refuses."""
    try:
        fields = _walk(data)
    except _Odd:
        data = _canonical(_CLA, data)  # DecodeError: not a ClusterLoadAssignment
        fields = _walk(data)
    head = b"".join(data[p:e] for (tag, q, e), p in zip(fields, [0] + [f[2] for f in fields]) if tag != _FIELD2)
    return _CLA.FromString(head), [data[q:e] for tag, q, e in fields if tag == _FIELD2]


def assignment(msg: Any, where: str, previous: "Assignment | None" = None) -> Assignment:
    """Validate and translate a parsed ClusterLoadAssignment (a STATIC
    cluster's inline one; xDS updates go through :func:`translate`)."""
    head, localities = split_assignment(msg.SerializeToString())
    return translate(head, localities, where, previous)


def _common_prefix(a: bytes, b: bytes) -> int:
    """How many leading bytes ``a`` and ``b`` share (a few comparisons, no walk)."""
    lo, hi = 0, min(len(a), len(b))
    view = memoryview(b)  # compared in place: no copy of a 250 KB locality per step
    if a.startswith(view[:hi]):
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a.startswith(view[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _locality(data: bytes, old: "_Locality | None", where: str, i: int, ports: dict[int, int]) -> tuple[_Locality, Any]:
    """One locality (and its own fields parsed), its endpoints reused from
    ``old`` where the bytes are the same."""
    try:
        return _read_locality(data, old, where, i, ports)
    except _Odd:
        pass
    try:
        data = _canonical(_LLE, data)
    except DecodeError as exc:
        raise ResourceError(f"{where}: endpoints[{i}] does not decode: {exc}") from None
    return _read_locality(data, old, where, i, ports)


def _read_locality(data: bytes, old: "_Locality | None", where: str, i: int, ports: dict[int, int]) -> tuple[_Locality, Any]:
    """The locality and its own fields parsed (locality, weight, priority);
    raises _Odd for framing the walker does not take."""
    ends = array("I")
    eps: list[Endpoint | None] = []
    other: list[int] = []
    j = 0  # the field of ``old`` the next one is compared with
    if old is not None:
        k = bisect_right(old.ends, _common_prefix(data, old.data))  # whole fields the same as before
        if k:
            ends, eps, j = old.ends[:k], list(old.eps[:k]), k
            other = [x for x in old.other if x < k]
        old_data, old_ends, old_eps = old.data, old.ends, old.eps
    else:
        old_data, old_ends, old_eps = b"", array("I"), ()
    n_old = len(old_ends)
    changed: list[tuple[int, Any, "Endpoint | None"]] = []
    by_address: dict[str, int] | None = None
    p = ends[-1] if ends else 0
    n = len(data)
    mark, add = ends.append, eps.append
    try:
        while p < n:
            tag, q, e = _field_end(data, p)
            mark(e)
            if tag != _FIELD2:
                other.append(len(eps))
                add(None)
            elif j < n_old and old_eps[j] is not None and old_ends[j] - (old_ends[j - 1] if j else 0) == e - p and old_data.startswith(data[p:e], old_ends[j - 1] if j else 0):
                add(old_eps[j])
                j += 1
            elif j + 1 < n_old and old_eps[j + 1] is not None and old_ends[j + 1] - old_ends[j] == e - p and old_data.startswith(data[p:e], old_ends[j]):
                add(old_eps[j + 1])  # the one expected was removed
                j += 2
            else:
                try:
                    lb = _LB.FromString(data[q:e])
                except DecodeError as exc:
                    raise ResourceError(f"{where}: endpoints[{i}] has an lb_endpoint that does not decode: {exc}") from None
                sa = lb.endpoint.address.socket_address
                address = f"[{sa.address}]:{sa.port_value}" if ":" in sa.address else f"{sa.address}:{sa.port_value}"
                x = None
                if j < n_old and old_eps[j] is not None and old_eps[j].address == address:
                    x = j  # the one expected, changed in place
                elif len(changed) >= 8:  # many changes: find the cached ones by address (one dict for the locality)
                    if by_address is None:
                        by_address = {ep.address: x for x, ep in enumerate(old_eps) if ep is not None}
                    x = by_address.get(address)
                if x is not None:
                    j = x + 1  # the endpoints after it are expected next
                changed.append((len(eps), lb, None if x is None else old_eps[x]))
                add(None)
            p = e
    except IndexError:
        raise _Odd from None
    try:
        meta = _LLE.FromString(b"".join(data[(ends[x - 1] if x else 0) : ends[x]] for x in other))
    except DecodeError as exc:
        raise ResourceError(f"{where}: endpoints[{i}] does not decode: {exc}") from None
    zone, prio = _locality_name(meta.locality), meta.priority
    if old is not None and (zone, prio) != (old.zone, old.prio):  # the same endpoints, now in another locality or priority
        eps = [ep if ep is None else replace(ep, zone=zone, priority=prio) for ep in eps]
    for x, lb, same in changed:
        ep = _endpoint(lb, zone, prio, where, i, ports)
        eps[x] = same if same is not None and same == ep else ep
    return _Locality(data, ends, tuple(eps), tuple(other), zone, prio), meta


def translate(head: Any, localities: list[bytes], where: str, previous: "Assignment | None" = None) -> Assignment:
    """Validate and translate a ClusterLoadAssignment given as
    :func:`split_assignment` gives it, reusing ``previous``'s endpoints
    whose bytes did not change."""
    before = previous.localities if previous is not None else ()
    ports: dict[int, int] = {}  # one int object per port number (10,000 endpoints often share one)
    kept: list[_Locality] = []
    endpoints: list[Endpoint] = []
    weights: dict[str, int] = {}
    seen_pairs: set[tuple[str, int]] = set()
    sums: dict[int, int] = {}
    for i, data in enumerate(localities):
        loc, meta = _locality(data, before[i] if i < len(before) else None, where, i, ports)
        zone, prio = loc.zone, loc.prio
        if (zone, prio) in seen_pairs:
            raise ResourceError(f"{where}: locality {zone!r} appears twice at priority {prio}")
        seen_pairs.add((zone, prio))
        if prio > 127:
            raise ResourceError(f"{where}: priority {prio} is over 127")
        lw = meta.load_balancing_weight.value if meta.HasField("load_balancing_weight") else 0
        sums[prio] = sums.get(prio, 0) + lw
        if sums[prio] > _U32:
            raise ResourceError(f"{where}: the locality weights of priority {prio} exceed uint32")
        if lw:
            weights[zone] = weights.get(zone, 0) + lw
        kept.append(loc)
        endpoints.extend(filter(None, loc.eps))
    if len(set(map(_ADDRESS, endpoints))) != len(endpoints):
        seen: set[str] = set()
        for address in map(_ADDRESS, endpoints):
            if address in seen:
                raise ResourceError(f"{where}: address {address} appears twice")
            seen.add(address)
    if sums and sorted(sums) != list(range(len(sums))):
        raise ResourceError(f"{where}: priorities {sorted(sums)} have a gap")
    policy = head.policy
    factor = 1.4
    if policy.HasField("overprovisioning_factor"):
        factor = policy.overprovisioning_factor.value / 100.0
        if not 1.0 <= factor <= 100.0:
            raise ResourceError(f"{where}: overprovisioning_factor {policy.overprovisioning_factor.value} is not 100..10000")
    drops = tuple((d.category, fraction(d.drop_percentage)) for d in policy.drop_overloads)
    return Assignment(tuple(endpoints), MappingProxyType(weights), factor, drops, tuple(kept))


def _locality_name(loc: Any) -> str:
    parts = [loc.region, loc.zone, loc.sub_zone]
    while parts and not parts[-1]:
        parts.pop()
    return sys.intern("/".join(parts))  # one string per locality, however many updates


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
