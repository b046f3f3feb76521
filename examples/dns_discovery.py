"""dns discovery: a service's endpoints are the addresses its DNS name resolves to.

The service ``inventory`` is resolved from the name ``localhost`` with the
backend's port. The name is re-resolved every 200 ms; an unchanged answer
publishes nothing, so the snapshot version stays at 1 and the balancer (and
its statistics) are not rebuilt.

    python examples/dns_discovery.py
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import meshlib


class Backend(http.server.ThreadingHTTPServer):
    """A tiny HTTP server on a free 127.0.0.1 port that says who it is."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.name = name
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"backend": self.server.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    backend = Backend("inventory-on-localhost")
    config = {
        "discovery": "dns",
        "dns_refresh_interval": "200ms",
        "services": {"inventory": {"dns_name": "localhost", "port": backend.server_port}},
    }
    try:
        with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
            # If localhost also resolves to ::1, that endpoint refuses the
            # connection (the server listens on 127.0.0.1 only) and meshlib
            # retries the call on another endpoint.
            print("resolved:", mesh.endpoints("inventory"))
            r = session.get("http://inventory/stock")
            print(f"GET {r.url} -> {r.json()['backend']}")
            assert r.json()["backend"] == "inventory-on-localhost"

            time.sleep(0.7)  # a few refresh intervals
            status = mesh.stats()["discovery"][0]
            version = mesh.endpoints("inventory").version
            print(f"after refreshes: lookups={status['lookups']} errors={status['errors']} snapshot version={version}")
            assert status["lookups"] >= 2 and version == 1
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
