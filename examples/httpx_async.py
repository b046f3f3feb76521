"""httpx.AsyncClient through the mesh: concurrent calls balanced by least_request.

Three backends, one of them slow (80 ms per answer). Six concurrent workers
make ten calls each; least_request compares the number of calls in flight,
so the slow backend, which holds its calls longer, is picked less often.

    python examples/httpx_async.py
"""

from __future__ import annotations

import asyncio
import collections
import http.server
import json
import threading
import time

import meshlib


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


async def run(mesh: meshlib.Mesh) -> collections.Counter:
    async with mesh.httpx_async_client(timeout=5.0) as client:
        first = await client.get("http://search/q?term=mesh")
        print(f"GET {first.url} -> {first.status_code} from {first.json()['backend']}")

        counts: collections.Counter = collections.Counter()

        async def worker(w: int) -> None:
            for i in range(10):
                r = await client.get(f"http://search/q?term={w}-{i}")
                r.raise_for_status()
                counts[r.json()["backend"]] += 1

        await asyncio.gather(*(worker(w) for w in range(6)))
        return counts


def main() -> None:
    backends = [Backend("search-fast-1"), Backend("search-fast-2"), Backend("search-slow", delay=0.08)]
    config = {"lb_policy": "least_request", "services": {"search": {"endpoints": [b.address for b in backends]}}}
    try:
        with meshlib.Mesh(config=config) as mesh:
            counts = asyncio.run(run(mesh))
            for name in sorted(counts):
                print(f"{name}: {counts[name]} of 60 calls")
            assert sum(counts.values()) == 60
            assert counts["search-slow"] < max(counts["search-fast-1"], counts["search-fast-2"]), counts
            for ep in mesh.stats()["services"]["search"]["endpoints"]:
                print(f"  {ep['address']}: active={ep['active']} requests={ep['requests']} mean={ep['mean_latency_ms']} ms")
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()
