"""``meshlib config check``: validate the configuration and show what it means.

Reads the environment and the ``MESHLIB_CONFIG`` file exactly as ``Mesh``
would, starts nothing (no discovery, no threads, no sockets), and prints the
effective configuration: the global keys, then each declared service, every
value beside where it came from. Secrets are shown as ``<hidden>``.
"""

from __future__ import annotations

from typing import Any, Mapping, TextIO

from ..endpoint import Endpoint
from ..errors import ConfigError
from .docs import show_value
from .keys import GLOBAL_KEYS, SERVICE_KEYS, Key
from .load import MeshConfig, build_config, read_sources
from .model import ServiceConfig
from .redact import HIDDEN, redact_url
from .sources import Raw, Values

__all__ = ["check", "effective_value"]

EXIT_OK = 0
EXIT_INVALID = 2
_ESSENTIAL = ("endpoints", "dns_name", "lb_policy")


def effective_value(config: MeshConfig, service: ServiceConfig, key: Key) -> Any:
    """The value ``key`` has for ``service`` in ``config``."""
    if key.target is not None:
        group, path = key.target
        value = getattr(service, group)
        for part in path.split("."):
            value = getattr(value, part)
        return value
    for owner in (service, config.registry, config.tls, config.xds, config.telemetry, config):
        if hasattr(owner, key.name):
            return getattr(owner, key.name)
    raise KeyError(key.name)


def _show(key: Key, value: Any) -> str:
    if key.secret:
        return "(empty)" if not value else repr(HIDDEN)
    if isinstance(value, tuple) and value and isinstance(value[0], Endpoint):
        return ", ".join(_endpoint(ep) for ep in value)
    text = show_value(key, value)
    return redact_url(text)


def _endpoint(ep: Endpoint) -> str:
    attrs = [f"weight={ep.weight}"] if ep.weight != 1 else []
    attrs += [f"zone={ep.zone}"] if ep.zone else []
    attrs += [f"priority={ep.priority}"] if ep.priority else []
    attrs += ["tags=" + "|".join(ep.tags)] if ep.tags else []
    return ";".join([ep.address, *attrs])


def _origin(key: str, own: Values | None, glob: Values) -> str | None:
    if own is not None and key in own:
        return own[key][1]
    if key in glob:
        return glob[key][1] + (" (global)" if own is not None else "")
    return None


def _section(lines: list[str], title: str, rows: list[tuple[str, str, str]], hidden_defaults: int) -> None:
    lines.append(title)
    width = max((len(k) for k, _, _ in rows), default=0)
    vwidth = min(max((len(v) for _, v, _ in rows), default=0), 48)
    for name, value, origin in rows:
        lines.append(f"  {name.ljust(width)} = {value.ljust(vwidth)}  {origin}".rstrip())
    if hidden_defaults:
        lines.append(f"  ({hidden_defaults} more key{'s' if hidden_defaults != 1 else ''} at their defaults; --all shows them)")


def _rows(keys: tuple[Key, ...], config: MeshConfig, svc: ServiceConfig, own: Values | None, raw: Raw, show_all: bool) -> tuple[list[tuple[str, str, str]], int]:
    rows, skipped = [], 0
    for key in keys:
        origin = _origin(key.name, own, raw.glob)
        if origin is None and not show_all and key.name not in _ESSENTIAL:
            skipped += 1
            continue
        value = effective_value(config, svc, key)
        if value is None and origin is None and key.name in ("endpoints", "dns_name"):
            continue
        rows.append((key.name, _show(key, value), origin or "default"))
    return rows, skipped


def render(config: MeshConfig, raw: Raw, *, show_all: bool = False) -> str:
    """The report ``meshlib config check`` prints for a valid configuration."""
    lines = [f"configuration OK (sources: {config.source})", ""]
    rows, skipped = _rows(GLOBAL_KEYS, config, config.defaults, None, raw, show_all)
    _section(lines, "global (every service unless it sets its own):", rows, skipped)
    for name, svc in sorted(config.services.items()):
        lines.append("")
        rows, skipped = _rows(SERVICE_KEYS, config, svc, raw.services.get(name, {}), raw, show_all)
        _section(lines, f"service {name}:", rows, skipped)
    if not config.services:
        lines += ["", "no service is declared (MESHLIB_SERVICES__<SERVICE>__<KEY>, or services: in the file)"]
    if config.discovery != "static":
        lines += ["", f"services published by {redact_url(config.discovery)} are not listed: nothing was started."]
    return "\n".join(lines) + "\n"


def check(environ: Mapping[str, str], out: TextIO, err: TextIO, *, show_all: bool = False) -> int:
    """Validate ``environ`` (and the file it names); print the effective configuration
    to ``out`` or the error to ``err``. Returns the exit status."""
    try:
        raw = read_sources(environ)
        config = build_config(raw)
    except ConfigError as exc:
        err.write(f"meshlib config check: {exc}\n")
        return EXIT_INVALID
    out.write(render(config, raw, show_all=show_all))
    return EXIT_OK

