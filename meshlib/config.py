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

from .endpoint import Endpoint, _parse_host_port, endpoint_from_mapping
from .errors import ConfigError
from .resilience.breaker import COUNT_BASED, TIME_BASED, BreakerConfig
from .resilience.budget import BUDGET_KINDS, BudgetConfig
from .resilience.fault import FaultConfig
from .health import HealthCheckConfig, parse_statuses
from .resilience.hedge import GRPC_STATUS_NAMES, HedgePolicy, parse_non_fatal
from .resilience.outlier import OutlierConfig
from .resilience.retry import RetryPolicy, parse_retry_on, parse_status_codes
from .telemetry.settings import PROPAGATORS as TELEMETRY_PROPAGATORS, TelemetryConfig

__all__ = ["MeshConfig", "ServiceConfig", "RegistryConfig", "KEYS", "Key", "canonical_service", "load_config", "parse_duration"]

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


#: Registry schemes of MESHLIB_DISCOVERY and the port each defaults to (Consul's
#: HTTP API port, etcd's client port).
REGISTRY_PORTS = {"consul": 8500, "etcd": 2379}


def _discovery(value: object, name: str) -> str:
    text = str(value).strip()
    accepted = "static, dns, file:///path/to/endpoints.yaml, consul://host:port or etcd://host:port"
    low = text.lower()
    if low in ("static", "dns"):
        return low
    if low.startswith("file://"):
        path = text[len("file://") :]
        if not path:
            raise ConfigError(name, value, accepted, detail="the file:// URL has no path")
        return "file://" + path
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in REGISTRY_PORTS:
        scheme = scheme.lower()
        rest = rest.rstrip("/")
        just = f"{scheme}:// is followed by host:port only; credentials and TLS have their own MESHLIB_{scheme.upper()}_* keys"
        if "@" in rest:  # user:password@ -- keep the secret out of the message
            raise ConfigError(name, f"{scheme}://<credentials hidden>@{rest.rpartition('@')[2]}", accepted, detail=just)
        if not rest or "/" in rest or "?" in rest:
            raise ConfigError(name, value, accepted, detail=just)
        if not (rest.rpartition(":")[2].isdigit() and (not rest.startswith("[") or "]:" in rest)):
            rest = f"{rest}:{REGISTRY_PORTS[scheme]}"
        try:
            host, port = _parse_host_port(rest, name)
        except ConfigError as exc:
            raise ConfigError(name, value, accepted, detail=str(exc).partition(" is invalid: ")[2]) from None
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    raise ConfigError(name, value, accepted)


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, value, "true or false (also 1/0, yes/no, on/off)")


def _text(value: object, name: str) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        raise ConfigError(name, "<not shown>", "a string")
    return str(value).strip()


def _file(value: object, name: str) -> str:
    """A path to a readable file (TLS material), checked at start-up."""
    path = str(value).strip()
    if path and not os.path.isfile(path):
        raise ConfigError(name, value, "the path of an existing, readable file (PEM)", detail="no such file")
    return path


def _etcd_prefix(value: object, name: str) -> str:
    text = str(value).strip().rstrip("/")
    if not text or any(c.isspace() for c in text):
        raise ConfigError(name, value, "a non-empty key prefix without spaces, such as /meshlib/services")
    return text


