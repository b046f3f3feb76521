"""Parsing servers' load reports; hostile or malformed input yields None, never an error.

Three forms of the ``endpoint-load-metrics`` response header (Envoy's and
vLLM's names; ``xds.data.orca.v3.OrcaLoadReport`` fields):

* ``TEXT cpu_utilization=0.3, named_metrics.kv_cache_usage_perc=0.42, named_metrics.num_requests_waiting=3``
* ``JSON {"cpu_utilization": 0.3, "named_metrics": {"kv_cache_usage_perc": 0.42}}``
* ``BIN <base64 of a serialized OrcaLoadReport>`` (as the gRPC trailer
  ``endpoint-load-metrics-bin`` carries unencoded)

and the Prometheus text exposition of ``/metrics`` (vLLM's gauges by default;
names configurable). Every value must be a finite number; negative numbers and
utilizations above 100 are dropped; sizes are bounded (a header over 8 KiB, a
report of more than 64 metrics, a scrape of more than 1 MiB is cut or ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Mapping

__all__ = ["Fields", "parse_header", "parse_text", "parse_json", "parse_bin", "parse_prometheus", "fields_of_orca", "MAX_HEADER", "MAX_METRICS"]

#: A parsed report: LoadReport field name -> value (``named`` -> dict).
Fields = dict[str, Any]

MAX_HEADER = 8192
MAX_METRICS = 64
MAX_SCRAPE = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:.\-]{0,127}$")

#: OrcaLoadReport field -> LoadReport field.
_ORCA = {
    "cpu_utilization": "cpu",
    "application_utilization": "app",
    "rps_fractional": "rps",
    "rps": "rps",
    "eps": "eps",
}
#: Named metrics that stand for the queue, the running batch and KV-cache use.
WAITING = ("num_requests_waiting", "vllm:num_requests_waiting", "queue_size", "pending_requests")
RUNNING = ("num_requests_running", "vllm:num_requests_running")
KV = ("kv_cache_usage_perc", "vllm:kv_cache_usage_perc", "gpu_cache_usage_perc", "vllm:gpu_cache_usage_perc")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(x) or x < 0 or x > 1e12:
        return None
    return x


def _finish(raw: Mapping[str, float], named: Mapping[str, float]) -> Fields | None:
    out: Fields = {}
    for key, field in _ORCA.items():
        if key in raw and field not in out:
            out[field] = raw[key]
    for field in ("cpu", "app"):
        if field in out and out[field] > 100:  # utilization is a fraction (ORCA allows > 1, not absurd values)
            del out[field]
    for names, field in ((WAITING, "waiting"), (RUNNING, "running"), (KV, "kv")):
        for name in names:
            if name in named:
                out[field] = named[name]
                break
    if "kv" in out:
        kv = out["kv"]
        if kv > 1.0:  # a percent (0..100) where a fraction was meant
            kv = kv / 100.0 if kv <= 100.0 else None
        if kv is None:
            del out["kv"]
        else:
            out["kv"] = kv
    if named:
        out["named"] = dict(named)
    return out or None


def parse_text(body: str) -> Fields | None:
    """``key=value, key=value`` with ``named_metrics.<name>`` for named metrics."""
    raw: dict[str, float] = {}
    named: dict[str, float] = {}
    for n, item in enumerate(body.split(",")):
        if n >= MAX_METRICS:
            break
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not _NAME_RE.match(key):
            continue
        x = _number(value.strip())
        if x is None:
            continue
        if key.startswith("named_metrics."):
            named[key[len("named_metrics.") :]] = x
        elif key.startswith("utilization."):
            named.setdefault(key[len("utilization.") :], x)
        else:
            raw[key] = x
    return _finish(raw, named)


def parse_json(body: str) -> Fields | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    raw: dict[str, float] = {}
    named: dict[str, float] = {}
    for key, value in list(data.items())[:MAX_METRICS]:
        if key in ("named_metrics", "utilization") and isinstance(value, dict):
            for name, v in list(value.items())[:MAX_METRICS]:
                x = _number(v)
                if isinstance(name, str) and _NAME_RE.match(name) and x is not None:
                    named.setdefault(name, x)
        elif isinstance(key, str) and key in _ORCA:
            x = _number(value)
            if x is not None:
                raw[key] = x
    return _finish(raw, named)


def fields_of_orca(report: Any) -> Fields | None:
    """An ``OrcaLoadReport`` message as report fields."""
    raw: dict[str, float] = {}
    for key in ("cpu_utilization", "application_utilization", "rps_fractional", "eps"):
        x = _number(getattr(report, key))
        if x:
            raw[key] = x
    if "rps_fractional" not in raw:
        x = _number(report.rps)
        if x:
            raw["rps"] = x
    named: dict[str, float] = {}
    for source in (report.named_metrics, report.utilization):
        for n, (name, value) in enumerate(source.items()):
            x = _number(value)
            if n < MAX_METRICS and x is not None and _NAME_RE.match(name):
                named.setdefault(name, x)
    return _finish(raw, named)


def parse_bin(data: bytes) -> Fields | None:
    """A serialized ``OrcaLoadReport`` (the gRPC trailer ``endpoint-load-metrics-bin``)."""
    if len(data) > MAX_HEADER:
        return None
    try:
        from .orca import decode_report  # protobufs stay in the orca module

        return fields_of_orca(decode_report(data))
    except Exception:  # a truncated, foreign or hostile message; xds-protos missing
        return None


def parse_header(value: Any) -> Fields | None:
    """The ``endpoint-load-metrics`` header (``TEXT``, ``JSON`` or ``BIN``), or
    the raw bytes of ``endpoint-load-metrics-bin``. None for anything unreadable."""
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return parse_bin(bytes(value))
        if not isinstance(value, str) or len(value) > MAX_HEADER:
            return None
        kind, _, body = value.strip().partition(" ")
        kind = kind.upper()
        if kind == "TEXT":
            return parse_text(body)
        if kind == "JSON":
            return parse_json(body)
        if kind == "BIN":
            return parse_bin(base64.b64decode(body.strip(), validate=True))
        return None
    except (ValueError, binascii.Error, RecursionError):
        return None


def parse_prometheus(text: str, waiting: str, running: str, kv: str) -> Fields | None:
    """The named gauges from a Prometheus text exposition (summed over label
    sets, as one vLLM server exposes one series per model)."""
    wanted = {waiting: "waiting", running: "running", kv: "kv"}
    sums: dict[str, float] = {}
    for line in text[:MAX_SCRAPE].splitlines():
        if not line or line[0] == "#":
            continue
        name_end = len(line)
        for i, ch in enumerate(line):
            if ch in "{ \t":
                name_end = i
                break
        field = wanted.get(line[:name_end])
        if field is None:
            continue
        rest = line[name_end:]
        if rest.startswith("{"):
            close = rest.rfind("}")
            if close < 0:
                continue
            rest = rest[close + 1 :]
        parts = rest.split()
        if not parts:
            continue
        x = _number(parts[0])
        if x is None:
            continue
        sums[field] = max(sums.get(field, 0.0), x) if field == "kv" else sums.get(field, 0.0) + x
    if not sums:
        return None
    named = {"num_requests_waiting": sums["waiting"]} if "waiting" in sums else {}
    if "running" in sums:
        named["num_requests_running"] = sums["running"]
    if "kv" in sums:
        named["kv_cache_usage_perc"] = sums["kv"]
    return _finish({}, named)
