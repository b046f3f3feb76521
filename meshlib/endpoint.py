"""Endpoints and the immutable snapshots resolvers publish."""

from __future__ import annotations

import ipaddress
import math
import reprlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from .errors import ConfigError

__all__ = [
    "Endpoint",
    "EndpointSnapshot",
    "parse_endpoint",
    "endpoint_from_mapping",
    "parse_host_port",
    "check_weight",
    "check_priority",
    "check_tags",
    "check_metadata",
]

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
    #: In ``mesh.endpoints()`` of a service that reads load reports: the
    #: endpoint's latest report as it was then (``source``, ``age_s``, the
    #: reported fields), or None. Not part of the endpoint's identity.
    load: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    #: ``host:port``, with IPv6 hosts in brackets (computed once: read per call).
    address: str = field(init=False, repr=False, compare=False, hash=False)
    #: Identity across snapshots: the same host and port is the same endpoint
    #: (``(host, port)``, computed once: read per call).
    key: tuple[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "key", (self.host, self.port))

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

    @classmethod
    def unique(cls, service: str, endpoints: tuple[Endpoint, ...], version: int = 0, source: str = "") -> "EndpointSnapshot":
        """A snapshot of endpoints the caller has already checked unique by
        (host, port) (xDS validation does): no second pass over 10,000 of them."""
        snap = object.__new__(cls)
        for name, value in (("service", service), ("endpoints", tuple(endpoints)), ("version", version), ("source", source)):
            object.__setattr__(snap, name, value)
        return snap

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


class _Shown:
    """A container value in an error message, shortened (and safe to show at any depth)."""

    __slots__ = ("text",)

    def __init__(self, value: object) -> None:
        self.text = _REPR.repr(value)

    def __repr__(self) -> str:
        return self.text


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


#: Words that make a key's value a secret, never shown (as config/redact.py's).
_SECRET_WORDS = ("token", "passw", "pwd", "secret", "key", "credential", "auth", "cookie")


def _shown(value: object) -> object:
    """``value`` for a ConfigError: scalars as they are, containers shortened,
    the values of secret-looking keys in a mapping hidden."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else _Shown(value)
    if isinstance(value, Mapping):
        value = {k: "<hidden>" if any(w in str(k).lower() for w in _SECRET_WORDS) else v for k, v in value.items()}
    return _Shown(value)


def parse_host_port(text: str, name: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port`` (IPv6 as ``[addr]:port``); ConfigError naming ``name``."""
    text = text.strip()
    accepted = "host:port with a port from 1 to 65535 (IPv6 as [addr]:port)"
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(name, _shown(text), accepted)
        host, port_s = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(name, _shown(text), accepted, detail=f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ConfigError(name, _shown(text), accepted)
    port_s = port_s.strip()
    if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 10):
        raise ConfigError(name, _shown(text), accepted, detail=f"port {port_s[:20]!r} is not a number")
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ConfigError(name, _shown(text), accepted, detail=f"port {port} is out of range")
    return host, port


def _whole_number(value: object) -> int | None:
    """``value`` as an int if it is one (an int, an integral finite float, or
    ASCII digits with an optional sign); None otherwise. Never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(text)
    return None


def check_weight(value: object, name: str) -> int:
    """A weight from 1 to 1000000; ConfigError naming ``name`` for anything else (booleans included)."""
    weight = _whole_number(value)
    if weight is None or not 1 <= weight <= 1_000_000:
        raise ConfigError(name, _shown(value), "weight must be a whole number from 1 to 1000000")
    return weight


def check_priority(value: object, name: str) -> int:
    """A priority from 0 to 127; ConfigError naming ``name`` for anything else (booleans included)."""
    prio = _whole_number(value)
    if prio is None or not 0 <= prio <= 127:
        raise ConfigError(name, _shown(value), "priority must be a whole number from 0 to 127")
    return prio


def check_tags(value: object, name: str) -> tuple[str, ...]:
    """Tags: a list of strings (None or absent: none). A bare string, a
    number or a boolean is refused rather than iterated or ignored."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise ConfigError(name, _shown(value), "a list of strings")
    return tuple(value)


