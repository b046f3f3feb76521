"""One logical call, as telemetry sees it.

An adapter opens a :class:`CallScope` around the call (``telemetry.call``)
and, per attempt, ``telemetry.inject(headers, endpoint)`` where it builds the
outgoing headers: that opens the attempt (its span, its trace headers). The
cluster's observer (``observer.ClusterTelemetry``) receives each attempt's
:class:`~meshlib.outcome.AttemptRecord`, finds the call's scope in the
record (``AttemptRecord.tag``: the scope is the ``core.call.call_tag`` of
the calls made inside it), and ends the attempt: metrics, span, access log.
An attempt whose answer is still streaming when the call returns ends later,
when its body ends; its record still names its scope, which then finishes
the call. Nothing here decides anything about the call.
"""

from __future__ import annotations

from logging import INFO
from typing import TYPE_CHECKING, Any

from ..core.call import call_tag
from ..errors import CircuitOpenError, RateLimitedError
from ..outcome import AttemptRecord, Outcome
from . import carriers
from .metrics import call_status, normal_method
from .propagation import current_native
from .spans import span_name

if TYPE_CHECKING:
    from .observer import ClusterTelemetry

__all__ = ["CallScope", "QuietScope", "NULL_SCOPE", "current_scope"]

_SCOPE = call_tag
#: The scope of the call being made in this context (None outside any).
current_scope = call_tag.get



class _NullScope:
    """No telemetry for this cluster: the call goes on untouched."""

    __slots__ = ()

    def __enter__(self) -> "_NullScope":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self) -> None:
        return None

    def current(self) -> "_NullScope":
        return self

    def close(self, exc: BaseException | None = None) -> None:
        return None


NULL_SCOPE = _NullScope()


class QuietScope:
    """A call of which nothing but metrics can come: no TracerProvider,
    ``meshlib.access`` not logging, no trace ids of meshlib's to make
    (OpenTelemetry's context is propagated, or tracing is off), and not a
    stream. What ``telemetry.call`` / ``http_call`` give then, instead of a
    :class:`CallScope`: the labels its attempts' metrics need, the current
    context's trace headers on each attempt, and for a gRPC call gRFC A66's
    attempts started and call duration. A gRPC call's end and its last
    attempt go to the metrics as one entry, the scope itself (when
    ``ClusterTelemetry.keep_last``; see ``ClusterMetrics.fold``)."""

    __slots__ = ("owner", "method", "port", "rpc_label", "token", "started", "last", "error", "duration")
    quiet = silent = True
    closed = False
    ctx = None

    def __init__(self, owner: "ClusterTelemetry", method: str | None, port: int | None, rpc_label: str | None = None) -> None:
        self.owner = owner
        self.method = method
        self.port = port
        self.rpc_label = rpc_label
        #: A gRPC call's latest attempt record (its status is the call's).
        self.last: AttemptRecord | None = None

    def __enter__(self) -> "QuietScope":
        if self.rpc_label is not None:
            self.started = self.owner.perf_counter()
        self.token = _SCOPE.set(self)
        return self

    def __exit__(self, et: "type[BaseException] | None", exc: BaseException | None, tb: object) -> None:
        _SCOPE.reset(self.token)
        rpc = self.rpc_label
        if rpc is not None:
            owner = self.owner
            last = self.last  # (read first: once queued, a fold may let go of it)
            self.duration = duration = owner.perf_counter() - self.started
            if owner.keep_last:
                #: The call's error, if it failed (its status is worked out when folded in).
                self.error = et
                metrics = owner.metrics
                pending = metrics.pending
                pending.append(self)  # metrics.add(self), inline: with the last attempt it kept back, one entry per call
                if len(pending) >= metrics.BATCH:
                    metrics.fold()
                otel = owner.otel
                if otel is None or getattr(otel.state, "_METER_PROVIDER", otel) is None:  # not otel.live(), inline
                    return
            owner.call_ended(rpc, call_status(last, et), duration, queued=owner.keep_last)

    def open(self, endpoint: Any, carrier: Any) -> None:
        """An attempt goes out: the current context's trace headers, if any."""
        owner = self.owner
        if carrier is not None:
            owner.inject(carrier)
        if self.rpc_label is not None:
            owner.attempt_started(self.rpc_label)


class _Current:
    """Makes a scope current for a block without opening or closing it."""

    __slots__ = ("scope", "token")

    def __init__(self, scope: "CallScope") -> None:
        self.scope = scope

    def __enter__(self) -> None:
        self.token = _SCOPE.set(self.scope)

    def __exit__(self, *exc: object) -> None:
        _SCOPE.reset(self.token)


