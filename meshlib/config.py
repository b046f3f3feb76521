"""Configuration: environment, file and keyword sources -> one validated, immutable config.

Precedence, lowest first: the file named by ``MESHLIB_CONFIG`` (YAML or TOML),
``MESHLIB_*`` environment variables, then ``Mesh(config=...)``. Global keys are
``MESHLIB_<KEY>``; per-service keys ``MESHLIB_SERVICES__<SERVICE>__<KEY>``. Every
value is checked here, at start-up, and a bad one raises :class:`ConfigError`
naming where it came from, the value and what is accepted.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .endpoint import Endpoint, endpoint_from_mapping
from .errors import ConfigError

__all__ = ["MeshConfig", "ServiceConfig", "KEYS", "Key", "canonical_service", "load_config", "parse_duration"]

ENV_PREFIX = "MESHLIB_"
SERVICES_PREFIX = "MESHLIB_SERVICES__"
LB_POLICIES = ("round_robin", "weighted_round_robin", "random", "least_request", "peak_ewma", "ring_hash", "maglev")

_SERVICE_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


def canonical_service(name: str) -> str:
    """The one spelling of a service name: lower case, ``_`` written as ``-``.

    ``INVENTORY_API`` (from an environment variable), ``inventory_api`` and
    ``Inventory-Api`` all name the service ``inventory-api``.
    """
    return name.strip().lower().replace("_", "-")


# ----------------------------------------------------------------- value parsers

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def parse_duration(value: object, name: str, *, minimum: float = 0.0, allow_zero: bool = True) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``2m``, ``1h`` or a plain number of seconds."""
    accepted = "a duration such as 250ms, 1.5s, 2m or a number of seconds"
    if isinstance(value, bool):
        raise ConfigError(name, value, accepted)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ConfigError(name, value, accepted)
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds) or seconds < minimum or (seconds == 0 and not allow_zero):
        bound = f"greater than {minimum}s" if not allow_zero else f"at least {minimum}s"
        raise ConfigError(name, value, f"{accepted}, {bound}")
    return seconds


def _int(lo: int, hi: int | None = None) -> Callable[[object, str], int]:
    def parse(value: object, name: str) -> int:
        accepted = f"a whole number from {lo}" + (f" to {hi}" if hi is not None else " up")
        if isinstance(value, bool):
            raise ConfigError(name, value, accepted)
        try:
            n = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(name, value, accepted) from None
        if n < lo or (hi is not None and n > hi):
            raise ConfigError(name, value, accepted)
        return n

    return parse


def _float(lo: float, hi: float | None = None) -> Callable[[object, str], float]:
    def parse(value: object, name: str) -> float:
        accepted = f"a number from {lo}" + (f" to {hi}" if hi is not None else " up")
        if isinstance(value, bool):
            raise ConfigError(name, value, accepted)
        try:
            x = float(str(value).strip())
        except ValueError:
            raise ConfigError(name, value, accepted) from None
        if not math.isfinite(x) or x < lo or (hi is not None and x > hi):
            raise ConfigError(name, value, accepted)
        return x

    return parse


def _duration(*, allow_zero: bool = True) -> Callable[[object, str], float]:
    return lambda value, name: parse_duration(value, name, allow_zero=allow_zero)


def _choice(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value: object, name: str) -> str:
        text = str(value).strip().lower().replace("-", "_")
        if text not in choices:
            raise ConfigError(name, value, "one of " + ", ".join(choices))
        return text

    return parse


def _header(value: object, name: str) -> str:
    text = str(value).strip().lower()
    if text and not re.match(r"^[a-z0-9!#$%&'*+.^_`|~-]+$", text):
        raise ConfigError(name, value, "an HTTP header name (letters, digits and -), or empty for none")
    return text


def _hostname(value: object, name: str) -> str:
    text = str(value).strip().rstrip(".")
    labels = text.split(".")
    if (
        not text
        or len(text) > 253
        or not re.match(r"^[A-Za-z0-9.-]+$", text)
        or any(not label or len(label) > 63 or label.startswith("-") or label.endswith("-") for label in labels)
    ):
        raise ConfigError(name, value, "a DNS name such as inventory.internal (labels of 1 to 63 letters, digits or inner '-')")
    return text


def _discovery(value: object, name: str) -> str:
    text = str(value).strip()
    accepted = "static, dns, or file:///path/to/endpoints.yaml"
    low = text.lower()
    if low in ("static", "dns"):
        return low
    if low.startswith("file://"):
        path = text[len("file://") :]
        if not path:
            raise ConfigError(name, value, accepted, detail="the file:// URL has no path")
        return "file://" + path
    raise ConfigError(name, value, accepted)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _maglev_size(value: object, name: str) -> int:
    n = _int(3, 5_000_011)(value, name)
    if not _is_prime(n):
        raise ConfigError(name, value, "a prime number up to 5000011 (Envoy's default is 65537)")
    return n