def check_metadata(value: object, name: str) -> Mapping[str, str]:
    """Metadata: a mapping of string keys to scalar values (shown as strings)."""
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping) or not all(
        isinstance(k, (str, int)) and not isinstance(k, bool) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
    ):
        raise ConfigError(name, _shown(value), "a mapping of string keys to string values")
    return MappingProxyType({str(k): str(v) for k, v in value.items()})


# The names other modules used before these were public.
_parse_host_port, _check_weight, _check_priority = parse_host_port, check_weight, check_priority


def parse_endpoint(spec: str, *, name: str = "endpoint") -> Endpoint:
    """Parse ``host:port[;weight=N][;zone=Z][;priority=P]``.

    ``name`` is the setting the text came from, used in error messages.
    """
    parts = spec.strip().split(";")
    host, port = parse_host_port(parts[0], name)
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
            weight = check_weight(value, f"{name} (weight)")
        elif key == "zone":
            if not value:
                raise ConfigError(name, spec, "zone must not be empty")
            zone = value
        elif key == "priority":
            priority = check_priority(value, f"{name} (priority)")
        else:
            raise ConfigError(name, spec, f"unknown attribute {key!r}; accepted keys: {_ATTRS}")
    return Endpoint(host=host, port=port, weight=weight, zone=zone, priority=priority)


def endpoint_from_mapping(data: object, *, name: str) -> Endpoint:
    """Build an Endpoint from a file or registry entry: a spec string, or a
    mapping with ``address`` (or ``host`` and ``port``), ``weight``, ``zone``,
    ``priority``, ``tags``, ``metadata`` and ``healthy``. A value of the wrong
    type (``tags: 5``, ``weight: true``, ``priority: 1e999``) raises
    :class:`ConfigError` naming ``name`` and the field."""
    if isinstance(data, str):
        return parse_endpoint(data, name=name)
    if not isinstance(data, Mapping):
        raise ConfigError(name, _shown(data), "an endpoint is a 'host:port;weight=N' string or a mapping with address/host/port")
    known = {"address", "host", "port", "weight", "zone", "priority", "tags", "metadata", "healthy"}
    unknown = set(data) - known
    if unknown:
        # The keys only: an unknown key's value may be a secret (a token put in the wrong place).
        raise ConfigError(name, _shown({str(k): "…" for k in data}), f"unknown keys {sorted(map(str, unknown))}; accepted keys: {sorted(known)}")
    if "address" in data:
        address = data["address"]
        if not isinstance(address, str):
            raise ConfigError(f"{name}.address", _shown(address), "host:port as a string")
        host, port = parse_host_port(address, f"{name}.address")
    elif "host" in data and "port" in data:
        host, port_v = data["host"], data["port"]
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"{name}.host", _shown(host), "a host name or IP address as a string")
        host = host.strip().strip("[]")
        if isinstance(port_v, bool) or not isinstance(port_v, (int, str)):
            raise ConfigError(f"{name}.port", _shown(port_v), "a port from 1 to 65535")
        _, port = parse_host_port(f"x:{port_v}", f"{name}.port")
    else:
        raise ConfigError(name, _shown(dict(data)), "an endpoint needs 'address: host:port' or both 'host' and 'port'")
    healthy = data.get("healthy", True)
    if not isinstance(healthy, bool):
        raise ConfigError(f"{name}.healthy", _shown(healthy), "true or false")
    zone = data.get("zone", "")
    if zone is None:
        zone = ""
    if isinstance(zone, bool) or not isinstance(zone, (str, int)):
        raise ConfigError(f"{name}.zone", _shown(zone), "a zone name as a string")
    return Endpoint(
        host=host,
        port=port,
        weight=check_weight(data.get("weight", 1), f"{name}.weight"),
        zone=str(zone),
        priority=check_priority(data.get("priority", 0), f"{name}.priority"),
        tags=check_tags(data.get("tags"), f"{name}.tags"),
        metadata=check_metadata(data.get("metadata"), f"{name}.metadata"),
        healthy=healthy,
    )