def _tag_list(value: object, name: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
        raise ConfigError(name, value, "a comma-separated list of tags, e.g. gpu,llm")
    return tuple(sorted({t.strip() for t in items if t.strip()}))


def _meta_pairs(value: object, name: str) -> Mapping[str, str]:
    accepted = "key=value pairs separated by commas, e.g. model=llama3,tier=gold"
    if isinstance(value, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in value.items()]
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
    return MappingProxyType(dict(sorted(pairs)))


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


def _burst(value: object, name: str) -> float:
    x = _float(0.0)(value, name)
    if 0 < x < 1:
        raise ConfigError(name, value, "0 (the rate, at least 1) or a number of calls from 1 up")
    return x


def _optional_duration(value: object, name: str) -> float | None:
    """A duration, or ``0`` / ``none`` / empty for no limit."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    seconds = parse_duration(value, name)
    return None if seconds == 0 else seconds


def _retry_on(value: object, name: str) -> frozenset[str]:
    return parse_retry_on(value if isinstance(value, (str, list, tuple)) else str(value), name)  # type: ignore[arg-type]


def _status_codes(value: object, name: str) -> frozenset[int]:
    return parse_status_codes(value, name)  # type: ignore[arg-type]


def _grpc_status(value: object, name: str) -> str:
    text = str(value).strip().upper()
    if text not in GRPC_STATUS_NAMES:
        raise ConfigError(name, value, "a gRPC status name such as UNAVAILABLE or RESOURCE_EXHAUSTED")
    return text


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
    #: For keys that build a policy object: (ServiceConfig field, the object's field).
    target: tuple[str, str] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        Key("discovery", _discovery, "static", "global", "string",
            "Where endpoints come from: static (from ENDPOINTS keys), dns, file:///path (reloaded on change), "
            "consul://host:port (port 8500 if left out) or etcd://host:port (port 2379). See docs/registries.md.",
            "etcd://127.0.0.1:2379"),
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
        # -- registries (consul://, etcd://) and discovery by capability; docs/registries.md
        Key("filter_tags", _tag_list, (), "both", "tag list",
            "Only endpoints carrying every one of these tags are used (any discovery source).", "gpu,llm"),
        Key("filter_meta", _meta_pairs, MappingProxyType({}), "both", "key=value list",
            "Only endpoints whose metadata has every one of these key=value pairs are used (any discovery source).",
            "model=llama3"),
        Key("registry_watch", _choice(("all", "declared")), "all", "global", "string",
            "consul/etcd: watch every service the registry lists (all) or only services declared in the configuration (declared).",
            "declared"),
        Key("registry_timeout", _duration(allow_zero=False), 5.0, "global", "duration",
            "consul/etcd: timeout of one registry request, and the longest Mesh() waits for the first listing.", "2s"),
        Key("registry_backoff_base", _duration(allow_zero=False), 0.1, "global", "duration",
            "consul/etcd: after the n-th failed reconnect in a row, wait a random time in [0, base x 2^(n-1)] (full jitter), capped by registry_backoff_max.", "250ms"),
        Key("registry_backoff_max", _duration(allow_zero=False), 30.0, "global", "duration",
            "consul/etcd: cap of the reconnect delay.", "2m"),
        Key("registry_ttl", lambda v, n: parse_duration(v, n, minimum=1.0), 10.0, "global", "duration",
            "mesh.register(): TTL of the Consul TTL check or the etcd lease; refreshed every TTL/3. Whole seconds for etcd (rounded up).",
            "30"),
        Key("consul_token", _text, "", "global", "string (secret)",
            "Consul ACL token sent as X-Consul-Token; falls back to CONSUL_HTTP_TOKEN. Never logged.", "b1gs3cr3t-..."),
        Key("consul_datacenter", _text, "", "global", "string",
            "Consul datacenter to read services from (empty: the agent's own).", "dc2"),
        Key("consul_tls_ca", _file, "", "global", "path",
            "CA bundle (PEM) that verifies the Consul agent; setting any CONSUL_TLS_* key switches to https.", "/etc/consul/ca.pem"),
        Key("consul_tls_cert", _file, "", "global", "path",
            "Client certificate (PEM) for Consul's verify_incoming; needs CONSUL_TLS_KEY.", "/etc/consul/client.pem"),
        Key("consul_tls_key", _file, "", "global", "path",
            "Private key (PEM) of CONSUL_TLS_CERT.", "/etc/consul/client-key.pem"),
        Key("consul_wait", _duration(allow_zero=False), 300.0, "global", "duration",
            "Consul blocking queries: the wait parameter, how long one query may hang (Consul caps it at 10m).", "1m"),
        Key("consul_only_passing", _bool, True, "global", "boolean",
            "Consul: only instances whose checks all pass (?passing). false: warning instances too, weighted by Weights.Warning; critical ones never.",
            "false"),
        Key("consul_query_rate", _float(0.01, 1000.0), 10.0, "global", "float (per second)",
            "Consul: blocking queries per second per watched service once a burst of 5 is spent (token bucket), so a churning or misbehaving server cannot make the loop spin.",
            "0.2"),
        Key("consul_deregister_after", _duration(allow_zero=False), 60.0, "global", "duration",
            "mesh.register() on Consul: DeregisterCriticalServiceAfter of the check (Consul's minimum is 1m).", "10m"),
        Key("etcd_prefix", _etcd_prefix, "/meshlib/services", "global", "string",
            "etcd: key prefix; an instance lives at <prefix>/<service>/<instance-id> as JSON.", "/prod/services"),
        Key("etcd_user", _text, "", "global", "string",
            "etcd user name (auth enabled); needs ETCD_PASSWORD.", "meshlib"),
        Key("etcd_password", _text, "", "global", "string (secret)",
            "etcd password of ETCD_USER. Never logged.", "s3cret"),
        Key("etcd_tls_ca", _file, "", "global", "path",
            "CA bundle (PEM) that verifies etcd; setting it switches to TLS.", "/etc/etcd/ca.pem"),
        Key("etcd_tls_cert", _file, "", "global", "path",
            "Client certificate (PEM) for etcd's --client-cert-auth; needs ETCD_TLS_KEY and ETCD_TLS_CA.", "/etc/etcd/client.pem"),
        Key("etcd_tls_key", _file, "", "global", "path",
            "Private key (PEM) of ETCD_TLS_CERT.", "/etc/etcd/client-key.pem"),
    ]
}

# ----------------------------------------------------------------- resilience defaults

#: meshlib's default retry policy: only attempts that provably never reached a
#: server (gRPC's transparent retries), twice, each on another endpoint.
DEFAULT_RETRY = RetryPolicy(retry_on=frozenset({"connect-failure", "refused-stream"}), num_retries=2)
_GROUP_DEFAULTS: dict[str, Any] = {
    "retry": DEFAULT_RETRY,
    "retry_budget": BudgetConfig(),
    "breaker_config": BreakerConfig(),
    "outlier": OutlierConfig(),
    "health_check": HealthCheckConfig(),
    "hedge": HedgePolicy(),
    "fault": FaultConfig(),
}


def _default_of(group: str, path: str) -> Any:
    obj = _GROUP_DEFAULTS[group]
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _policy_key(name: str, parse: Callable[[object, str], Any], group: str, path: str, type_: str, doc: str, example: str) -> Key:
    return Key(name, parse, _default_of(group, path), "both", type_, doc, example, target=(group, path))


_OUTLIER_DOCS = {
    "consecutive_5xx": ("integer", _int(0), "Eject a host after this many 5xx (and, unless split, local-origin failures) in a row; 0 never.", "3"),
    "consecutive_gateway_failure": ("integer", _int(0), "Eject after this many 502/503/504 (or local-origin failures) in a row (needs enforcing_consecutive_gateway_failure).", "3"),
    "consecutive_local_origin_failure": ("integer", _int(0), "Split mode: eject after this many connect failures, resets or timeouts in a row.", "3"),
    "split_external_local_origin_errors": ("boolean", _bool, "Count local-origin failures (connect, reset, timeout) apart from server answers.", "true"),
    "interval": ("duration", _duration(allow_zero=False), "How often ejection times are checked and success-rate / failure-percentage run.", "5s"),
    "base_ejection_time": ("duration", _duration(allow_zero=False), "A host is ejected for this times the number of its ejections so far.", "10s"),
    "max_ejection_time": ("duration", _duration(allow_zero=False), "Cap on one ejection's length (the larger of this and base_ejection_time).", "2m"),
    "max_ejection_time_jitter": ("duration", _duration(), "Random extra ejection time, up to this.", "1s"),
    "max_ejection_percent": ("percent", _int(0, 100), "At most this share of hosts ejected at once (one host always may be).", "50"),
    "always_eject_one_host": ("boolean", _bool, "Allow one ejection whatever max_ejection_percent says (Envoy's behaviour before 1.31).", "false"),
    "enforcing_consecutive_5xx": ("percent", _int(0, 100), "Chance that a consecutive_5xx detection really ejects.", "50"),
    "enforcing_consecutive_gateway_failure": ("percent", _int(0, 100), "Chance that a consecutive_gateway_failure detection ejects.", "100"),
    "enforcing_consecutive_local_origin_failure": ("percent", _int(0, 100), "Chance that a consecutive_local_origin_failure detection ejects.", "100"),
    "enforcing_success_rate": ("percent", _int(0, 100), "Chance that a success-rate detection ejects.", "0"),
    "enforcing_local_origin_success_rate": ("percent", _int(0, 100), "Split mode: chance that a local-origin success-rate detection ejects.", "0"),
    "success_rate_minimum_hosts": ("integer", _int(0), "Success-rate detection runs only with this many hosts having enough requests.", "3"),
    "success_rate_request_volume": ("integer", _int(0), "A host takes part in success-rate detection with this many requests in the interval.", "20"),
    "success_rate_stdev_factor": ("integer", _int(0), "Eject below mean - factor/1000 x stdev of success rates.", "1000"),
    "failure_percentage_threshold": ("percent", _int(0, 100), "Eject hosts whose failure percentage reaches this.", "50"),
    "failure_percentage_minimum_hosts": ("integer", _int(0), "Failure-percentage detection runs only with this many hosts having enough requests.", "2"),
    "failure_percentage_request_volume": ("integer", _int(0), "A host takes part in failure-percentage detection with this many requests in the interval.", "10"),
    "enforcing_failure_percentage": ("percent", _int(0, 100), "Chance that a failure-percentage detection ejects (0: detection only counted).", "100"),
    "enforcing_failure_percentage_local_origin": ("percent", _int(0, 100), "Split mode: chance that a local-origin failure-percentage detection ejects.", "100"),
    "successful_active_health_check_uneject_host": ("boolean", _bool, "A passing active health check returns an ejected host at once.", "false"),
}
_BREAKER_DOCS = {
    "failure_rate_threshold": ("percent", _float(0.001, 100.0), "Open when this % of the window's calls failed.", "25"),
    "slow_call_rate_threshold": ("percent", _float(0.001, 100.0), "Open when this % of the window's calls were slow.", "80"),
    "slow_call_duration": ("duration", _duration(), "A call slower than this is slow.", "2s"),
    "wait_duration_open": ("duration", _duration(), "Stay open this long, then let probe calls through (half-open).", "10s"),
    "permitted_calls_half_open": ("integer", _int(1), "Probe calls allowed while half-open; their outcome closes or re-opens.", "3"),
    "minimum_calls": ("integer", _int(1), "No decision before the window holds this many calls.", "20"),
    "window_type": ("string", _choice((COUNT_BASED, TIME_BASED)), "count_based: the last window_size calls; time_based: the last window_size seconds.", "time_based"),
    "window_size": ("integer", _int(1), "Calls (count_based) or seconds (time_based) in the sliding window.", "60"),
}


def _resilience_keys() -> list[Key]:
    P = _policy_key
    keys = [
        P("retry_on", _retry_on, "retry", "retry_on", "condition list",
          "When to retry (Envoy's retry_on names): 5xx, gateway-error, reset, connect-failure, refused-stream, retriable-4xx, "
          "retriable-status-codes, and for gRPC cancelled, deadline-exceeded, internal, resource-exhausted, unavailable. Empty: never.",
          "5xx,reset,connect-failure"),
        P("num_retries", _int(0, 10), "retry", "num_retries", "integer",
          "Retries after the first attempt, each on an endpoint not yet tried where one exists.", "3"),
        P("per_try_timeout", _optional_duration, "retry", "per_try_timeout", "duration",
          "Time limit of one attempt (no limit: none); a timed-out attempt is retried under 5xx, gateway-error or reset.", "500ms"),
        P("retry_backoff_base", _duration(allow_zero=False), "retry", "backoff.base_interval", "duration",
          "Retry N waits a random time in [0, (2^N - 1) x base), fully jittered.", "50ms"),
        P("retry_backoff_max", _optional_duration, "retry", "backoff.max_interval", "duration",
          "Cap on the back-off bound (none: 10 x retry_backoff_base). A server's Retry-After wins, up to 300s.", "1s"),
        P("retriable_status_codes", _status_codes, "retry", "retriable_status_codes", "status list",
          "HTTP statuses retried under retry_on=retriable-status-codes.", "409,429"),
        P("retry_non_idempotent", _bool, "retry", "retry_non_idempotent", "boolean",
          "Also retry POST and PATCH after the request may have reached the server (otherwise only connect failures and refused streams are).",
          "true"),
        P("retry_budget", _choice(BUDGET_KINDS), "retry_budget", "kind", "string",
          "Limit on retries across all calls of a service: ratio (of recent requests, plus a floor per second), concurrency (Envoy's), or none.",
          "concurrency"),
        P("retry_budget_ratio", _float(0.0, 1000.0), "retry_budget", "ratio", "float",
          "ratio budget: retries may be this fraction of the requests of the last retry_budget_ttl.", "0.1"),
        P("retry_budget_min_per_sec", _float(0.0), "retry_budget", "min_retries_per_sec", "float",
          "ratio budget: retries per second always allowed, however few the requests.", "5"),
        P("retry_budget_ttl", _duration(allow_zero=False), "retry_budget", "ttl", "duration",
          "ratio budget: the window requests and retries are counted over (1s to 60s).", "30s"),
        P("retry_budget_percent", _float(0.0, 100.0), "retry_budget", "budget_percent", "percent",
          "concurrency budget: retries in flight may be this % of requests in flight.", "50"),
        P("retry_budget_min_concurrency", _int(0), "retry_budget", "min_retry_concurrency", "integer",
          "concurrency budget: retries in flight always allowed.", "10"),
        Key("max_requests", _int(0), 1024, "both", "integer",
            "Circuit-breaker threshold: attempts in flight to the service at once; beyond it calls fail fast with CircuitOpenError.", "200"),
        Key("max_pending_requests", _int(0), 1024, "both", "integer",
            "Circuit-breaker threshold: calls waiting out a retry back-off; when full, the retry is skipped and the answer in hand returned.", "100"),
        Key("max_retries", _int(0), 3, "both", "integer",
            "Circuit-breaker threshold: retries in flight at once, applied when retry_budget is none (a budget replaces it, as in Envoy).", "10"),
        Key("max_connections", _int(0), 1024, "both", "integer",
            "Circuit-breaker threshold: attempts in flight that each hold a connection (taken once per attempt, as an HTTP/1.1 request holds one).", "512"),
        Key("timeout", _optional_duration, None, "both", "duration",
            "Whole-call time limit over all attempts and back-off (none: no limit). meshlib.deadline() and incoming deadlines shorten it.",
            "15s"),
        Key("breaker", _choice(("off", "cluster", "endpoint")), "off", "both", "string",
            "Classic circuit breaker on failure and slow-call rates: off, cluster (one per service) or endpoint (one per endpoint).", "cluster"),
        Key("outlier_detection", _bool, True, "both", "boolean",
            "Eject misbehaving endpoints for a while (Envoy outlier detection, with the outlier_* settings).", "false"),
        P("health_check_path", lambda v, n: str(v).strip(), "health_check", "path", "string",
          "Active HTTP health checks: the path to GET on every endpoint (empty: no active checks).", "/healthz"),
        P("health_check_protocol", _choice(("http", "grpc")), "health_check", "protocol", "string",
          "http (GET health_check_path) or grpc (grpc.health.v1 Check; health_check_path is the service name asked about).", "grpc"),
        P("health_check_interval", _duration(allow_zero=False), "health_check", "interval", "duration", "Time between checks of each endpoint.", "10s"),
        P("health_check_timeout", _duration(allow_zero=False), "health_check", "timeout", "duration", "A check not answered within this fails.", "2s"),
        P("health_check_healthy_threshold", _int(1), "health_check", "healthy_threshold", "integer",
          "Passing checks in a row that make an unhealthy endpoint healthy.", "1"),
        P("health_check_unhealthy_threshold", _int(1), "health_check", "unhealthy_threshold", "integer",
          "Failing checks in a row that make a healthy endpoint unhealthy.", "2"),
        P("health_check_expected_statuses", parse_statuses, "health_check", "expected_statuses", "status list",
          "HTTP statuses that pass, as codes and inclusive ranges.", "200-299"),
        P("hedge_max_attempts", _int(1, 5), "hedge", "max_attempts", "integer",
          "Hedging for idempotent calls: attempts in all, sent hedge_delay apart until one answers (1: no hedging; replaces retries).", "2"),
        P("hedge_delay", _duration(), "hedge", "delay", "duration", "Wait between hedged attempts.", "50ms"),
        P("hedge_non_fatal", parse_non_fatal, "hedge", "non_fatal", "status list",
          "HTTP statuses and gRPC status names that do not end a hedged call: the next hedge goes out at once.", "503,UNAVAILABLE"),
        Key("rate_limit", _float(0.0), 0.0, "both", "float",
            "Local rate limit: calls per second to the service (token bucket); over it calls fail fast with RateLimitedError. 0: no limit.",
            "100"),
        Key("rate_limit_burst", _burst, 0.0, "both", "float",
            "Local rate limit: calls allowed in a burst (bucket size; 0: the rate, at least 1).", "20"),
        P("fault_delay_percent", _float(0.0, 100.0), "fault", "delay_percent", "percent", "Fault injection: share of calls delayed by fault_delay.", "10"),
        P("fault_delay", _duration(), "fault", "delay", "duration", "Fault injection: the injected delay.", "2s"),
        P("fault_abort_percent", _float(0.0, 100.0), "fault", "abort_percent", "percent",
          "Fault injection: share of calls answered with fault_abort_status without being sent.", "5"),
        P("fault_abort_status", _int(200, 599), "fault", "abort_status", "integer", "Fault injection: the HTTP status of an aborted call.", "500"),
        P("fault_abort_grpc_status", _grpc_status, "fault", "abort_grpc_status", "string",
          "Fault injection: the gRPC status of an aborted gRPC call.", "RESOURCE_EXHAUSTED"),
    ]
    for field_name, (type_, parse, doc, example) in _OUTLIER_DOCS.items():
        keys.append(P(f"outlier_{field_name}", parse, "outlier", field_name, type_, doc, example))
    for field_name, (type_, parse, doc, example) in _BREAKER_DOCS.items():
        keys.append(P(f"breaker_{field_name}", parse, "breaker_config", field_name, type_, doc, example))
    return keys


KEYS.update((k.name, k) for k in _resilience_keys())


# ----------------------------------------------------------------- telemetry and admin keys
# (one block: parsers, keys and the sources of their defaults; read into TelemetryConfig)


def _propagators(value: object, name: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    accepted = f"a comma-separated list of {', '.join(TELEMETRY_PROPAGATORS)} (as OTEL_PROPAGATORS)"
    if not isinstance(items, (list, tuple)):
        raise ConfigError(name, value, accepted)
    names = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
    if not names or any(n not in TELEMETRY_PROPAGATORS for n in names) or ("none" in names and len(names) > 1):
        raise ConfigError(name, value, accepted)
    return () if names == ("none",) else names


def _header_names(value: object, name: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(h, str) and re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]*$", h.strip()) for h in items):
        raise ConfigError(name, "<not shown>" if not isinstance(value, str) else value, "a comma-separated list of header names, e.g. x-api-key,x-session")
    return tuple(dict.fromkeys(h.strip().lower() for h in items if h.strip()))


def _seconds_list(value: object, name: str) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(name, value, "a comma-separated list of durations, e.g. 30s,1m,5m")
    return tuple(sorted({parse_duration(i, name, allow_zero=False) for i in items if str(i).strip()}))


def _admin_address(value: object, name: str) -> str:
    text = str(value).strip()
    if text in ("", "off", "false", "0"):
        return ""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535 or any(c.isspace() or c in "/@?" for c in host):
        raise ConfigError(name, value, "host:port (port 0 picks a free one; IPv6 as [addr]:port), e.g. 127.0.0.1:9901")
    return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"


TELEMETRY_KEYS = [
    Key("access_log", _bool, True, "global", "boolean",
        "One structured access-log event per call to the `logging` logger `meshlib.access` at INFO (printed only if the application configures logging).", "off"),
    Key("access_log_format", _choice(("json", "console")), "json", "global", "string",
        "How structlog renders each access-log event: `json` or `console`.", "console"),
    Key("access_log_per", _choice(("call", "attempt")), "call", "global", "string",
        "One access-log event per logical call, or one per attempt.", "attempt"),
    Key("access_log_sample", _float(0.0, 1.0), 1.0, "global", "float (0..1)",
        "Share of calls (or attempts) logged; errors are logged anyway while ACCESS_LOG_ERRORS is on.", "0.01"),
    Key("access_log_errors", _bool, True, "global", "boolean",
        "Always log failed calls (errors, 5xx, failing gRPC statuses), whatever the sample.", "false"),
    Key("access_log_headers", _header_names, (), "global", "header list",
        "Request headers added to access-log events (Authorization, cookies and REDACT_HEADERS show as [redacted]).", "x-request-id,user-agent"),
    Key("redact_headers", lambda v, n: frozenset(_header_names(v, n)), frozenset(), "global", "header list (secret)",
        "Further header names never shown in logs, spans, metrics or the admin endpoint (besides Authorization, Proxy-Authorization, Cookie, Set-Cookie).", "x-api-key"),
    Key("propagators", _propagators, ("tracecontext", "baggage"), "global", "propagator list",
        "Trace headers written and read when OpenTelemetry is not in use: tracecontext, baggage, b3 (single header), b3multi, or none. With OpenTelemetry, its OTEL_PROPAGATORS apply.", "b3multi"),
    Key("tracing", _choice(("auto", "otel", "native", "off")), "auto", "global", "string",
        "auto/otel: OpenTelemetry's context, propagators and spans when it is installed; native: meshlib's own propagation only; off: no trace headers, no spans.", "native"),
    Key("metrics", _bool, True, "global", "boolean",
        "Per-attempt metrics (mesh.stats(), Prometheus, the OpenTelemetry metrics API).", "off"),
    Key("metrics_extra_buckets", _seconds_list, (30.0, 60.0, 120.0, 300.0), "global", "duration list",
        "Duration histogram buckets added to OTel's advised ones (which stop at 10s) for long LLM calls.", "30s,1m,10m"),
    Key("metrics_endpoint_labels", _bool, True, "global", "boolean",
        "Label per-attempt series with the endpoint address (bounded by the service's current membership).", "false"),
    Key("admin", _admin_address, "", "global", "host:port",
        "Serve the admin endpoint (/stats, /stats/prometheus, /clusters, /config_dump, /ready) here; empty: off.", "127.0.0.1:9901"),
    Key("admin_allow_remote", _bool, False, "global", "boolean",
        "Allow ADMIN to bind a non-loopback address (the admin endpoint has no authentication).", "true"),
]  # fmt: skip
KEYS.update((k.name, k) for k in TELEMETRY_KEYS)
TELEMETRY_SOURCES = {
    "access_log": "Envoy access logs are configured per listener (off unless set); meshlib logs to a library logger, silent until logging is configured",
    "access_log_sample": "Envoy runtime_filter / OTel TraceIdRatioBased sampling",
    "propagators": "OTEL_PROPAGATORS default tracecontext,baggage",
    "metrics_extra_buckets": "OTel http.client.request.duration advice tops out at 10s",
    "admin": "Envoy admin is off unless configured; conventionally 127.0.0.1:9901",
}
_TELEMETRY_FIELDS = {k.name for k in TELEMETRY_KEYS}


def _telemetry_config(values: Mapping[str, Any]) -> TelemetryConfig:
    """The TelemetryConfig of the parsed global keys (with cross-checks)."""
    raw = {k: v for k, v in values.items() if k in _TELEMETRY_FIELDS}
    cfg = TelemetryConfig(**raw)
    if cfg.admin and not cfg.admin_allow_remote:
        host = cfg.admin.rpartition(":")[0].strip("[]")
        if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
            raise ConfigError(KEYS["admin"].env, cfg.admin, "a loopback address such as 127.0.0.1:9901 (set MESHLIB_ADMIN_ALLOW_REMOTE=true to bind another)")
    return cfg


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
    connect_timeout: float = 5.0
    dns_refresh_interval: float = 5.0
    endpoints: tuple[Endpoint, ...] | None = None
    dns_name: str | None = None
    port: int = 80
    # Resilience: flat keys, and policy objects built from their *_ keys.
    retry: RetryPolicy = DEFAULT_RETRY
    retry_budget: BudgetConfig = _GROUP_DEFAULTS["retry_budget"]
    max_requests: int = 1024
    max_pending_requests: int = 1024
    max_retries: int = 3
    max_connections: int = 1024
    timeout: float | None = None
    breaker: str = "off"
    breaker_config: BreakerConfig = _GROUP_DEFAULTS["breaker_config"]
    outlier_detection: bool = True
    outlier: OutlierConfig = _GROUP_DEFAULTS["outlier"]
    health_check: HealthCheckConfig = _GROUP_DEFAULTS["health_check"]
    hedge: HedgePolicy = _GROUP_DEFAULTS["hedge"]
    rate_limit: float = 0.0
    rate_limit_burst: float = 0.0
    fault: FaultConfig = _GROUP_DEFAULTS["fault"]

    filter_tags: tuple[str, ...] = ()
    filter_meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class RegistryConfig:
    """Settings of the consul:// and etcd:// sources and of ``mesh.register()``.

    Field names are the keys' names. Secrets are left out of ``repr``.
    """

    registry_watch: str = "all"
    registry_timeout: float = 5.0
    registry_backoff_base: float = 0.1
    registry_backoff_max: float = 30.0
    registry_ttl: float = 10.0
    consul_token: str = field(default="", repr=False)
    consul_datacenter: str = ""
    consul_tls_ca: str = ""
    consul_tls_cert: str = ""
    consul_tls_key: str = ""
    consul_wait: float = 300.0
    consul_only_passing: bool = True
    consul_query_rate: float = 10.0
    consul_deregister_after: float = 60.0
    etcd_prefix: str = "/meshlib/services"
    etcd_user: str = ""
    etcd_password: str = field(default="", repr=False)
    etcd_tls_ca: str = ""
    etcd_tls_cert: str = ""
    etcd_tls_key: str = ""


_REGISTRY_FIELDS = {f.name for f in fields(RegistryConfig)}

def _with_changes(obj: Any, changes: dict[str, tuple[Any, str]]) -> Any:
    """``obj`` with the (possibly dotted) fields in ``changes`` replaced; a
    cross-field error names the setting that caused it."""
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, tuple[Any, str]]] = {}
    for path, (value, where) in changes.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = (value, where)
        else:
            flat[head] = value
    for head, sub in nested.items():
        flat[head] = _with_changes(getattr(obj, head), sub)
    try:
        return replace(obj, **flat)
    except ConfigError as exc:
        culprit = [c for p, c in changes.items() if p.rpartition(".")[2] == exc.name] or list(changes.values())
        value, where = culprit[0]
        raise ConfigError(where, value, exc.accepted) from None


def _service_config(base: ServiceConfig, name: str, raw: "_Raw") -> ServiceConfig:
    """``base`` with the service keys in ``raw`` (key -> (value, where)) parsed and applied."""
    plain: dict[str, Any] = {}
    groups: dict[str, dict[str, tuple[Any, str]]] = {}
    for key, (value, where) in raw.items():
        k = KEYS[key]
        if k.scope == "global":
            continue
        parsed = k.parse(value, where)
        if k.target is None:
            plain[key] = parsed
        else:
            groups.setdefault(k.target[0], {})[k.target[1]] = (parsed, where)
    for group, changes in groups.items():
        plain[group] = _with_changes(getattr(base, group), changes)
    return replace(base, name=name, **plain)


@dataclass(frozen=True)
class MeshConfig:
    """The whole validated configuration. Immutable; build a new one to change it."""

    discovery: str = "static"
    file_poll_interval: float = 1.0
    defaults: ServiceConfig = field(default_factory=lambda: ServiceConfig(name="*"))
    services: Mapping[str, ServiceConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "defaults"
    registry: RegistryConfig = field(default_factory=RegistryConfig)
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
        import difflib

        kind = "per-service" if service else "global"
        close = difflib.get_close_matches(key, [x.name for x in allowed], n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"the {len(allowed)} {kind} keys are listed in docs/configuration.md"
        raise ConfigError(where, key if value is None else value, f"{where.split(' ')[0]} is not a {kind} key; {hint}")


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
    if "consul_token" not in glob and environ.get("CONSUL_HTTP_TOKEN"):
        glob["consul_token"] = (environ["CONSUL_HTTP_TOKEN"], "CONSUL_HTTP_TOKEN")  # Consul's own variable
    if any(k.startswith(ENV_PREFIX) for k in environ):
        sources.append("environment")
    if overrides:
        data = {k: v for k, v in overrides.items() if k != "config_file"}
        _merge_mapping(data, origin, glob, services)
        sources.append(origin)

    values: dict[str, Any] = {}
    for key, (value, where) in glob.items():
        if KEYS[key].scope == "global":
            values[key] = KEYS[key].parse(value, where)
    defaults = _service_config(ServiceConfig(name="*"), "*", glob)
    _check_ring_sizes(defaults, "ring_hash_min_size")

    built: dict[str, ServiceConfig] = {}
    for cname, raw in services.items():
        svc = _service_config(defaults, cname, raw)
        _check_ring_sizes(svc, raw.get("ring_hash_min_size", ("", f"services.{cname}.ring_hash_min_size"))[1])
        built[cname] = svc

    registry = RegistryConfig(**{k: v for k, v in values.items() if k in _REGISTRY_FIELDS})
    _check_registry(registry, glob)
    return MeshConfig(
        discovery=values.get("discovery", KEYS["discovery"].default),
        file_poll_interval=values.get("file_poll_interval", KEYS["file_poll_interval"].default),
        defaults=defaults,
        services=MappingProxyType(built),
        source=" < ".join(sources) or "defaults",
        registry=registry,
        telemetry=_telemetry_config(values),
    )


def _check_registry(reg: RegistryConfig, glob: _Raw) -> None:
    """Settings that only make sense together."""

    def where(key: str) -> str:
        return glob.get(key, ("", ENV_PREFIX + key.upper()))[1]

    for kind in ("consul", "etcd"):
        cert, key = getattr(reg, f"{kind}_tls_cert"), getattr(reg, f"{kind}_tls_key")
        if bool(cert) != bool(key):
            missing = f"{kind}_tls_key" if cert else f"{kind}_tls_cert"
            raise ConfigError(where(missing), "", f"a client certificate and its key are given together (set {ENV_PREFIX}{missing.upper()})")
    if reg.etcd_tls_cert and not reg.etcd_tls_ca:
        raise ConfigError(where("etcd_tls_ca"), "", "etcd client certificates need the CA too (set MESHLIB_ETCD_TLS_CA)")
    if bool(reg.etcd_user) != bool(reg.etcd_password):
        missing = "etcd_password" if reg.etcd_user else "etcd_user"
        shown = "" if missing == "etcd_user" else "<not shown>"
        raise ConfigError(where(missing), shown, "etcd user and password are given together")
    if reg.consul_wait > 600:
        raise ConfigError(where("consul_wait"), glob["consul_wait"][0], "at most 10m (Consul's limit for a blocking query)")
    if reg.consul_deregister_after < 60:
        raise ConfigError(where("consul_deregister_after"), glob["consul_deregister_after"][0], "at least 1m (Consul's minimum)")
    if reg.registry_backoff_base > reg.registry_backoff_max:
        raise ConfigError(where("registry_backoff_base"), glob["registry_backoff_base"][0], f"at most registry_backoff_max ({reg.registry_backoff_max:g}s)")


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
    "connect_timeout": "Envoy connect_timeout 5s",
    "dns_refresh_interval": "Envoy dns_refresh_rate 5s",
    "retry_on": "Envoy retries nothing until a retry policy is set; gRPC retries transparently an RPC that never left the client, which is what connect-failure and refused-stream cover",
    "num_retries": "Envoy num_retries 1 once a policy is set; gRPC maxAttempts up to 5; meshlib 2 (three attempts) for the transparent default",
    "per_try_timeout": "Envoy per_try_timeout: no default",
    "retry_backoff_base": "Envoy base_interval 25ms",
    "retry_backoff_max": "Envoy max_interval 10 x base_interval",
    "retry_non_idempotent": "Envoy retries any method its policy names; gRPC A6 any RPC; meshlib keeps POST/PATCH safe unless told",
    "retry_budget": "Finagle RetryBudget and Linkerd retry budgets; Envoy retry_budget is the concurrency kind",
    "retry_budget_ratio": "Finagle percentCanRetry 0.2, Linkerd retryRatio 0.2",
    "retry_budget_min_per_sec": "Finagle minRetriesPerSec 10, Linkerd minRetriesPerSecond 10",
    "retry_budget_ttl": "Finagle ttl 10s, Linkerd ttl 10s",
    "retry_budget_percent": "Envoy budget_percent 20%",
    "retry_budget_min_concurrency": "Envoy min_retry_concurrency 3",
    "max_requests": "Envoy max_requests 1024",
    "max_pending_requests": "Envoy max_pending_requests 1024",
    "max_retries": "Envoy max_retries 3",
    "max_connections": "Envoy max_connections 1024",
    "timeout": "Envoy route timeout 15s; gRPC no deadline unless set; requests/urllib3/httpx callers expect none",
    "breaker": "Envoy has no rate-based breaker (its thresholds are the max_* keys); resilience4j's CircuitBreaker, opt-in",
    "outlier_detection": "Envoy runs outlier detection only when a cluster configures it; meshlib turns it on with Envoy's defaults",
    "outlier_always_eject_one_host": "Envoy false since 1.31 (true before); with 10% a small service could eject nothing",
    "health_check_interval": "Envoy interval: required, no default",
    "health_check_timeout": "Envoy timeout: required, no default",
    "health_check_healthy_threshold": "Envoy healthy_threshold: required, no default",
    "health_check_unhealthy_threshold": "Envoy unhealthy_threshold: required, no default",
    "health_check_expected_statuses": "Envoy expected_statuses [200, 201)",
    "hedge_max_attempts": "gRPC hedgingPolicy maxAttempts (capped at 5); off unless set",
    "hedge_delay": "gRPC hedgingDelay 0s",
    "hedge_non_fatal": "gRPC nonFatalStatusCodes: none",
    "rate_limit": "Envoy local_ratelimit: off unless configured",
    "fault_abort_status": "Envoy fault filter http_status: set per fault",
    "outlier_consecutive_5xx": "Envoy consecutive_5xx 5",
    "outlier_consecutive_gateway_failure": "Envoy consecutive_gateway_failure 5",
    "outlier_consecutive_local_origin_failure": "Envoy consecutive_local_origin_failure 5",
    "outlier_split_external_local_origin_errors": "Envoy split_external_local_origin_errors false",
    "outlier_interval": "Envoy interval 10s",
    "outlier_base_ejection_time": "Envoy base_ejection_time 30s",
    "outlier_max_ejection_time": "Envoy max_ejection_time 300s",
    "outlier_max_ejection_time_jitter": "Envoy max_ejection_time_jitter 0s",
    "outlier_max_ejection_percent": "Envoy max_ejection_percent 10%",
    "outlier_enforcing_consecutive_5xx": "Envoy enforcing_consecutive_5xx 100",
    "outlier_enforcing_consecutive_gateway_failure": "Envoy enforcing_consecutive_gateway_failure 0",
    "outlier_enforcing_consecutive_local_origin_failure": "Envoy enforcing_consecutive_local_origin_failure 100",
    "outlier_enforcing_success_rate": "Envoy enforcing_success_rate 100",
    "outlier_enforcing_local_origin_success_rate": "Envoy enforcing_local_origin_success_rate 100",
    "outlier_success_rate_minimum_hosts": "Envoy success_rate_minimum_hosts 5",
    "outlier_success_rate_request_volume": "Envoy success_rate_request_volume 100",
    "outlier_success_rate_stdev_factor": "Envoy success_rate_stdev_factor 1900",
    "outlier_failure_percentage_threshold": "Envoy failure_percentage_threshold 85",
    "outlier_failure_percentage_minimum_hosts": "Envoy failure_percentage_minimum_hosts 5",
    "outlier_failure_percentage_request_volume": "Envoy failure_percentage_request_volume 50",
    "outlier_enforcing_failure_percentage": "Envoy enforcing_failure_percentage 0",
    "outlier_enforcing_failure_percentage_local_origin": "Envoy enforcing_failure_percentage_local_origin 0",
    "outlier_successful_active_health_check_uneject_host": "Envoy successful_active_health_check_uneject_host true",
    "breaker_failure_rate_threshold": "resilience4j failure rate threshold 50",
    "breaker_slow_call_rate_threshold": "resilience4j slow call rate threshold 100",
    "breaker_slow_call_duration": "resilience4j slowCallDurationThreshold 60s",
    "breaker_wait_duration_open": "resilience4j waitDurationInOpenState 60s",
    "breaker_permitted_calls_half_open": "resilience4j permittedNumberOfCallsInHalfOpenState 10",
    "breaker_minimum_calls": "resilience4j minimumNumberOfCalls 100",
    "breaker_window_type": "resilience4j slidingWindowType COUNT_BASED",
    "breaker_window_size": "resilience4j slidingWindowSize 100",
    "registry_watch": "Prometheus consul_sd watches every catalog service unless services is set",
    "registry_timeout": "py-consul timeout 30s, python-etcd3 none; Envoy initial_fetch_timeout 15s",
    "registry_backoff_base": "gRPC connection backoff: base 1s x 1.6 per attempt, jitter 0.2, max 120s; meshlib retries sooner, fully jittered",
    "registry_backoff_max": "gRPC connection backoff max 120s",
    "registry_ttl": "Consul has no default TTL (Spring Cloud Consul uses 30s); etcd leases keep-alive at about TTL/3",
    "consul_wait": "Consul wait 5m, at most 10m",
    "consul_only_passing": "Consul /v1/health/service passing=false; Consul DNS only_passing false",
    "consul_query_rate": "consul-template limits every Consul call to about 1 per 100ms; Consul's docs suggest a token bucket (burst 2) degrading to polling about every 15s",
    "consul_deregister_after": "Consul DeregisterCriticalServiceAfter minimum 1m (no default: never)",
    "etcd_prefix": "grpc-go etcd naming keys are <target>/<id>",
}
DEFAULT_SOURCES.update(TELEMETRY_SOURCES)


def _show_default(key: Key) -> str:
    d = key.default
    if d is None:
        return "(none)"
    if isinstance(d, bool):
        return str(d).lower()
    if isinstance(d, frozenset):
        return ",".join(sorted(str(x) for x in d)) or "(empty)"
    if isinstance(d, tuple):
        return ",".join(f"{x:g}s" if isinstance(x, float) else str(x) for x in d) or "(none)"
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
        "retry_on: 5xx,connect-failure",
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
