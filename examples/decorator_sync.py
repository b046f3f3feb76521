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

import meshlib

from _agents import Shouter  # tiny local servers: examples/_agents.py


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
