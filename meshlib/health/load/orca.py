"""ORCA (xds.data.orca.v3): decoding per-call reports and the out-of-band stream.

Protobufs stay in this module (``xds-protos`` provides the messages; grpcio
the transport). The out-of-band stream is ``xds.service.orca.v3.OpenRcaService/
StreamCoreMetrics``: the client asks once with a ``report_interval`` and the
server streams an ``OrcaLoadReport`` per interval (gRFC A51). One daemon thread
per endpoint holds the stream; a server that does not offer the service
(``UNIMPLEMENTED``) is left alone, any other end of the stream is retried
after a jittered back-off.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, Callable

from ...endpoint import Endpoint

__all__ = ["decode_report", "encode_report", "OobStreams", "STREAM_METHOD", "ORCA_TRAILER"]

log = logging.getLogger("meshlib")

STREAM_METHOD = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"
#: The trailing-metadata key of per-call ORCA reports.
ORCA_TRAILER = "endpoint-load-metrics-bin"


def _pb() -> Any:
    from xds.data.orca.v3 import orca_load_report_pb2

    return orca_load_report_pb2


def decode_report(data: bytes) -> Any:
    """Parse a serialized ``OrcaLoadReport`` (raises on a malformed one)."""
    return _pb().OrcaLoadReport.FromString(data)


def encode_report(**fields: Any) -> bytes:
    """Serialize an ``OrcaLoadReport`` (servers in tests and benchmarks)."""
    named = fields.pop("named_metrics", {})
    msg = _pb().OrcaLoadReport(**fields)
    for k, v in named.items():
        msg.named_metrics[k] = v
    return bytes(msg.SerializeToString())


def _request(interval: float) -> bytes:
    from xds.service.orca.v3 import orca_pb2

    req = orca_pb2.OrcaLoadReportRequest()
    req.report_interval.FromNanoseconds(int(interval * 1e9))
    return bytes(req.SerializeToString())


class OobStreams:
    """The out-of-band ORCA streams of one service's endpoints; each report goes
    to ``deliver(endpoint, report_message)``."""

    def __init__(self, service: str, interval: float, deliver: Callable[[Endpoint, Any], None]) -> None:
        self.service = service
        self.interval = interval
        self._deliver = deliver
        self._lock = threading.Lock()
        self._streams: dict[tuple[str, int], "_Stream"] = {}
        self._closed = False

    def set_endpoints(self, endpoints: Any) -> None:
        with self._lock:
            if self._closed:
                return
            wanted = {ep.key: ep for ep in endpoints}
            for key in list(self._streams):
                if key not in wanted:
                    self._streams.pop(key).stop()
            for key, ep in wanted.items():
                if key not in self._streams:
                    stream = _Stream(self, ep)
                    self._streams[key] = stream
                    stream.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.stop()


class _Stream:
    def __init__(self, owner: OobStreams, endpoint: Endpoint) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self._stop = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._loop, name=f"meshlib-orca-{owner.service}-{endpoint.address}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _loop(self) -> None:
        import grpc

        pb = _pb()
        failures = 0
        while not self._stop.is_set():
            channel = grpc.insecure_channel(self.endpoint.address)
            try:
                stream = channel.unary_stream(STREAM_METHOD, request_serializer=None, response_deserializer=pb.OrcaLoadReport.FromString)
                self._call = stream(_request(self.owner.interval))
                if self._stop.is_set():
                    self._call.cancel()
                for report in self._call:
                    failures = 0
                    try:
                        self.owner._deliver(self.endpoint, report)
                    except Exception:
                        log.exception("meshlib: %s ORCA report of %s could not be used", self.owner.service, self.endpoint.address)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("meshlib: %s endpoint %s offers no ORCA stream", self.owner.service, self.endpoint.address)
                    return
                if code != grpc.StatusCode.CANCELLED:
                    log.debug("meshlib: %s ORCA stream of %s ended: %s", self.owner.service, self.endpoint.address, code)
            except Exception:
                log.exception("meshlib: %s ORCA stream of %s failed", self.owner.service, self.endpoint.address)
            finally:
                self._call = None
                channel.close()
            failures += 1
            self._stop.wait(random.uniform(0, min(30.0, 0.1 * 2 ** min(failures, 10))))
