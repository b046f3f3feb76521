"""mTLS between two agents with SPIFFE identities, with http:// URLs unchanged.

A throwaway SPIFFE CA issues X.509-SVIDs into a temporary directory. The
inventory agent serves HTTPS from ``mesh.server_ssl_context()`` (client
certificates required) and lets in only the planner. The planner's Mesh has
``tls_mode: mtls`` for inventory: it calls ``http://inventory/stock`` and the
mesh carries it over mutual TLS, checking the server's SPIFFE ID. Then the
planner's certificate is rotated on disk, and an impostor is refused.
"""

from __future__ import annotations

import json
import tempfile
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import meshlib
from meshlib.testing.spiffe_ca import SpiffeCA

workdir = tempfile.mkdtemp(prefix="meshlib-example-mtls-")
ca = SpiffeCA("example.org")


def identity(name: str) -> dict[str, str]:
    cert, key, bundle = ca.issue(f"spiffe://example.org/{name}", dns=[name]).write(f"{workdir}/{name}")
    return {"tls_cert": cert, "tls_key": key, "tls_ca": bundle}


class Inventory(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        caller = meshlib.peer_identity(self)  # the caller's verified SPIFFE ID
        ok = self.server.allow.allows(caller)  # type: ignore[attr-defined]
        body = json.dumps({"caller": caller}).encode() if ok else b"forbidden"
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(mesh: meshlib.Mesh) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Inventory)
    server.socket = mesh.server_ssl_context().wrap_socket(server.socket, server_side=True)
    server.allow = mesh.allowed_callers()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


inventory_mesh = meshlib.Mesh(config={**identity("inventory"), "allowed_callers": "spiffe://example.org/planner"})
impostor_mesh = meshlib.Mesh(config=identity("impostor"))
inventory, impostor = serve(inventory_mesh), serve(impostor_mesh)

planner = meshlib.Mesh(config={
    **identity("planner"), "tls_watch_interval": "100ms",
    "services": {
        "inventory": {"endpoints": inventory, "tls_mode": "mtls", "tls_spiffe_ids": "spiffe://example.org/inventory"},
        "billing": {"endpoints": impostor, "tls_mode": "mtls", "tls_spiffe_ids": "spiffe://example.org/billing"},
    },
})  # fmt: skip
session = planner.requests_session()
answer = session.get("http://inventory/stock").json()
print(f"GET http://inventory/stock over mTLS: the server saw {answer['caller']}")
before = planner.stats()["tls"]["serial"]

ca.issue("spiffe://example.org/planner", dns=["planner"]).write(f"{workdir}/planner")  # the platform rotates it
while planner.stats()["tls"]["serial"] == before:
    time.sleep(0.05)
print(f"rotated without a restart: serial {before[:8]}... -> {planner.stats()['tls']['serial'][:8]}...")
assert session.get("http://inventory/stock").status_code == 200

try:
    session.get("http://billing/charge")
except Exception as exc:  # requests.exceptions.SSLError
    print("impostor refused:", "spiffe://example.org/impostor" in str(exc))

for mesh in (planner, inventory_mesh, impostor_mesh):
    mesh.close()
shutil.rmtree(workdir)  # the throwaway certificates and keys
