"""Servers for the mTLS tests, on 127.0.0.1 only: an HTTPS agent that
requires client certificates and answers with the caller's SPIFFE ID, a
recorder that keeps every raw byte it receives (and what TLS decrypted), and
a gRPC echo server with ``require_client_auth``."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
import pytest

import meshlib
from meshlib.security import peer_identity
from meshlib.testing.spiffe_ca import SpiffeCA

INVENTORY = "spiffe://example.org/inventory"
PLANNER = "spiffe://example.org/planner"


@pytest.fixture(scope="module")
def ca() -> SpiffeCA:
    """A throwaway SPIFFE CA for the trust domain example.org (import it into a test module to use it)."""
    return SpiffeCA("example.org")


def files(svid: Any, tmp_path: Any, stem: str) -> dict[str, str]:
    """``svid`` written under ``tmp_path``: the TLS_CERT / TLS_KEY / TLS_CA settings for it."""
    cert, key, bundle = svid.write(tmp_path / stem)
    return {"tls_cert": cert, "tls_key": key, "tls_ca": bundle}


@pytest.fixture
def server_mesh(ca: SpiffeCA, tmp_path: Any) -> Any:
    """A Mesh whose identity is the inventory service's (DNS name ``inventory`` too)."""
    mesh = meshlib.Mesh(config=files(ca.issue(INVENTORY, dns=["inventory"]), tmp_path, "inventory"))
    yield mesh
    mesh.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        srv = self.server
        peer = peer_identity(self)
        der = self.connection.getpeercert(True)
        serial = None
        if der:
            from cryptography import x509

            serial = x509.load_der_x509_certificate(der).serial_number
        with srv.lock:  # type: ignore[attr-defined]
            srv.peers.append(peer)  # type: ignore[attr-defined]
            srv.serials.append(serial)  # type: ignore[attr-defined]
            srv.conns.add(id(self.connection))  # type: ignore[attr-defined]
        allow = srv.allow  # type: ignore[attr-defined]
        if allow is not None and not allow.allows(peer):
            body = b"forbidden\n"
            self.send_response(403)
        else:
            body = json.dumps({"peer": peer, "server": srv.name, "path": self.path, "client_cert": bool(der)}).encode()  # type: ignore[attr-defined]
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        return None


class TlsAgent:
    """A real HTTPS server (http.server) with the given server context."""

    def __init__(self, context: ssl.SSLContext, name: str = "agent", allow: Any = None) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=True)
        self.server.peers = []  # type: ignore[attr-defined]
        self.server.serials = []  # type: ignore[attr-defined]
        self.server.conns = set()  # type: ignore[attr-defined]
        self.server.lock = threading.Lock()  # type: ignore[attr-defined]
        self.server.name = name  # type: ignore[attr-defined]
        self.server.allow = allow  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def peers(self) -> list[str | None]:
        return list(self.server.peers)  # type: ignore[attr-defined]

    @property
    def serials(self) -> list[int | None]:
        return list(self.server.serials)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawRecorder:
    """Accepts TCP connections on 127.0.0.1, records every raw byte received,
    and (with ``context``) plays a TLS server through memory BIOs, recording
    the application bytes TLS decrypted. Without a context it only reads."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.raw = bytearray()
        self.plain = bytearray()
        self.connections = 0
        self.handshake_errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        tls = None
        if self.context is not None:
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.context.wrap_bio(inc, out, server_side=True)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                with self._lock:
                    self.raw += data
                if tls is None:
                    continue
                inc.write(data)
                try:
                    tls.do_handshake()
                    while True:
                        chunk = tls.read(65536)
                        if not chunk:
                            break
                        with self._lock:
                            self.plain += chunk
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    self.handshake_errors.append(type(exc).__name__)
                pending = out.read()
                if pending:
                    conn.sendall(pending)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def grpc_echo_server(credentials: grpc.ServerCredentials, interceptors: tuple[Any, ...] = ()) -> tuple[grpc.Server, int, list[Any]]:
    """A grpcio server on 127.0.0.1 answering ``/mtls.Echo/Who`` with the
    caller's SPIFFE ID; returns (server, port, seen peers)."""
    seen: list[Any] = []

    def who(request: bytes, context: Any) -> bytes:
        peer = peer_identity(context)
        seen.append((peer, _serial(context)))
        return (peer or "-").encode() + b"|" + request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=list(interceptors))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("mtls.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)})])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port, seen


def _serial(context: Any) -> int | None:
    from cryptography import x509

    pems = context.auth_context().get("x509_pem_cert") or []
    return x509.load_pem_x509_certificate(pems[0]).serial_number if pems else None
