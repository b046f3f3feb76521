"""gRPC's interop ``grpc.testing.TestService``, written from gRPC's interop test
descriptions (``doc/interop-test-descriptions.md`` in grpc/grpc), served on
127.0.0.1 by grpcio in this process.

The messages are the subset of gRPC's ``messages.proto`` the cases use (same
names, packages and field numbers), compiled at test time with grpcio-tools
into a temporary directory. The server implements the descriptions' server
features (EmptyCall, UnaryCall, StreamingInputCall, StreamingOutputCall,
FullDuplexCall, Echo Status, Echo Metadata, ``interval_us``) and records, per
RPC, what it observed: the method, the payload sizes it received, the echo
metadata it was sent, and how the RPC ended for it.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import grpc

PROTO = """
syntax = "proto3";

package grpc.testing;

message Empty {}

message BoolValue { bool value = 1; }

enum PayloadType { COMPRESSABLE = 0; }

message Payload {
  PayloadType type = 1;
  bytes body = 2;
}

message EchoStatus {
  int32 code = 1;
  string message = 2;
}

message SimpleRequest {
  PayloadType response_type = 1;
  int32 response_size = 2;
  Payload payload = 3;
  bool fill_username = 4;
  bool fill_oauth_scope = 5;
  BoolValue response_compressed = 6;
  EchoStatus response_status = 7;
  BoolValue expect_compressed = 8;
}

message SimpleResponse {
  Payload payload = 1;
  string username = 2;
  string oauth_scope = 3;
}

message StreamingInputCallRequest {
  Payload payload = 1;
  BoolValue expect_compressed = 2;
}

message StreamingInputCallResponse { int32 aggregated_payload_size = 1; }

message ResponseParameters {
  int32 size = 1;
  int32 interval_us = 2;
  BoolValue compressed = 3;
}

message StreamingOutputCallRequest {
  PayloadType response_type = 1;
  repeated ResponseParameters response_parameters = 2;
  Payload payload = 3;
  EchoStatus response_status = 7;
}

message StreamingOutputCallResponse { Payload payload = 1; }