class CallScope:
    __slots__ = (
        "owner", "method", "address", "port", "url", "path", "rpc", "request_headers", "started", "opened",
        "records", "span", "ctx", "token", "closed", "error", "refusals", "finished", "attempt_ctx", "rpc_label", "spans",
        "quiet", "silent", "track", "pending", "log_on", "sampled", "on_error",
    )  # fmt: skip

    def __init__(self, owner: "ClusterTelemetry", method: str | None, address: str | None, port: int | None, url: str | None, rpc: str | None, headers: Any) -> None:
        self.owner = owner
        self.method = method
        self.address = address or owner.name
        self.port = port
        self.url = url
        self.path = None
        self.rpc = rpc
        #: The RPC as metrics label it (bounded: see ClusterTelemetry.rpc_label).
        self.rpc_label = None if rpc is None else owner.rpc_label(rpc)
        self.request_headers = headers
        self.opened: list[list[Any]] = []
        self.records: list[AttemptRecord] = []
        self.span: Any = None
        self.ctx: Any = None
        self.closed = False
        self.finished = False
        self.error: BaseException | None = None
        self.attempt_ctx: Any = None
        self.spans: Any = None

    # -- the call -------------------------------------------------------------------

    def __exit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        _SCOPE.reset(self.token)
        if self.quiet and (exc is None or not self.on_error):
            self.closed = True  # close(), its common case inline
            return
        self.close(exc)

    def start(self) -> None:
        """The call begins without this scope becoming current: a stream,
        whose call outlives the block that starts it, calls ``start``,
        ``current`` and ``close`` itself."""
        self.__enter__()
        _SCOPE.reset(self.token)

    def __enter__(self) -> "CallScope":
        """The call begins; calls begun in the block belong to this scope."""
        owner = self.owner
        self.started = owner.perf_counter()
        hub = owner.hub
        prop = hub.prop
        spans = hub.spans
        if spans is not None and getattr(spans.api, "_TRACER_PROVIDER", spans) is None:  # no TracerProvider set (see Spans.api)
            spans = None  # no TracerProvider: no span work at all
        self.spans = spans
        log = hub.access
        self.log_on = log_on = log is not None and log.is_enabled_for(INFO)  # log.enabled(), inline
        #: Whether the call's access-log event is in the sample (drawn now, once).
        self.sampled = sampled = log_on and log.sampled()  # type: ignore[union-attr]
        #: No span, and no access-log event unless the call fails (no TracerProvider;
        #: ``meshlib.access`` not logging, or this call not in the sample): its
        #: attempts only count in the metrics and carry trace context; nothing is
        #: kept of them unless one fails (``on_error``) and errors are always logged.
        self.quiet = quiet = spans is None and self.rpc is None and (not log_on or (not sampled and not log.per_attempt and not owner.hedges))  # type: ignore[union-attr]
        self.on_error = quiet and log_on and log.errors  # type: ignore[union-attr]
        #: Whether each attempt is kept open by itself (its span, its context for a
        #: per-attempt log event) until its record arrives; else only counted (``pending``).
        self.track = spans is not None or (log_on and log.per_attempt)  # type: ignore[union-attr]
        self.pending = 0
        #: Quiet, and no trace ids of meshlib's to make: an attempt needs nothing from this scope.
        self.silent = quiet and (prop.otel or prop.off)
        if owner.native:
            parent = current_native()
        elif spans is None:
            parent = None  # OTel's current context, read where it is needed (inject, the access log)
        else:
            parent = prop.current()
        headers = self.request_headers
        # Trace headers the caller set by hand count when no context is current
        # (the cheap header test first: most requests carry none).
        if headers is not None and prop.id_fields and carriers.has_any(headers, prop.id_fields) and prop.missing(parent):
            parent = prop.extract(headers) or parent
        if spans is not None and (self.rpc is not None or owner.call_spans):
            counters = owner.cluster.counters
            self.refusals = counters["retries_budget_exhausted"] + counters["hedges_budget_exhausted"] + counters["retries_overflow"]
            attrs: dict[str, Any] = {"meshlib.service": owner.name}
            if self.rpc is not None:
                attrs["rpc.system"] = "grpc"
                attrs["rpc.method"] = self.rpc.strip("/")
            elif self.method is not None:
                attrs["http.request.method"] = normal_method(self.method)
            self.span, self.ctx = spans.start_call(parent, span_name(self.method, self.rpc)[0], attrs)
        else:  # no call span: attempts are children of the caller's context
            self.ctx = parent  # OTel's context, or meshlib's (None: the first attempt starts a trace)
        self.token = _SCOPE.set(self)
        return self

    def current(self) -> "_Current":
        """``with scope.current():`` calls begun in the block belong to this scope."""
        return _Current(self)

    def close(self, exc: BaseException | None = None) -> None:
        """The call is over (``exc``: how it failed); its answer may still be streaming."""
        self.closed = True
        if self.quiet:
            if exc is None or not self.on_error:
                return
            self.quiet = False  # a failed call: its access-log event is due after all
        if exc is not None:
            self.error = exc
        if self.opened or self.pending:  # a streamed answer, or hedges abandoned but not yet over
            if exc is not None or not any(r.outcome == Outcome.SUCCESS for r in self.records):
                return  # the answer is still streaming: the call ends with it (see ended)
        self.finish()

    # -- attempts -------------------------------------------------------------------

    def open(self, endpoint: Any, carrier: Any) -> Any:
        """An attempt goes out to ``endpoint``: its span and trace headers; returns its context."""
        owner = self.owner
        hub = owner.hub
        span = None
        spans = self.spans
        if spans is not None:
            resend = len(self.records) + len(self.opened)
            attrs: dict[str, Any] = {
                "server.address": self.address,
                "network.peer.address": endpoint.host,
                "network.peer.port": endpoint.port,
            }
            if self.port is not None:
                attrs["server.port"] = self.port
            if self.rpc is not None:
                attrs["rpc.system"] = "grpc"
                attrs["rpc.method"] = self.rpc.strip("/")
                attrs["previous-rpc-attempts"] = resend
                attrs["transparent-retry"] = False
            elif self.method is not None:
                attrs["http.request.method"] = normal_method(self.method)
                if normal_method(self.method) != self.method:
                    attrs["http.request.method_original"] = self.method
                if self.url is not None:
                    attrs["url.full"] = self.url
                if resend:
                    attrs["http.request.resend_count"] = resend
            span, ctx = spans.start_attempt(self.ctx, span_name(self.method, self.rpc)[1], attrs)
            if resend:  # on the call's span, or on this attempt's when the call has none
                holder = self.span if self.span is not None else span
                if self.opened:
                    holder.add_event("hedge", {"meshlib.attempt": resend + 1, "network.peer.address": endpoint.address})
                elif self.records:
                    last = self.records[-1]
                    waited = max(0.0, owner.clock.perf_counter() - last.ended)
                    holder.add_event("retry", {"meshlib.attempt": resend + 1, "meshlib.backoff_seconds": round(waited, 6), "meshlib.previous_outcome": last.outcome})
        elif hub.prop.otel or hub.prop.off:  # OTel's context (read when injecting), or tracing off: no ids to make
            ctx = self.ctx
        else:  # meshlib's own context: the first attempt starts the call's trace if no caller did
            prop = hub.prop
            parent = self.ctx
            ctx = prop.child(parent)
            if parent is None:
                self.ctx = ctx
            if carrier is not None and not prop.off:
                prop.write(carrier, ctx)
            carrier = None
        if carrier is not None:
            hub.prop.inject(carrier, ctx)
        if self.track:
            self.opened.append([endpoint, span, ctx])
        else:
            self.pending += 1
        self.attempt_ctx = ctx
        if self.rpc_label is not None:
            owner.attempt_started(self.rpc_label)
        return ctx

    def ended(self, record: AttemptRecord) -> None:
        if not self.track:  # nothing of the attempt's own to close
            self.records.append(record)
            self.pending -= 1
            if self.closed and not self.pending:
                self.finish()
            return
        owner = self.owner
        ep = record.endpoint
        entry = None
        for e in self.opened:  # the driver records the very Endpoint it sent to
            if e[0] is ep:
                entry = e
                break
        else:
            key = ep.key
            for e in self.opened:  # the endpoint object was replaced by a snapshot update
                if e[0].key == key:
                    entry = e
                    break
        if entry is not None:
            try:
                self.opened.remove(entry)
            except ValueError:
                entry = None
        if entry is not None and entry[1] is not None:
            span = entry[1]
            if record.outcome not in (Outcome.SUCCESS, Outcome.CANCELLED) and owner.ejected(ep.key):
                span.add_event("endpoint ejected", {"network.peer.address": record.endpoint.address, "meshlib.reason": "outlier detection"})
            owner.hub.spans.end_attempt(span, record, self.rpc, owner.wall_ns(record.ended))
        self.records.append(record)
        log = owner.hub.access
        if log is not None and log.per_attempt and log.enabled():
            error = record.outcome not in (Outcome.SUCCESS, Outcome.CANCELLED) or (record.status or 0) >= 500
            if log.wanted(error):
                ids = self.ids(entry[2]) if entry is not None else (None, None)
                log.emit(owner.fields(self, [record], ids, record.ended - record.started, None), error)
        if self.closed and not self.opened:
            self.finish()

    # -- the end --------------------------------------------------------------------

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self._finish()
        finally:
            # The records name this scope (their tag): letting go of them here
            # keeps the pair from living on as a cycle for the garbage collector.
            self.records.clear()

    def _finish(self) -> None:
        owner = self.owner
        hub = owner.hub
        if self.span is None and self.spans is not None and self.error is not None and not self.records:
            self._refused_span()
        if self.span is None and self.rpc is None:
            log = hub.access  # only the call's access-log event is left to do
            if not self.log_on or log.per_attempt:  # type: ignore[union-attr]
                return
            records = self.records
            last = _answer(records)
            failed = self.error is not None or last is None or last.outcome != Outcome.SUCCESS or (last.status or 0) >= 500
            if self.sampled or (failed and log.errors):  # type: ignore[union-attr]
                now = owner.clock.perf_counter()
                log.emit(owner.fields(self, records, self.ids(self.attempt_ctx), now - self.started, self.error), failed)
            return
        now = owner.clock.perf_counter()
        records = self.records
        last = _answer(records)
        error = self.error
        span = self.span
        if span is not None:
            counters = owner.cluster.counters
            refused = counters["retries_budget_exhausted"] + counters["hedges_budget_exhausted"] + counters["retries_overflow"]
            if refused > self.refusals and (last is None or last.outcome != Outcome.SUCCESS or (last.status or 0) >= 500):
                span.add_event("retry budget exhausted", {"meshlib.service": owner.name})
            if isinstance(error, CircuitOpenError):
                span.add_event("circuit breaker rejected", {"meshlib.reason": str(error)[:200]})
            elif isinstance(error, RateLimitedError):
                span.add_event("rate limited", {})
            span.set_attribute("meshlib.attempts", len([r for r in records if r.outcome != Outcome.CANCELLED]))
            if last is not None:
                if last.status is not None:
                    span.set_attribute("http.response.status_code", last.status)
                if last.grpc_status is not None:
                    span.set_attribute("rpc.status_code", last.grpc_status)
            failed = last is None or last.outcome != Outcome.SUCCESS or (last.status or 0) >= 400 or (self.rpc is not None and last.grpc_status not in (None, "OK"))
            if error is not None:
                hub.spans.fail(span, error)
                span.end(end_time=owner.wall_ns(now))
            elif failed and last is not None:
                hub.spans.end_attempt(span, last, self.rpc, owner.wall_ns(now))  # its status and error.type
            else:
                span.end(end_time=owner.wall_ns(now))
        if self.rpc is not None:
            owner.call_ended(self.rpc_label, call_status(last, None if error is None else type(error)), now - self.started)
        self._log(records, last, now, error)

    def ids(self, ctx: Any) -> tuple[str | None, str | None]:
        """(trace id, span id) of an attempt's context for the access log; with
        OpenTelemetry and no span of meshlib's, the current context's."""
        prop = self.owner.hub.prop
        if ctx is None and prop.otel:
            ctx = prop.current()
        return prop.ids(ctx)

    def _refused_span(self) -> None:
        """A call refused before any attempt (breaker, rate limit, no endpoint) still shows as a span."""
        owner = self.owner
        attrs: dict[str, Any] = {"meshlib.service": owner.name}
        if self.method is not None:
            attrs["http.request.method"] = normal_method(self.method)
        self.refusals = 0
        self.span, _ = owner.hub.spans.start_call(owner.hub.prop.current(), span_name(self.method, self.rpc)[0], attrs, start_ns=owner.wall_ns(self.started))

    def _log(self, records: list[AttemptRecord], last: AttemptRecord | None, now: float, error: BaseException | None) -> None:
        log = self.owner.hub.access
        if log is None or log.per_attempt:
            return
        failed = error is not None or last is None or last.outcome != Outcome.SUCCESS or (last.status or 0) >= 500
        if self.sampled or (failed and log.errors):
            log.emit(self.owner.fields(self, records, self.ids(self.attempt_ctx), now - self.started, error), failed)


def _answer(records: list[AttemptRecord]) -> AttemptRecord | None:
    """The call's answer: its last attempt that was not a cancelled hedge (else its last)."""
    for r in reversed(records):
        if r.outcome != Outcome.CANCELLED:
            return r
    return records[-1] if records else None
