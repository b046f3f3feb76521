"""Trace context across process boundaries: inject on the way out, extract on the way in.

Two back ends, chosen once per process configuration:

* **OpenTelemetry** (``opentelemetry-api`` installed, ``tracing=auto`` or
  ``otel``): the current OTel context and the globally configured propagators
  (``OTEL_PROPAGATORS``: ``tracecontext,baggage`` by default, ``b3``,
  ``b3multi`` with ``opentelemetry-propagator-b3``), so meshlib agrees with
  every other instrumented library in the process.
* **meshlib's own** (no OpenTelemetry, or ``tracing=native``): a context
  variable holding a :class:`~meshlib.telemetry.w3c.SpanContext`, and the
  formats named by ``propagators`` (W3C ``tracecontext`` and ``baggage`` by
  default, ``b3`` single header, ``b3multi``), following the W3C and B3 rules
  exactly. Each outgoing attempt gets a new parent-id in the caller's trace;
  with no trace at all, a new one is started (sampled), as W3C advises.
"""

from __future__ import annotations

import contextvars
import os
import random
from typing import Any, Iterable

from . import carriers
from .b3 import b3_multi_headers, format_b3_single, parse_b3_multi, parse_b3_single
from .w3c import SpanContext, format_baggage, format_traceparent, format_tracestate, parse_baggage, parse_traceparent, parse_tracestate

__all__ = ["Propagation", "otel_installed", "current_native", "new_span_id", "new_trace_id"]

_CURRENT: contextvars.ContextVar[SpanContext | None] = contextvars.ContextVar("meshlib_trace_context", default=None)
current_native = _CURRENT.get

_B3_MULTI = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")


_bits = random.SystemRandom().getrandbits(64)  # a seed from the OS: ids differ across processes
_random = random.Random(_bits ^ os.getpid())
_getrandbits = _random.getrandbits
#: Builds a SpanContext from all its fields in one C call (the named tuple's ``__new__`` is Python).
_context = tuple.__new__


def new_trace_id() -> str:
    """128 random bits (as OpenTelemetry's SDK makes them), never all zero."""
    return f"{_getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_getrandbits(64) or 1:016x}"


