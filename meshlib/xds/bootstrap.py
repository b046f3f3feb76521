"""The xDS bootstrap, in gRPC's format (gRFC A27, A65, A71, A88).

Read from the file named by ``MESHLIB_XDS_BOOTSTRAP`` (else ``GRPC_XDS_BOOTSTRAP``)
or inline JSON in ``MESHLIB_XDS_BOOTSTRAP_CONFIG`` (else
``GRPC_XDS_BOOTSTRAP_CONFIG``). A bad bootstrap raises ``ConfigError`` naming the
variable and the field. Unknown fields are ignored, as gRPC does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ConfigError

__all__ = ["Bootstrap", "XdsServer", "Node", "load_bootstrap", "parse_bootstrap", "BOOTSTRAP_VARIABLES"]

#: Where the bootstrap comes from, first found wins: (variable, is a file path).
BOOTSTRAP_VARIABLES = (
    ("MESHLIB_XDS_BOOTSTRAP", True),
    ("MESHLIB_XDS_BOOTSTRAP_CONFIG", False),
    ("GRPC_XDS_BOOTSTRAP", True),
    ("GRPC_XDS_BOOTSTRAP_CONFIG", False),
)
CREDS_TYPES = ("insecure", "tls")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class XdsServer:
    """One ``xds_servers`` entry: ``server_uri``, the first supported
    ``channel_creds`` entry and ``server_features``."""

    server_uri: str
    creds_type: str = "insecure"
    ca_certificate_file: str = ""
    certificate_file: str = ""
    private_key_file: str = ""
    server_features: frozenset[str] = frozenset()

    @property
    def fail_on_data_errors(self) -> bool:
        return "fail_on_data_errors" in self.server_features

    @property
    def resource_timer_is_transient(self) -> bool:
        return bool({"resource_timer_is_transient_error", "resource_timer_is_transient_failure"} & self.server_features)


@dataclass(frozen=True)
class Node:
    """The ``node`` sent on the first request of each stream."""

    id: str = ""
    cluster: str = ""
    region: str = ""
    zone: str = ""
    sub_zone: str = ""
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class Bootstrap:
    servers: tuple[XdsServer, ...]
    node: Node = Node()
    source: str = ""


def load_bootstrap(environ: Mapping[str, str] | None = None) -> Bootstrap:
    """The bootstrap named by the environment; ConfigError if none is set or it is bad."""
    env = os.environ if environ is None else environ
    for var, is_file in BOOTSTRAP_VARIABLES:
        value = env.get(var, "")
        if not value:
            continue
        if is_file:
            try:
                with open(value, "rb") as f:
                    text = f.read().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(var, value, "the path of a readable JSON bootstrap file", detail=str(exc)) from None
        else:
            text = value
        return parse_bootstrap(text, var)
    names = ", ".join(v for v, _ in BOOTSTRAP_VARIABLES)
    raise ConfigError("MESHLIB_XDS_BOOTSTRAP", "", f"one of {names} set to a bootstrap (gRPC's format)",
                      detail="MESHLIB_DISCOVERY=xds needs an xDS bootstrap")  # fmt: skip


def parse_bootstrap(text: str | Mapping[str, Any], where: str = "bootstrap") -> Bootstrap:
    """Validate a bootstrap document (JSON text or a parsed mapping)."""
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(where, "<bootstrap>", "a JSON object in gRPC's xDS bootstrap format", detail=str(exc)) from None
    else:
        data = text
    if not isinstance(data, Mapping):
        raise ConfigError(where, type(data).__name__, "a JSON object in gRPC's xDS bootstrap format")
    servers = data.get("xds_servers")
    if not isinstance(servers, list) or not servers:
        raise ConfigError(f"{where}: xds_servers", servers, "a non-empty list of {server_uri, channel_creds}")
    return Bootstrap(
        servers=tuple(_server(s, f"{where}: xds_servers[{i}]") for i, s in enumerate(servers)),
        node=_node(data.get("node", {}), f"{where}: node"),
        source=where,
    )


def _server(data: object, where: str) -> XdsServer:
    if not isinstance(data, Mapping):
        raise ConfigError(where, data, "an object with server_uri and channel_creds")
    uri = data.get("server_uri")
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"{where}.server_uri", uri, "host:port (or any gRPC target) of the xDS server")
    creds = data.get("channel_creds")
    if not isinstance(creds, list) or not creds:
        raise ConfigError(f"{where}.channel_creds", creds, "a non-empty list of {type, config}; types: " + ", ".join(CREDS_TYPES))
    chosen: Mapping[str, Any] | None = None
    for i, c in enumerate(creds):
        if not isinstance(c, Mapping) or not isinstance(c.get("type"), str):
            raise ConfigError(f"{where}.channel_creds[{i}]", c, "an object with a string 'type'")
        if c["type"] in CREDS_TYPES:
            chosen = c
            break
    if chosen is None:
        raise ConfigError(f"{where}.channel_creds", [c.get("type") for c in creds], "a list naming at least one of: " + ", ".join(CREDS_TYPES))
    files: dict[str, str] = {}
    if chosen["type"] == "tls":
        config = chosen.get("config", {})
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where}.channel_creds.config", config, "an object")
        for key in ("ca_certificate_file", "certificate_file", "private_key_file"):
            value = config.get(key, "")
            if not isinstance(value, str) or (value and not os.path.isfile(value)):
                raise ConfigError(f"{where}.channel_creds.config.{key}", value, "the path of a readable PEM file")
            files[key] = value
        if bool(files["certificate_file"]) != bool(files["private_key_file"]):
            raise ConfigError(f"{where}.channel_creds.config", "certificate_file/private_key_file", "both or neither (gRFC A65)")
    features = data.get("server_features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ConfigError(f"{where}.server_features", features, "a list of strings, e.g. [\"xds_v3\", \"fail_on_data_errors\"]")
    return XdsServer(uri.strip(), chosen["type"], server_features=frozenset(features), **files)


def _node(data: object, where: str) -> Node:
    if not isinstance(data, Mapping):
        raise ConfigError(where, data, "an object (id, cluster, locality, metadata)")
    loc = data.get("locality", {})
    if not isinstance(loc, Mapping):
        raise ConfigError(f"{where}.locality", loc, "an object with region, zone, sub_zone")
    meta = data.get("metadata", {})
    if not isinstance(meta, Mapping):
        raise ConfigError(f"{where}.metadata", meta, "an object")
    return Node(
        metadata=MappingProxyType(dict(meta)),
        **_strings(data, ("id", "cluster"), where),
        **_strings(loc, ("region", "zone", "sub_zone"), f"{where}.locality"),
    )


def _strings(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> dict[str, str]:
    out = {}
    for key in keys:
        value = data.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key}", value, "a string")
        out[key] = value
    return out
