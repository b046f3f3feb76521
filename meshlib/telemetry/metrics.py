"""Per-attempt metrics, kept in the process (``mesh.stats()``, the admin
endpoint, Prometheus) and, when OpenTelemetry's metrics API is installed,
recorded on its instruments too.

Series are keyed by bounded values only: the service, the endpoint (an
address of the service's current membership; series of endpoints that left
are dropped), the HTTP method (the nine known methods, else ``_OTHER``), the
status code or gRPC status name, the outcome class, and the gRPC method
(the first 200 per service, then ``other``). Never a path, an id or a query.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from typing import Any, Iterable

from ..outcome import AttemptRecord, Outcome
from .settings import GRPC_LATENCY_BUCKETS, TelemetryConfig

__all__ = ["Histogram", "ClusterMetrics", "OtelInstruments", "KNOWN_METHODS", "normal_method", "status_class"]

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
MAX_RPC_METHODS = 200


_METHODS = {m: m for m in KNOWN_METHODS}


def normal_method(method: str | None) -> str:
    if method is None:
        return "_OTHER"
    known = _METHODS.get(method)
    if known is not None:
        return known
    m = method.upper()
    return m if m in KNOWN_METHODS else "_OTHER"


#: (status, grpc status, outcome) -> (status class, code, error.type): a few hundred at most.
_LABELS: dict[tuple[int | None, str | None, str], tuple[str, str, str]] = {}


def labels_of(record: AttemptRecord) -> tuple[str, str, str]:
    key = (record.status, record.grpc_status, record.outcome)
    found = _LABELS.get(key)
    if found is None:
        found = _LABELS.setdefault(key, (status_class(record), code_of(record), error_type(record)))
    return found


def status_class(record: AttemptRecord) -> str:
    if record.status is not None:
        return f"{record.status // 100}xx"
    if record.grpc_status is not None:
        return "grpc"
    return "none"


def code_of(record: AttemptRecord) -> str:
    if record.status is not None:
        return str(record.status)
    if record.grpc_status is not None:
        return record.grpc_status
    return ""


def error_type(record: AttemptRecord) -> str:
    """OTel's ``error.type``: the status code as a string after an error
    status, the outcome class before any response; empty on success."""
    if record.status is not None:
        return str(record.status) if record.status >= 400 else ""
    if record.grpc_status is not None:
        return record.grpc_status if record.grpc_status != "OK" else ""
    return "" if record.outcome == Outcome.SUCCESS else record.outcome


class Histogram:
    """Cumulative-on-read bucket counts, their sum and count (caller holds the lock)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count)]`` with ``+Inf`` last, as Prometheus writes buckets."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.sum, 6), "buckets": dict(self.cumulative())}


