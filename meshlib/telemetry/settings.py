"""Telemetry settings: what the ``MESHLIB_ACCESS_LOG*``, ``MESHLIB_PROPAGATORS``,
``MESHLIB_TRACING``, ``MESHLIB_METRICS*``, ``MESHLIB_REDACT_HEADERS`` and
``MESHLIB_ADMIN*`` keys hold (the config layer parses them; this is the
frozen result, with the documented defaults)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TelemetryConfig", "HTTP_DURATION_BUCKETS", "GRPC_LATENCY_BUCKETS", "PROPAGATORS"]

#: OTel's advised buckets for ``http.client.request.duration`` (seconds).
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: gRFC A66's latency buckets (seconds).
GRPC_LATENCY_BUCKETS = (
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
    0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8,
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
)  # fmt: skip
#: Propagator names, as ``OTEL_PROPAGATORS`` spells them.
PROPAGATORS = ("tracecontext", "baggage", "b3", "b3multi", "none")


@dataclass(frozen=True)
class TelemetryConfig:
    access_log: bool = True
    access_log_format: str = "json"
    access_log_per: str = "call"
    access_log_sample: float = 1.0
    access_log_errors: bool = True
    access_log_headers: tuple[str, ...] = ()
    redact_headers: frozenset[str] = frozenset()
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    tracing: str = "auto"
    metrics: bool = True
    metrics_extra_buckets: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0)
    metrics_endpoint_labels: bool = True
    admin: str = ""
    admin_allow_remote: bool = False

    @property
    def duration_buckets(self) -> tuple[float, ...]:
        """OTel's advised buckets plus the configured ones for long (LLM) calls."""
        return tuple(sorted(set(HTTP_DURATION_BUCKETS) | set(self.metrics_extra_buckets)))
