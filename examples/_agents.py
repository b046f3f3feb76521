"""The tiny stdlib servers ("agents") the examples call through meshlib.

Not an example itself and not part of meshlib: each example imports what it
needs with ``from _agents import ...``, which works because running
``python examples/<name>.py`` (from any directory) puts examples/ first on
``sys.path``.

- ``Backend(name, delay=0.0, keep_alive=False)``: an HTTP server on a free
  127.0.0.1 port. Every GET waits ``delay`` seconds, then answers 200 with the
  JSON ``{"backend": name, "host": <Host header>, "path": <request path>}``;
  paths under ``/unavailable`` answer 503 with the same body. With
  ``keep_alive`` it speaks HTTP/1.1 and keeps connections open, so the mesh
  reuses one connection per endpoint; otherwise HTTP/1.0, one connection per
  request.
- ``Shouter(name)``: a line-based TCP server: reads one line, answers
  ``NAME: LINE`` upper-cased.
- ``closed_port()``: a 127.0.0.1 port where nothing listens.

Every server runs in a daemon thread from the moment it is built, has
``name`` and ``address`` (``127.0.0.1:PORT``), and is stopped with ``stop()``.
"""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time

__all__ = ["Backend", "Shouter", "closed_port"]


class _Agent:
    """Mixed into a socketserver class: bind a free 127.0.0.1 port and serve it in a thread."""

    daemon_threads = True

    def __init__(self, name: str, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)  # type: ignore[call-arg]
        self.name = name
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()  # type: ignore[attr-defined]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.shutdown()  # type: ignore[attr-defined]
        self.server_close()  # type: ignore[attr-defined]


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    server: Backend

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; without TCP_NODELAY, Nagle's
        # algorithm holds the body back until the client's delayed ACK of the
        # headers, and every keep-alive response stalls ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.keep_alive:
            self.protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.server.delay:
            time.sleep(self.server.delay)
        status = 503 if self.path.startswith("/unavailable") else 200
        body = json.dumps({"backend": self.server.name, "host": self.headers["Host"], "path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Backend(_Agent, http.server.ThreadingHTTPServer):
    """A tiny HTTP server on a free 127.0.0.1 port that says who it is."""

    def __init__(self, name: str, delay: float = 0.0, keep_alive: bool = False) -> None:
        self.delay = delay
        self.keep_alive = keep_alive
        super().__init__(name, _BackendHandler)


class _ShoutHandler(socketserver.StreamRequestHandler):
    server: Shouter

    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        self.wfile.write(f"{self.server.name}: {line.upper()}\n".encode())


class Shouter(_Agent, socketserver.ThreadingTCPServer):
    """A line-based TCP server on a free 127.0.0.1 port: replies NAME: LINE upper-cased."""

    def __init__(self, name: str) -> None:
        super().__init__(name, _ShoutHandler)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
