"""Endpoints and the immutable snapshots resolvers publish."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from .errors import ConfigError

__all__ = ["Endpoint", "EndpointSnapshot", "parse_endpoint", "endpoint_from_mapping"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service: where to send a call, and how to weigh it.

    ``zone`` is the locality, ``priority`` 0 is the most preferred level (as
    Envoy's), ``healthy`` is what discovery or active health checking says.
    ``ejected`` is set in ``mesh.endpoints()`` while outlier detection (or an
    open endpoint breaker) keeps the endpoint out of rotation.
    """

    host: str
    port: int
    weight: int = 1
    zone: str = ""
    priority: int = 0
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    healthy: bool = True
    ejected: bool = False
    #: ``host:port``, with IPv6 hosts in brackets (computed once: read per call).
    address: str = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        object.__setattr__(self, "address", address)

    @property
    def key(self) -> tuple[str, int]:
        """Identity across snapshots: the same host and port is the same endpoint."""
        return (self.host, self.port)

    def __str__(self) -> str:
        return self.address


class EndpointSnapshot:
    """An immutable, versioned list of one service's endpoints.

    Resolvers build one per change and publish it; the mesh swaps a single
    reference, so readers never take a lock.
    """

    __slots__ = ("service", "endpoints", "version", "source")

    def __init__(self, service: str, endpoints: tuple[Endpoint, ...] | list[Endpoint], version: int = 0, source: str = "") -> None:
        # De-duplicate by (host, port), keeping the first occurrence.
        seen: set[tuple[str, int]] = set()
        unique = []
        for ep in endpoints:
            if ep.key not in seen:
                seen.add(ep.key)
                unique.append(ep)
        object.__setattr__(self, "service", service)
        object.__setattr__(self, "endpoints", tuple(unique))
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "source", source)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("EndpointSnapshot is immutable")

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def __getitem__(self, i: int) -> Endpoint:
        return self.endpoints[i]

    @property
    def healthy(self) -> tuple[Endpoint, ...]:
        return tuple(ep for ep in self.endpoints if ep.healthy and not ep.ejected)

    def __repr__(self) -> str:
        eps = ", ".join(ep.address + ("" if ep.healthy else " (unhealthy)") + (" (ejected)" if ep.ejected else "") for ep in self.endpoints)
        return f"EndpointSnapshot({self.service!r}, v{self.version}, [{eps}])"


_ATTRS = "weight, zone, priority"


def _parse_host_port(text: str, name: str) -> tuple[str, int]:
    text = text.strip()
    accepted = "host:port with a port from 1 to 65535 (IPv6 as [addr]:port)"
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(name, text, accepted)
        host, port_s = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(name, text, accepted, detail=f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ConfigError(name, text, accepted)
    if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5):
        raise ConfigError(name, text, accepted, detail=f"port {port_s[:20]!r} is not a number")
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ConfigError(name, text, accepted, detail=f"port {port} is out of range")
    return host, port


def _whole(value: object, lo: int, hi: int) -> int | None:
    """A whole number from ``lo`` to ``hi`` written as an int, an integral float or
    ASCII digits; None for anything else (bool, inf, nan, a list, "²", ...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 12):
            return None
        value = int(text)
    if not isinstance(value, int) or not lo <= value <= hi:
        return None
    return value


def _check_weight(value: object, name: str) -> int:
    weight = _whole(value, 1, 1_000_000)
    if weight is None:
        raise ConfigError(name, value, "weight must be a whole number from 1 to 1000000")
    return weight


def _check_priority(value: object, name: str) -> int:
    prio = _whole(value, 0, 127)
    if prio is None:
        raise ConfigError(name, value, "priority must be a whole number from 0 to 127")
    return prio


def parse_endpoint(spec: str, *, name: str = "endpoint") -> Endpoint:
    """Parse ``host:port[;weight=N][;zone=Z][;priority=P]``.

    ``name`` is the setting the text came from, used in error messages.
    """
    parts = spec.strip().split(";")
    host, port = _parse_host_port(parts[0], name)
    weight, zone, priority = 1, "", 0
    for attr in parts[1:]:
        attr = attr.strip()
        if not attr:
            continue
        key, sep, value = attr.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not sep:
            raise ConfigError(name, spec, f"attributes are key=value pairs; accepted keys: {_ATTRS}")
        if key == "weight":
            weight = _check_weight(value, f"{name} (weight)")
        elif key == "zone":
            if not value:
                raise ConfigError(name, spec, "zone must not be empty")
            zone = value
        elif key == "priority":
            priority = _check_priority(value, f"{name} (priority)")
        else:
            raise ConfigError(name, spec, f"unknown attribute {key!r}; accepted keys: {_ATTRS}")
    return Endpoint(host=host, port=port, weight=weight, zone=zone, priority=priority)


def endpoint_from_mapping(data: object, *, name: str) -> Endpoint:
    """Build an Endpoint from a file entry: a spec string, or a mapping with
    ``address`` (or ``host`` and ``port``), ``weight``, ``zone``, ``priority``,
    ``tags``, ``metadata`` and ``healthy``."""
    if isinstance(data, str):
        return parse_endpoint(data, name=name)
    if not isinstance(data, Mapping):
        raise ConfigError(name, data, "an endpoint is a 'host:port;weight=N' string or a mapping with address/host/port")
    known = {"address", "host", "port", "weight", "zone", "priority", "tags", "metadata", "healthy"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(name, dict(data), f"unknown keys {sorted(unknown)}; accepted keys: {sorted(known)}")
    if "address" in data:
        if not isinstance(data["address"], str):
            raise ConfigError(f"{name}.address", data["address"], "host:port as a string")
        host, port = _parse_host_port(data["address"], f"{name}.address")
    elif "host" in data and "port" in data:
        host = data["host"]
        if not isinstance(host, str) or not host.strip() or any(c.isspace() or c in "/@?#[]" for c in host.strip()):
            raise ConfigError(f"{name}.host", host, "a host name or IP address")
        host = host.strip()
        port = _whole(data["port"], 1, 65535)  # type: ignore[assignment]
        if port is None:
            raise ConfigError(f"{name}.port", data["port"], "a port from 1 to 65535")
    else:
        raise ConfigError(name, dict(data), "an endpoint needs 'address: host:port' or both 'host' and 'port'")
    tags = data.get("tags")
    if tags is None:
        tags = ()
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"{name}.tags", tags, "a list of strings")
    meta = data.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping) or not all(_is_scalar(k) and _is_scalar(v) for k, v in meta.items()):
        raise ConfigError(f"{name}.metadata", meta, "a mapping of string keys to string values")
    healthy = data.get("healthy", True)
    if not isinstance(healthy, bool):
        raise ConfigError(f"{name}.healthy", healthy, "true or false")
    zone = data.get("zone")
    if zone is None:
        zone = ""
    if isinstance(zone, bool) or not isinstance(zone, (str, int)):
        raise ConfigError(f"{name}.zone", zone, "a zone name (a string)")
    return Endpoint(
        host=host,
        port=port,
        weight=_check_weight(data.get("weight", 1), f"{name}.weight"),
        zone=str(zone),
        priority=_check_priority(data.get("priority", 0), f"{name}.priority"),
        tags=tuple(tags),
        metadata=MappingProxyType({str(k): str(v) for k, v in meta.items()}),
        healthy=healthy,
    )


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, bool))
