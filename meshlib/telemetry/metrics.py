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
from bisect import bisect_left, bisect_right
from collections import deque
from functools import reduce
from operator import add
from typing import Any, Callable, Iterable

from .._tally import Tally
from ..outcome import AttemptRecord, Outcome
from .settings import GRPC_LATENCY_BUCKETS, TelemetryConfig

__all__ = ["Histogram", "ClusterMetrics", "OtelInstruments", "KNOWN_METHODS", "normal_method", "status_class", "call_status"]

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


def call_status(last: AttemptRecord | None, error: type[BaseException] | None) -> str:
    """A gRPC call's status (gRFC A66's ``grpc.status``): its last attempt's,
    else the type of the error it failed with before any answer."""
    if last is not None and last.grpc_status:
        return last.grpc_status
    return "OK" if last is not None and last.outcome == Outcome.SUCCESS else error.__name__ if error is not None else "UNKNOWN"


class Histogram:
    """Bucket counts (cumulative on read), their sum and count (caller holds the lock).

    A value is taken by ``add``, the bound ``append`` of a list (one C call),
    and sorted into the buckets in bulk, by :meth:`settle`, when the
    histogram is read or its owner settles it."""

    __slots__ = ("bounds", "_counts", "_sum", "_values", "add")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._values: list[float] = []
        #: Take one value (counted from the next ``settle``).
        self.add = self._values.append

    def settle(self) -> None:
        """Count the values taken since the last time: each in the first
        bucket whose bound is at least the value (``bisect_left(bounds, value)``).
        Fewer values than bounds (an endpoint's histogram among many, settled
        often) are bisected one by one; more are sorted and the bounds walked,
        one bisection per bound."""
        values = self._values
        if not values:
            return
        self._sum = reduce(add, values, self._sum)  # the same additions, in the same order, as one at a time
        counts, bounds = self._counts, self.bounds
        if len(values) < len(bounds):
            for value in values:
                counts[bisect_left(bounds, value)] += 1
            values.clear()
            return
        values.sort()
        below = 0
        for i, bound in enumerate(bounds):
            upto = bisect_right(values, bound, below)
            counts[i] += upto - below
            below = upto
        counts[-1] += len(values) - below
        values.clear()

    @property
    def counts(self) -> list[int]:
        self.settle()
        return self._counts

    @property
    def sum(self) -> float:
        self.settle()
        return self._sum

    @property
    def count(self) -> int:
        """How many values were observed (the buckets' total: not kept apart)."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count)]`` with ``+Inf`` last, as Prometheus writes buckets."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.sum, 6), "buckets": dict(self.cumulative())}


#: A set of labels' ``completed`` cell, the ``add`` of its duration,
#: first-byte and (HTTP or gRPC attempt) duration histograms, and those histograms.
_Series = tuple[list[int], Callable[[float], None], Callable[[float], None], "Callable[[float], None] | None", "tuple[Histogram, ...]"]


class ClusterMetrics:
    """One service's attempt metrics.

    An attempt's record is appended to a queue (one C call, no lock) and
    folded into the tables in batches: by the caller whose append fills a
    batch, and before every read (``snapshot``, ``keep_endpoints``). Readers
    therefore always see every attempt that has ended; the call path pays for
    the folding a batch at a time, without a lock per attempt."""

    #: Records waiting to be folded in before the caller that adds one more folds them.
    BATCH = 64
    #: Folds after which every histogram counts the values it took (a few
    #: hundred calls' worth at most wait in them; reads count them all first).
    SETTLE_EVERY = 8

    def __init__(self, service: str, cfg: TelemetryConfig) -> None:
        self.service = service
        self.buckets = cfg.duration_buckets
        self.per_endpoint = cfg.metrics_endpoint_labels
        self._lock = threading.Lock()
        #: Not yet folded in, per ended attempt: (record, method, port, rpc label, http),
        #: or a quiet call's record alone (its scope, ``record.tag``, has the labels);
        #: per quiet gRPC call: its scope, once, at its end (see ``fold``).
        self.pending: deque[Any] = deque()
        #: gRPC: (method, status, seconds) per call ended (a quiet call's end is in ``pending``).
        self.grpc_events: deque[tuple[str, str, float]] = deque()
        #: (endpoint, outcome, status class, code) -> [count]: Envoy's upstream_rq_completed / _<Nxx> / _<code>.
        self.completed: dict[tuple[str, str, str, str], list[int]] = {}
        #: endpoint -> total duration (body included) and time to first byte.
        self.rq_time: dict[str, Histogram] = {}
        self.first_byte: dict[str, Histogram] = {}
        #: (method, port, status code, error.type) -> http.client.request.duration.
        self.http: dict[tuple[str, int | None, int | None, str], Histogram] = {}
        #: gRFC A66: method -> attempts started; (method, status) -> attempt / call durations.
        self.grpc_started: dict[str, Tally] = {}
        self.grpc_attempt: dict[tuple[str, str], Histogram] = {}
        self.grpc_call: dict[tuple[str, str], Histogram] = {}
        self.retry_success = 0
        self.hedge_wins = 0
        self.per_try_timeouts = 0
        self.calls_traced = 0
        #: The labels of a record (endpoint, status, gRPC status, outcome, method,
        #: port, RPC, http) -> the entries it counts into (see ``_find``).
        self._series: dict[tuple[Any, ...], _Series] = {}
        #: The labels counted into since the last settle -> their histograms
        #: (settling only these keeps it proportional to the calls, not to the endpoints).
        self._touched: dict[tuple[Any, ...], tuple[Histogram, ...]] = {}
        self._folds = 0

    def add(self, item: Any) -> None:
        """Count one ended attempt, later: queue its entry (see ``pending``;
        ``http`` in a tuple: it was an HTTP request, for ``http.client.request.duration``).
        The entry that fills a batch folds it in."""
        pending = self.pending
        pending.append(item)
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
        per_endpoint = self.per_endpoint
        series, find, calls, touched = self._series, self._find, self.grpc_call, self._touched
        success, timeout = Outcome.SUCCESS, Outcome.TIMEOUT
        with self._lock:
            while pending:
                try:
                    item = take()
                except IndexError:  # taken by a fold that started after ours
                    break
                kind = type(item)
                if kind is tuple:
                    record, method, port, rpc, http = item
                else:
                    if kind is AttemptRecord:  # a quiet call's attempt: its scope has the labels
                        record, scope = item, item.tag
                    else:  # a quiet gRPC call's end (its scope), with the last attempt it kept back
                        scope = item
                        record, scope.last = scope.last, None  # the record names the scope: no cycle left
                        status = record.grpc_status if record is not None and record.grpc_status else call_status(record, scope.error)
                        (calls.get((scope.rpc_label, status)) or self._call_histogram(scope.rpc_label, status)).add(scope.duration)
                        if record is None:  # no attempt (refused before one)
                            continue
                    method, port, rpc = scope.method, scope.port, scope.rpc_label
                    http = method is not None  # a @mesh.call function: no HTTP duration
                outcome = record.outcome
                key = (record.endpoint.address if per_endpoint else "", record.status, record.grpc_status, outcome, method, port, rpc, http)
                found = series.get(key)
                if found is None:
                    found = find(key, record)
                cell, rq_time, first_byte, third, touched[key] = found
                cell[0] += 1
                started = record.started
                duration = record.ended - started
                rq_time(duration)
                first_byte(record.first_byte - started)
                if third is not None:  # http.client.request.duration, or gRPC's attempt duration
                    third(duration)
                if outcome == success:
                    if record.retry:
                        self.retry_success += 1
                    elif record.hedge:
                        self.hedge_wins += 1
                elif outcome == timeout:
                    self.per_try_timeouts += 1
            self._folds += 1
            if self._folds % self.SETTLE_EVERY == 0:
                self._settle()

    def _settle(self) -> None:
        """Count the values the histograms took since the last settle (lock
        held): what keeps the values waiting in them few (see ``SETTLE_EVERY``)."""
        for hists in self._touched.values():
            for h in hists:
                values = h._values
                if len(values) == 1:  # an endpoint's histogram among many: Histogram.settle(), its one-value case inline
                    value = values[0]
                    h._sum += value
                    h._counts[bisect_left(h.bounds, value)] += 1
                    values.clear()
                else:
                    h.settle()
        self._touched.clear()
        for h in self.grpc_call.values():  # one per method and status
            h.settle()

    def _find(self, key: tuple[Any, ...], record: AttemptRecord) -> "_Series":
        """The table entries one set of labels counts into (lock held), remembered:
        its ``completed`` cell and the ``add`` of each histogram it counts in."""
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
        fb = self.first_byte[ep]
        found = (cell, h.add, fb.add, None, (h, fb)) if third is None else (cell, h.add, fb.add, third.add, (h, fb, third))
        self._series[key] = found
        return found

    def started(self, rpc: str) -> Tally:
        """The count of ``rpc``'s attempts started (taken at once: no lock, no queue)."""
        return self.grpc_started.get(rpc) or self.grpc_started.setdefault(rpc, Tally())

    def call_ended(self, rpc: str, status: str, duration: float) -> None:
        self.grpc_events.append((rpc, status, duration))

    def _fold_grpc(self) -> None:
        """gRPC's call durations, queued (lock held)."""
        events = self.grpc_events
        calls = self.grpc_call
        while events:
            try:
                rpc, status, duration = events.popleft()
            except IndexError:
                break
            (calls.get((rpc, status)) or self._call_histogram(rpc, status)).add(duration)

    def _call_histogram(self, rpc: str, status: str) -> Histogram:
        """gRFC A66's call duration of ``rpc`` ending in ``status`` (lock held)."""
        return self.grpc_call.setdefault((rpc, status), Histogram(GRPC_LATENCY_BUCKETS))

    def keep_endpoints(self, addresses: Iterable[str]) -> None:
        """Drop the series of endpoints no longer in the service."""
        if not self.per_endpoint:
            return
        keep = set(addresses)
        self.fold()
        with self._lock:
            self._settle()  # and _touched with it
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
                "grpc_attempt_started": {rpc: n.value for rpc, n in sorted(self.grpc_started.items())},
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
