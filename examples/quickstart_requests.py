"""Quickstart: one mesh service with two endpoints, called through requests.

Starts two tiny HTTP servers on 127.0.0.1, declares them as the service
``inventory`` through MESHLIB_* environment variables, and calls
``http://inventory/...`` with a ``requests.Session`` from the mesh.

    python examples/quickstart_requests.py
"""

from __future__ import annotations

import os

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


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
