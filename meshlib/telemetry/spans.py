"""OpenTelemetry spans for mesh calls (the ``otel`` extra; meshlib forces no exporter).

HTTP, after the stable HTTP client conventions: one ``CLIENT`` span per
physical attempt named ``{method}`` (``HTTP`` for an unknown method; never
the path), with ``http.request.method``, ``server.address``/``server.port``
(the service name and port the caller used), ``network.peer.address``/
``network.peer.port`` (the picked endpoint), ``url.full`` without
credentials or query, ``http.response.status_code``, ``error.type`` and
``http.request.resend_count`` on retries and hedges. The attempts of one
call are children of one ``INTERNAL`` span for the logical call.

gRPC, after gRFC A72: a ``Sent.<service>.<method>`` call span and one
``Attempt.<service>.<method>`` child per attempt with
``previous-rpc-attempts`` and ``transparent-retry``; both also carry the OTel
RPC attributes ``rpc.system``, ``rpc.method`` and ``rpc.status_code``.

Events: ``retry`` (with the back-off waited), ``hedge`` (a hedged attempt
launched), ``retry budget exhausted``, ``circuit breaker rejected``,
``endpoint ejected`` (outlier detection ejected the attempt's endpoint).
"""

from __future__ import annotations

from typing import Any

from ..outcome import AttemptRecord, Outcome
from .metrics import KNOWN_METHODS, error_type

__all__ = ["Spans", "span_name"]


def span_name(method: str | None, rpc: str | None) -> tuple[str, str]:
    """(call span name, attempt span name)."""
    if rpc is not None:
        dotted = rpc.strip("/").replace("/", ".")
        return f"Sent.{dotted}", f"Attempt.{dotted}"
    if method is None:  # @mesh.call: any protocol
        return "meshlib.call", "meshlib.attempt"
    m = method.upper()
    name = m if m in KNOWN_METHODS else "HTTP"
    return name, name


class Spans:
    """Starts and ends meshlib's spans on the global TracerProvider."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._trace = trace
        #: The API module whose ``_TRACER_PROVIDER`` says whether the application
        #: set a TracerProvider (``set_tracer_provider`` or ``OTEL_PYTHON_TRACER_PROVIDER``).
        #: Without one every span would be a non-recording no-op, so calls skip
        #: span work altogether; it is read on every call, so a provider set
        #: after the Mesh was built is picked up.
        self.api = trace
        self.tracer = trace.get_tracer("meshlib")
        self.CLIENT, self.INTERNAL = SpanKind.CLIENT, SpanKind.INTERNAL
        self._Status, self._ERROR = Status, StatusCode.ERROR

    def start_call(self, parent: Any, name: str, attrs: dict[str, Any], start_ns: int | None = None) -> tuple[Any, Any]:
        """(span, context with it) for a logical call, a child of ``parent``."""
        span = self.tracer.start_span(name, context=parent, kind=self.INTERNAL, attributes=attrs, start_time=start_ns)
        return span, self._trace.set_span_in_context(span, parent)

    def start_attempt(self, parent: Any, name: str, attrs: dict[str, Any]) -> tuple[Any, Any]:
        span = self.tracer.start_span(name, context=parent, kind=self.CLIENT, attributes=attrs)
        return span, self._trace.set_span_in_context(span, parent)

    def end_attempt(self, span: Any, record: AttemptRecord, rpc: str | None, end_ns: int) -> None:
        attrs: dict[str, Any] = {"meshlib.outcome": record.outcome}  # set at once: one lock of the span's
        if record.status is not None:
            attrs["http.response.status_code"] = record.status
        if rpc is not None:
            status = record.grpc_status or ("OK" if record.outcome == Outcome.SUCCESS else None)
            if status is not None:
                attrs["rpc.status_code"] = attrs["rpc.grpc.status_code"] = status
        if record.outcome == Outcome.CANCELLED:
            attrs["meshlib.cancelled"] = True  # a losing hedge: not an error
        else:
            err = error_type(record)
            if err:
                attrs["error.type"] = err
                span.set_status(self._Status(self._ERROR))
        span.set_attributes(attrs)
        span.end(end_time=end_ns)

    def fail(self, span: Any, exc: BaseException) -> None:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(self._Status(self._ERROR, type(exc).__name__))
