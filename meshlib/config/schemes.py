"""MESHLIB_DISCOVERY: which discovery source, as one canonical URL.

The schemes, their accepted forms and default ports live in the discovery
scheme registry (``meshlib.discovery.schemes``); the configuration reads it,
so a new scheme is one module plus one registration line there.
"""

from __future__ import annotations

from ..discovery.schemes import parse_discovery, schemes

__all__ = ["REGISTRY_PORTS", "parse_discovery"]

#: Registry schemes of MESHLIB_DISCOVERY and the port each defaults to (Consul's
#: HTTP API port, etcd's client port).
REGISTRY_PORTS = {name: s.default_port for name, s in schemes().items() if s.default_port}
