"""Locality-weighted balancing: traffic per zone follows LOCALITY_WEIGHTS, scaled by zone health.

Zone ``a`` has weight 3, zone ``b`` weight 1, zone ``c`` is not listed (it gets
nothing). A zone's effective weight is

    locality_weight x min(100%, 1.4 x healthy / total in the zone)

so with one of zone a's two hosts unhealthy, a's weight drops to 3 x 0.7 = 2.1
and the split becomes 2.1 : 1 (68% / 32%).

    python examples/locality_weights.py
"""

from __future__ import annotations

import collections
import http.server
import json
import socket
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
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        body = json.dumps({"backend": self.server.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def split(backends: list[Backend], unhealthy: set[str]) -> dict[str, float]:
    endpoints = [
        {"address": b.address, "zone": b.name.split("-")[0], "healthy": b.name not in unhealthy}
        for b in backends
    ]
    config = {
        "lb_policy": "round_robin",
        "locality_weights": "a=3,b=1",
        "services": {"feed": {"endpoints": endpoints}},
    }
    with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
        zones = collections.Counter(session.get("http://feed/").json()["backend"].split("-")[0] for _ in range(400))
    return {z: zones[z] / 4 for z in ("a", "b", "c")}


def main() -> None:
    backends = [Backend(n) for n in ("a-1", "a-2", "b-1", "b-2", "c-1")]
    try:
        for label, unhealthy, expect_a in [("all healthy", set(), 75.0), ("a-2 unhealthy", {"a-2"}, 2.1 / 3.1 * 100)]:
            pct = split(backends, unhealthy)
            print(f"{label:14} zone a {pct['a']:5.1f}%  zone b {pct['b']:5.1f}%  zone c {pct['c']:4.1f}%   (planned a {expect_a:.1f}%)")
            assert pct["c"] == 0
            assert abs(pct["a"] - expect_a) < 10, pct
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()
