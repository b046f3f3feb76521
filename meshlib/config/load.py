"""Loading: file < environment < mapping, every value parsed, one immutable config.

Precedence, lowest first: the file named by ``MESHLIB_CONFIG`` (YAML or
TOML), ``MESHLIB_*`` environment variables, then ``Mesh(config=...)``. A bad
value raises :class:`ConfigError` naming the variable or file key the user
wrote, the value (never a secret's) and what is accepted -- and nothing else
can escape: a parser that trips over an input it did not foresee still
becomes a ConfigError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ConfigError
from ..security.client import TlsSettings

TLS_FIELDS = frozenset(f.name for f in fields(TlsSettings))
from ..telemetry.settings import TelemetryConfig
from .keys import ENV_PREFIX, KEYS, Key
from .model import REGISTRY_FIELDS, XDS_FIELDS, RegistryConfig, ServiceConfig, XdsConfig
from .parsers import canonical_service
from .redact import HIDDEN, leaks, redact_url, shown
from .telemetry import loopback_only, telemetry_config
from .sources import CONFIG_VAR, Raw, Values, read_env, read_file, read_mapping

__all__ = ["MeshConfig", "load_config", "read_sources", "build_config", "parse_value"]


@dataclass(frozen=True)
class MeshConfig:
    """The whole validated configuration. Immutable; build a new one to change it."""

    discovery: str = KEYS["discovery"].default
    file_poll_interval: float = KEYS["file_poll_interval"].default
    defaults: ServiceConfig = field(default_factory=lambda: ServiceConfig(name="*"))
    services: Mapping[str, ServiceConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "defaults"
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tls: TlsSettings = field(default_factory=TlsSettings)
    xds: XdsConfig = field(default_factory=XdsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def service(self, name: str) -> ServiceConfig:
        """The settings for ``name``: its own if declared, else the global defaults."""
        cname = canonical_service(name)
        svc = self.services.get(cname)
        return svc if svc is not None else replace(self.defaults, name=cname)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "MeshConfig":
        return load_config(environ=os.environ if environ is None else environ, overrides=overrides or None)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "config") -> "MeshConfig":
        return load_config(environ={}, overrides=data, origin=origin)


def load_config(
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    origin: str = "Mesh(config=...)",
) -> MeshConfig:
    """Layer file < environment < overrides, validate every value, return the config."""
    return build_config(read_sources(environ, overrides, origin))


def read_sources(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None, origin: str = "Mesh(config=...)") -> Raw:
    """Every source's keys, unparsed, the later overriding the earlier."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(origin, shown("", overrides), "a mapping of keys, e.g. {'lb_policy': 'round_robin', 'services': {...}}")
    raw = Raw()
    path = environ.get(CONFIG_VAR) or (overrides or {}).get("config_file")
    if path:
        read_file(str(path), raw)
    read_env(environ, raw)
    if "consul_token" not in raw.glob and environ.get("CONSUL_HTTP_TOKEN"):
        raw.glob["consul_token"] = (environ["CONSUL_HTTP_TOKEN"], "CONSUL_HTTP_TOKEN")  # Consul's own variable
    if "spiffe_endpoint_socket" not in raw.glob and environ.get("SPIFFE_ENDPOINT_SOCKET"):
        raw.glob["spiffe_endpoint_socket"] = (environ["SPIFFE_ENDPOINT_SOCKET"], "SPIFFE_ENDPOINT_SOCKET")  # the SPIFFE standard's variable
    if "xds_bootstrap" not in raw.glob and "xds_bootstrap_config" not in raw.glob:  # gRPC's own variables, in gRPC's order
        for var, key in (("GRPC_XDS_BOOTSTRAP", "xds_bootstrap"), ("GRPC_XDS_BOOTSTRAP_CONFIG", "xds_bootstrap_config")):
            if environ.get(var):
                raw.glob[key] = (environ[var], var)
                break
    if overrides:
        read_mapping({k: v for k, v in overrides.items() if k != "config_file"}, origin, raw)
    return raw


