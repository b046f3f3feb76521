"""The key table: every configuration key, written once.

Each :class:`Key` holds its parser, default, scope, type, documentation,
example and the source of its default. Keys that configure a policy take
their default from the policy's own frozen settings (``target``), so a
default is never written twice. The dataclasses in ``model`` and the docs
in ``docs`` are derived from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..balancing import DEFAULT_LB, POLICIES
from ..routing import parse_routes
from ..health import HealthCheckConfig
from ..health.probes import probe_names
from ..resilience.breaker import COUNT_BASED, TIME_BASED, BreakerConfig
from ..resilience.budget import BUDGET_KINDS, BudgetConfig
from ..resilience.fault import FaultConfig
from ..resilience.hedge import HedgePolicy
from ..resilience.outlier import OutlierConfig
from ..resilience.retry import RetryPolicy
from .parsers import (
    Parser, boolean, burst, choice, duration, endpoints, etcd_prefix, float_range, grpc_status, header, health_statuses,
    hedge_non_fatal, hostname, int_range, load_sources, balance_factor, locality_weights, maglev_size, meta_pairs, optional_duration,
    json_file, path_text, pem_file, retry_on, status_codes, tag_list, text,
)
from .redact import is_secret_name
from .schemes import parse_discovery
from ..security.client import TLS_MODES
from ..security.spiffe_id import parse_id_list as spiffe_ids
from .telemetry import admin_address, header_names, propagators, redact_names, seconds_list

__all__ = ["Key", "KEYS", "SERVICE_KEYS", "GLOBAL_KEYS", "LB_POLICIES", "ENV_PREFIX", "SERVICES_PREFIX", "DEFAULT_RETRY", "POLICY_DEFAULTS"]

ENV_PREFIX = "MESHLIB_"
SERVICES_PREFIX = "MESHLIB_SERVICES__"
#: The balancer registry's names, in its order.
LB_POLICIES = tuple(POLICIES)


@dataclass(frozen=True)
class Key:
    """One configuration key: how it parses, its default, where it may be set,
    its documentation and where its default comes from -- each written once."""

    name: str
    parse: Parser
    default: Any
    scope: str  # "global", "service" or "both"
    type: str
    doc: str
    example: str
    #: For keys that build a policy object: (ServiceConfig field, the object's field).
    target: tuple[str, str] | None = None
    #: Where the default comes from (Envoy, gRPC, Finagle, ...), shown beside it in the docs.
    source: str = ""

    @property
    def env(self) -> str:
        """The global environment variable (per service: MESHLIB_SERVICES__<SERVICE>__<KEY>)."""
        return ENV_PREFIX + self.name.upper()

    @property
    def secret(self) -> bool:
        """Its value is never shown (tokens, passwords, private keys)."""
        return is_secret_name(self.name)


KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        Key("discovery", parse_discovery, "static", "global", "string",
            "Where endpoints come from: static (from ENDPOINTS keys), dns, file:///path (reloaded on change), "
            "consul://host:port (port 8500 if left out) or etcd://host:port (port 2379). See docs/registries.md.",
            "etcd://127.0.0.1:2379"),
        Key("lb_policy", choice(LB_POLICIES), "peak_ewma", "both", "string",
            "Load-balancing policy: " + ", ".join(LB_POLICIES) + ".", "least_request",
            source="Finagle and Linkerd balance with P2C + peak EWMA; Envoy's default is round_robin"),
        Key("hash_header", header, "", "both", "string",
            "Request header whose value is the hash key for ring_hash and maglev (empty: none).", "x-user-id"),
        Key("ring_hash_min_size", int_range(1, 8_388_608), DEFAULT_LB.ring_hash_min_size, "both", "integer",
            "ring_hash: minimum number of ring entries (Envoy minimum_ring_size).", "4096",
            source="Envoy minimum_ring_size 1024"),
        Key("ring_hash_max_size", int_range(1, 8_388_608), DEFAULT_LB.ring_hash_max_size, "both", "integer",
            "ring_hash: maximum number of ring entries (Envoy maximum_ring_size).", "1048576",
            source="Envoy maximum_ring_size 8388608"),
        Key("maglev_table_size", maglev_size, DEFAULT_LB.maglev_table_size, "both", "integer (prime)",
            "maglev: lookup table size, a prime (Envoy table_size).", "65537", source="Envoy table_size 65537"),
        Key("choice_count", int_range(2, 100), DEFAULT_LB.choice_count, "both", "integer",
            "least_request: hosts sampled per pick (Envoy choice_count).", "3", source="Envoy choice_count 2"),
        Key("active_request_bias", float_range(0.0, 10.0), DEFAULT_LB.active_request_bias, "both", "float",
            "least_request with unequal weights: effective weight = weight / (active + 1) ** bias.", "0.5",
            source="Envoy active_request_bias 1.0"),
        Key("ewma_decay", duration(allow_zero=False), DEFAULT_LB.ewma_decay, "both", "duration",
            "peak_ewma: decay time of the latency average (Finagle decayTime, Linkerd decay).", "5s",
            source="Finagle decayTime 10s, Linkerd decay 10s"),
        Key("ewma_default_rtt", duration(allow_zero=False), 0.030, "both", "duration",
            "peak_ewma: latency assumed for an endpoint with no observations yet (Linkerd default_rtt).", "50ms",
            source="Linkerd default_rtt 30ms"),
        Key("ewma_failure_penalty", duration(), 1.0, "both", "duration",
            "peak_ewma: latency recorded for a failed attempt (connect failure, reset, 5xx), so failing hosts lose traffic.", "2s"),
        # -- servers' load reports and the policies that read them (docs/load-balancing.md, "LLM services")
        Key("load_reports", load_sources, DEFAULT_LB.load_reports, "both", "source list",
            "Server load reports read: header (endpoint-load-metrics response header, ORCA trailer), metrics (poll /metrics), "
            "orca_oob (ORCA out-of-band stream); off for none; auto: header,metrics for lb_policy llm, header for least_loaded, header,orca_oob for wrr_orca, off otherwise.",
            "header,orca_oob"),
        Key("load_metrics_path", path_text, "/metrics", "both", "string",
            "load_reports metrics: the Prometheus path scraped on every endpoint.", "/metrics"),
        Key("load_metrics_interval", duration(allow_zero=False), 0.05, "both", "duration",
            "load_reports metrics: how often each endpoint is scraped.", "100ms",
            source="the Gateway API inference extension's endpoint picker refreshes metrics every 50ms"),
        Key("load_metrics_timeout", duration(allow_zero=False), 0.25, "both", "duration",
            "load_reports metrics: timeout of one scrape (a failing endpoint is then skipped for a growing number of rounds).", "500ms"),
        Key("load_metric_waiting", text, "vllm:num_requests_waiting", "both", "string",
            "load_reports metrics: the gauge of requests waiting in the server's queue.", "tgi_queue_size"),
        Key("load_metric_running", text, "vllm:num_requests_running", "both", "string",
            "load_reports metrics: the gauge of requests running on the server.", "tgi_batch_current_size"),
        Key("load_metric_kv", text, "vllm:kv_cache_usage_perc", "both", "string",
            "load_reports metrics: the gauge of KV-cache use (0..1; older vLLM: vllm:gpu_cache_usage_perc).", "vllm:gpu_cache_usage_perc"),
        Key("load_report_max_age", duration(allow_zero=False), DEFAULT_LB.load_report_max_age, "both", "duration",
            "A load report older than this is ignored: the endpoint is judged by its own in-flight count.", "250ms"),
        Key("load_queue_threshold", float_range(0.0), DEFAULT_LB.load_queue_threshold, "both", "float",
            "An endpoint whose estimated queue (reported waiting + requests sent since the report) is above this is saturated.", "8",
            source="the inference extension's saturation detector: queue depth 5 (meshlib: above 4)"),
        Key("load_kv_threshold", float_range(0.0, 1.0), DEFAULT_LB.load_kv_threshold, "both", "float",
            "An endpoint whose reported KV-cache use is above this is saturated.", "0.9",
            source="the inference extension's saturation detector: KV-cache use 0.8"),
        Key("hash_balance_factor", balance_factor, DEFAULT_LB.hash_balance_factor, "both", "integer (percent)",
            "Bounded load for ring_hash, maglev and least_loaded/llm affinity: an endpoint holding more than factor/100 x the mean in-flight "
            "count is saturated and the key goes to its next owner (Envoy hash_balance_factor; 0: off, llm uses 150).", "150",
            source="Envoy hash_balance_factor: unset (off); 150 in Envoy's docs example"),
        Key("load_queue_weight", float_range(0.0), DEFAULT_LB.load_queue_weight, "both", "float",
            "least_loaded score: weight of the estimated queue.", "2"),
        Key("load_kv_weight", float_range(0.0), DEFAULT_LB.load_kv_weight, "both", "float",
            "least_loaded score: weight of KV-cache use (0..1).", "8"),
        Key("load_inflight_weight", float_range(0.0), DEFAULT_LB.load_inflight_weight, "both", "float",
            "least_loaded score: weight of this client's own in-flight count on the endpoint.", "0.5"),
        Key("load_saturation", choice(("spill", "fail", "wait")), DEFAULT_LB.load_saturation, "both", "string",
            "When every endpoint is saturated: spill (send to the least loaded anyway), fail (EndpointsSaturatedError at once) or wait (in a client-side queue until a load report or an ended attempt frees an endpoint, at most until the call's deadline).", "wait"),
        Key("load_wait_queue", int_range(1, 100_000), DEFAULT_LB.load_wait_queue, "both", "integer",
            "load_saturation wait: calls that may wait at once; one more fails fast with EndpointsSaturatedError (queue full).", "256"),
        Key("load_affinity_choices", int_range(0, 2), DEFAULT_LB.load_affinity_choices, "both", "integer",
            "Prefix affinity: 1 sends a key to its first unsaturated owner; 2 to the lower of its first two unsaturated owners' scores, the second's plus 1 (each prefix then warms two endpoints); 0: 1, and for llm every owner, each 1 more per rank and 6 more unless this client sent the key there in the last minute.", "1"),
        Key("orca_oob_interval", duration(allow_zero=False), 1.0, "both", "duration", "load_reports orca_oob: the report interval asked of the server (gRFC A51).", "250ms"),
        Key("wrr_blackout_period", duration(), DEFAULT_LB.wrr_blackout_period, "both", "duration",
            "wrr_orca: an endpoint's weight is used only after it has reported this long (gRFC A58 blackout_period).", "5s",
            source="gRFC A58 blackout_period 10s"),
        Key("wrr_weight_expiration_period", duration(allow_zero=False), DEFAULT_LB.wrr_weight_expiration_period, "both", "duration",
            "wrr_orca: a weight not refreshed for this long is dropped (gRFC A58 weight_expiration_period).", "1m",
            source="gRFC A58 weight_expiration_period 3m"),
        Key("wrr_weight_update_period", duration(allow_zero=False), DEFAULT_LB.wrr_weight_update_period, "both", "duration",
            "wrr_orca: how often the schedule is rebuilt from new weights (gRFC A58 weight_update_period; at least 100ms).", "500ms",
            source="gRFC A58 weight_update_period 1s"),
        Key("wrr_error_utilization_penalty", float_range(0.0), DEFAULT_LB.wrr_error_utilization_penalty, "both", "float",
            "wrr_orca: weight = qps / (utilization + eps/qps x penalty) (gRFC A58 error_utilization_penalty).", "0.5",
            source="gRFC A58 error_utilization_penalty 1.0"),
        Key("panic_threshold", float_range(0.0, 100.0), DEFAULT_LB.panic_threshold, "both", "percent",
            "Below this share of healthy hosts a priority balances over all its hosts (Envoy healthy_panic_threshold; 0 disables).", "30",
            source="Envoy healthy_panic_threshold 50%"),
        Key("overprovisioning_factor", float_range(1.0, 100.0), DEFAULT_LB.overprovisioning_factor, "both", "float",
            "Priority and locality health is min(100%, factor x healthy share) (Envoy overprovisioning_factor 140).", "1.0",
            source="Envoy overprovisioning_factor 140 (1.4)"),
        Key("locality_weights", locality_weights, DEFAULT_LB.locality_weights, "both", "zone=weight list",
            "Enables locality-weighted balancing: traffic share per zone, scaled by each zone's health. Zones not listed get no traffic.",
            "us-east-1a=3,us-east-1b=1"),
        Key("connect_timeout", duration(allow_zero=False), 5.0, "both", "duration",
            "Timeout for opening a connection to an endpoint (Envoy connect_timeout).", "1s",
            source="Envoy connect_timeout 5s"),
        Key("dns_refresh_interval", duration(allow_zero=False), 5.0, "both", "duration",
            "dns discovery: how often names are re-resolved (Envoy dns_refresh_rate).", "30s",
            source="Envoy dns_refresh_rate 5s"),
        Key("file_poll_interval", duration(allow_zero=False), 1.0, "global", "duration",
            "file discovery: how often the file is checked for changes.", "500ms"),
        Key("endpoints", endpoints, None, "service", "endpoint list",
            "Static endpoints: host:port[;weight=N][;zone=Z][;priority=P], comma-separated. Declares the service.",
            "127.0.0.1:8001;weight=2,127.0.0.1:8002;zone=b"),
        Key("dns_name", hostname, None, "service", "string",
            "dns discovery: the name to resolve (default: the service name). Declares the service.", "inventory.internal"),
        Key("port", int_range(1, 65535), 80, "service", "integer",
            "dns discovery: the port of every resolved address.", "8080"),
        # -- registries (consul://, etcd://) and discovery by capability; docs/registries.md
        Key("filter_tags", tag_list, (), "both", "tag list",
            "Only endpoints carrying every one of these tags are used (any discovery source).", "gpu,llm"),
        Key("filter_meta", meta_pairs, MappingProxyType({}), "both", "key=value list",
            "Only endpoints whose metadata has every one of these key=value pairs are used (any discovery source).",
            "model=llama3"),
        Key("registry_watch", choice(("all", "declared")), "all", "global", "string",
            "consul/etcd: watch every service the registry lists (all) or only services declared in the configuration (declared).",
            "declared", source="Prometheus consul_sd watches every catalog service unless services is set"),
        Key("registry_timeout", duration(allow_zero=False), 5.0, "global", "duration",
            "consul/etcd: timeout of one registry request, and the longest Mesh() waits for the first listing.", "2s",
            source="py-consul timeout 30s, python-etcd3 none; Envoy initial_fetch_timeout 15s"),
        Key("registry_backoff_base", duration(allow_zero=False), 0.1, "global", "duration",
            "consul/etcd: after the n-th failed reconnect in a row, wait a random time in [0, base x 2^(n-1)] (full jitter), capped by registry_backoff_max.", "250ms",
            source="gRPC connection backoff: base 1s x 1.6 per attempt, jitter 0.2, max 120s; meshlib retries sooner, fully jittered"),
        Key("registry_backoff_max", duration(allow_zero=False), 30.0, "global", "duration",
            "consul/etcd: cap of the reconnect delay.", "2m", source="gRPC connection backoff max 120s"),
        Key("registry_ttl", duration(minimum=1.0), 10.0, "global", "duration",
            "mesh.register(): TTL of the Consul TTL check or the etcd lease; refreshed every TTL/3. Whole seconds for etcd (rounded up).",
            "30",
            source="Consul has no default TTL (Spring Cloud Consul uses 30s); etcd leases keep-alive at about TTL/3"),
        Key("consul_token", text, "", "global", "string (secret)",
            "Consul ACL token sent as X-Consul-Token; falls back to CONSUL_HTTP_TOKEN. Never logged.", "b1gs3cr3t-..."),
        Key("consul_datacenter", text, "", "global", "string",
            "Consul datacenter to read services from (empty: the agent's own).", "dc2"),
        Key("consul_tls_ca", pem_file, "", "global", "path",
            "CA bundle (PEM) that verifies the Consul agent; setting any CONSUL_TLS_* key switches to https.", "/etc/consul/ca.pem"),
        Key("consul_tls_cert", pem_file, "", "global", "path",
            "Client certificate (PEM) for Consul's verify_incoming; needs CONSUL_TLS_KEY.", "/etc/consul/client.pem"),
        Key("consul_tls_key", pem_file, "", "global", "path",
            "Private key (PEM) of CONSUL_TLS_CERT.", "/etc/consul/client-key.pem"),
        Key("consul_wait", duration(allow_zero=False), 300.0, "global", "duration",
            "Consul blocking queries: the wait parameter, how long one query may hang (Consul caps it at 10m).", "1m",
            source="Consul wait 5m, at most 10m"),
        Key("consul_only_passing", boolean, True, "global", "boolean",
            "Consul: only instances whose checks all pass (?passing). false: warning instances too, weighted by Weights.Warning; critical ones never.",
            "false", source="Consul /v1/health/service passing=false; Consul DNS only_passing false"),
        Key("consul_query_rate", float_range(0.01, 1000.0), 10.0, "global", "float (per second)",
            "Consul: blocking queries per second per watched service once a burst of 5 is spent (token bucket), so a churning or misbehaving server cannot make the loop spin.",
            "0.2",
            source="consul-template limits every Consul call to about 1 per 100ms; Consul's docs suggest a token bucket (burst 2) degrading to polling about every 15s"),
        Key("consul_deregister_after", duration(allow_zero=False), 60.0, "global", "duration",
            "mesh.register() on Consul: DeregisterCriticalServiceAfter of the check (Consul's minimum is 1m).", "10m",
            source="Consul DeregisterCriticalServiceAfter minimum 1m (no default: never)"),
        Key("etcd_prefix", etcd_prefix, "/meshlib/services", "global", "string",
            "etcd: key prefix; an instance lives at <prefix>/<service>/<instance-id> as JSON.", "/prod/services",
            source="grpc-go etcd naming keys are <target>/<id>"),
        Key("etcd_user", text, "", "global", "string",
            "etcd user name (auth enabled); needs ETCD_PASSWORD.", "meshlib"),
        Key("etcd_password", text, "", "global", "string (secret)",
            "etcd password of ETCD_USER. Never logged.", "s3cret"),
        Key("etcd_tls_ca", pem_file, "", "global", "path",
            "CA bundle (PEM) that verifies etcd; setting it switches to TLS.", "/etc/etcd/ca.pem"),
        Key("etcd_tls_cert", pem_file, "", "global", "path",
            "Client certificate (PEM) for etcd's --client-cert-auth; needs ETCD_TLS_KEY and ETCD_TLS_CA.", "/etc/etcd/client.pem"),
        Key("etcd_tls_key", pem_file, "", "global", "path",
            "Private key (PEM) of ETCD_TLS_CERT.", "/etc/etcd/client-key.pem"),
        # -- mTLS and workload identity; docs/security.md
        Key("tls_mode", choice(TLS_MODES), "off", "both", "string",
            "How calls to the service are carried: off (the URL decides), tls (the mesh originates TLS to http:// URLs and gRPC "
            "channels, verifying the server) or mtls (also presenting the workload identity).", "mtls",
            source="Istio and Linkerd sidecars originate mTLS between meshed workloads; off keeps meshlib's behaviour before mTLS"),
        Key("tls_spiffe_ids", spiffe_ids, (), "both", "SPIFFE ID list",
            "SPIFFE IDs the service's endpoints may present (exact, or a trust domain spiffe://example.org for any ID in it); "
            "empty: the certificate must carry the service name as a DNS name.", "spiffe://example.org/ns/prod/sa/inventory"),
        Key("tls_cert", pem_file, "", "global", "path",
            "The workload's certificate chain (PEM, its certificate first); watched and reloaded on change. Needs TLS_KEY and TLS_CA.",
            "/var/run/secrets/svid.pem"),
        Key("tls_key", pem_file, "", "global", "path",
            "Private key (PEM, unencrypted) of TLS_CERT; never logged or shown.", "/var/run/secrets/svid-key.pem"),
        Key("tls_ca", pem_file, "", "global", "path",
            "Trust bundle (PEM) that verifies peers; alone (without TLS_CERT), tls mode trusts it instead of the system's.",
            "/var/run/secrets/bundle.pem"),
        Key("tls_watch_interval", duration(allow_zero=False), 1.0, "global", "duration",
            "How often TLS_CERT, TLS_KEY and TLS_CA are checked for a rotation.", "5s"),
        Key("spiffe_endpoint_socket", text, "", "global", "string",
            "The SPIFFE Workload API socket (unix:///path) the identity is streamed from (needs the spiffe extra); "
            "falls back to SPIFFE_ENDPOINT_SOCKET.", "unix:///run/spire/sockets/agent.sock",
            source="SPIFFE Workload Endpoint standard: SPIFFE_ENDPOINT_SOCKET"),
        Key("spiffe_timeout", duration(allow_zero=False), 5.0, "global", "duration",
            "How long Mesh() waits for the Workload API's first X.509-SVID before failing with a ConfigError.", "10s"),
        Key("allowed_callers", spiffe_ids, (), "global", "SPIFFE ID list",
            "Callers mesh.allowed_callers() lets in on the serving side (exact SPIFFE IDs or trust domains); "
            "everyone else gets 403 / PERMISSION_DENIED. Empty: any caller with a verified certificate.",
            "spiffe://example.org/ns/prod/sa/planner"),
        # -- routing and xDS (docs/xds.md): parsed by meshlib.routing, read by meshlib.xds
        Key("routes", lambda v, n: parse_routes(v, n, ""), None, "service", "route rules",
            "Routes in front of the service's clusters: '[prefix:/p|path:/p|regex:re] [nocase] [[!]header:name(=|~=|^=|$=|*=)value] "
            "[fraction:f] -> service[=weight,...]' rules separated by ';', first match wins. See docs/xds.md.",
            "header:x-model-version=v2 -> summarizer-v2; -> summarizer-v1=95,summarizer-v2=5"),
        Key("xds_listener", text, "", "service", "string",
            "Take this service from xDS: the name of its Listener (with MESHLIB_DISCOVERY=xds every declared service uses its own name).",
            "inventory"),
        Key("xds_listeners", tag_list, (), "global", "name list",
            "xDS: Listeners to follow from the start besides the declared services (each becomes a mesh service of that name).",
            "inventory,summarizer"),
        Key("xds_bootstrap", json_file, "", "global", "path",
            "xDS bootstrap file, gRPC's format (falls back to MESHLIB_XDS_BOOTSTRAP_CONFIG, GRPC_XDS_BOOTSTRAP, GRPC_XDS_BOOTSTRAP_CONFIG).",
            "/etc/meshlib/xds-bootstrap.json"),
        Key("xds_bootstrap_config", text, "", "global", "JSON",
            "xDS bootstrap as inline JSON (used when MESHLIB_XDS_BOOTSTRAP is not set).",
            '{"xds_servers": [{"server_uri": "127.0.0.1:18000", "channel_creds": [{"type": "insecure"}]}], "node": {"id": "n1"}}'),
        Key("xds_does_not_exist_timeout", duration(allow_zero=False), 15.0, "global", "duration",
            "xDS: a subscribed resource not received this long after the stream connected does not exist.", "30s", source="gRFC A57: 15 s"),
        Key("xds_backoff_base", duration(allow_zero=False), 1.0, "global", "duration",
            "xDS: after the n-th failed stream in a row, wait a random time in [0, base x 2^(n-1)], capped by xds_backoff_max.",
            "250ms", source="gRPC connection backoff: 1 s"),
        Key("xds_backoff_max", duration(allow_zero=False), 120.0, "global", "duration",
            "xDS: cap of the reconnect delay.", "30s", source="gRPC connection backoff: 120 s"),
        Key("xds_wait", duration(), 5.0, "global", "duration",
            "xDS: how long Mesh() (and grpc_channel('xds:///name')) waits for a listener's first complete configuration.", "10s"),
        Key("xds_csds", admin_address, "", "global", "host:port", "xDS: serve CSDS (ClientStatusDiscoveryService, what grpcdebug reads) "
            "here; empty: off. A loopback address unless ADMIN_ALLOW_REMOTE is on.", "127.0.0.1:18001"),
    ]
}

# ----------------------------------------------------------------- policy defaults (owned by the policies)

#: meshlib's default retry policy: only attempts that provably never reached a
#: server (gRPC's transparent retries), twice, each on another endpoint.
DEFAULT_RETRY = RetryPolicy(retry_on=frozenset({"connect-failure", "refused-stream"}), num_retries=2)
POLICY_DEFAULTS: dict[str, Any] = {
    "retry": DEFAULT_RETRY,
    "retry_budget": BudgetConfig(),
    "breaker_config": BreakerConfig(),
    "outlier": OutlierConfig(),
    "health_check": HealthCheckConfig(),
    "hedge": HedgePolicy(),
    "fault": FaultConfig(),
}


def _default_of(group: str, path: str) -> Any:
    obj = POLICY_DEFAULTS[group]
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _policy_key(name: str, parse: Parser, group: str, path: str, type_: str, doc: str, example: str, source: str = "") -> Key:
    return Key(name, parse, _default_of(group, path), "both", type_, doc, example, target=(group, path), source=source)


_OUTLIER_DOCS = {
    "consecutive_5xx": ("integer", int_range(0), "Eject a host after this many 5xx (and, unless split, local-origin failures) in a row; 0 never.", "3", "Envoy consecutive_5xx 5"),
    "consecutive_gateway_failure": ("integer", int_range(0), "Eject after this many 502/503/504 (or local-origin failures) in a row (needs enforcing_consecutive_gateway_failure).", "3", "Envoy consecutive_gateway_failure 5"),
    "consecutive_local_origin_failure": ("integer", int_range(0), "Split mode: eject after this many connect or TLS handshake failures, resets or timeouts in a row.", "3", "Envoy consecutive_local_origin_failure 5"),
    "split_external_local_origin_errors": ("boolean", boolean, "Count local-origin failures (connect, TLS handshake, reset, timeout) apart from server answers.", "true", "Envoy split_external_local_origin_errors false"),
    "interval": ("duration", duration(allow_zero=False), "How often ejection times are checked and success-rate / failure-percentage run.", "5s", "Envoy interval 10s"),
    "base_ejection_time": ("duration", duration(allow_zero=False), "A host is ejected for this times the number of its ejections so far.", "10s", "Envoy base_ejection_time 30s"),
    "max_ejection_time": ("duration", duration(allow_zero=False), "Cap on one ejection's length (the larger of this and base_ejection_time).", "2m", "Envoy max_ejection_time 300s"),
    "max_ejection_time_jitter": ("duration", duration(), "Random extra ejection time, up to this.", "1s", "Envoy max_ejection_time_jitter 0s"),
    "max_ejection_percent": ("percent", int_range(0, 100), "At most this share of hosts ejected at once (one host always may be).", "50", "Envoy max_ejection_percent 10%"),
    "always_eject_one_host": ("boolean", boolean, "Allow one ejection whatever max_ejection_percent says (Envoy's behaviour before 1.31).", "false", "Envoy false since 1.31 (true before); with 10% a small service could eject nothing"),
    "enforcing_consecutive_5xx": ("percent", int_range(0, 100), "Chance that a consecutive_5xx detection really ejects.", "50", "Envoy enforcing_consecutive_5xx 100"),
    "enforcing_consecutive_gateway_failure": ("percent", int_range(0, 100), "Chance that a consecutive_gateway_failure detection ejects.", "100", "Envoy enforcing_consecutive_gateway_failure 0"),
    "enforcing_consecutive_local_origin_failure": ("percent", int_range(0, 100), "Chance that a consecutive_local_origin_failure detection ejects.", "100", "Envoy enforcing_consecutive_local_origin_failure 100"),
    "enforcing_success_rate": ("percent", int_range(0, 100), "Chance that a success-rate detection ejects.", "0", "Envoy enforcing_success_rate 100"),
    "enforcing_local_origin_success_rate": ("percent", int_range(0, 100), "Split mode: chance that a local-origin success-rate detection ejects.", "0", "Envoy enforcing_local_origin_success_rate 100"),
    "success_rate_minimum_hosts": ("integer", int_range(0), "Success-rate detection runs only with this many hosts having enough requests.", "3", "Envoy success_rate_minimum_hosts 5"),
    "success_rate_request_volume": ("integer", int_range(0), "A host takes part in success-rate detection with this many requests in the interval.", "20", "Envoy success_rate_request_volume 100"),
    "success_rate_stdev_factor": ("integer", int_range(0), "Eject below mean - factor/1000 x stdev of success rates.", "1000", "Envoy success_rate_stdev_factor 1900"),
    "failure_percentage_threshold": ("percent", int_range(0, 100), "Eject hosts whose failure percentage reaches this.", "50", "Envoy failure_percentage_threshold 85"),
    "failure_percentage_minimum_hosts": ("integer", int_range(0), "Failure-percentage detection runs only with this many hosts having enough requests.", "2", "Envoy failure_percentage_minimum_hosts 5"),
    "failure_percentage_request_volume": ("integer", int_range(0), "A host takes part in failure-percentage detection with this many requests in the interval.", "10", "Envoy failure_percentage_request_volume 50"),
    "enforcing_failure_percentage": ("percent", int_range(0, 100), "Chance that a failure-percentage detection ejects (0: detection only counted).", "100", "Envoy enforcing_failure_percentage 0"),
    "enforcing_failure_percentage_local_origin": ("percent", int_range(0, 100), "Split mode: chance that a local-origin failure-percentage detection ejects.", "100", "Envoy enforcing_failure_percentage_local_origin 0"),
    "successful_active_health_check_uneject_host": ("boolean", boolean, "A passing active health check returns an ejected host at once.", "false", "Envoy successful_active_health_check_uneject_host true"),
}
_BREAKER_DOCS = {
    "failure_rate_threshold": ("percent", float_range(0.001, 100.0), "Open when this % of the window's calls failed.", "25", "resilience4j failure rate threshold 50"),
    "slow_call_rate_threshold": ("percent", float_range(0.001, 100.0), "Open when this % of the window's calls were slow.", "80", "resilience4j slow call rate threshold 100"),
    "slow_call_duration": ("duration", duration(), "A call slower than this is slow.", "2s", "resilience4j slowCallDurationThreshold 60s"),
    "wait_duration_open": ("duration", duration(), "Stay open this long, then let probe calls through (half-open).", "10s", "resilience4j waitDurationInOpenState 60s"),
    "permitted_calls_half_open": ("integer", int_range(1), "Probe calls allowed while half-open; their outcome closes or re-opens.", "3", "resilience4j permittedNumberOfCallsInHalfOpenState 10"),
    "minimum_calls": ("integer", int_range(1), "No decision before the window holds this many calls.", "20", "resilience4j minimumNumberOfCalls 100"),
    "window_type": ("string", choice((COUNT_BASED, TIME_BASED)), "count_based: the last window_size calls; time_based: the last window_size seconds.", "time_based", "resilience4j slidingWindowType COUNT_BASED"),
    "window_size": ("integer", int_range(1), "Calls (count_based) or seconds (time_based) in the sliding window.", "60", "resilience4j slidingWindowSize 100"),
}


def _resilience_keys() -> list[Key]:
    P = _policy_key
    keys = [
        P("retry_on", retry_on, "retry", "retry_on", "condition list",
          "When to retry (Envoy's retry_on names): 5xx, gateway-error, reset, connect-failure, refused-stream, retriable-4xx, "
          "retriable-status-codes, and for gRPC cancelled, deadline-exceeded, internal, resource-exhausted, unavailable. Empty: never.",
          "5xx,reset,connect-failure",
          source="Envoy retries nothing until a retry policy is set; gRPC retries transparently an RPC that never left the client, which is what connect-failure and refused-stream cover"),
        P("num_retries", int_range(0, 10), "retry", "num_retries", "integer",
          "Retries after the first attempt, each on an endpoint not yet tried where one exists.", "3",
          source="Envoy num_retries 1 once a policy is set; gRPC maxAttempts up to 5; meshlib 2 (three attempts) for the transparent default"),
        P("per_try_timeout", optional_duration, "retry", "per_try_timeout", "duration",
          "Time limit of one attempt (no limit: none); a timed-out attempt is retried under 5xx, gateway-error or reset.", "500ms",
          source="Envoy per_try_timeout: no default"),
        P("retry_backoff_base", duration(allow_zero=False), "retry", "backoff.base_interval", "duration",
          "Retry N waits a random time in [0, (2^N - 1) x base), fully jittered.", "50ms",
          source="Envoy base_interval 25ms"),
        P("retry_backoff_max", optional_duration, "retry", "backoff.max_interval", "duration",
          "Cap on the back-off bound (none: 10 x retry_backoff_base). A server's Retry-After wins, up to 300s.", "1s",
          source="Envoy max_interval 10 x base_interval"),
        P("retriable_status_codes", status_codes, "retry", "retriable_status_codes", "status list",
          "HTTP statuses retried under retry_on=retriable-status-codes.", "409,429"),
        P("retry_non_idempotent", boolean, "retry", "retry_non_idempotent", "boolean",
          "Also retry POST and PATCH after the request may have reached the server (otherwise only connect failures and refused streams are).",
          "true",
          source="Envoy retries any method its policy names; gRPC A6 any RPC; meshlib keeps POST/PATCH safe unless told"),
        P("retry_budget", choice(BUDGET_KINDS), "retry_budget", "kind", "string",
          "Limit on retries across all calls of a service: ratio (of recent requests, plus a floor per second), concurrency (Envoy's), or none.",
          "concurrency",
          source="Finagle RetryBudget and Linkerd retry budgets; Envoy retry_budget is the concurrency kind"),
        P("retry_budget_ratio", float_range(0.0, 1000.0), "retry_budget", "ratio", "float",
          "ratio budget: retries may be this fraction of the requests of the last retry_budget_ttl.", "0.1",
          source="Finagle percentCanRetry 0.2, Linkerd retryRatio 0.2"),
        P("retry_budget_min_per_sec", float_range(0.0), "retry_budget", "min_retries_per_sec", "float",
          "ratio budget: retries per second always allowed, however few the requests.", "5",
          source="Finagle minRetriesPerSec 10, Linkerd minRetriesPerSecond 10"),
        P("retry_budget_ttl", duration(allow_zero=False), "retry_budget", "ttl", "duration",
          "ratio budget: the window requests and retries are counted over (1s to 60s).", "30s",
          source="Finagle ttl 10s, Linkerd ttl 10s"),
        P("retry_budget_percent", float_range(0.0, 100.0), "retry_budget", "budget_percent", "percent",
          "concurrency budget: retries in flight may be this % of requests in flight.", "50",
          source="Envoy budget_percent 20%"),
        P("retry_budget_min_concurrency", int_range(0), "retry_budget", "min_retry_concurrency", "integer",
          "concurrency budget: retries in flight always allowed.", "10", source="Envoy min_retry_concurrency 3"),
        Key("max_requests", int_range(0), 1024, "both", "integer",
            "Circuit-breaker threshold: attempts in flight to the service at once; beyond it calls fail fast with CircuitOpenError.", "200",
            source="Envoy max_requests 1024"),
        Key("max_pending_requests", int_range(0), 1024, "both", "integer",
            "Circuit-breaker threshold: calls waiting out a retry back-off; when full, the retry is skipped and the answer in hand returned.", "100",
            source="Envoy max_pending_requests 1024"),
        Key("max_retries", int_range(0), 3, "both", "integer",
            "Circuit-breaker threshold: retries in flight at once, applied when retry_budget is none (a budget replaces it, as in Envoy).", "10",
            source="Envoy max_retries 3"),
        Key("max_connections", int_range(0), 1024, "both", "integer",
            "Circuit-breaker threshold: attempts in flight that each hold a connection (taken once per attempt, as an HTTP/1.1 request holds one).", "512",
            source="Envoy max_connections 1024"),
        Key("timeout", optional_duration, None, "both", "duration",
            "Whole-call time limit over all attempts and back-off (none: no limit). meshlib.deadline() and incoming deadlines shorten it.",
            "15s",
            source="Envoy route timeout 15s; gRPC no deadline unless set; requests/urllib3/httpx callers expect none"),
        Key("breaker", choice(("off", "cluster", "endpoint")), "off", "both", "string",
            "Classic circuit breaker on failure and slow-call rates: off, cluster (one per service) or endpoint (one per endpoint).", "cluster",
            source="Envoy has no rate-based breaker (its thresholds are the max_* keys); resilience4j's CircuitBreaker, opt-in"),
        Key("outlier_detection", boolean, True, "both", "boolean",
            "Eject misbehaving endpoints for a while (Envoy outlier detection, with the outlier_* settings).", "false",
            source="Envoy runs outlier detection only when a cluster configures it; meshlib turns it on with Envoy's defaults"),
        P("health_check_path", path_text, "health_check", "path", "string",
          "Active HTTP health checks: the path to GET on every endpoint (empty: no active checks).", "/healthz"),
        P("health_check_protocol", choice(probe_names()), "health_check", "protocol", "string",
          "http (GET health_check_path) or grpc (grpc.health.v1 Check; health_check_path is the service name asked about).", "grpc"),
        P("health_check_interval", duration(allow_zero=False), "health_check", "interval", "duration", "Time between checks of each endpoint.", "10s",
          source="Envoy interval: required, no default"),
        P("health_check_timeout", duration(allow_zero=False), "health_check", "timeout", "duration", "A check not answered within this fails.", "2s",
          source="Envoy timeout: required, no default"),
        P("health_check_healthy_threshold", int_range(1), "health_check", "healthy_threshold", "integer",
          "Passing checks in a row that make an unhealthy endpoint healthy.", "1",
          source="Envoy healthy_threshold: required, no default"),
        P("health_check_unhealthy_threshold", int_range(1), "health_check", "unhealthy_threshold", "integer",
          "Failing checks in a row that make a healthy endpoint unhealthy.", "2",
          source="Envoy unhealthy_threshold: required, no default"),
        P("health_check_expected_statuses", health_statuses, "health_check", "expected_statuses", "status list",
          "HTTP statuses that pass, as codes and inclusive ranges.", "200-299",
          source="Envoy expected_statuses [200, 201)"),
        P("hedge_max_attempts", int_range(1, 5), "hedge", "max_attempts", "integer",
          "Hedging for idempotent calls: attempts in all, sent hedge_delay apart until one answers (1: no hedging; replaces retries).", "2",
          source="gRPC hedgingPolicy maxAttempts (capped at 5); off unless set"),
        P("hedge_delay", duration(), "hedge", "delay", "duration", "Wait between hedged attempts.", "50ms",
          source="gRPC hedgingDelay 0s"),
        P("hedge_non_fatal", hedge_non_fatal, "hedge", "non_fatal", "status list",
          "HTTP statuses and gRPC status names that do not end a hedged call: the next hedge goes out at once.", "503,UNAVAILABLE",
          source="gRPC nonFatalStatusCodes: none"),
        Key("rate_limit", float_range(0.0), 0.0, "both", "float",
            "Local rate limit: calls per second to the service (token bucket); over it calls fail fast with RateLimitedError. 0: no limit.",
            "100", source="Envoy local_ratelimit: off unless configured"),
        Key("rate_limit_burst", burst, 0.0, "both", "float",
            "Local rate limit: calls allowed in a burst (bucket size; 0: the rate, at least 1).", "20"),
        P("fault_delay_percent", float_range(0.0, 100.0), "fault", "delay_percent", "percent", "Fault injection: share of calls delayed by fault_delay.", "10"),
        P("fault_delay", duration(), "fault", "delay", "duration", "Fault injection: the injected delay.", "2s"),
        P("fault_abort_percent", float_range(0.0, 100.0), "fault", "abort_percent", "percent",
          "Fault injection: share of calls answered with fault_abort_status without being sent.", "5"),
        P("fault_abort_status", int_range(200, 599), "fault", "abort_status", "integer", "Fault injection: the HTTP status of an aborted call.", "500",
          source="Envoy fault filter http_status: set per fault"),
        P("fault_abort_grpc_status", grpc_status, "fault", "abort_grpc_status", "string",
          "Fault injection: the gRPC status of an aborted gRPC call.", "RESOURCE_EXHAUSTED"),
    ]
    for field_name, (type_, parse, doc, example, source) in _OUTLIER_DOCS.items():
        keys.append(P(f"outlier_{field_name}", parse, "outlier", field_name, type_, doc, example, source))
    for field_name, (type_, parse, doc, example, source) in _BREAKER_DOCS.items():
        keys.append(P(f"breaker_{field_name}", parse, "breaker_config", field_name, type_, doc, example, source))
    return keys


KEYS.update((k.name, k) for k in _resilience_keys())


# ----------------------------------------------------------------- telemetry and admin (read into TelemetryConfig)

KEYS.update((k.name, k) for k in [
    Key("access_log", boolean, True, "global", "boolean",
        "One structured access-log event per call to the `logging` logger `meshlib.access` at INFO (printed only if the application configures logging).", "off",
        source="Envoy access logs are configured per listener (off unless set); meshlib logs to a library logger, silent until logging is configured"),
    Key("access_log_format", choice(("json", "console")), "json", "global", "string",
        "How structlog renders each access-log event: `json` or `console`.", "console"),
    Key("access_log_per", choice(("call", "attempt")), "call", "global", "string",
        "One access-log event per logical call, or one per attempt.", "attempt"),
    Key("access_log_sample", float_range(0.0, 1.0), 1.0, "global", "float (0..1)",
        "Share of calls (or attempts) logged; errors are logged anyway while ACCESS_LOG_ERRORS is on.", "0.01",
        source="Envoy runtime_filter / OTel TraceIdRatioBased sampling"),
    Key("access_log_errors", boolean, True, "global", "boolean",
        "Always log failed calls (errors, 5xx, failing gRPC statuses), whatever the sample.", "false"),
    Key("access_log_headers", header_names, (), "global", "header list",
        "Request headers added to access-log events (Authorization, cookies and REDACT_HEADERS show as [redacted]).", "x-request-id,user-agent"),
    Key("redact_headers", redact_names, frozenset(), "global", "header list (secret)",
        "Further header names never shown in logs, spans, metrics or the admin endpoint (besides Authorization, Proxy-Authorization, Cookie, Set-Cookie).", "x-api-key"),
    Key("propagators", propagators, ("tracecontext", "baggage"), "global", "propagator list",
        "Trace headers written and read when OpenTelemetry is not in use: tracecontext, baggage, b3 (single header), b3multi, or none. With OpenTelemetry, its OTEL_PROPAGATORS apply.", "b3multi",
        source="OTEL_PROPAGATORS default tracecontext,baggage"),
    Key("tracing", choice(("auto", "otel", "native", "off")), "auto", "global", "string",
        "auto/otel: OpenTelemetry's context, propagators and spans when it is installed; native: meshlib's own propagation only; off: no trace headers, no spans.", "native"),
    Key("metrics", boolean, True, "global", "boolean",
        "Per-attempt metrics (mesh.stats(), Prometheus, the OpenTelemetry metrics API).", "off"),
    Key("metrics_extra_buckets", seconds_list, (30.0, 60.0, 120.0, 300.0), "global", "duration list",
        "Duration histogram buckets added to OTel's advised ones (which stop at 10s) for long LLM calls.", "30s,1m,10m",
        source="OTel http.client.request.duration advice tops out at 10s"),
    Key("metrics_endpoint_labels", boolean, True, "global", "boolean",
        "Label per-attempt series with the endpoint address (bounded by the service's current membership).", "false"),
    Key("admin", admin_address, "", "global", "host:port",
        "Serve the admin endpoint (/stats, /stats/prometheus, /clusters, /config_dump, /ready) here; empty: off.", "127.0.0.1:9901",
        source="Envoy admin is off unless configured; conventionally 127.0.0.1:9901"),
    Key("admin_allow_remote", boolean, False, "global", "boolean",
        "Allow ADMIN and XDS_CSDS to bind a non-loopback address (neither has authentication).", "true"),
])  # fmt: skip

SERVICE_KEYS = tuple(k for k in KEYS.values() if k.scope in ("service", "both"))
GLOBAL_KEYS = tuple(k for k in KEYS.values() if k.scope in ("global", "both"))
