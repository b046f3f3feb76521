"""CONNECT_TIMEOUT bounds opening a connection and nothing else, as Envoy's
connect_timeout: without a timeout of the caller's, a request body that takes
longer than it to go out is sent whole, on a new connection and on a
kept-alive one, as by the raw client without a timeout."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import requests
import urllib3

from meshlib import Mesh

BODY = b"x" * (16 << 20)  # far more than the sockets buffer: the send waits for the server


class StallingServer:
    """HTTP/1.1 on 127.0.0.1 with a small receive buffer that waits ``stall``
    seconds after each request's head before reading its body, then answers
    200 with the body's length; connections are kept alive and counted."""

    def __init__(self, stall: float) -> None:
        self.stall = stall
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while True:
                length = 0
                line = f.readline()
                if not line:
                    return
                while line not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    line = f.readline()
                time.sleep(self.stall)
                while length:
                    length -= len(f.read(min(length, 1 << 16)))
                answer = str(len(BODY)).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stalling() -> Iterator[StallingServer]:
    server = StallingServer(stall=0.6)
    yield server
    server.close()


def _put_requests(session: Any, url: str) -> tuple[int, bytes]:
    r = session.put(url, data=BODY)
    return r.status_code, r.content


def _put_urllib3(pool: Any, url: str) -> tuple[int, bytes]:
    r = pool.request("PUT", url, body=BODY)
    return r.status, r.data


CLIENTS: dict[str, tuple[Callable[[Mesh], Any], Callable[[], Any], Callable[[Any, str], tuple[int, bytes]]]] = {
    "requests": (lambda mesh: mesh.requests_session(), requests.Session, _put_requests),
    "urllib3": (lambda mesh: mesh.urllib3_pool(), urllib3.PoolManager, _put_urllib3),
}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_slow_upload_outlasting_the_connect_timeout_is_sent_as_by_the_raw_client(stalling, client):
    mesh_client, raw_client, put = CLIENTS[client]
    raw = raw_client()
    # The raw client without a timeout: both uploads go through, on one connection.
    assert [put(raw, f"http://127.0.0.1:{stalling.port}/") for _ in range(2)] == [(200, str(len(BODY)).encode())] * 2
    assert stalling.connections == 1
    config = {"services": {"inventory": {"endpoints": f"127.0.0.1:{stalling.port}", "connect_timeout": "200ms", "num_retries": 0}}}
    with Mesh(config=config) as mesh:
        c = mesh_client(mesh)
        started = time.monotonic()
        # The first opens a connection, the second is sent on it (kept alive):
        # each takes the server's 0.6 s stall, three times the connect timeout.
        assert [put(c, "http://inventory/") for _ in range(2)] == [(200, str(len(BODY)).encode())] * 2
        assert time.monotonic() - started >= 1.2
        assert stalling.connections == 2


@pytest.mark.parametrize("client", CLIENTS)
def test_the_connect_timeout_still_bounds_opening_a_connection(client, hanging_port):
    mesh_client, _, put = CLIENTS[client]
    config = {"services": {"inventory": {"endpoints": f"127.0.0.1:{hanging_port}", "connect_timeout": "200ms", "num_retries": 0}}}
    with Mesh(config=config) as mesh:
        started = time.monotonic()
        with pytest.raises((requests.exceptions.ConnectionError, urllib3.exceptions.HTTPError)):
            put(mesh_client(mesh), "http://inventory/")
        assert time.monotonic() - started < 2.0