service TestService {
  rpc EmptyCall(Empty) returns (Empty);
  rpc UnaryCall(SimpleRequest) returns (SimpleResponse);
  rpc StreamingOutputCall(StreamingOutputCallRequest) returns (stream StreamingOutputCallResponse);
  rpc StreamingInputCall(stream StreamingInputCallRequest) returns (StreamingInputCallResponse);
  rpc FullDuplexCall(stream StreamingOutputCallRequest) returns (stream StreamingOutputCallResponse);
  rpc UnimplementedCall(Empty) returns (Empty);
}
"""

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def compile_protos(directory: Path) -> tuple[ModuleType, ModuleType]:
    """``(messages, services)``: the test service compiled by grpcio-tools into ``directory``."""
    from grpc_tools import protoc

    (directory / "meshlib_interop.proto").write_text(PROTO)
    rc = protoc.main(["protoc", f"-I{directory}", f"--python_out={directory}", f"--grpc_python_out={directory}", str(directory / "meshlib_interop.proto")])
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc})")
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("meshlib_interop_pb2"), importlib.import_module("meshlib_interop_pb2_grpc")
    finally:
        sys.path.remove(str(directory))


@dataclass
class Observed:
    """One RPC as the server saw it."""

    method: str
    #: Payload body sizes of the requests received, in order.
    received: list[int] = field(default_factory=list)
    #: The echo metadata the client sent.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: "OK", the status the server closed it with, or "CANCELLED" (the client went away).
    end: str = ""


class InteropServer:
    """The TestService on a free port of 127.0.0.1, recording what it observes."""

    def __init__(self, pb: ModuleType, pb_grpc: ModuleType) -> None:
        self.pb = pb
        self.observed: list[Observed] = []
        self._lock = threading.Lock()
        self._running = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(16, thread_name_prefix="interop"))
        pb_grpc.add_TestServiceServicer_to_server(self._servicer(pb_grpc.TestServiceServicer), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(None)

    def reset(self) -> None:
        self.wait_idle()
        with self._lock:
            self.observed = []

    def wait_idle(self, timeout: float = 5.0) -> list[Observed]:
        """What the server observed, once no RPC is being served."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._running == 0:
                    return list(self.observed)
            if time.monotonic() > deadline:
                raise AssertionError("the interop server is still serving")
            time.sleep(0.005)

    # -- server features -----------------------------------------------------------

    def _servicer(self, base: type) -> Any:
        pb = self.pb
        server = self

        class TestService(base):  # type: ignore[misc, valid-type]
            def EmptyCall(self, request: Any, context: grpc.ServicerContext) -> Any:
                return server._serve("EmptyCall", context, lambda seen: pb.Empty())

            def UnaryCall(self, request: Any, context: grpc.ServicerContext) -> Any:
                def answer(seen: Observed) -> Any:
                    seen.received.append(len(request.payload.body))
                    server._echo_status(request, context)
                    return pb.SimpleResponse(payload=pb.Payload(body=bytes(request.response_size)))

                return server._serve("UnaryCall", context, answer)

            def StreamingInputCall(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
                def answer(seen: Observed) -> Any:
                    for request in request_iterator:
                        seen.received.append(len(request.payload.body))
                    return pb.StreamingInputCallResponse(aggregated_payload_size=sum(seen.received))

                return server._serve("StreamingInputCall", context, answer)

            def StreamingOutputCall(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                return server._serve_stream("StreamingOutputCall", context, lambda seen: server._respond(request, seen, context))

            def FullDuplexCall(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                def answer(seen: Observed) -> Iterator[Any]:
                    for request in request_iterator:
                        yield from server._respond(request, seen, context)

                return server._serve_stream("FullDuplexCall", context, answer)

        return TestService()

    def _respond(self, request: Any, seen: Observed, context: grpc.ServicerContext) -> Iterator[Any]:
        """One StreamingOutputCallResponse per ResponseParameters, ``interval_us`` apart."""
        seen.received.append(len(request.payload.body))
        self._echo_status(request, context)
        for params in request.response_parameters:
            if params.interval_us:
                time.sleep(params.interval_us / 1e6)
            yield self.pb.StreamingOutputCallResponse(payload=self.pb.Payload(body=bytes(params.size)))

    @staticmethod
    def _echo_status(request: Any, context: grpc.ServicerContext) -> None:
        """Echo Status: close the RPC with the status the request carries."""
        if request.HasField("response_status") and request.response_status.code:
            context.abort(grpc.StatusCode(_CODES[request.response_status.code]), request.response_status.message)

    def _start(self, method: str, context: grpc.ServicerContext) -> Observed:
        seen = Observed(method)
        for key, value in context.invocation_metadata():
            if key in (ECHO_INITIAL, ECHO_TRAILING):
                seen.metadata[key] = value
        if ECHO_INITIAL in seen.metadata:  # Echo Metadata
            context.send_initial_metadata(((ECHO_INITIAL, seen.metadata[ECHO_INITIAL]),))
        if ECHO_TRAILING in seen.metadata:
            context.set_trailing_metadata(((ECHO_TRAILING, seen.metadata[ECHO_TRAILING]),))
        with self._lock:
            self.observed.append(seen)
            self._running += 1
        return seen

    @staticmethod
    def _settled(context: grpc.ServicerContext) -> None:
        """A request stream ended: wait a moment for grpcio to say whether the
        client half-closed it (the RPC stays active) or went away (it does not)."""
        deadline = time.monotonic() + 0.05
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.002)

    def _end(self, seen: Observed, context: grpc.ServicerContext, exc: BaseException | None) -> None:
        if exc is None and seen.method in ("StreamingInputCall", "FullDuplexCall"):
            self._settled(context)
        if exc is not None and context.code() is not None and context.code() is not grpc.StatusCode.OK:
            seen.end = context.code().name  # the status the server closed it with
        elif exc is not None or not context.is_active():
            seen.end = "CANCELLED"
        elif (remaining := context.time_remaining()) is not None and remaining <= 0:
            seen.end = "DEADLINE_EXCEEDED"  # its requests ended because the deadline passed
        else:
            seen.end = "OK"
        with self._lock:
            self._running -= 1

    def _serve(self, method: str, context: grpc.ServicerContext, answer: Callable[[Observed], Any]) -> Any:
        seen = self._start(method, context)
        try:
            result = answer(seen)
        except BaseException as exc:
            self._end(seen, context, exc)
            raise
        self._end(seen, context, None)
        return result

    def _serve_stream(self, method: str, context: grpc.ServicerContext, answer: Callable[[Observed], Iterator[Any]]) -> Iterator[Any]:
        seen = self._start(method, context)
        try:
            yield from answer(seen)
        except BaseException as exc:
            self._end(seen, context, exc)
            raise
        self._end(seen, context, None)


#: grpc.StatusCode values by number (the code in EchoStatus).
_CODES = {code.value[0]: code.value for code in grpc.StatusCode}
