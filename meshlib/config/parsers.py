"""Value parsers: ``parse(value, name) -> typed value``, or :class:`ConfigError`.

``value`` is whatever a source gave: text from the environment, or any YAML,
TOML, JSON or Python value from a file or mapping. ``name`` is where it came
from (a variable, or a file key and its file), used in the message. A parser
raises ``ConfigError`` and nothing else, for any input.
"""

from __future__ import annotations

import math
import os
import re
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ..endpoint import Endpoint, endpoint_from_mapping
from ..errors import ConfigError
from ..names import SERVICE_NAME_RE, canonical_service, check_service_name
from ..health import parse_statuses
from ..resilience.hedge import GRPC_STATUS_NAMES, parse_non_fatal
from ..resilience.retry import parse_retry_on, parse_status_codes

Parser = Callable[[object, str], Any]

__all__ = [
    "Parser", "canonical_service", "check_service_name", "SERVICE_RE", "parse_duration", "int_range", "float_range",
    "duration", "optional_duration", "choice", "boolean", "text", "path_text", "header", "hostname", "pem_file", "json_file", "etcd_prefix",
    "tag_list", "meta_pairs", "maglev_size", "endpoints", "locality_weights", "burst", "retry_on", "status_codes",
    "health_statuses", "hedge_non_fatal", "grpc_status", "renamed",
]

SERVICE_RE = SERVICE_NAME_RE


def _scalar_text(value: object) -> str | None:
    """Text of a scalar (str, int, float); None for anything else (bool, list, mapping, None)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value) if not isinstance(value, int) or abs(value) < 10**100 else None
    return None


# ----------------------------------------------------------------- numbers and durations

_DURATION_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})\s*(ms|s|m|h)?\s*$", re.ASCII)
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
_INT_RE = re.compile(r"^[+-]?\d{1,30}$", re.ASCII)
_FLOAT_RE = re.compile(r"^[+-]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][+-]?\d{1,4})?$", re.ASCII)


def parse_duration(value: object, name: str, *, minimum: float = 0.0, allow_zero: bool = True) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``2m``, ``1h`` or a plain number of seconds."""
    accepted = "a duration such as 250ms, 1.5s, 2m or a number of seconds"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(name, value, accepted, detail="too large") from None
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(name, value, accepted)
    if not math.isfinite(seconds) or seconds < minimum or (seconds == 0 and not allow_zero):
        bound = f"greater than {minimum}s" if not allow_zero else f"at least {minimum}s"
        raise ConfigError(name, value, f"{accepted}, {bound}")
    return seconds