# ----------------------------------------------------------------- parsing values


def parse_value(key: Key, value: object, where: str) -> Any:
    """``key.parse`` with the guarantees: ConfigError only, no secret in it."""
    try:
        return key.parse(value, where)
    except ConfigError as exc:
        if key.secret:
            raise ConfigError(exc.name, HIDDEN, redact_url(exc.accepted)) from None
        safe_value = shown(key.name, exc.value)
        if safe_value != exc.value or leaks(str(exc)):
            raise ConfigError(exc.name, safe_value, redact_url(exc.accepted)) from None
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError, AttributeError, LookupError):
        # An input the parser did not foresee: still the user's mistake, still named.
        raise ConfigError(where, shown(key.name, value), f"a {key.type}; `meshlib config-docs` describes {key.name.upper()}") from None


def _with_changes(obj: Any, changes: dict[str, tuple[Any, str, object]]) -> Any:
    """``obj`` with the (possibly dotted) fields in ``changes`` (path -> (parsed,
    where, as written)) replaced; a cross-field error names the setting that caused it."""
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, tuple[Any, str, object]]] = {}
    for path, change in changes.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = change
        else:
            flat[head] = change[0]
    for head, sub in nested.items():
        flat[head] = _with_changes(getattr(obj, head), sub)
    try:
        return replace(obj, **flat)
    except ConfigError as exc:
        culprit = [(p, c) for p, c in changes.items() if p.rpartition(".")[2] == exc.name] or list(changes.items())
        path, (_, where, written) = culprit[0]
        raise ConfigError(where, shown(path, written), exc.accepted) from None


def _service_config(base: ServiceConfig, name: str, values: Values) -> ServiceConfig:
    """``base`` with the service keys in ``values`` parsed and applied."""
    plain: dict[str, Any] = {}
    groups: dict[str, dict[str, tuple[Any, str, object]]] = {}
    for key, (value, where) in values.items():
        k = KEYS[key]
        if k.scope == "global":
            continue
        parsed = parse_value(k, value, where)
        if k.target is None:
            plain[key] = parsed
        else:
            groups.setdefault(k.target[0], {})[k.target[1]] = (parsed, where, value)
    for group, changes in groups.items():
        plain[group] = _with_changes(getattr(base, group), changes)
    return replace(base, name=name, **plain)


# ----------------------------------------------------------------- the whole config


def build_config(raw: Raw) -> MeshConfig:
    """Parse and check every value in ``raw``; the immutable result."""
    values: dict[str, Any] = {}
    for key, (value, where) in raw.glob.items():
        if KEYS[key].scope == "global":
            values[key] = parse_value(KEYS[key], value, where)
    defaults = _service_config(ServiceConfig(name="*"), "*", raw.glob)
    _check_ring_sizes(defaults, raw.glob, {})
    discovery = values.get("discovery", KEYS["discovery"].default)

    built: dict[str, ServiceConfig] = {}
    for cname, svc_values in raw.services.items():
        svc = _service_config(defaults, cname, svc_values)
        _check_ring_sizes(svc, raw.glob, svc_values)
        if discovery == "static" and svc.endpoints == () and "endpoints" in svc_values:
            value, where = svc_values["endpoints"]
            raise ConfigError(where, value, "at least one host:port; with MESHLIB_DISCOVERY=static a service needs its endpoints")
        built[cname] = svc

    registry = RegistryConfig(**{k: v for k, v in values.items() if k in REGISTRY_FIELDS})
    _check_registry(registry, raw.glob)
    return MeshConfig(
        discovery=discovery,
        file_poll_interval=values.get("file_poll_interval", KEYS["file_poll_interval"].default),
        defaults=defaults,
        services=MappingProxyType(built),
        source=" < ".join(raw.sources) or "defaults",
        registry=registry,
        tls=_tls_settings(values, raw.glob),
        xds=_xds_settings(values, raw.glob),
        telemetry=telemetry_config(values, raw.glob),
    )


