"""B3 propagation (Zipkin), single ``b3`` header and multi ``X-B3-*`` headers.

Extraction follows openzipkin/b3-propagation: the single header wins over
the multi headers; a 16-hex trace id is left-padded to 32; ``d`` (debug)
implies sampled; malformed values are ignored as a whole. Injection writes
``{TraceId}-{SpanId}-{1|0}`` (single) or ``X-B3-TraceId``/``X-B3-SpanId``/
``X-B3-Sampled`` (multi), as OpenTelemetry's B3 propagators do.
"""

from __future__ import annotations

__all__ = ["parse_b3_single", "parse_b3_multi", "format_b3_single", "b3_multi_headers"]

_HEX = frozenset("0123456789abcdef")


def _hex(s: str, *sizes: int) -> bool:
    return len(s) in sizes and set(s) <= _HEX and s.strip("0") != ""


def _trace(s: str) -> str:
    return s.rjust(32, "0")


def parse_b3_single(value: str | None) -> tuple[str, str, int] | None:
    """``(trace_id, span_id, flags)`` of a ``b3`` value with ids, or None
    (a sampling-only value such as ``b3: 0`` carries no ids)."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 2 or len(parts) > 4:
        return None
    trace_id, span_id = parts[0], parts[1]
    if not (_hex(trace_id, 16, 32) and _hex(span_id, 16)):
        return None
    flags = 1
    if len(parts) >= 3:
        state = parts[2]
        if state not in ("0", "1", "d"):
            return None
        flags = 0 if state == "0" else 1
    if len(parts) == 4 and not _hex(parts[3], 16):
        return None
    return _trace(trace_id), span_id, flags


def parse_b3_multi(trace_id: str | None, span_id: str | None, sampled: str | None, flags: str | None) -> tuple[str, str, int] | None:
    """The ids of ``X-B3-TraceId``/``X-B3-SpanId`` (first values), or None if missing or malformed."""
    if not trace_id or not span_id:
        return None
    trace_id, span_id = trace_id.strip(), span_id.strip()
    if not (_hex(trace_id, 16, 32) and _hex(span_id, 16)):
        return None
    bit = 1
    if flags is not None and flags.strip() == "1":
        bit = 1
    elif sampled is not None:
        s = sampled.strip().lower()
        if s in ("0", "false"):
            bit = 0
        elif s not in ("1", "true"):
            return None
    return _trace(trace_id), span_id, bit


def format_b3_single(trace_id: str, span_id: str, flags: int) -> str:
    return f"{trace_id}-{span_id}-{'1' if flags & 1 else '0'}"


def b3_multi_headers(trace_id: str, span_id: str, flags: int) -> dict[str, str]:
    return {"x-b3-traceid": trace_id, "x-b3-spanid": span_id, "x-b3-sampled": "1" if flags & 1 else "0"}