def int_range(lo: int, hi: int | None = None) -> Parser:
    accepted = f"a whole number from {lo}" + (f" to {hi}" if hi is not None else " up")

    def parse(value: object, name: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif isinstance(value, str) and _INT_RE.match(value.strip()):
            n = int(value.strip())
        else:
            raise ConfigError(name, value, accepted)
        if n < lo or (hi is not None and n > hi):
            raise ConfigError(name, value, accepted)
        return n

    return parse


def float_range(lo: float, hi: float | None = None) -> Parser:
    accepted = f"a number from {lo}" + (f" to {hi}" if hi is not None else " up")

    def parse(value: object, name: str) -> float:
        text = _scalar_text(value)
        if text is None or not _FLOAT_RE.match(text):
            raise ConfigError(name, value, accepted)
        x = float(text)
        if not math.isfinite(x) or x < lo or (hi is not None and x > hi):
            raise ConfigError(name, value, accepted)
        return x

    return parse


def duration(*, allow_zero: bool = True, minimum: float = 0.0) -> Parser:
    return lambda value, name: parse_duration(value, name, minimum=minimum, allow_zero=allow_zero)


def optional_duration(value: object, name: str) -> float | None:
    """A duration, or ``0`` / ``none`` / empty for no limit."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    seconds = parse_duration(value, name)
    return None if seconds == 0 else seconds


def burst(value: object, name: str) -> float:
    x = float_range(0.0)(value, name)
    if 0 < x < 1:
        raise ConfigError(name, value, "0 (the rate, at least 1) or a number of calls from 1 up")
    return x


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def maglev_size(value: object, name: str) -> int:
    n = int_range(3, 5_000_011)(value, name)
    if not _is_prime(n):
        raise ConfigError(name, value, "a prime number up to 5000011 (Envoy's default is 65537)")
    return n


# ----------------------------------------------------------------- words and names


def choice(choices: tuple[str, ...]) -> Parser:
    accepted = "one of " + ", ".join(choices)

    def parse(value: object, name: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(name, value, accepted)
        word = value.strip().lower().replace("-", "_")
        if word not in choices:
            raise ConfigError(name, value, accepted)
        return word

    return parse


def boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        word = str(value).strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
    raise ConfigError(name, value, "true or false (also 1/0, yes/no, on/off)")


def text(value: object, name: str) -> str:
    """Free text (a datacenter, a user name, a token); empty or absent for none."""
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(name, value, "a string")
    return str(value).strip()


def path_text(value: object, name: str) -> str:
    """An HTTP path or a gRPC service name (health checks)."""
    return text(value, name)


def header(value: object, name: str) -> str:
    word = text(value, name).lower()
    if word and not re.match(r"^[a-z0-9!#$%&'*+.^_`|~-]+$", word):
        raise ConfigError(name, value, "an HTTP header name (letters, digits and -), or empty for none")
    return word


def hostname(value: object, name: str) -> str:
    host = text(value, name).rstrip(".")
    labels = host.split(".")
    if (
        not host
        or len(host) > 253
        or not re.match(r"^[A-Za-z0-9.-]+$", host)
        or any(not label or len(label) > 63 or label.startswith("-") or label.endswith("-") for label in labels)
    ):
        raise ConfigError(name, value, "a DNS name such as inventory.internal (labels of 1 to 63 letters, digits or inner '-')")
    return host


def _existing_file(what: str) -> Parser:
    def parse(value: object, name: str) -> str:
        path = text(value, name)
        if path and ("\0" in path or not os.path.isfile(path)):
            raise ConfigError(name, value, f"the path of an existing, readable file ({what})", detail="no such file")
        return path

    return parse


#: A path to a readable file (TLS material), checked at start-up.
pem_file = _existing_file("PEM")
#: A path to a readable JSON file (an xDS bootstrap), checked at start-up.
json_file = _existing_file("JSON")


def etcd_prefix(value: object, name: str) -> str:
    prefix = text(value, name).rstrip("/")
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(name, value, "a non-empty key prefix without spaces, such as /meshlib/services")
    return prefix


def grpc_status(value: object, name: str) -> str:
    word = value.strip().upper() if isinstance(value, str) else ""
    if word not in GRPC_STATUS_NAMES:
        raise ConfigError(name, value, "a gRPC status name such as UNAVAILABLE or RESOURCE_EXHAUSTED")
    return word


# ----------------------------------------------------------------- lists and mappings


def _items(value: object) -> list[object] | None:
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def tag_list(value: object, name: str) -> tuple[str, ...]:
    items = _items(value)
    if items is None or not all(isinstance(t, str) for t in items):
        raise ConfigError(name, value, "a comma-separated list of tags, e.g. gpu,llm")
    return tuple(sorted({t.strip() for t in items if t.strip()}))  # type: ignore[union-attr]


def _pairs(value: object, name: str, accepted: str) -> list[tuple[str, object]]:
    """``k=v,k=v`` text or a mapping of scalars -> stripped (key, value) pairs."""
    if isinstance(value, Mapping):
        pairs = []
        for k, v in value.items():
            if _scalar_text(k) is None or (_scalar_text(v) is None and not isinstance(v, bool)):
                raise ConfigError(name, value, accepted)
            pairs.append((str(k).strip(), v.strip() if isinstance(v, str) else v))
    elif isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep:
                raise ConfigError(name, value, accepted)
            pairs.append((k.strip(), v.strip()))
    else:
        raise ConfigError(name, value, accepted)
    if any(not k for k, _ in pairs):
        raise ConfigError(name, value, accepted, detail="a key is empty")
    return pairs


def meta_pairs(value: object, name: str) -> Mapping[str, str]:
    pairs = _pairs(value, name, "key=value pairs separated by commas, e.g. model=llama3,tier=gold")
    return MappingProxyType(dict(sorted((k, str(v)) for k, v in pairs)))


def locality_weights(value: object, name: str) -> Mapping[str, int]:
    accepted = "zone=weight pairs separated by commas, e.g. us-east-1a=3,us-east-1b=1 (weights 0 to 1000000)"
    weight = int_range(0, 1_000_000)
    out: dict[str, int] = {}
    for zone, w in _pairs(value, name, accepted):
        try:
            out[zone] = weight(w, name)
        except ConfigError:
            raise ConfigError(name, value, accepted, detail=f"the weight of zone {zone!r}") from None
    return MappingProxyType(out)


def renamed(exc: ConfigError, name: str) -> ConfigError:
    """``exc`` with its setting's name replaced (message, value and detail kept)."""
    new = ConfigError(name, exc.value, exc.accepted)
    text = str(exc)
    new.args = (name + text[len(exc.name) :] if text.startswith(exc.name) else text,)
    return new


def endpoints(value: object, name: str) -> tuple[Endpoint, ...]:
    if isinstance(value, str):
        return tuple(endpoint_from_mapping(s, name=name) for s in (p.strip() for p in value.split(",")) if s)
    items = _items(value)
    if items is None:
        raise ConfigError(name, value, "a comma-separated list of host:port[;weight=N][;zone=Z][;priority=P]")
    key, sep, origin = name.partition(" (")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(endpoint_from_mapping(item, name=f"{key}[{i}]"))
        except ConfigError as exc:  # services.x.endpoints[0].weight (file), not ...[0] (file).weight
            raise renamed(exc, f"{exc.name}{sep}{origin}") from None
    return tuple(out)


# ----------------------------------------------------------------- policies' own lists

_STATUS_ITEM = re.compile(r"^\d{3}$", re.ASCII)
_RANGE_ITEM = re.compile(r"^\d{3}(-\d{3})?$", re.ASCII)


def _checked_items(value: object, name: str, accepted: str, ok: Callable[[str], bool]) -> list[object]:
    """The items of a status list, each an int or a short ASCII word ``ok`` accepts,
    before the policy's own parser reads them."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else _items(value)
    if items is None:
        raise ConfigError(name, value, accepted)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ConfigError(name, value, accepted, detail=f"{item!r} is not a status")
        if isinstance(item, int) and not 100 <= item <= 599:
            raise ConfigError(name, value, accepted, detail=f"{item!r} is outside 100-599")
        if isinstance(item, str) and item.strip() and not ok(item.strip()):
            raise ConfigError(name, value, accepted, detail=f"{item.strip()[:40]!r} is not a status")
    return items


def status_codes(value: object, name: str) -> frozenset[int]:
    items = _checked_items(value, name, "HTTP status codes from 100 to 599, e.g. 409,503", _STATUS_ITEM.match)  # type: ignore[arg-type]
    return parse_status_codes(value if isinstance(value, (str, int)) else items, name)  # type: ignore[arg-type]


def health_statuses(value: object, name: str) -> frozenset[int]:
    items = _checked_items(value, name, "HTTP statuses (100-599) and inclusive ranges, e.g. 200-299,404", _RANGE_ITEM.match)  # type: ignore[arg-type]
    return parse_statuses(value if isinstance(value, (str, int)) else items, name)


def hedge_non_fatal(value: object, name: str) -> frozenset[int | str]:
    def ok(word: str) -> bool:
        return bool(_STATUS_ITEM.match(word)) or word.upper() in GRPC_STATUS_NAMES

    items = _checked_items(value, name, "HTTP statuses (100-599) and gRPC status names, e.g. 503,UNAVAILABLE", ok)
    return parse_non_fatal(value if isinstance(value, str) else items, name)


def retry_on(value: object, name: str) -> frozenset[str]:
    items = _items(value)
    if items is None:
        raise ConfigError(name, value, "a comma-separated list of retry conditions, e.g. 5xx,connect-failure")
    return parse_retry_on(value if isinstance(value, str) else items, name)  # type: ignore[arg-type]
