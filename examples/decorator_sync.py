"""``@meshlib.call`` and ``@mesh.call`` on plain functions, over a non-HTTP protocol.

Two tiny line-based TCP servers ("shout" back what they receive, upper-cased)
form the service ``shouter``. The decorator gives the function the Endpoint
picked for each attempt; what the function does with it is up to you.

The module-level ``@meshlib.call`` uses a default mesh built from the
environment (MESHLIB_* variables) the first time a decorated function runs,
and closed at interpreter exit.

    python examples/decorator_sync.py
"""

from __future__ import annotations

import collections
import os
import socket
import socketserver
import threading

import meshlib


class Shouter(socketserver.ThreadingTCPServer):
    """A line-based TCP server on a free 127.0.0.1 port: replies NAME: LINE upper-cased."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), ShoutHandler)
        self.name = name
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class ShoutHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        self.wfile.write(f"{self.server.name}: {line.upper()}\n".encode())


# Decorating reads no configuration: the default mesh is built on the first call.
@meshlib.call("shouter")
def shout(endpoint: meshlib.Endpoint, text: str) -> str:
    with socket.create_connection((endpoint.host, endpoint.port), timeout=2) as conn:
        conn.sendall(text.encode() + b"\n")
        return conn.makefile().readline().strip()


def main() -> None:
    servers = [Shouter("shouter-1"), Shouter("shouter-2")]
    # Normally set by the deployment; read when shout() first runs.
    os.environ["MESHLIB_SERVICES__SHOUTER__ENDPOINTS"] = ",".join(s.address for s in servers)
    os.environ["MESHLIB_SERVICES__SHOUTER__LB_POLICY"] = "round_robin"
    try:
        replies = [shout(f"hello {i}") for i in range(4)]
        for r in replies:
            print(r)
        by = collections.Counter(r.split(":")[0] for r in replies)
        assert by == {"shouter-1": 2, "shouter-2": 2}, by
        print("default mesh:", meshlib.default_mesh())

        # The same with an explicit Mesh and its own configuration.
        config = {"services": {"shouter": {"endpoints": [servers[0].address], "lb_policy": "random"}}}
        with meshlib.Mesh(config=config) as mesh:

            @mesh.call("shouter")
            def whisper(endpoint: meshlib.Endpoint, text: str) -> str:
                with socket.create_connection((endpoint.host, endpoint.port), timeout=2) as conn:
                    conn.sendall(text.lower().encode() + b"\n")
                    return conn.makefile().readline().strip()

            print(whisper("only shouter-1 is in this mesh"))
            ep = mesh.stats()["services"]["shouter"]["endpoints"][0]
            print(f"  {ep['address']}: requests={ep['requests']} successes={ep['successes']} mean={ep['mean_latency_ms']} ms")
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
