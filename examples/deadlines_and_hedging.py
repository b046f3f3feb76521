"""A deadline that travels across two hops, and hedging beating a slow agent.

1. The caller gives ``frontend`` one second (``meshlib.deadline(1.0)``). The
   frontend is a server that answers by calling ``backend`` through its own
   Mesh inside ``meshlib.incoming_deadline(request.headers)``, keeping 300 ms
   for itself to answer in. Every hop carries what is left in
   ``x-envoy-expected-rq-timeout-ms``. When the backend hangs, the frontend's
   call raises ``DeadlineExceededError`` inside the caller's deadline, and the
   frontend still answers 504 in time.
2. ``search`` has a slow agent (600 ms) and a fast one, and hedges idempotent
   calls: a second attempt goes to the other agent after 50 ms if no answer
   came, and the first answer wins. A sync call abandons the slow attempt
   (its response is closed when it arrives); an async call cancels it. A POST
   is not hedged.

    python examples/deadlines_and_hedging.py
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time

import meshlib

from _flaky import Flaky  # agents that fail on cue: examples/_flaky.py


class Frontend(http.server.ThreadingHTTPServer):
    """The middle hop: answers GET by calling ``backend`` through ``mesh``."""

    daemon_threads = True

    def __init__(self, mesh: meshlib.Mesh) -> None:
        super().__init__(("127.0.0.1", 0), _FrontendHandler)
        self.session = mesh.requests_session()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.session.close()


class _FrontendHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Frontend

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, Nagle and the client's delayed ACK add ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        received = self.headers.get("x-envoy-expected-rq-timeout-ms")
        reply: dict = {"received_ms": int(received) if received else None}
        with meshlib.incoming_deadline(self.headers):  # never outlive the caller
            left = meshlib.remaining()
            with meshlib.deadline(None if left is None else left - 0.3):  # keep 300 ms to answer in
                try:
                    reply["backend"] = self.server.session.get("http://backend/").json()
                    status = 200
                except meshlib.DeadlineExceededError as exc:
                    reply["error"] = str(exc)
                    status = 504
        body = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def deadline_across_two_hops() -> None:
    backend = Flaky("backend-1")
    inner = meshlib.Mesh(config={"services": {"backend": {"endpoints": [backend.address]}}})
    frontend = Frontend(inner)
    try:
        with meshlib.Mesh(config={"services": {"frontend": {"endpoints": [frontend.address]}}}) as mesh:
            with mesh.requests_session() as session:
                with meshlib.deadline(1.0):
                    r = session.get("http://frontend/")
                hop = r.json()
                print(f"caller gave 1000 ms -> frontend received {hop['received_ms']} ms "
                      f"-> backend received {hop['backend']['timeout_ms']} ms")
                assert r.status_code == 200 and 400 < hop["backend"]["timeout_ms"] < hop["received_ms"] <= 1000

                backend.delay = 2.0  # the backend hangs
                started = time.monotonic()
                with meshlib.deadline(1.0):
                    r = session.get("http://frontend/")
                took = time.monotonic() - started
                print(f"backend hangs: frontend answered {r.status_code} after {took:.2f}s, inside the caller's 1.0s")
                print(f"  frontend's own call: {r.json()['error']}")
                print(f"  backend deadline_exceeded: {inner.stats()['services']['backend']['deadline_exceeded']}")
                assert r.status_code == 504 and took < 1.0
    finally:
        frontend.stop()
        inner.close()
        backend.stop()


def hedging() -> None:
    slow, fast = Flaky("search-slow", delay=0.6), Flaky("search-fast")
    config = {
        "lb_policy": "round_robin",
        "services": {
            "search": {
                "endpoints": [slow.address, fast.address],
                "hedge_max_attempts": 2,
                "hedge_delay": "50ms",
            }
        },
    }
    try:
        with meshlib.Mesh(config=config) as mesh:
            with mesh.requests_session() as session:
                for _ in range(4):
                    started = time.monotonic()
                    agent = session.get("http://search/q").json()["agent"]
                    took = time.monotonic() - started
                    print(f"GET  http://search/q -> {agent} in {took * 1000:.0f} ms")
                    assert agent == "search-fast" and took < slow.delay
                hedges = mesh.stats()["services"]["search"]["hedges"]
                print(f"  hedges sent: {hedges}, each to search-fast after 50 ms without an answer from search-slow;")
                print("  the slow attempts were abandoned, and their answers closed when they came")
                assert hedges >= 2

                answered = []
                for _ in range(2):
                    started = time.monotonic()
                    agent = session.post("http://search/q", data=b"{}").json()["agent"]
                    answered.append(agent)
                    print(f"POST http://search/q -> {agent} in {(time.monotonic() - started) * 1000:.0f} ms (not hedged)")
                assert sorted(answered) == ["search-fast", "search-slow"]

            async def async_calls() -> list[str]:
                async with mesh.httpx_async_client() as client:
                    return [(await client.get("http://search/q")).json()["agent"] for _ in range(2)]

            agents = asyncio.run(async_calls())
            print(f"async (httpx): answered by {agents}; slow attempts are cancelled")
            assert agents == ["search-fast", "search-fast"]
    finally:
        slow.stop()
        fast.stop()


def main() -> None:
    deadline_across_two_hops()
    hedging()


if __name__ == "__main__":
    main()