def otel_installed() -> bool:
    try:
        import opentelemetry.propagate  # noqa: F401
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class _Getter:
    """OTel's Getter over any carrier meshlib reads."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        return carriers.get_all(carrier, key) or None

    def keys(self, carrier: Any) -> list[str]:
        return carriers.keys(carrier)


class _Setter:
    def set(self, carrier: Any, key: str, value: str) -> None:
        carriers.set_header(carrier, key, value)


GETTER = _Getter()
SETTER = _Setter()


def _names_from_env() -> tuple[str, ...]:
    raw = os.environ.get("OTEL_PROPAGATORS", "")
    names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
    return names or ("tracecontext", "baggage")


class Propagation:
    """Inject and extract with one back end (see the module's doc)."""

    def __init__(self, names: Iterable[str] | None = None, *, mode: str = "auto") -> None:
        self.names = tuple(names) if names is not None else _names_from_env()
        self.off = mode == "off"
        self.otel = not self.off and mode in ("auto", "otel") and otel_installed()
        self._stock_seen: tuple[Any, bool] | None = None
        if self.otel:
            from opentelemetry import context, propagate, trace

            self._ctx, self._propagate, self._trace = context, propagate, trace
        self.fields = self._fields() if not self.otel else frozenset(f.lower() for f in self._propagate.get_global_textmap().fields)
        #: The headers that carry trace ids (what makes a request's own headers worth reading).
        self.id_fields = tuple(f for f in ("traceparent", "b3", "x-b3-traceid") if f in self.fields)
        self._w3c_only = set(self.names) <= {"tracecontext", "baggage"} and "tracecontext" in self.names

    def _fields(self) -> frozenset[str]:
        out: set[str] = set()
        for n in self.names:
            out |= {"tracecontext": {"traceparent", "tracestate"}, "baggage": {"baggage"}, "b3": {"b3"}, "b3multi": set(_B3_MULTI)}.get(n, set())
        return frozenset(out)

    # -- the current context ---------------------------------------------------

    def current(self) -> Any:
        """The caller's context: OTel's current Context, or the native SpanContext (or None)."""
        if self.otel:
            return self._ctx.get_current()
        return _CURRENT.get()

    def missing(self, ctx: Any) -> bool:
        """Whether ``ctx`` carries no trace (then a call's own request headers may)."""
        if self.off:
            return False
        if self.otel:
            return not self._trace.get_current_span(ctx).get_span_context().is_valid
        return ctx is None

    def attach(self, ctx: Any) -> Any:
        if self.otel:
            return self._ctx.attach(ctx)
        return _CURRENT.set(ctx)

    def detach(self, token: Any) -> None:
        if self.otel:
            self._ctx.detach(token)
        else:
            _CURRENT.reset(token)

    def ids(self, ctx: Any) -> tuple[str | None, str | None]:
        """(trace id, span id) of ``ctx`` in hex, for logs."""
        if ctx is None:
            return None, None
        if isinstance(ctx, SpanContext):
            return ctx.trace_id, ctx.span_id
        sc = self._trace.get_current_span(ctx).get_span_context()
        if not sc.is_valid:
            return None, None
        return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"

    # -- out ---------------------------------------------------------------------

    def child(self, parent: SpanContext | None) -> SpanContext:
        """A native context for one outgoing request: a new parent-id in
        ``parent``'s trace (tracestate and baggage kept), or a new sampled trace."""
        if parent is None:  # new_trace_id(), new_span_id(), inline
            return _context(SpanContext, (f"{_getrandbits(128) or 1:032x}", f"{_getrandbits(64) or 1:016x}", 1, (), (), False))
        return _context(SpanContext, (parent[0], f"{_getrandbits(64) or 1:016x}", parent[2], parent[3], parent[4], False))

    def inject(self, carrier: Any, ctx: Any = None) -> None:
        """Write ``ctx`` (default: the current context; native contexts that
        came from a caller get a new parent-id first) into ``carrier``."""
        if self.off:
            return
        if self.otel:
            if ctx is None:
                ctx = self._ctx.get_current()
            if not ctx:
                textmap, seen = self._propagate.get_global_textmap(), self._stock_seen
                if seen[1] if seen is not None and seen[0] is textmap else self._stock(textmap):  # _stock(), its remembered answer inline
                    return  # an empty Context: no span, no baggage; OpenTelemetry's own propagators write nothing
            self._propagate.inject(carrier, context=ctx, setter=SETTER)
            return
        if ctx is None:
            ctx = _CURRENT.get()
            if ctx is None or ctx.remote:
                ctx = self.child(ctx)
        self.write(carrier, ctx)

    def _stock(self, textmap: Any) -> bool:
        """Whether ``textmap`` is made only of OpenTelemetry's own propagators
        (which write nothing for an empty context); remembered per object."""
        known = self._stock_seen
        if known is not None and known[0] is textmap:
            return known[1]
        parts = getattr(textmap, "_propagators", (textmap,))
        stock = all(type(p).__module__.startswith("opentelemetry.") for p in parts)
        self._stock_seen = (textmap, stock)
        return stock

    def write(self, carrier: Any, ctx: SpanContext) -> None:
        if self._w3c_only and not ctx[3] and not ctx[4] and not isinstance(carrier, list):
            carrier["traceparent"] = f"00-{ctx[0]}-{ctx[1]}-{ctx[2] & 0xFF:02x}"  # the common case, inline
            return
        for name in self.names:
            if name == "tracecontext":
                carriers.set_header(carrier, "traceparent", format_traceparent(ctx.trace_id, ctx.span_id, ctx.flags))
                if ctx.tracestate:
                    carriers.set_header(carrier, "tracestate", format_tracestate(ctx.tracestate))
            elif name == "baggage":
                if ctx.baggage:
                    carriers.set_header(carrier, "baggage", format_baggage(ctx.baggage))
            elif name == "b3":
                carriers.set_header(carrier, "b3", format_b3_single(ctx.trace_id, ctx.span_id, ctx.flags))
            elif name == "b3multi":
                for k, v in b3_multi_headers(ctx.trace_id, ctx.span_id, ctx.flags).items():
                    carriers.set_header(carrier, k, v)

    # -- in ----------------------------------------------------------------------

    def extract(self, carrier: Any) -> Any:
        """The context a request carries: an OTel Context (the current one
        updated), or a native remote SpanContext (None if it carries none)."""
        if self.otel:
            return self._propagate.extract(carrier, getter=GETTER)
        if self.off:
            return None
        return self.read(carrier)

    def read(self, carrier: Any) -> SpanContext | None:
        ids: tuple[str, str, int] | None = None
        state: tuple[tuple[str, str], ...] = ()
        baggage: tuple[tuple[str, str], ...] = ()
        names = self.names
        if "b3" in names or "b3multi" in names:
            ids = parse_b3_single(carriers.get_first(carrier, "b3"))
            if ids is None:
                g = carriers.get_first
                ids = parse_b3_multi(g(carrier, "x-b3-traceid"), g(carrier, "x-b3-spanid"), g(carrier, "x-b3-sampled"), g(carrier, "x-b3-flags"))
        if "tracecontext" in names:
            tp = carriers.get_all(carrier, "traceparent")
            parsed = parse_traceparent(tp[0]) if len(tp) == 1 else None
            if parsed is not None:
                ids = parsed
                state = parse_tracestate(carriers.get_all(carrier, "tracestate"))
        if "baggage" in names:
            baggage = parse_baggage(carriers.get_all(carrier, "baggage"))
        if ids is None:
            return SpanContext(new_trace_id(), new_span_id(), 1, (), baggage, remote=True) if baggage else None
        return SpanContext(ids[0], ids[1], ids[2], state, baggage, remote=True)