class ClusterMetrics:
    """One service's attempt metrics.

    An attempt's record is appended to a queue (one C call, no lock) and
    folded into the tables in batches: by the caller whose append fills a
    batch, and before every read (``snapshot``, ``keep_endpoints``). Readers
    therefore always see every attempt that has ended; the call path pays for
    the folding a batch at a time, without a lock per attempt."""

    #: Records waiting to be folded in before the caller that adds one more folds them.
    BATCH = 64

    def __init__(self, service: str, cfg: TelemetryConfig) -> None:
        self.service = service
        self.buckets = cfg.duration_buckets
        self.per_endpoint = cfg.metrics_endpoint_labels
        self._lock = threading.Lock()
        #: (record, method, port, rpc label, http) per ended attempt, not yet folded in.
        self.pending: deque[tuple[AttemptRecord, str | None, int | None, str | None, bool]] = deque()
        #: gRPC (method, None, 0.0) per attempt started, (method, status, seconds) per call ended.
        self.grpc_events: deque[tuple[str, str | None, float]] = deque()
        #: (endpoint, outcome, status class, code) -> [count]: Envoy's upstream_rq_completed / _<Nxx> / _<code>.
        self.completed: dict[tuple[str, str, str, str], list[int]] = {}
        #: endpoint -> total duration (body included) and time to first byte.
        self.rq_time: dict[str, Histogram] = {}
        self.first_byte: dict[str, Histogram] = {}
        #: (method, port, status code, error.type) -> http.client.request.duration.
        self.http: dict[tuple[str, int | None, int | None, str], Histogram] = {}
        #: gRFC A66: method -> attempts started; (method, status) -> attempt / call durations.
        self.grpc_started: dict[str, int] = {}
        self.grpc_attempt: dict[tuple[str, str], Histogram] = {}
        self.grpc_call: dict[tuple[str, str], Histogram] = {}
        self.retry_success = 0
        self.hedge_wins = 0
        self.per_try_timeouts = 0
        self.calls_traced = 0
        #: The labels of a record (endpoint, status, gRPC status, outcome, method,
        #: port, RPC, http) -> the entries it counts into (see ``_find``).
        self._series: dict[tuple[Any, ...], tuple[list[int], Histogram, Histogram, Histogram | None, bool]] = {}

    def record(self, record: AttemptRecord, method: str | None, port: int | None, rpc: str | None, http: bool = True) -> None:
        """Count one ended attempt (``http``: it was an HTTP request, for
        ``http.client.request.duration``)."""
        pending = self.pending
        pending.append((record, method, port, rpc, http))
        if len(pending) >= self.BATCH:
            self.fold()

    def fold(self) -> None:
        """Fold the queued records into the tables (under the lock, so two
        folds never interleave; appends go on meanwhile). Each distinct set of
        labels finds its table entries once (``_series``) and reuses them."""
        pending = self.pending
        if self.grpc_events:
            with self._lock:
                self._fold_grpc()
        if not pending:
            return
        take = pending.popleft
        bounds = self.buckets
        per_endpoint = self.per_endpoint
        series, find = self._series, self._find
        success, timeout = Outcome.SUCCESS, Outcome.TIMEOUT
        with self._lock:
            while pending:
                try:
                    record, method, port, rpc, http = take()
                except IndexError:  # taken by a fold that started after ours
                    break
                outcome = record.outcome
                key = (record.endpoint.address if per_endpoint else "", record.status, record.grpc_status, outcome, method, port, rpc, http)
                found = series.get(key)
                if found is None:
                    found = find(key, record)
                cell, h, fb, third, grpc = found
                cell[0] += 1
                started = record.started
                duration = record.ended - started
                at = bisect_left(bounds, duration)
                h.counts[at] += 1  # Histogram.observe, inline
                h.sum += duration
                h.count += 1
                ttfb = record.first_byte - started
                fb.counts[at if ttfb == duration else bisect_left(bounds, ttfb)] += 1
                fb.sum += ttfb
                fb.count += 1
                if third is not None:  # http.client.request.duration, or gRPC's attempt duration
                    third.counts[bisect_left(third.bounds, duration) if grpc else at] += 1
                    third.sum += duration
                    third.count += 1
                if outcome == success:
                    if record.retry:
                        self.retry_success += 1
                    elif record.hedge:
                        self.hedge_wins += 1
                elif outcome == timeout:
                    self.per_try_timeouts += 1

    def _find(self, key: tuple[Any, ...], record: AttemptRecord) -> tuple[list[int], Histogram, Histogram, Histogram | None, bool]:
        """The table entries one set of labels counts into (lock held), remembered."""
        ep, status, grpc_status, outcome, method, port, rpc, http = key
        sclass, code, err = labels_of(record)
        cell = self.completed.setdefault((ep, outcome, sclass, code), [0])
        h = self.rq_time.get(ep)
        if h is None:
            h = self.rq_time[ep] = Histogram(self.buckets)
            self.first_byte[ep] = Histogram(self.buckets)
        third: Histogram | None = None
        if rpc is not None:
            akey = (rpc, grpc_status or outcome.upper())
            third = self.grpc_attempt.get(akey) or self.grpc_attempt.setdefault(akey, Histogram(GRPC_LATENCY_BUCKETS))
        elif http and outcome != Outcome.CANCELLED:
            hkey = (normal_method(method), port, status, err)
            third = self.http.get(hkey) or self.http.setdefault(hkey, Histogram(self.buckets))
        found = (cell, h, self.first_byte[ep], third, rpc is not None)
        self._series[key] = found
        return found

    def attempt_started(self, rpc: str) -> None:
        self.grpc_events.append((rpc, None, 0.0))  # folded in with the records

    def call_ended(self, rpc: str, status: str, duration: float) -> None:
        self.grpc_events.append((rpc, status, duration))

    def _fold_grpc(self) -> None:
        """gRPC's per-call counts (attempts started, call durations), queued (lock held)."""
        events = self.grpc_events
        started, calls = self.grpc_started, self.grpc_call
        while events:
            try:
                rpc, status, duration = events.popleft()
            except IndexError:
                break
            if status is None:
                started[rpc] = started.get(rpc, 0) + 1
            else:
                g = calls.get((rpc, status))
                if g is None:
                    g = calls[(rpc, status)] = Histogram(GRPC_LATENCY_BUCKETS)
                g.observe(duration)

    def keep_endpoints(self, addresses: Iterable[str]) -> None:
        """Drop the series of endpoints no longer in the service."""
        if not self.per_endpoint:
            return
        keep = set(addresses)
        self.fold()
        with self._lock:
            self._series.clear()  # entries of endpoints that left are let go
            for k in [k for k in self.completed if k[0] not in keep]:
                del self.completed[k]
            for table in (self.rq_time, self.first_byte):
                for ep in [ep for ep in table if ep not in keep]:
                    del table[ep]

    def snapshot(self) -> dict[str, Any]:
        """A consistent JSON-able copy (for ``mesh.stats()`` and exporters)."""
        self.fold()
        with self._lock:
            return {
                "completed": [
                    {"endpoint": ep, "outcome": o, "status_class": sc, "code": c, "count": n[0]} for (ep, o, sc, c), n in sorted(self.completed.items())
                ],
                "rq_time": {ep: h.to_dict() for ep, h in sorted(self.rq_time.items())},
                "first_byte": {ep: h.to_dict() for ep, h in sorted(self.first_byte.items())},
                "http_client_request_duration": [
                    {"method": m, "port": "" if p is None else str(p), "status_code": "" if s is None else str(s), "error_type": e, **h.to_dict()}
                    for (m, p, s, e), h in sorted(self.http.items(), key=lambda kv: tuple(str(x) for x in kv[0]))
                ],
                "grpc_attempt_started": dict(sorted(self.grpc_started.items())),
                "grpc_attempt_duration": [{"method": m, "status": s, **h.to_dict()} for (m, s), h in sorted(self.grpc_attempt.items())],
                "grpc_call_duration": [{"method": m, "status": s, **h.to_dict()} for (m, s), h in sorted(self.grpc_call.items())],
                "retry_success": self.retry_success,
                "hedge_wins": self.hedge_wins,
                "per_try_timeouts": self.per_try_timeouts,
            }


