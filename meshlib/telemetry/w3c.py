"""W3C Trace Context (``traceparent``, ``tracestate``) and W3C Baggage, by the letter.

* ``traceparent``: ``00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>``,
  lowercase; version ``ff``, an all-zero trace-id or parent-id, or any
  malformed field invalidates the whole header. A higher version is read by
  its first four fields and re-emitted as ``00``.
* ``tracestate``: up to 32 list-members (over that, the rightmost are
  dropped); keys ``[a-z0-9_\\-*/@]`` (a tenant form ``t@s``), values of
  printable ASCII without ``,`` and ``=``; an invalid member is dropped,
  never the header's neighbours; at least 512 characters are kept, whole
  entries removed when truncating (those over 128 characters first, then from
  the right). It is only read when ``traceparent`` is valid.
* ``baggage``: ``key=value;prop`` members, values percent-decoded; every
  member is kept up to 64 members and 8,192 bytes (members beyond are dropped).
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple
from urllib.parse import quote, unquote

__all__ = [
    "SpanContext",
    "parse_traceparent",
    "format_traceparent",
    "parse_tracestate",
    "format_tracestate",
    "parse_baggage",
    "format_baggage",
    "MAX_TRACESTATE_MEMBERS",
    "MAX_BAGGAGE_MEMBERS",
    "MAX_BAGGAGE_BYTES",
]

MAX_TRACESTATE_MEMBERS = 32
TRACESTATE_KEEP = 512
TRACESTATE_LONG_ENTRY = 128
MAX_BAGGAGE_MEMBERS = 64
MAX_BAGGAGE_BYTES = 8192

_HEX = "0123456789abcdef"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_KEY_RE = re.compile(r"^(?:[a-z0-9][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})$")
_VALUE_RE = re.compile(r"^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$")
#: baggage-octet characters sent as they are (everything else percent-encoded, ``%`` included).
_BAGGAGE_SAFE = "!#$&'()*+-./:<>?@[]^_`{|}~"
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class SpanContext(NamedTuple):
    """What crosses a process boundary: ids, flags, tracestate and baggage."""

    trace_id: str
    span_id: str
    flags: int = 1
    #: ``(key, value)`` list-members, leftmost first.
    tracestate: tuple[tuple[str, str], ...] = ()
    #: ``(key, value)`` baggage members (properties kept in the value's ``;`` tail).
    baggage: tuple[tuple[str, str], ...] = ()
    #: Whether this context came from the other side of a process boundary.
    remote: bool = False

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def _is_hex(s: str, n: int) -> bool:
    return len(s) == n and all(c in _HEX for c in s)


def parse_traceparent(value: str | None) -> tuple[str, str, int] | None:
    """``(trace_id, parent_id, flags)`` of a ``traceparent`` value, or None if invalid."""
    if not value:
        return None
    value = value.strip()
    parts = value.split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[0], parts[1], parts[2], parts[3]
    if not _is_hex(version, 2) or version == "ff":
        return None
    if version == "00" and (len(parts) != 4 or len(value) != 55):
        return None
    if version != "00" and (len(value) < 55 or (len(value) > 55 and value[55] != "-")):
        return None
    if not (_is_hex(trace_id, 32) and _is_hex(span_id, 16) and _is_hex(flags, 2)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, int(flags, 16)


def format_traceparent(trace_id: str, span_id: str, flags: int) -> str:
    return f"00-{trace_id}-{span_id}-{flags & 0xFF:02x}"


def parse_tracestate(values: str | Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """List-members of one or more ``tracestate`` header values (combined as
    RFC 9110 lists are), invalid members and duplicate keys dropped, at most 32."""
    if not values:
        return ()
    if not isinstance(values, str):
        values = ",".join(values)
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in values.split(","):
        raw = raw.strip(" \t")
        if not raw:
            continue
        key, eq, val = raw.partition("=")
        if not eq or not _KEY_RE.match(key) or not _VALUE_RE.match(val) or key in seen:
            continue
        seen.add(key)
        members.append((key, val))
    return tuple(members[:MAX_TRACESTATE_MEMBERS])


def format_tracestate(members: Iterable[tuple[str, str]]) -> str:
    """The header value: at most 32 members; over 512 characters, whole entries
    dropped (entries over 128 characters first, then from the right)."""
    entries = [f"{k}={v}" for k, v in members][:MAX_TRACESTATE_MEMBERS]

    def size(es: list[str]) -> int:
        return sum(len(e) for e in es) + max(0, len(es) - 1)

    if size(entries) > TRACESTATE_KEEP:
        while size(entries) > TRACESTATE_KEEP and any(len(e) > TRACESTATE_LONG_ENTRY for e in entries):
            for i in range(len(entries) - 1, -1, -1):
                if len(entries[i]) > TRACESTATE_LONG_ENTRY:
                    del entries[i]
                    break
        while size(entries) > TRACESTATE_KEEP:
            entries.pop()
    return ",".join(entries)


def parse_baggage(values: str | Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """Members of ``baggage`` header values, values percent-decoded (invalid
    UTF-8 becomes U+FFFD); malformed members are skipped; all members are kept
    up to 64 members and 8,192 bytes, members beyond those limits dropped."""
    if not values:
        return ()
    if not isinstance(values, str):
        values = ",".join(values)
    out: list[tuple[str, str]] = []
    used = 0
    for raw in values.split(","):
        raw = raw.strip(" \t")
        if not raw:
            continue
        head, semi, props = raw.partition(";")
        key, eq, val = head.partition("=")
        key, val = key.strip(" \t"), val.strip(" \t")
        if not eq or not _TOKEN_RE.match(key):
            continue
        value = unquote(val, errors="replace")
        if semi:
            value = value + ";" + props.strip(" \t")
        cost = len(raw.encode("utf-8")) + (1 if out else 0)
        if len(out) >= MAX_BAGGAGE_MEMBERS or used + cost > MAX_BAGGAGE_BYTES:
            break
        used += cost
        out.append((key, value))
    return tuple(out)


def format_baggage(members: Iterable[tuple[str, str]]) -> str:
    """The header value, values percent-encoded (properties after ``;`` kept as they are)."""
    parts = []
    for key, value in members:
        val, semi, props = value.partition(";")
        parts.append(f"{key}={quote(val, safe=_BAGGAGE_SAFE)}" + (";" + props if semi else ""))
    return ",".join(parts)
