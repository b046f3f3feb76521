"""MESHLIB_DISCOVERY: which discovery source, as one canonical URL.

The one place that knows the scheme names and their default ports; it is
meant to become a call into the discovery scheme registry (discovery/), so
that a new scheme is one module plus one registration line.
"""

from __future__ import annotations

from ..endpoint import _parse_host_port
from ..errors import ConfigError
from .redact import redact_url

__all__ = ["REGISTRY_PORTS", "parse_discovery"]

#: Registry schemes of MESHLIB_DISCOVERY and the port each defaults to (Consul's
#: HTTP API port, etcd's client port).
REGISTRY_PORTS = {"consul": 8500, "etcd": 2379}


def parse_discovery(value: object, name: str) -> str:
    """``MESHLIB_DISCOVERY``: the canonical source URL. The one place that knows
    the schemes; it becomes a call into the discovery scheme registry."""
    accepted = "static, dns, file:///path/to/endpoints.yaml, consul://host:port or etcd://host:port"
    if not isinstance(value, str):
        raise ConfigError(name, value, accepted)
    url = value.strip()
    low = url.lower()
    if low in ("static", "dns"):
        return low
    if low.startswith("file://"):
        path = url[len("file://") :]
        if not path or "\0" in path:
            raise ConfigError(name, value, accepted, detail="the file:// URL has no path")
        return "file://" + path
    scheme, sep, rest = url.partition("://")
    safe = redact_url(url)  # what a message may show: no userinfo, no query
    if sep and scheme.lower() in REGISTRY_PORTS:
        scheme = scheme.lower()
        rest = rest.rstrip("/")
        just = f"{scheme}:// is followed by host:port only; credentials and TLS have their own MESHLIB_{scheme.upper()}_* keys"
        if not rest or any(c in rest for c in "/?#@"):
            raise ConfigError(name, safe, accepted, detail=just)
        if not (rest.rpartition(":")[2].isdigit() and (not rest.startswith("[") or "]:" in rest)):
            rest = f"{rest}:{REGISTRY_PORTS[scheme]}"
        try:
            host, port = _parse_host_port(rest, name)
        except ConfigError as exc:
            raise ConfigError(name, safe, accepted, detail=str(exc).partition(" is invalid: ")[2]) from None
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    raise ConfigError(name, safe, accepted)