def _endpoints(value: object, name: str) -> tuple[Endpoint, ...]:
    if isinstance(value, str):
        items: list[object] = [s for s in (p.strip() for p in value.split(",")) if s]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(name, value, "a comma-separated list of host:port[;weight=N][;zone=Z][;priority=P]")
    key, sep, origin = name.partition(" (")

    def label(i: int) -> str:
        return name if isinstance(value, str) else f"{key}[{i}]{sep}{origin}"

    return tuple(endpoint_from_mapping(item, name=label(i)) for i, item in enumerate(items))


def _locality_weights(value: object, name: str) -> Mapping[str, int]:
    accepted = "zone=weight pairs separated by commas, e.g. us-east-1a=3,us-east-1b=1 (weights 0 to 1000000)"
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            zone, sep, w = part.partition("=")
            if not sep or not zone.strip():
                raise ConfigError(name, value, accepted)
            pairs.append((zone.strip(), w.strip()))
    out: dict[str, int] = {}
    for zone, w in pairs:
        out[str(zone)] = _int(0, 1_000_000)(w, f"{name} ({zone})")
    return MappingProxyType(out)


# ----------------------------------------------------------------- the key table


@dataclass(frozen=True)
class Key:
    """One configuration key: how it parses, its default and where it may be set."""

    name: str
    parse: Callable[[object, str], Any]
    default: Any
    scope: str  # "global", "service" or "both"
    type: str
    doc: str
    example: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        Key("discovery", _discovery, "static", "global", "string",
            "Where endpoints come from: static (from ENDPOINTS keys), dns, or file:///path (reloaded on change).",
            "file:///etc/meshlib/endpoints.yaml"),
        Key("lb_policy", _choice(LB_POLICIES), "peak_ewma", "both", "string",
            "Load-balancing policy: " + ", ".join(LB_POLICIES) + ".", "least_request"),
        Key("hash_header", _header, "", "both", "string",
            "Request header whose value is the hash key for ring_hash and maglev (empty: none).", "x-user-id"),
        Key("ring_hash_min_size", _int(1, 8_388_608), 1024, "both", "integer",
            "ring_hash: minimum number of ring entries (Envoy minimum_ring_size).", "4096"),
        Key("ring_hash_max_size", _int(1, 8_388_608), 8_388_608, "both", "integer",
            "ring_hash: maximum number of ring entries (Envoy maximum_ring_size).", "1048576"),
        Key("maglev_table_size", _maglev_size, 65537, "both", "integer (prime)",
            "maglev: lookup table size, a prime (Envoy table_size).", "65537"),
        Key("choice_count", _int(2, 100), 2, "both", "integer",
            "least_request: hosts sampled per pick (Envoy choice_count).", "3"),
        Key("active_request_bias", _float(0.0, 10.0), 1.0, "both", "float",
            "least_request with unequal weights: effective weight = weight / (active + 1) ** bias.", "0.5"),
        Key("ewma_decay", _duration(allow_zero=False), 10.0, "both", "duration",
            "peak_ewma: decay time of the latency average (Finagle decayTime, Linkerd decay).", "5s"),
        Key("ewma_default_rtt", _duration(allow_zero=False), 0.030, "both", "duration",
            "peak_ewma: latency assumed for an endpoint with no observations yet (Linkerd default_rtt).", "50ms"),
        Key("ewma_failure_penalty", _duration(), 1.0, "both", "duration",
            "peak_ewma: latency recorded for a failed attempt (connect failure, reset, 5xx), so failing hosts lose traffic.", "2s"),
        Key("panic_threshold", _float(0.0, 100.0), 50.0, "both", "percent",
            "Below this share of healthy hosts a priority balances over all its hosts (Envoy healthy_panic_threshold; 0 disables).", "30"),
        Key("overprovisioning_factor", _float(1.0, 100.0), 1.4, "both", "float",
            "Priority and locality health is min(100%, factor x healthy share) (Envoy overprovisioning_factor 140).", "1.0"),
        Key("locality_weights", _locality_weights, MappingProxyType({}), "both", "zone=weight list",
            "Enables locality-weighted balancing: traffic share per zone, scaled by each zone's health. Zones not listed get no traffic.",
            "us-east-1a=3,us-east-1b=1"),
        Key("connect_retries", _int(0, 10), 2, "both", "integer",
            "Extra attempts, each on another endpoint, when a connection cannot be made (the request never left).", "1"),
        Key("connect_timeout", _duration(allow_zero=False), 5.0, "both", "duration",
            "Timeout for opening a connection to an endpoint (Envoy connect_timeout).", "1s"),
        Key("dns_refresh_interval", _duration(allow_zero=False), 5.0, "both", "duration",
            "dns discovery: how often names are re-resolved (Envoy dns_refresh_rate).", "30s"),
        Key("file_poll_interval", _duration(allow_zero=False), 1.0, "global", "duration",
            "file discovery: how often the file is checked for changes.", "500ms"),
        Key("endpoints", _endpoints, None, "service", "endpoint list",
            "Static endpoints: host:port[;weight=N][;zone=Z][;priority=P], comma-separated. Declares the service.",
            "127.0.0.1:8001;weight=2,127.0.0.1:8002;zone=b"),
        Key("dns_name", _hostname, None, "service", "string",
            "dns discovery: the name to resolve (default: the service name). Declares the service.", "inventory.internal"),
        Key("port", _int(1, 65535), 80, "service", "integer",
            "dns discovery: the port of every resolved address.", "8080"),
    ]
}

