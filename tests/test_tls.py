"""https:// to a mesh service verifies the service name, not the endpoint's IP."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from meshlib import Mesh

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=inventory", "-addext", "subjectAltName=DNS:inventory"],
        check=True, capture_output=True,
    )
    return crt, key


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        sni = getattr(self.connection, "meshlib_sni", None)
        body = f"{self.headers['Host']} {sni}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def tls_server(cert):
    crt, key = cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)

    def remember_sni(sock: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        sock.meshlib_sni = name  # type: ignore[attr-defined]

    ctx.sni_callback = remember_sni
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_requests_and_urllib3_verify_the_service_name(cert, tls_server):
    crt, _ = cert
    with Mesh(config={"services": {"inventory": {"endpoints": f"127.0.0.1:{tls_server}"}}}) as mesh:
        r = mesh.requests_session().get("https://inventory/", verify=str(crt))
        assert r.text == "inventory inventory"  # Host header and SNI are the service name
        pool = mesh.urllib3_pool(cert_reqs="CERT_REQUIRED", ca_certs=str(crt))
        assert pool.request("GET", "https://inventory/").data == b"inventory inventory"
        # Without meshlib, the same endpoint fails verification: the cert is not for 127.0.0.1.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{tls_server}/", verify=str(crt))


def test_httpx_sends_the_service_name_as_sni(cert, tls_server):
    crt, _ = cert
    ctx = ssl.create_default_context(cafile=str(crt))
    with Mesh(config={"services": {"inventory": {"endpoints": f"127.0.0.1:{tls_server}"}}}) as mesh:
        with mesh.httpx_client(verify=ctx) as client:
            assert client.get("https://inventory/").text == "inventory inventory"


def test_httpx_never_reuses_a_connection_verified_for_another_service(cert, tls_server):
    crt, _ = cert
    ctx = ssl.create_default_context(cafile=str(crt))
    services = {"inventory": {"endpoints": f"127.0.0.1:{tls_server}"}, "other": {"endpoints": f"127.0.0.1:{tls_server}"}}
    import httpx

    with Mesh(config={"services": services}) as mesh:
        with mesh.httpx_client(verify=ctx) as client:
            assert client.get("https://inventory/").status_code == 200
            with pytest.raises(httpx.ConnectError):  # the cert is for "inventory" only
                client.get("https://other/")
            stats = mesh.stats()["services"]["other"]
            assert stats["retries"] == 0  # a TLS failure is not retried elsewhere
