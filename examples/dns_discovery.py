"""dns discovery: a service's endpoints are the addresses its DNS name resolves to.

The service ``inventory`` is resolved from the name ``localhost`` with the
backend's port. The name is re-resolved every 200 ms; an unchanged answer
publishes nothing, so the snapshot version stays at 1 and the balancer (and
its statistics) are not rebuilt.

    python examples/dns_discovery.py
"""

from __future__ import annotations

import time

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


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
