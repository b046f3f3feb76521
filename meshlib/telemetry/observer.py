"""The observer telemetry adds to each cluster: every attempt's record ends
that attempt in its call's scope (metrics, span, access log)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..outcome import AttemptRecord, Outcome
from .metrics import MAX_RPC_METHODS, ClusterMetrics
from .scope import CallScope, QuietScope

if TYPE_CHECKING:
    from ..core.cluster import Cluster
    from ..core.host import Host
    from .hub import Telemetry

__all__ = ["ClusterTelemetry"]

#: Outcomes that are no error for the access log (a losing hedge is cancelled).
_NOT_ERRORS = frozenset({Outcome.SUCCESS, Outcome.CANCELLED})
#: Retry conditions met only by requests that never reached the server.
_BEFORE_SENDING = frozenset({"connect-failure", "refused-stream"})


class ClusterTelemetry:
    """The observer telemetry adds to one cluster's tuple."""

    def __init__(self, hub: "Telemetry", cluster: "Cluster") -> None:
        self.hub = hub
        self.cluster = cluster
        self.name = cluster.name
        self.clock = cluster.clock
        self.metrics = ClusterMetrics(cluster.name, hub.config) if hub.config.metrics else None
        self.updates = 0
        #: The methods labelled by name so far (see :meth:`rpc_label`).
        self.rpc_names: set[str] = set()
        #: Whether HTTP calls get a span of their own around their attempts:
        #: when the service may retry on an answer or hedge (gRPC calls always do, gRFC A72).
        retry = cluster.retry
        self.call_spans = cluster.hedges or (retry.num_retries > 0 and bool(retry.retry_on - _BEFORE_SENDING))
        self.hedges = cluster.hedges
        self.perf_counter = cluster.clock.perf_counter
        #: meshlib's own context (not OpenTelemetry's), propagated or not.
        self.native = not hub.prop.otel
        #: No trace ids of meshlib's to make: OpenTelemetry's context, or tracing off.
        self.no_ids = hub.prop.otel or hub.prop.off
        #: What a quiet call's attempt writes its trace headers with.
        self.inject = hub.prop.inject
        #: Read per call (``telemetry._quiet``): the module whose ``_TRACER_PROVIDER``
        #: says whether a TracerProvider is set (None: no spans at all), and whether
        #: ``meshlib.access`` logs INFO (None: no access log).
        self.span_api = None if hub.spans is None else hub.spans.api
        self.log_enabled = None if hub.access is None else hub.access.is_enabled_for
        self.otel = hub.otel_metrics
        #: Whether a quiet gRPC call keeps its latest attempt's record back and
        #: queues it with the call's end, as one entry: when every attempt of a
        #: call ends inside its block (no hedges) and there are metrics to queue.
        self.keep_last = self.metrics is not None and not cluster.hedges

    def attempt_ended(self, host: "Host", record: AttemptRecord) -> None:
        scope = record.tag
        if type(scope) is QuietScope and scope.owner is self:  # the common case: only metrics to count
            rpc = scope.rpc_label
            queued: AttemptRecord | None = record
            if rpc is not None:
                queued = scope.last if self.keep_last else record  # the latest one waits for the call's end
                scope.last = record
            metrics = self.metrics
            if queued is not None and metrics is not None:
                pending = metrics.pending
                pending.append(queued)  # metrics.add(queued), inline: the record alone, its labels are its scope's
                if len(pending) >= metrics.BATCH:
                    metrics.fold()
            otel = self.otel
            if otel is not None and getattr(otel.state, "_METER_PROVIDER", otel) is not None:
                otel.record(record, self.name, scope.method, scope.port, rpc, scope.method is not None)
            return
        if type(scope) is not CallScope or scope.owner is not self:  # type: ignore[union-attr]
            scope = None  # an attempt outside any call scope of this service (a gRPC stream's)
        method = port = rpc = None
        http = record.grpc_status is None  # a gRPC stream's attempt (no scope) is no HTTP request
        if scope is not None:
            method, port, rpc = scope.method, scope.port, scope.rpc_label
            http = method is not None  # a @mesh.call function: no HTTP duration
        if self.metrics is not None:
            self.metrics.add((record, method, port, rpc, http))
        otel = self.otel
        if otel is not None and getattr(otel.state, "_METER_PROVIDER", otel) is not None:  # otel.live(), inline
            otel.record(record, self.name, method, port, rpc, http)
        if scope is not None:
            if scope.quiet:
                if not scope.on_error or (record.outcome in _NOT_ERRORS and (record.status or 0) < 500):
                    scope.pending -= 1
                    return
                scope.quiet = False  # it failed: kept from now on, for its access-log event
            scope.ended(record)
            return
        log = self.hub.access
        if log is not None:
            error = record.outcome not in (Outcome.SUCCESS, Outcome.CANCELLED) or (record.status or 0) >= 500
            if log.wanted(error):
                log.emit(self.fields(None, [record], (None, None), record.ended - record.started, None), error)

    # -- helpers --------------------------------------------------------------------

    def ejected(self, key: tuple[str, int]) -> bool:
        outlier = self.cluster.outlier
        return outlier is not None and outlier.is_ejected(key)

    def wall_ns(self, perf: float) -> int:
        """A cluster-clock reading as wall-clock nanoseconds (what spans take)."""
        return time.time_ns() - int((self.clock.perf_counter() - perf) * 1e9)

    def rpc_label(self, rpc: str) -> str:
        """``rpc`` for metric labels: the first 200 methods of the service, then ``other``
        (gRFC A66 reports unregistered methods as ``other``)."""
        names = self.rpc_names
        if rpc in names:
            return rpc
        if len(names) >= MAX_RPC_METHODS:
            return "other"
        names.add(rpc)
        return rpc

    def attempt_started(self, rpc: str) -> None:
        metrics = self.metrics
        if metrics is not None:
            (metrics.grpc_started.get(rpc) or metrics.started(rpc)).add()
        otel = self.otel
        if otel is not None and getattr(otel.state, "_METER_PROVIDER", otel) is not None:  # otel.live(), inline
            otel.attempt_started.add(1, {"grpc.method": rpc, "grpc.target": self.name})

    def call_ended(self, rpc: str, status: str, duration: float, queued: bool = False) -> None:
        """A gRPC call is over (``queued``: its scope is in the metrics' queue already)."""
        if self.metrics is not None and not queued:
            self.metrics.call_ended(rpc, status, duration)
        otel = self.otel
        if otel is not None and getattr(otel.state, "_METER_PROVIDER", otel) is not None:  # otel.live(), inline
            otel.call_duration.record(duration, {"grpc.method": rpc, "grpc.target": self.name, "grpc.status": status})

    def fields(self, scope: CallScope | None, records: list[AttemptRecord], ids: tuple[str | None, str | None], duration: float, error: BaseException | None) -> dict[str, Any]:
        real = [r for r in records if r.outcome != Outcome.CANCELLED] or records
        last = real[-1] if real else None
        out: dict[str, Any] = {"event": "meshlib.access", "service": self.name}
        if scope is not None:
            if scope.rpc is not None:
                out["rpc"] = scope.rpc
            else:
                out["method"] = scope.method
                if scope.url is not None:
                    out["path"] = _path_of(scope.url)
            if scope.request_headers is not None and self.hub.access is not None and self.hub.access.headers:
                out["headers"] = self.hub.access.header_fields(scope.request_headers)
        if last is not None:
            out["endpoint"] = last.endpoint.address
            out["outcome"] = last.outcome
            out["status"] = last.status
            if last.grpc_status is not None:
                out["grpc_status"] = last.grpc_status
            start = scope.started if scope is not None and len(records) > 1 else last.started
            out["ttfb_ms"] = round((last.first_byte - start) * 1000, 3)
            out["bytes"] = last.bytes
        out["attempts"] = len(real)
        out["retries"] = sum(1 for r in real if r.retry)
        out["hedges"] = sum(1 for r in records if r.hedge)
        out["duration_ms"] = round(duration * 1000, 3)
        if error is not None:
            out["error"] = type(error).__name__
        out["trace_id"], out["span_id"] = ids
        return out


def _path_of(url: str) -> str:
    sep = url.find("://")
    if sep < 0:
        return url
    slash = url.find("/", sep + 3)
    return "/" if slash < 0 else url[slash:]
