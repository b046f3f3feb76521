"""HTTP agents that fail on cue, for the resilience examples.

Not an example itself and not part of meshlib (like ``_agents.py``, beside
it): ``from _flaky import Flaky``.

``Flaky(name, status=200, delay=0.0, headers=None)`` is an HTTP/1.1 server on
a free 127.0.0.1 port. Every GET and POST waits ``delay`` seconds, then
answers ``status`` with ``headers`` and the JSON body
``{"agent": name, "method": ..., "timeout_ms": ...}``, where ``timeout_ms`` is
the ``x-envoy-expected-rq-timeout-ms`` header the request carried (None
without one). ``status``, ``delay`` and ``headers`` may be changed while it
runs; ``hits`` counts the requests it received. It has ``address``
(``127.0.0.1:PORT``) and ``port``, and is stopped with ``stop()``.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time

__all__ = ["Flaky"]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one reused connection per endpoint
    server: "Flaky"

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, Nagle and the client's delayed ACK add ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self) -> None:
        agent = self.server
        with agent.lock:
            agent.hits += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        timeout = self.headers.get("x-envoy-expected-rq-timeout-ms")
        if agent.delay:
            time.sleep(agent.delay)
        body = json.dumps(
            {"agent": agent.name, "method": self.command, "timeout_ms": int(timeout) if timeout else None}
        ).encode()
        try:
            self.send_response(agent.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in agent.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the caller stopped waiting (a hedge that lost, a deadline)
            self.close_connection = True

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class Flaky(http.server.ThreadingHTTPServer):
    """A tiny HTTP server whose status and delay can be changed while it runs."""

    daemon_threads = True

    def __init__(self, name: str, status: int = 200, delay: float = 0.0, headers: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.status = status
        self.delay = delay
        self.headers = dict(headers or {})
        self.hits = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet about callers that hang up (a discarded retry, a lost hedge)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
