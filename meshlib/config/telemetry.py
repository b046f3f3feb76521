"""The telemetry and admin keys' parsers, and the :class:`TelemetryConfig` built from them.

The keys themselves (``access_log*``, ``redact_headers``, ``propagators``,
``tracing``, ``metrics*``, ``admin*``) are in the key table (``keys``); their
frozen result and defaults in :mod:`meshlib.telemetry.settings`.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Mapping

from ..errors import ConfigError
from ..telemetry.settings import PROPAGATORS, TelemetryConfig
from .parsers import _items, parse_duration

__all__ = ["propagators", "header_names", "redact_names", "seconds_list", "admin_address", "telemetry_config", "loopback_only", "TELEMETRY_FIELDS"]

TELEMETRY_FIELDS = frozenset(f.name for f in fields(TelemetryConfig))
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]*$", re.ASCII)
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def propagators(value: object, name: str) -> tuple[str, ...]:
    """A list of OTEL_PROPAGATORS names; ``none`` alone for no propagation."""
    items = _items(value)
    accepted = f"a comma-separated list of {', '.join(PROPAGATORS)} (as OTEL_PROPAGATORS)"
    if items is None:
        raise ConfigError(name, value, accepted)
    names = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
    if not names or any(n not in PROPAGATORS for n in names) or ("none" in names and len(names) > 1):
        raise ConfigError(name, value, accepted)
    return () if names == ("none",) else names


def header_names(value: object, name: str) -> tuple[str, ...]:
    """A list of HTTP header names, lower-cased, in the order given."""
    items = _items(value)
    if items is None or not all(isinstance(h, str) and _TOKEN.match(h.strip()) for h in items):
        shown = value if isinstance(value, str) else "<not shown>"
        raise ConfigError(name, shown, "a comma-separated list of header names, e.g. x-api-key,x-session")
    return tuple(dict.fromkeys(h.strip().lower() for h in items if h.strip()))  # type: ignore[union-attr]


def redact_names(value: object, name: str) -> frozenset[str]:
    return frozenset(header_names(value, name))


def seconds_list(value: object, name: str) -> tuple[float, ...]:
    """A list of durations, sorted, without repeats."""
    items = _items(value)
    if items is None:
        raise ConfigError(name, value, "a comma-separated list of durations, e.g. 30s,1m,5m")
    return tuple(sorted({parse_duration(i, name, allow_zero=False) for i in items if str(i).strip()}))


def admin_address(value: object, name: str) -> str:
    """host:port of the admin endpoint, or empty (off)."""
    text = str(value).strip()
    if text in ("", "off", "false", "0"):
        return ""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535 or any(c.isspace() or c in "/@?" for c in host):
        raise ConfigError(name, value, "host:port (port 0 picks a free one; IPv6 as [addr]:port), e.g. 127.0.0.1:9901")
    return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"


def telemetry_config(values: Mapping[str, Any], glob: Mapping[str, tuple[Any, str]]) -> TelemetryConfig:
    """The TelemetryConfig of the parsed global ``values``; an admin address off
    the loopback needs ADMIN_ALLOW_REMOTE (the error names where ADMIN was set)."""
    cfg = TelemetryConfig(**{k: v for k, v in values.items() if k in TELEMETRY_FIELDS})
    loopback_only("admin", cfg.admin, cfg.admin_allow_remote, glob, "127.0.0.1:9901")
    return cfg


def loopback_only(key: str, address: str, allow_remote: bool, glob: Mapping[str, tuple[Any, str]], example: str) -> None:
    """An unauthenticated server's address (ADMIN, XDS_CSDS) must be a loopback
    one unless ADMIN_ALLOW_REMOTE; the error names where ``key`` was set."""
    if address and not allow_remote:
        host = address.rpartition(":")[0].strip("[]")
        if host not in _LOOPBACK and not host.startswith("127."):
            where = glob.get(key, (None, "MESHLIB_" + key.upper()))[1]
            raise ConfigError(where, address, f"a loopback address such as {example} (set MESHLIB_ADMIN_ALLOW_REMOTE=true to bind another)")
