"""The four resource types: type URLs, decoding and validation per type.

``decode(type_url, any)`` returns ``(name, value)`` or raises ResourceError
with the name when it is known: what the ADS client needs to NACK one resource
and keep the others (gRFC A46).
"""

from __future__ import annotations

from typing import Any, Callable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import message

from ._proto import ResourceError, type_name
from .clusters import cluster_info
from .endpoints import assignment, split_assignment, translate
from .listeners import listener_info
from .routes import route_config

__all__ = ["LDS", "RDS", "CDS", "EDS", "TYPES", "SHORT", "decode", "NamedError"]

_PREFIX = "type.googleapis.com/"
LDS = _PREFIX + listener_pb2.Listener.DESCRIPTOR.full_name
RDS = _PREFIX + route_pb2.RouteConfiguration.DESCRIPTOR.full_name
CDS = _PREFIX + cluster_pb2.Cluster.DESCRIPTOR.full_name
EDS = _PREFIX + endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR.full_name
#: Subscription order on a new stream (make-before-break, as servers send).
TYPES = (LDS, RDS, CDS, EDS)
SHORT = {LDS: "listener", RDS: "route_config", CDS: "cluster", EDS: "endpoints"}
#: State-of-the-world types whose response lists every resource (absence = deletion).
FULL_STATE = frozenset({LDS, CDS})
_WRAPPER = discovery_pb2.Resource.DESCRIPTOR.full_name

_CLASSES: dict[str, Any] = {
    LDS: listener_pb2.Listener,
    RDS: route_pb2.RouteConfiguration,
    CDS: cluster_pb2.Cluster,
    EDS: endpoint_pb2.ClusterLoadAssignment,
}
_NAME: dict[str, Callable[[Any], str]] = {
    LDS: lambda m: m.name,
    RDS: lambda m: m.name,
    CDS: lambda m: m.name,
    EDS: lambda m: m.cluster_name,
}
_TRANSLATE: dict[str, Callable[[Any], Any]] = {
    LDS: listener_info,
    RDS: route_config,
    CDS: cluster_info,
    EDS: lambda m, previous=None: assignment(m, f"endpoints {m.cluster_name!r}", previous),
}


class NamedError(ResourceError):
    """A resource error whose resource name is known."""

    def __init__(self, name: str, reason: str) -> None:
        self.resource = name
        super().__init__(f"{name}: {reason}")


def decode(type_url: str, any_msg: Any, cached: Callable[[str], Any] | None = None) -> tuple[str, Any, Any]:
    """``(name, translated value, the protobuf)`` of one resource of a response
    (no protobuf for EDS, read from its bytes); ``cached(name)`` is the
    resource's current value, which EDS reuses from."""
    if type_name(any_msg.type_url) == _WRAPPER:
        wrapper = discovery_pb2.Resource()
        try:
            wrapper.ParseFromString(any_msg.value)
        except message.DecodeError as exc:
            raise ResourceError(f"a Resource wrapper does not decode: {exc}") from None
        any_msg = wrapper.resource
    if any_msg.type_url != type_url:
        raise ResourceError(f"a resource of type {any_msg.type_url or '(none)'} in a {SHORT.get(type_url, type_url)} response")
    if type_url == EDS:
        return _decode_endpoints(any_msg.value, cached)
    msg = _CLASSES[type_url]()
    try:
        msg.ParseFromString(any_msg.value)
    except message.DecodeError as exc:
        raise ResourceError(f"a {SHORT[type_url]} does not decode: {exc}") from None
    name = _NAME[type_url](msg)
    if not name:
        raise ResourceError(f"a {SHORT[type_url]} has no name")
    try:
        return name, _TRANSLATE[type_url](msg), msg
    except ResourceError as exc:
        raise NamedError(name, str(exc)) from None
    except Exception as exc:  # a translator bug must not end the stream: NACK and go on
        raise NamedError(name, f"could not be translated ({type(exc).__name__}: {exc})") from None


def _decode_endpoints(data: bytes, cached: Callable[[str], Any] | None) -> tuple[str, Any, None]:
    """EDS from its bytes (endpoints.translate): unchanged endpoints of the
    cached assignment are not parsed again. No protobuf is returned."""
    try:
        head, localities = split_assignment(data)
    except message.DecodeError as exc:
        raise ResourceError(f"a {SHORT[EDS]} does not decode: {exc}") from None
    name = head.cluster_name
    if not name:
        raise ResourceError(f"a {SHORT[EDS]} has no name")
    try:
        return name, translate(head, localities, f"endpoints {name!r}", cached(name) if cached is not None else None), None
    except ResourceError as exc:
        raise NamedError(name, str(exc)) from None
    except Exception as exc:  # a translator bug must not end the stream: NACK and go on
        raise NamedError(name, f"could not be translated ({type(exc).__name__}: {exc})") from None