def _xds_settings(values: dict[str, Any], glob: Values) -> XdsConfig:
    cfg = XdsConfig(**{k: v for k, v in values.items() if k in XDS_FIELDS})
    loopback_only("xds_csds", cfg.xds_csds, values.get("admin_allow_remote", False), glob, "127.0.0.1:18001")
    return cfg


def _tls_settings(values: dict[str, Any], glob: Values) -> TlsSettings:
    """The global TLS keys; a certificate, its key and the trust bundle come together."""
    files = {k: values.get(k, "") for k in ("tls_cert", "tls_key", "tls_ca")}
    if (files["tls_cert"] or files["tls_key"]) and not all(files.values()):
        given = next(k for k in ("tls_cert", "tls_key") if files[k])
        missing = [ENV_PREFIX + k.upper() for k, v in files.items() if not v]
        raise ConfigError(glob[given][1], shown(given, glob[given][0]), f"a certificate, its key and the trust bundle are given together: set {', '.join(missing)} too")
    return TlsSettings(**{k: v for k, v in values.items() if k in TLS_FIELDS})


def _check_ring_sizes(svc: ServiceConfig, glob: Values, own: Values) -> None:
    """ring_hash_min_size <= ring_hash_max_size, blaming a setting the user wrote."""
    lo, hi = svc.ring_hash_min_size, svc.ring_hash_max_size
    if lo <= hi:
        return
    rules = (("ring_hash_min_size", "at most", "ring_hash_max_size", hi), ("ring_hash_max_size", "at least", "ring_hash_min_size", lo))
    for scope in (own, glob):
        for key, relation, other, bound in rules:
            if key in scope:
                value, where = scope[key]
                source = (own.get(other) or glob.get(other) or (None, "its default"))[1]
                raise ConfigError(where, value, f"{key} must be {relation} {other} ({bound}, from {source})")


def _check_registry(reg: RegistryConfig, glob: Values) -> None:
    """Settings that only make sense together; each error names what the user set."""

    def where(key: str) -> str:
        return glob.get(key, ("", ENV_PREFIX + key.upper()))[1]

    def written(key: str) -> object:
        return shown(key, glob.get(key, ("",))[0])

    for kind in ("consul", "etcd"):
        cert, key = f"{kind}_tls_cert", f"{kind}_tls_key"
        if bool(getattr(reg, cert)) != bool(getattr(reg, key)):
            given, missing = (cert, key) if getattr(reg, cert) else (key, cert)
            raise ConfigError(where(given), written(given), f"a client certificate and its key are given together: set {ENV_PREFIX}{missing.upper()} too")
    if reg.etcd_tls_cert and not reg.etcd_tls_ca:
        raise ConfigError(where("etcd_tls_cert"), written("etcd_tls_cert"), "etcd client certificates need the CA too: set MESHLIB_ETCD_TLS_CA")
    if bool(reg.etcd_user) != bool(reg.etcd_password):
        given, missing = ("etcd_user", "etcd_password") if reg.etcd_user else ("etcd_password", "etcd_user")
        raise ConfigError(where(given), written(given), f"etcd user and password are given together: set {ENV_PREFIX}{missing.upper()} too")
    if reg.consul_wait > 600:
        raise ConfigError(where("consul_wait"), written("consul_wait"), "at most 10m (Consul's limit for a blocking query)")
    if reg.consul_deregister_after < 60:
        raise ConfigError(where("consul_deregister_after"), written("consul_deregister_after"), "at least 1m (Consul's minimum)")
    if reg.registry_backoff_base > reg.registry_backoff_max:
        if "registry_backoff_base" in glob:
            raise ConfigError(where("registry_backoff_base"), written("registry_backoff_base"), f"at most registry_backoff_max ({reg.registry_backoff_max:g}s)")
        raise ConfigError(where("registry_backoff_max"), written("registry_backoff_max"), f"at least registry_backoff_base ({reg.registry_backoff_base:g}s)")
