"""Shared fixtures: real HTTP agents on 127.0.0.1 that misbehave on cue."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest


@dataclass
class Behaviour:
    delay: float = 0.0
    status: int = 200
    hits: int = 0
    hosts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Statuses answered first, one per request, before ``status`` applies.
    script: list[int] = field(default_factory=list)
    #: Reset the connection (RST, no response) instead of answering.
    reset: bool = False
    #: Extra response headers, e.g. {"Retry-After": "1"}.
    headers: dict[str, str] = field(default_factory=dict)
    #: Every request's headers, lower-cased names.
    seen: list[dict[str, str]] = field(default_factory=list)
    #: Status of GET /healthz (active health checks).
    health: int = 200
    #: Requests whose client went away before the answer was written.
    abandoned: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Agent._Server"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle and
        # the client's delayed ACK would add 40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self) -> None:
        agent = self.server.agent
        b = agent.behaviour
        if self.path == "/healthz":
            self._reply(b.health, b"{}", {})
            return
        with b.lock:
            b.hits += 1
            b.hosts.append(self.headers.get("Host", ""))
            b.seen.append({k.lower(): v for k, v in self.headers.items()})
            status = b.script.pop(0) if b.script else b.status
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        if b.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if b.delay:
            time.sleep(b.delay)
        body = json.dumps(
            {"agent": agent.name, "port": agent.port, "path": self.path, "host": self.headers.get("Host"), "method": self.command, "body": body_in.decode()}
        ).encode()
        try:
            self._reply(status, body, b.headers)
        except OSError:
            with b.lock:
                b.abandoned += 1
            self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read behaviour, not logs."""


class Agent:
    """A real HTTP server in a thread; answers JSON naming itself."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        agent: "Agent"

    def __init__(self, name: str) -> None:
        self.name = name
        self.behaviour = Behaviour()
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.agent = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=f"agent-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def hits(self) -> int:
        return self.behaviour.hits

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def agents() -> Iterator["AgentFactory"]:
    made: list[Agent] = []

    def make(n: int = 1, prefix: str = "agent") -> list[Agent]:
        new = [Agent(f"{prefix}-{len(made) + i + 1}") for i in range(n)]
        made.extend(new)
        return new

    yield make
    for a in made:
        a.stop()


AgentFactory = object


@pytest.fixture
def refused_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A loopback port whose listener's backlog is full: connections to it
    hang (neither accepted nor refused) until the client's connect timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    try:
        yield server.getsockname()[1]
    finally:
        for c in fillers:
            c.close()
        server.close()


def endpoints_of(agents: list[Agent]) -> str:
    return ",".join(a.address for a in agents)


# -- registries: a real etcd, and the Consul HTTP API double ---------------------------

_prefixes = iter(range(1, 1_000_000))


@pytest.fixture(scope="session")
def etcd_server():
    """One real etcd for the session (tests isolate themselves by key prefix)."""
    from meshlib.testing.etcd_server import EtcdServer, etcd_binary

    if etcd_binary() is None:
        pytest.fail("etcd is not installed: run `bash scripts/setup.sh` (Debian package etcd-server)")
    server = EtcdServer(name="meshlib-session")
    yield server
    server.close()


@pytest.fixture
def etcd(etcd_server):
    """The session's etcd and a key prefix of this test's own."""
    if not etcd_server.running:
        etcd_server.start()
    return etcd_server, f"/test-{next(_prefixes)}/services"


@pytest.fixture
def own_etcd():
    """An etcd of this test's own, to stop, restart or kill."""
    from meshlib.testing.etcd_server import EtcdServer

    server = EtcdServer(name="meshlib-own")
    yield server
    server.close()


@pytest.fixture
def consul():
    from meshlib.testing.consul_double import ConsulDouble

    double = ConsulDouble()
    yield double
    double.close()
