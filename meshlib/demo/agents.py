"""The demo's HTTP agents: scripted stdlib servers on free 127.0.0.1 ports.

Each agent answers JSON that names itself. Most are fast; one is ten times
slower; one starts answering 503 at 40% of the run; one goes hard down (its
listening socket is closed, so connections are refused) at 60%.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from .scenario import FAILING, AgentSpec, Scenario, behaviour

__all__ = ["Agent", "Fleet"]


class _AgentServer(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), so stopping leaves none behind.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 128


class Agent:
    """One scripted HTTP agent on a free 127.0.0.1 port, served by a thread.

    Every request is answered on its own connection (HTTP/1.0), so once the
    agent is killed every new attempt is a refused connection, never a
    half-open keep-alive one.
    """

    def __init__(self, spec: AgentSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.origin = 0.0  # clock value at which the traffic started
        self.down_at: float | None = None  # seconds since origin, once killed
        self._rng = random.Random()
        self._server = _AgentServer(("127.0.0.1", 0), _handler_for(self))
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, name=f"meshlib-demo-{spec.name}", daemon=True)
        self._started = False
        self._closed = threading.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def failing(self, now: float | None = None) -> bool:
        if self.spec.role != FAILING or self.spec.at is None:
            return False
        return (self.clock() if now is None else now) - self.origin >= self.spec.at

    def behaviour(self, t: float) -> str:
        """The scripted state at ``t`` seconds: up, slow, failing or down."""
        return behaviour(self.spec, self.down_at, t)

    def respond(self, request: BaseHTTPRequestHandler) -> None:
        if self.failing():
            self._send(request, 503, {"agent": self.name, "error": "overloaded, try another agent"})
            return
        work = self.spec.latency * self._rng.uniform(0.8, 1.2)
        time.sleep(work)
        self._send(request, 200, {"agent": self.name, "result": "done", "work_ms": round(work * 1000, 2)})

    def _send(self, request: BaseHTTPRequestHandler, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _serve(self) -> None:
        server = self._server
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            # Serve what the kernel already accepted, then close the listening
            # socket at once: from here on connections are refused.
            sock = server.socket
            try:
                sock.setblocking(False)
                while True:
                    try:
                        conn, addr = sock.accept()
                    except OSError:
                        break
                    conn.setblocking(True)
                    server.process_request(conn, addr)
            finally:
                server.server_close()  # also joins the handler threads
                self._closed.set()

    def kill(self) -> None:
        """Go hard down: stop listening, so new connections are refused."""
        self.stop()
        if self.down_at is None:
            self.down_at = self.clock() - self.origin

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
            self._thread.join(5.0)
        elif not self._closed.is_set():
            self._server.server_close()
            self._closed.set()


def _handler_for(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        server_version = "meshlib-demo-agent"

        def do_GET(self) -> None:
            agent.respond(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the terminal for the table

    return Handler


class Fleet:
    """The agents of a scenario, started together and stopped together."""

    def __init__(self, scenario: Scenario) -> None:
        self.agents: list[Agent] = []
        try:
            for spec in scenario.agents:
                self.agents.append(Agent(spec))
        except BaseException:
            self.stop()
            raise
        self.by_address = {a.address: a for a in self.agents}

    def start(self, origin: float) -> None:
        for agent in self.agents:
            agent.origin = origin
            agent.start()

    def __getitem__(self, name: str) -> Agent:
        return next(a for a in self.agents if a.name == name)

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()

