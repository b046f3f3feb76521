"""Server load reports: parsing (``parse``), ORCA (``orca``), ``/metrics``
polling (``poll``) and the per-service observer that puts them on hosts (``feed``).

Adapters hand a response's raw report to the core with :func:`with_load_report`
where they judge the response; nothing is parsed unless the service reads
load reports (``load_reports``).
"""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Coroutine
from typing import Any

from ...outcome import AttemptResult
from .feed import SOURCES, LoadReports, store
from .parse import parse_header, parse_prometheus

__all__ = ["LOAD_HEADER", "LOAD_FORMAT_HEADER", "ORCA_TRAILER", "with_load_report", "orca_trailer", "LoadReports", "SOURCES", "store", "parse_header", "parse_prometheus"]

#: The response header of per-response reports, and the request header that asks for it (vLLM, Envoy).
LOAD_HEADER = "endpoint-load-metrics"
LOAD_FORMAT_HEADER = "endpoint-load-metrics-format"
#: gRPC per-call ORCA reports (trailing metadata, a serialized OrcaLoadReport).
ORCA_TRAILER = "endpoint-load-metrics-bin"


def with_load_report(result: AttemptResult, raw: Any) -> AttemptResult:
    """``result`` carrying the response's raw load report (the value of the
    ``endpoint-load-metrics`` header or of the ``endpoint-load-metrics-bin``
    trailer; ``None``: the response had none). The one hook adapters call."""
    if raw is None:
        return result
    if not isinstance(raw, (str, bytes)):
        try:
            raw = bytes(raw) if isinstance(raw, (bytearray, memoryview)) else str(raw)
        except Exception:
            return result
    return replace(result, load=raw)


def orca_trailer(rpc: Any) -> bytes | None:
    """The ``endpoint-load-metrics-bin`` value in a finished gRPC call's
    trailing metadata (``rpc``: a call, an ``RpcError``, or anything with
    ``trailing_metadata()``); None if it has none."""
    trailing = getattr(rpc, "trailing_metadata", None)
    if trailing is None:  # a response message, not a call: no report
        return None
    try:
        metadata = trailing()
        if isinstance(metadata, Coroutine):  # a grpc.aio call: its verdict reads the trailer, awaited
            metadata.close()
            return None
        if not metadata:
            return None
        for item in metadata:
            if item[0] == ORCA_TRAILER:
                return item[1]  # type: ignore[no-any-return]
    except Exception:  # not a finished call, or odd metadata: no report
        return None
    return None
