"""A SPIFFE Workload API double on a Unix socket, written from the standard
(SPIFFE Workload Endpoint and Workload API), not from meshlib's code.

- ``SpiffeWorkloadAPI/FetchX509SVID``: a server stream; the first response
  carries the current SVIDs and bundle, and a new response is sent whenever
  they change (``rotate``); the stream stays open.
- Every call must carry the metadata ``workload.spiffe.io: true``; without it
  the call fails with ``INVALID_ARGUMENT`` (Workload Endpoint standard, 4.1).
- No identity for the caller: ``PERMISSION_DENIED``.

The messages come from tests/spiffe/workload.proto, compiled by grpcio-tools
at test time into a private descriptor pool (py-spiffe registers the same
message names in the default pool of the same process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO = Path(__file__).with_name("workload.proto")
_messages: dict[str, Any] = {}


def messages() -> dict[str, Any]:
    """Message classes of workload.proto (compiled once per process)."""
    if not _messages:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "workload.pb")
            subprocess.run(
                [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name],
                check=True, capture_output=True,
            )  # fmt: skip
            fds = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
        pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            pool.Add(fd)
        for name in ("X509SVIDRequest", "X509SVIDResponse", "X509SVID", "X509BundlesRequest", "X509BundlesResponse"):
            _messages[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return _messages


class WorkloadAPIDouble:
    """``WorkloadAPIDouble(socket_path, svid, trust_domain)``; ``rotate(svid)``
    pushes a new X.509-SVID to every open stream."""

    def __init__(self, path: str, svid: Any = None, *, federated: dict[str, bytes] | None = None) -> None:
        self.path = path
        self.address = "unix://" + path
        self._m = messages()
        self._cond = threading.Condition()
        self._svid = svid
        self._version = 0
        self._federated = dict(federated or {})
        self.calls: list[dict[str, str]] = []
        self.rejected = 0
        self.open_streams = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "FetchX509SVID": grpc.unary_stream_rpc_method_handler(
                self._fetch_x509_svid, request_deserializer=self._m["X509SVIDRequest"].FromString,
                response_serializer=lambda m: m.SerializeToString()),
            "FetchX509Bundles": grpc.unary_stream_rpc_method_handler(
                self._fetch_x509_bundles, request_deserializer=self._m["X509BundlesRequest"].FromString,
                response_serializer=lambda m: m.SerializeToString()),
        }  # fmt: skip
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("SpiffeWorkloadAPI", handlers)])
        self._server.add_insecure_port(self.address)
        self._stopped = False

    def start(self) -> "WorkloadAPIDouble":
        self._server.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._server.stop(0).wait(5)

    def rotate(self, svid: Any) -> None:
        with self._cond:
            self._svid = svid
            self._version += 1
            self._cond.notify_all()

    def _check(self, context: Any) -> None:
        md = dict(context.invocation_metadata())
        self.calls.append(md)
        if md.get("workload.spiffe.io") != "true":
            self.rejected += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")

    def _response(self, svid: Any) -> Any:
        m = self._m
        return m["X509SVIDResponse"](
            svids=[m["X509SVID"](spiffe_id=svid.spiffe_id, x509_svid=_chain_der(svid), x509_svid_key=svid.key_der, bundle=_bundle_der(svid))],
            federated_bundles=self._federated,
        )

    def _fetch_x509_svid(self, request: Any, context: Any) -> Any:
        self._check(context)
        with self._cond:
            svid, seen = self._svid, self._version
        if svid is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        self.open_streams += 1
        try:
            yield self._response(svid)
            while context.is_active():
                with self._cond:
                    self._cond.wait_for(lambda: self._version != seen or self._stopped, timeout=0.2)
                    if self._stopped:
                        return
                    if self._version == seen:
                        continue
                    svid, seen = self._svid, self._version
                yield self._response(svid)
        finally:
            self.open_streams -= 1

    def _fetch_x509_bundles(self, request: Any, context: Any) -> Any:
        self._check(context)
        with self._cond:
            svid = self._svid
        td = "spiffe://" + svid.spiffe_id[len("spiffe://") :].partition("/")[0]
        yield self._m["X509BundlesResponse"](bundles={td: _bundle_der(svid), **self._federated})


def _chain_der(svid: Any) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(svid.chain_pem))


def _bundle_der(svid: Any) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(svid.bundle_pem))
