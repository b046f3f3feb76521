"""A recording HTTP/1.1 server for the HTTP adapter tests (127.0.0.1 only).

It keeps, for every request it received, the method, target, header lines
exactly as sent (repeats and case kept) and a SHA-256 of the body (chunked
bodies decoded), and counts the TCP connections it accepted. Statuses can be
scripted per request; a request can be answered by closing the connection
after its body was read (nothing sent back), and responses can carry a body
of a given size.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_sha256: str
    body_length: int
    connection: int  # which accepted connection (1, 2, ...) carried it

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Script:
    #: Statuses answered first, one per request, before ``status`` applies.
    statuses: list[int] = field(default_factory=list)
    status: int = 200
    #: Size of every response body (bytes of b"r").
    body_size: int = 2
    #: Close the connection after reading the request, answering nothing.
    hang_up: bool = False
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Send only this many bytes of the body, then reset the connection.
    truncate: int | None = None
    #: Send the body in chunked transfer encoding (100-byte chunks).
    chunked: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Recorder._Server"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rec = self.server.recorder
        with rec.lock:
            rec.connections += 1
            self.number = rec.connections

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self) -> None:
        rec = self.server.recorder
        body = self._read_body()
        with rec.lock:
            rec.seen.append(Seen(self.command, self.path, list(self.headers.items()), sha(body), len(body), self.number))
            script = rec.script
            status = script.statuses.pop(0) if script.statuses else script.status
        if script.hang_up:
            self.close_connection = True
            return
        if script.delay:
            time.sleep(script.delay)
        payload = b"r" * script.body_size
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if script.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(payload), 100):
                part = payload[i : i + 100]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if script.truncate is not None:
            self.wfile.write(payload[: script.truncate])
            self.wfile.flush()
            time.sleep(0.05)  # the client has the headers and the first bytes
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class Recorder:
    """A real HTTP server in a thread that records what reaches it."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        recorder: "Recorder"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.connections = 0
        self.script = Script()
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.recorder = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hashes(self) -> list[str]:
        with self.lock:
            return [s.body_sha256 for s in self.seen]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
