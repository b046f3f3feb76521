"""The same mesh service through requests, urllib3 and httpx, with one dead endpoint.

The service ``catalog`` has two live endpoints and one whose port is closed.
Connection attempts to the closed port are refused; meshlib retries those
calls on another endpoint (CONNECT_RETRIES, default 2), so every call succeeds.
A 503 answer, by contrast, is returned to the caller as is.

    python examples/http_clients.py
"""

from __future__ import annotations

import http.server
import json
import socket
import threading

import httpx

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
        status = 503 if self.path.startswith("/unavailable") else 200
        body = json.dumps({"backend": self.server.name, "host": self.headers["Host"]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> None:
    backends = [Backend("catalog-1"), Backend("catalog-2")]
    dead = f"127.0.0.1:{closed_port()}"
    config = {
        "lb_policy": "round_robin",
        "connect_timeout": "1s",
        "services": {"catalog": {"endpoints": [backends[0].address, dead, backends[1].address]}},
    }
    try:
        with meshlib.Mesh(config=config) as mesh:
            with mesh.requests_session() as session:
                for _ in range(3):
                    r = session.get("http://catalog/books")
                    print(f"requests: {r.status_code} from {r.json()['backend']}, url={r.url}, Host={r.json()['host']}")
                    assert r.status_code == 200

            pool = mesh.urllib3_pool()
            for _ in range(3):
                r = pool.request("GET", "http://catalog:8080/books")
                print(f"urllib3:  {r.status} from {r.json()['backend']}, Host={r.json()['host']}")
                assert r.status == 200
            pool.clear()

            with mesh.httpx_client() as client:
                for _ in range(3):
                    r = client.get("http://catalog/books")
                    print(f"httpx:    {r.status_code} from {r.json()['backend']}, url={r.url}, Host={r.json()['host']}")
                    assert r.status_code == 200

                # A 5xx answer is a response, not a connect failure: no retry.
                r = client.get("http://catalog/unavailable")
                print(f"httpx:    {r.status_code} from {r.json()['backend']} (returned to the caller, not retried)")
                assert r.status_code == 503

            stats = mesh.stats()["services"]["catalog"]
            print(f"connect retries made: {stats['connect_retries']}")
            for ep in stats["endpoints"]:
                print(
                    f"  {ep['address']}: requests={ep['requests']} successes={ep['successes']} "
                    f"failures={ep['failures']} connect_failures={ep['connect_failures']}"
                )
            assert stats["connect_retries"] >= 1
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()
