"""``mesh.stats()`` as metric families, in Prometheus conventions.

Names carry the ``meshlib_`` prefix, base units (seconds) and ``_total`` on
counters; they mirror Envoy's cluster stats (``upstream_rq_*``,
``outlier_detection.*``, ``circuit_breakers.*``, ``membership_*``), OTel's
``http.client.request.duration`` and gRFC A66's ``grpc.client.*`` (dots as
underscores, as OpenTelemetry's Prometheus exporter writes them). Labels hold
bounded values only. :func:`families` is pure data; ``prometheus`` turns it
into prometheus_client families, :func:`render_text` into the text format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["Family", "families", "render_text"]


@dataclass
class Family:
    name: str  # without _total for counters (prometheus_client's convention)
    type: str  # counter, gauge, histogram
    help: str
    label_names: tuple[str, ...]
    #: (label values, value) for counters/gauges; (label values, cumulative buckets, sum, count) for histograms.
    samples: list[Any] = field(default_factory=list)

    def add(self, labels: Iterable[str], *value: Any) -> None:
        self.samples.append((tuple(labels), *value))


#: (family, help, counter key in the service's stats, extra label values).
_COUNTERS = (
    ("meshlib_calls", "Logical calls admitted (Envoy upstream_rq_total counts attempts: see meshlib_upstream_rq).", "calls"),
    ("meshlib_upstream_rq_retry", "Retries granted (Envoy upstream_rq_retry).", "retries"),
    ("meshlib_upstream_rq_retry_skipped_body", "Retries not made because the request body could not be replayed.", "retries_skipped_body"),
    ("meshlib_upstream_rq_hedge", "Hedged attempts launched (gRPC hedging).", "hedges"),
    ("meshlib_upstream_rq_timeout", "Calls that ran out of time (Envoy upstream_rq_timeout).", "deadline_exceeded"),
    ("meshlib_upstream_rq_pending_overflow", "Requests refused by the circuit-breaker thresholds (Envoy upstream_rq_pending_overflow).", "overflow"),
    ("meshlib_circuit_breaker_rejected", "Calls refused by an open circuit breaker.", "breaker_rejected"),
    ("meshlib_rate_limited", "Calls refused by the local rate limit (Envoy local_ratelimit rate_limited).", "rate_limited"),
)


def families(stats: dict[str, Any]) -> list[Family]:
    """Every meshlib metric family from ``mesh.stats()`` (with its ``telemetry`` part)."""
    tel = stats.get("telemetry", {})
    tel_services = tel.get("services", {})
    out: dict[str, Family] = {}

    def fam(name: str, type_: str, help_: str, labels: tuple[str, ...]) -> Family:
        f = out.get(name)
        if f is None:
            f = out[name] = Family(name, type_, help_, labels)
        return f

    for service, s in stats.get("services", {}).items():
        svc = (service,)
        for name, help_, key in _COUNTERS:
            fam(name, "counter", help_, ("service",)).add(svc, s.get(key, 0))
        overflow = fam("meshlib_upstream_rq_retry_overflow", "counter", "Retries refused by the retry budget or max_retries (Envoy upstream_rq_retry_overflow).", ("service", "reason"))
        overflow.add((service, "budget"), s.get("retries_budget_exhausted", 0))
        overflow.add((service, "max_retries"), s.get("retries_overflow", 0))
        fam("meshlib_upstream_rq_hedge_overflow", "counter", "Hedges refused by the retry budget.", ("service",)).add(svc, s.get("hedges_budget_exhausted", 0))
        faults = fam("meshlib_fault_injected", "counter", "Calls delayed or aborted by fault injection (Envoy fault.delays_injected / aborts_injected).", ("service", "kind"))
        faults.add((service, "delay"), s.get("fault_delays", 0))
        faults.add((service, "abort"), s.get("fault_aborts", 0))
        breaker = s.get("breaker")
        fam("meshlib_circuit_breaker_open", "gauge", "1 while the service's circuit breaker is open, 0.5 half-open (Envoy circuit_breakers.*.rq_open).", ("service",)).add(
            svc, {"open": 1.0, "half_open": 0.5}.get(breaker["state"], 0.0) if breaker else 0.0
        )
        thresholds = s.get("thresholds", {})
        remaining = fam("meshlib_circuit_breaker_remaining", "gauge", "Room left under each threshold (Envoy circuit_breakers.*.remaining_*).", ("service", "threshold"))
        for kind, limit in (("rq", "max_requests"), ("pending", "max_pending_requests"), ("retries", "max_retries"), ("cx", "max_connections")):
            current = {"rq": "requests", "pending": "pending_requests", "retries": "retries", "cx": "connections"}[kind]
            if limit in thresholds and current in thresholds:
                remaining.add((service, kind), max(0, thresholds[limit] - thresholds[current]))
        od = s.get("outlier_detection")
        if od:
            fam("meshlib_outlier_detection_ejections_active", "gauge", "Endpoints ejected now (Envoy outlier_detection.ejections_active).", ("service",)).add(svc, od.get("ejections_active", 0))
            fam("meshlib_outlier_detection_ejections_overflow", "counter", "Ejections not made because of max_ejection_percent.", ("service",)).add(svc, od.get("ejections_overflow", 0))
            enforced = fam("meshlib_outlier_detection_ejections_enforced", "counter", "Ejections enforced, by detection type (Envoy ejections_enforced_*).", ("service", "type"))
            detected = fam("meshlib_outlier_detection_ejections_detected", "counter", "Ejections detected, enforced or not, by detection type (Envoy ejections_detected_*).", ("service", "type"))
            for key, value in od.items():
                if key.startswith("ejections_enforced_") and key != "ejections_enforced_total":
                    enforced.add((service, key[len("ejections_enforced_"):]), value)
                elif key.startswith("ejections_detected_"):
                    detected.add((service, key[len("ejections_detected_"):]), value)
        eps = s.get("endpoints", [])
        members = fam("meshlib_membership", "gauge", "Endpoints of the service by state (Envoy membership_total / _healthy / _excluded).", ("service", "state"))
        members.add((service, "total"), len(eps))
        members.add((service, "healthy"), sum(1 for e in eps if e.get("healthy") and not e.get("ejected")))
        members.add((service, "ejected"), sum(1 for e in eps if e.get("ejected")))
        for e in eps:
            labels = (service, e["address"])
            fam("meshlib_upstream_rq", "counter", "Attempts sent to the endpoint (Envoy upstream_rq_total, per host rq_total).", ("service", "endpoint")).add(labels, e.get("requests", 0))
            fam("meshlib_upstream_rq_active", "gauge", "Attempts in flight, streamed bodies included (Envoy upstream_rq_active).", ("service", "endpoint")).add(labels, e.get("active", 0))
            fam("meshlib_endpoint_ewma_seconds", "gauge", "Peak-EWMA of the endpoint's time to first byte.", ("service", "endpoint")).add(labels, e.get("ewma_ms", 0.0) / 1000.0)
            if "breaker" in e:
                fam("meshlib_endpoint_circuit_breaker_open", "gauge", "1 while the endpoint's breaker is open.", ("service", "endpoint")).add(labels, 1.0 if e["breaker"] == "open" else 0.0)
        t = tel_services.get(service, {})
        fam("meshlib_discovery_updates", "counter", "Snapshots adopted from discovery (Envoy update_success / membership_change).", ("service",)).add(svc, t.get("discovery_updates", 0))
        if not t:
            continue
        fam("meshlib_upstream_rq_retry_success", "counter", "Retries that succeeded (Envoy upstream_rq_retry_success).", ("service",)).add(svc, t.get("retry_success", 0))
        fam("meshlib_upstream_rq_per_try_timeout", "counter", "Attempts that timed out (Envoy upstream_rq_per_try_timeout).", ("service",)).add(svc, t.get("per_try_timeouts", 0))
        done = fam("meshlib_upstream_rq_completed", "counter", "Attempts completed, by outcome, status class and code (Envoy upstream_rq_completed / _<Nxx> / _<code>).", ("service", "endpoint", "outcome", "status_class", "code"))
        for c in t.get("completed", []):
            done.add((service, c["endpoint"], c["outcome"], c["status_class"], c["code"]), c["count"])
        for key, name, help_ in (
            ("rq_time", "meshlib_upstream_rq_time_seconds", "Attempt duration until the response body ended (Envoy upstream_rq_time, in seconds)."),
            ("first_byte", "meshlib_upstream_rq_first_byte_seconds", "Attempt time to first byte (response headers or first message)."),
        ):
            h = fam(name, "histogram", help_, ("service", "endpoint"))
            for ep, hist in t.get(key, {}).items():
                h.add((service, ep), list(hist["buckets"].items()), hist["sum"], hist["count"])
        h = fam("meshlib_http_client_request_duration_seconds", "histogram", "OTel http.client.request.duration: duration of HTTP client attempts.", ("server_address", "http_request_method", "server_port", "http_response_status_code", "error_type"))
        for row in t.get("http_client_request_duration", []):
            h.add((service, row["method"], row["port"], row["status_code"], row["error_type"]), list(row["buckets"].items()), row["sum"], row["count"])
        started = fam("meshlib_grpc_client_attempt_started", "counter", "gRFC A66 grpc.client.attempt.started.", ("grpc_method", "grpc_target"))
        for method, n in t.get("grpc_attempt_started", {}).items():
            started.add((method, service), n)
        for key, name, help_ in (
            ("grpc_attempt_duration", "meshlib_grpc_client_attempt_duration_seconds", "gRFC A66 grpc.client.attempt.duration."),
            ("grpc_call_duration", "meshlib_grpc_client_call_duration_seconds", "gRFC A66 grpc.client.call.duration."),
        ):
            h = fam(name, "histogram", help_, ("grpc_method", "grpc_target", "grpc_status"))
            for row in t.get(key, []):
                h.add((row["method"], service, row["status"]), list(row["buckets"].items()), row["sum"], row["count"])

    for source in stats.get("discovery", []):
        kind = str(source.get("kind", "static"))
        if "errors" in source:
            fam("meshlib_discovery_errors", "counter", "Discovery failures (Envoy update_failure).", ("source",)).add((kind,), source.get("errors") or 0)
        if "stale_seconds" in source:
            fam("meshlib_discovery_stale_seconds", "gauge", "Seconds the registry has been unreachable (0 while connected).", ("source",)).add((kind,), source.get("stale_seconds") or 0.0)
        if "connected" in source:
            fam("meshlib_discovery_connected", "gauge", "1 while connected to the registry.", ("source",)).add((kind,), 1.0 if source.get("connected") else 0.0)
    fam("meshlib_observer_errors", "counter", "Observers of attempt records that raised (logged once each).", ()).add((), tel.get("observer_errors", 0))
    return list(out.values())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) else str(v)


def render_text(fams: Iterable[Family]) -> str:
    """The Prometheus text exposition format (0.0.4) of ``fams``."""
    lines: list[str] = []
    for f in fams:
        name = f.name + ("_total" if f.type == "counter" else "")
        lines.append(f"# HELP {name} {f.help}")
        lines.append(f"# TYPE {name} {f.type}")
        for sample in f.samples:
            labels = sample[0]
            if f.type == "histogram":
                buckets, total, count = sample[1], sample[2], sample[3]
                for le, n in buckets:
                    bound = 'le="' + str(le) + '"'
                    lines.append(f"{f.name}_bucket{_labels(f.label_names, labels, bound)} {n}")
                lines.append(f"{f.name}_sum{_labels(f.label_names, labels)} {_num(total)}")
                lines.append(f"{f.name}_count{_labels(f.label_names, labels)} {count}")
            else:
                lines.append(f"{name}{_labels(f.label_names, labels)} {_num(sample[1])}")
    return "\n".join(lines) + "\n"
