"""Quickstart: one mesh service with two endpoints, called through requests.

Starts two tiny HTTP servers on 127.0.0.1, declares them as the service
``inventory`` through MESHLIB_* environment variables, and calls
``http://inventory/...`` with a ``requests.Session`` from the mesh.

    python examples/quickstart_requests.py
"""

from __future__ import annotations

import http.server
import json
import os
import threading

import meshlib


class Backend(http.server.ThreadingHTTPServer):
    """A tiny HTTP server on a free 127.0.0.1 port that says who it is."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.name = name
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"backend": self.server.name, "host": self.headers["Host"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    backends = [Backend("inventory-1"), Backend("inventory-2")]
    try:
        # In production these come from the deployment; here we set them ourselves.
        os.environ["MESHLIB_SERVICES__INVENTORY__ENDPOINTS"] = ",".join(b.address for b in backends)
        os.environ["MESHLIB_LB_POLICY"] = "round_robin"

        with meshlib.Mesh.from_env() as mesh:
            session = mesh.requests_session()

            seen = set()
            for _ in range(4):
                r = session.get("http://inventory/items?sku=42")
                body = r.json()
                seen.add(body["backend"])
                print(f"GET {r.url} -> {body['backend']} (Host header: {body['host']})")
            assert seen == {"inventory-1", "inventory-2"}, seen

            # Spelling does not matter, and the URL's port is ignored.
            r = session.get("http://INVENTORY:9999/items")
            print(f"GET {r.url} -> {r.json()['backend']}")

            # Not a mesh service: the request passes through to the ordinary client.
            direct = backends[0].address
            r = session.get(f"http://{direct}/direct")
            print(f"GET http://{direct}/direct -> {r.json()['backend']} (pass-through)")

            print(mesh.endpoints("inventory"))
            for ep in mesh.stats()["services"]["inventory"]["endpoints"]:
                print(f"  {ep['address']}: {ep['requests']} requests, {ep['successes']} successes, mean {ep['mean_latency_ms']} ms")
            session.close()
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()
