"""Real gRPC servers on 127.0.0.1 for the gRPC tests, scriptable on cue.

``GrpcAgent`` serves, in this process, the generic service ``meshtest.Agent``
(raw bytes, no protobuf needed) plus the standard ``grpc.health.v1`` service:

* ``Echo`` (unary): answers ``<name>`` unless told to fail; records what it saw.
* ``Count`` (unary-stream): the request is a count n; answers ``<name>:0`` ..
  ``<name>:n-1``, ``gap`` seconds apart.
* ``Join`` (stream-unary): answers ``<name>:`` + the requests joined by ``,``.
* ``Chat`` (stream-stream): answers ``<name>:<request>`` to each request.

Run as a script (``python tests/grpc_agents.py NAME``) it serves the same in a
child process and prints its port, for tests that kill a server outright.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "meshtest.Agent"
ECHO, COUNT, JOIN, CHAT = (f"/{SERVICE}/{m}" for m in ("Echo", "Count", "Join", "Chat"))


@dataclass
class Seen:
    """One call as the server saw it."""

    method: str
    metadata: dict[str, str]
    time_remaining: float | None
    authority: str


@dataclass
class Behaviour:
    #: Answer this status (with ``details``) instead of succeeding, this many more times (-1: always).
    status: grpc.StatusCode | None = None
    times: int = -1
    details: str = "told to fail"
    pushback_ms: str | None = None
    delay: float = 0.0
    #: Delay only requests whose body is ``slow``.
    slow_only: bool = False
    gap: float = 0.0
    #: Called while serving Echo (e.g. to call another service): its bytes are the answer.
    handler: Callable[[bytes, grpc.ServicerContext], bytes] | None = None
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class GrpcAgent:
    def __init__(self, name: str, *, credentials: grpc.ServerCredentials | None = None, workers: int = 8) -> None:
        self.name = name
        self.behaviour = Behaviour()
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(workers, thread_name_prefix=f"agent-{name}"))
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "Count": grpc.unary_stream_rpc_method_handler(self._count),
            "Join": grpc.stream_unary_rpc_method_handler(self._join),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = "127.0.0.1:0"
        self.port = self.server.add_secure_port(address, credentials) if credentials else self.server.add_insecure_port(address)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def hits(self) -> int:
        return len(self.behaviour.seen)

    def fail(self, status: grpc.StatusCode | None, times: int = -1, *, pushback_ms: str | None = None, details: str = "told to fail") -> None:
        b = self.behaviour
        b.status, b.times, b.pushback_ms, b.details = status, times, pushback_ms, details

    def _record(self, method: str, context: grpc.ServicerContext) -> None:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        # grpcio keeps :authority out of invocation_metadata(); its call details have it.
        host = getattr(getattr(getattr(context, "_rpc_event", None), "call_details", None), "host", b"")
        authority = host.decode() if isinstance(host, bytes) else str(host or "")
        with self.behaviour.lock:
            self.behaviour.seen.append(Seen(method, md, context.time_remaining(), authority))

    def _maybe_fail(self, context: grpc.ServicerContext) -> None:
        b = self.behaviour
        with b.lock:
            status = b.status
            if status is None or b.times == 0:
                return
            if b.times > 0:
                b.times -= 1
        if b.pushback_ms is not None:
            context.set_trailing_metadata((("grpc-retry-pushback-ms", b.pushback_ms),))
        context.abort(status, b.details)

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("Echo", context)
        b = self.behaviour
        if b.delay and (request == b"slow" or not b.slow_only):
            time.sleep(b.delay)
        self._maybe_fail(context)
        handler = self.behaviour.handler
        if handler is not None:
            return handler(request, context)
        return self.name.encode()

    def _count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record("Count", context)
        self._maybe_fail(context)
        for i in range(int(request or b"3")):
            if i and self.behaviour.gap:
                time.sleep(self.behaviour.gap)
            yield f"{self.name}:{i}".encode()

    def _join(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._record("Join", context)
        parts = [r.decode() for r in requests]
        self._maybe_fail(context)
        return f"{self.name}:{','.join(parts)}".encode()

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record("Chat", context)
        self._maybe_fail(context)
        for r in requests:
            yield f"{self.name}:{r.decode()}".encode()

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait(5)


@pytest.fixture
def grpc_agents() -> Iterator[Callable[..., list[GrpcAgent]]]:
    """``make(n, **kw)``: n new agents (``agent-1``, ...), stopped after the test.
    Test modules use it by importing it."""
    made: list[GrpcAgent] = []

    def make(n: int = 1, **kw: object) -> list[GrpcAgent]:
        new = [GrpcAgent(f"agent-{len(made) + i + 1}", **kw) for i in range(n)]  # type: ignore[arg-type]
        made.extend(new)
        return new

    yield make
    for a in made:
        a.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class AgentProcess:
    """The same agent in a child process, to be killed with SIGKILL mid-call.
    Its ``delay`` applies to requests whose body is ``slow`` only."""

    def __init__(self, name: str, gap: float = 0.0, delay: float = 0.0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, name, str(gap), str(delay)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"agent process {name} did not start: {line!r}")
        self.port = int(line)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def _serve_forever(name: str, gap: float, delay: float) -> None:
    agent = GrpcAgent(name)
    agent.behaviour.gap = gap
    agent.behaviour.delay = delay
    agent.behaviour.slow_only = True
    print(agent.port, flush=True)
    agent.server.wait_for_termination()


if __name__ == "__main__":
    _serve_forever(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