SERVICE_KEYS = tuple(k for k in KEYS.values() if k.scope in ("service", "both"))
GLOBAL_KEYS = tuple(k for k in KEYS.values() if k.scope in ("global", "both"))


# ----------------------------------------------------------------- the result


@dataclass(frozen=True)
class ServiceConfig:
    """Settings for one service: its own keys, falling back to the global ones."""

    name: str
    lb_policy: str = "peak_ewma"
    hash_header: str = ""
    ring_hash_min_size: int = 1024
    ring_hash_max_size: int = 8_388_608
    maglev_table_size: int = 65537
    choice_count: int = 2
    active_request_bias: float = 1.0
    ewma_decay: float = 10.0
    ewma_default_rtt: float = 0.030
    ewma_failure_penalty: float = 1.0
    panic_threshold: float = 50.0
    overprovisioning_factor: float = 1.4
    locality_weights: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    connect_retries: int = 2
    connect_timeout: float = 5.0
    dns_refresh_interval: float = 5.0
    endpoints: tuple[Endpoint, ...] | None = None
    dns_name: str | None = None
    port: int = 80


_SERVICE_FIELDS = {f.name for f in fields(ServiceConfig)} - {"name"}


@dataclass(frozen=True)
class MeshConfig:
    """The whole validated configuration. Immutable; build a new one to change it."""

    discovery: str = "static"
    file_poll_interval: float = 1.0
    defaults: ServiceConfig = field(default_factory=lambda: ServiceConfig(name="*"))
    services: Mapping[str, ServiceConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "defaults"

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


# ----------------------------------------------------------------- loading

_Raw = dict[str, tuple[object, str]]  # key -> (value, where it came from)


def _read_file(path: str) -> Mapping[str, Any]:
    origin = "MESHLIB_CONFIG"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(origin, path, "a readable YAML (.yaml/.yml) or TOML (.toml) file", detail=str(exc)) from None
    return parse_document(data, path, origin)


def parse_document(data: bytes, path: str, origin: str) -> Mapping[str, Any]:
    """Parse YAML, JSON or TOML (by file extension; YAML also reads JSON)."""
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            doc: object = tomllib.loads(data.decode("utf-8"))
        elif path.endswith(".json"):
            doc = json.loads(data.decode("utf-8"))
        else:
            import yaml

            doc = yaml.safe_load(data.decode("utf-8"))
    except Exception as exc:  # every parser has its own error type
        raise ConfigError(origin, path, "a well-formed YAML, JSON or TOML document", detail=str(exc).splitlines()[0]) from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(origin, path, "a document whose top level is a mapping of keys")
    return doc


def _merge_mapping(data: Mapping[str, Any], origin: str, glob: _Raw, services: dict[str, _Raw]) -> None:
    for key, value in data.items():
        k = str(key).lower()
        if k == "services":
            if not isinstance(value, Mapping):
                raise ConfigError(f"services ({origin})", value, "a mapping of service name to its keys")
            for sname, skeys in value.items():
                where = f"services.{sname}"
                cname = _check_service_name(str(sname), f"{where} ({origin})")
                if not isinstance(skeys, Mapping):
                    raise ConfigError(f"{where} ({origin})", skeys, "a mapping of keys, e.g. {endpoints: [...]}")
                raw = services.setdefault(cname, {})
                for sk, sv in skeys.items():
                    skl = str(sk).lower()
                    _check_key(skl, f"{where}.{sk} ({origin})", service=True)
                    raw[skl] = (sv, f"{where}.{sk} ({origin})")
        else:
            _check_key(k, f"{key} ({origin})", service=False)
            glob[k] = (value, f"{key} ({origin})")


def _check_service_name(name: str, where: str) -> str:
    cname = canonical_service(name)
    if not _SERVICE_RE.match(cname):
        raise ConfigError(where, name, "a service name of letters, digits, '-', '_' and '.'")
    return cname


def _check_key(key: str, where: str, *, service: bool, value: object = None) -> None:
    k = KEYS.get(key)
    allowed = SERVICE_KEYS if service else GLOBAL_KEYS
    if k is None or k not in allowed:
        names = ", ".join(sorted(x.name for x in allowed))
        kind = "per-service" if service else "global"
        raise ConfigError(where, key if value is None else value, f"{where.split(' ')[0]} is not a {kind} key; known {kind} keys: {names}")


def _merge_env(environ: Mapping[str, str], glob: _Raw, services: dict[str, _Raw]) -> None:
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == "MESHLIB_CONFIG":
            continue
        if var.startswith(SERVICES_PREFIX):
            rest = var[len(SERVICES_PREFIX) :]
            sname, sep, key = rest.partition("__")
            if not sep or not sname or not key:
                raise ConfigError(var, value, "per-service variables are named MESHLIB_SERVICES__<SERVICE>__<KEY>")
            cname = _check_service_name(sname, var)
            _check_key(key.lower(), var, service=True, value=value)
            services.setdefault(cname, {})[key.lower()] = (value, var)
        else:
            key = var[len(ENV_PREFIX) :].lower()
            _check_key(key, var, service=False, value=value)
            glob[key] = (value, var)


def load_config(
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    origin: str = "Mesh(config=...)",
) -> MeshConfig:
    """Layer file < environment < overrides, validate every value, return the config."""
    glob: _Raw = {}
    services: dict[str, _Raw] = {}
    sources = []
    path = environ.get("MESHLIB_CONFIG") or (overrides or {}).get("config_file")
    if path:
        _merge_mapping(_read_file(str(path)), str(path), glob, services)
        sources.append(str(path))
    _merge_env(environ, glob, services)
    if any(k.startswith(ENV_PREFIX) for k in environ):
        sources.append("environment")
    if overrides:
        data = {k: v for k, v in overrides.items() if k != "config_file"}
        _merge_mapping(data, origin, glob, services)
        sources.append(origin)

    values: dict[str, Any] = {}
    for key, (value, where) in glob.items():
        values[key] = KEYS[key].parse(value, where)
    defaults = ServiceConfig(name="*", **{k: v for k, v in values.items() if k in _SERVICE_FIELDS})
    _check_ring_sizes(defaults, "ring_hash_min_size")

    built: dict[str, ServiceConfig] = {}
    for cname, raw in services.items():
        parsed = {key: KEYS[key].parse(value, where) for key, (value, where) in raw.items()}
        svc = replace(defaults, name=cname, **parsed)
        _check_ring_sizes(svc, raw.get("ring_hash_min_size", ("", f"services.{cname}.ring_hash_min_size"))[1])
        built[cname] = svc

    return MeshConfig(
        discovery=values.get("discovery", KEYS["discovery"].default),
        file_poll_interval=values.get("file_poll_interval", KEYS["file_poll_interval"].default),
        defaults=defaults,
        services=MappingProxyType(built),
        source=" < ".join(sources) or "defaults",
    )


def _check_ring_sizes(svc: ServiceConfig, where: str) -> None:
    if svc.ring_hash_min_size > svc.ring_hash_max_size:
        raise ConfigError(where, svc.ring_hash_min_size, f"at most ring_hash_max_size ({svc.ring_hash_max_size})")


# ----------------------------------------------------------------- documentation

#: Where each default comes from, shown beside it in docs/configuration.md.
DEFAULT_SOURCES = {
    "lb_policy": "Finagle and Linkerd balance with P2C + peak EWMA; Envoy's default is round_robin",
    "ring_hash_min_size": "Envoy minimum_ring_size 1024",
    "ring_hash_max_size": "Envoy maximum_ring_size 8388608",
    "maglev_table_size": "Envoy table_size 65537",
    "choice_count": "Envoy choice_count 2",
    "active_request_bias": "Envoy active_request_bias 1.0",
    "ewma_decay": "Finagle decayTime 10s, Linkerd decay 10s",
    "ewma_default_rtt": "Linkerd default_rtt 30ms",
    "panic_threshold": "Envoy healthy_panic_threshold 50%",
    "overprovisioning_factor": "Envoy overprovisioning_factor 140 (1.4)",
    "connect_retries": "Envoy num_retries 1 once a retry policy is set; connect failures never reached the server, so 2 is safe for every method",
    "connect_timeout": "Envoy connect_timeout 5s",
    "dns_refresh_interval": "Envoy dns_refresh_rate 5s",
}


def _show_default(key: Key) -> str:
    d = key.default
    if d is None:
        return "(none)"
    if isinstance(d, Mapping):
        return "(none)" if not d else ",".join(f"{k}={v}" for k, v in d.items())
    if key.type == "duration":
        return f"{d * 1000:g}ms" if d < 1 else f"{d:g}s"
    if d == "":
        return "(empty)"
    return str(d)


def render_markdown() -> str:
    """The text of docs/configuration.md, generated from :data:`KEYS`."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `make docs-config` (meshlib config-docs) from meshlib/config.py; edit there. -->",
        "",
        "meshlib reads its settings from three places, lowest precedence first:",
        "",
        "1. the YAML or TOML file named by `MESHLIB_CONFIG`;",
        "2. `MESHLIB_*` environment variables;",
        "3. the mapping given to `Mesh(config=...)` (or keyword arguments of `Mesh.from_env(**kw)`).",
        "",
        "Global keys are `MESHLIB_<KEY>`. Per-service keys are",
        "`MESHLIB_SERVICES__<SERVICE>__<KEY>`, the service upper-cased with `-` written as",
        "`_` (`MESHLIB_SERVICES__INVENTORY_API__ENDPOINTS` configures `inventory-api`). A",
        "per-service key overrides the global key of the same name for that service.",
        "In a file or mapping the same keys are lower-case, per-service ones under",
        "`services.<name>`:",
        "",
        "```yaml",
        "lb_policy: peak_ewma",
        "connect_retries: 2",
        "services:",
        "  inventory:",
        "    endpoints: [\"127.0.0.1:8001;weight=2\", \"127.0.0.1:8002;zone=b;priority=1\"]",
        "    lb_policy: ring_hash",
        "    hash_header: x-user-id",
        "```",
        "",
        "Every value is validated when the Mesh is built. A bad one raises",
        "`meshlib.ConfigError` naming the variable (or file key), the value and what is",
        "accepted, e.g. `MESHLIB_LB_POLICY='fastest' is invalid: one of round_robin, ...`.",
        "Unknown `MESHLIB_*` variables are errors too, so a typo never goes unnoticed.",
        "",
        "Durations accept `250ms`, `1.5s`, `2m`, `1h` or a plain number of seconds.",
        "",
        "| variable | type | default | example | scope | meaning |",
        "|---|---|---|---|---|---|",
        "| `MESHLIB_CONFIG` | path | (none) | `/etc/meshlib.yaml` | global | YAML (`.yaml`, `.yml`) or TOML (`.toml`) file with the keys below. |",
    ]
    for key in KEYS.values():
        scope = {"global": "global", "service": "per service", "both": "global or per service"}[key.scope]
        var = f"`{key.env}`" if key.scope != "service" else f"`MESHLIB_SERVICES__<SERVICE>__{key.name.upper()}`"
        meaning = key.doc
        if key.name in DEFAULT_SOURCES:
            meaning += f" Default source: {DEFAULT_SOURCES[key.name]}."
        lines.append(f"| {var} | {key.type} | `{_show_default(key)}` | `{key.example}` | {scope} | {meaning} |")
    lines += [
        "",
        "## Endpoint specs",
        "",
        "`ENDPOINTS` is a comma-separated list of `host:port` (IPv6 as `[addr]:port`), each",
        "optionally followed by `;weight=N` (1 to 1000000, default 1), `;zone=Z` (the",
        "locality) and `;priority=P` (0 to 127, 0 is preferred; higher levels take traffic",
        "only as lower ones lose healthy hosts). In a file, an endpoint may also be a",
        "mapping with `address` (or `host` and `port`), `weight`, `zone`, `priority`,",
        "`tags`, `metadata` and `healthy`.",
        "",
        "## Which hosts are mesh services",
        "",
        "A URL's host is a mesh service when it names a service declared in the",
        "configuration (any per-service key) or published by the discovery source,",
        "compared case-insensitively with `_` and `-` treated alike. The URL's port is",
        "ignored (each endpoint has its own). Every other host passes through to the",
        "ordinary client untouched.",
        "",
    ]
    return "\n".join(lines)