class OtelInstruments:
    """The same measurements on OpenTelemetry's metrics API (whatever
    MeterProvider the application set; the global proxy forwards once it is set)."""

    def __init__(self, cfg: TelemetryConfig) -> None:
        from opentelemetry import metrics

        try:
            from opentelemetry.metrics import _internal as provider_state
        except ImportError:  # pragma: no cover - another layout of the API: always record
            provider_state = None
        #: The API module whose ``_METER_PROVIDER`` says whether one is set (``live``).
        self.state = provider_state
        meter = metrics.get_meter("meshlib")
        self.http = meter.create_histogram(
            "http.client.request.duration", unit="s", description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(cfg.duration_buckets),
        )  # fmt: skip
        self.attempt_started = meter.create_counter("grpc.client.attempt.started", unit="{attempt}", description="Number of client call attempts started.")
        self.attempt_duration = meter.create_histogram(
            "grpc.client.attempt.duration", unit="s", description="End-to-end time taken to complete a client call attempt.",
            explicit_bucket_boundaries_advisory=list(GRPC_LATENCY_BUCKETS),
        )  # fmt: skip
        self.call_duration = meter.create_histogram(
            "grpc.client.call.duration", unit="s", description="Time taken by gRPC to complete an RPC from application's perspective.",
            explicit_bucket_boundaries_advisory=list(GRPC_LATENCY_BUCKETS),
        )  # fmt: skip

    def live(self) -> bool:
        """Whether the application set a MeterProvider (before that, OTel's proxy
        instruments drop every measurement: calls then skip them, one attribute read)."""
        return getattr(self.state, "_METER_PROVIDER", self) is not None

    def record(self, record: AttemptRecord, service: str, method: str | None, port: int | None, rpc: str | None, http: bool = True) -> None:
        duration = record.ended - record.started
        if rpc is not None:
            self.attempt_duration.record(duration, {"grpc.method": rpc, "grpc.target": service, "grpc.status": record.grpc_status or record.outcome.upper()})
            return
        if record.outcome == Outcome.CANCELLED or not http:
            return
        attrs: dict[str, Any] = {"http.request.method": normal_method(method), "server.address": service}
        if port is not None:
            attrs["server.port"] = port
        if record.status is not None:
            attrs["http.response.status_code"] = record.status
        err = error_type(record)
        if err:
            attrs["error.type"] = err
        self.http.record(duration, attrs)
