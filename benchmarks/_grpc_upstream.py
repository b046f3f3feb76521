"""The gRPC upstream the gRPC benchmark calls: ``python -m benchmarks._grpc_upstream PORT``.

A grpcio server on 127.0.0.1:PORT, in its own process (so it does not share
the benchmark's interpreter lock), serving the generic service
``bench.Upstream`` with raw bytes:

* ``Echo`` (unary) answers ``ok``;
* ``Stream`` (unary-stream) answers the request's count of 16-byte messages.
"""

from __future__ import annotations

import sys
from concurrent import futures
from typing import Iterator

import grpc

ECHO = "/bench.Upstream/Echo"
STREAM = "/bench.Upstream/Stream"
MESSAGE = b"0123456789abcdef"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for _ in range(int(request)):
        yield MESSAGE


def main() -> None:
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(4))
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(_echo), "Stream": grpc.unary_stream_rpc_method_handler(_stream)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Upstream", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
