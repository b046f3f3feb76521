"""Every load-balancing policy against the same three backends.

Backends: ``fast-1`` (weight 2), ``fast-2`` (weight 1) and ``slow`` (weight 1,
20 ms per answer). Four client threads make 15 calls each per policy; the
table shows where the 60 calls went.

- round_robin ignores weights: 20 / 20 / 20 exactly.
- weighted_round_robin follows weights exactly: 30 / 15 / 15.
- random follows weights on average.
- least_request and peak_ewma react to load and latency: slow gets less.
- ring_hash and maglev without a hash key pick at random (see
  ring_hash_affinity.py for keyed calls).

    python examples/load_balancing_policies.py
"""

from __future__ import annotations

import collections
import http.server
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import meshlib

POLICIES = ["round_robin", "weighted_round_robin", "random", "least_request", "peak_ewma", "ring_hash", "maglev"]


class Backend(http.server.ThreadingHTTPServer):
    """A tiny HTTP server on a free 127.0.0.1 port that says who it is."""

    daemon_threads = True

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.name = name
        self.delay = delay
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the mesh reuses connections per endpoint

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        time.sleep(self.server.delay)
        body = json.dumps({"backend": self.server.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def run_policy(policy: str, backends: dict[str, Backend]) -> collections.Counter:
    endpoints = [
        f"{backends['fast-1'].address};weight=2",
        f"{backends['fast-2'].address};weight=1",
        f"{backends['slow'].address};weight=1",
    ]
    config = {"lb_policy": policy, "services": {"work": {"endpoints": endpoints}}}
    with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:

        def client(_: int) -> list[str]:
            return [session.get("http://work/job").json()["backend"] for _ in range(15)]

        with ThreadPoolExecutor(4) as pool:
            return collections.Counter(name for names in pool.map(client, range(4)) for name in names)


def main() -> None:
    backends = {"fast-1": Backend("fast-1"), "fast-2": Backend("fast-2"), "slow": Backend("slow", delay=0.02)}
    try:
        print(f"{'policy':22} {'fast-1 (w2)':>12} {'fast-2 (w1)':>12} {'slow (w1)':>10}")
        for policy in POLICIES:
            c = run_policy(policy, backends)
            print(f"{policy:22} {c['fast-1']:12} {c['fast-2']:12} {c['slow']:10}")
            assert sum(c.values()) == 60
            if policy == "round_robin":
                assert c == {"fast-1": 20, "fast-2": 20, "slow": 20}, c
            if policy == "weighted_round_robin":
                assert c == {"fast-1": 30, "fast-2": 15, "slow": 15}, c
            if policy == "peak_ewma":
                assert c["slow"] < c["fast-1"], c
    finally:
        for b in backends.values():
            b.stop()


if __name__ == "__main__":
    main()
