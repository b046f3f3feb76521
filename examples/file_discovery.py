"""file:// discovery: endpoints from a YAML file, reloaded live when it changes.

Writes an endpoints file naming backend A, starts a mesh on it, then rewrites
the file to name backend B (traffic moves without a restart), then writes a
broken file (rejected; the last good endpoints stay and the error is counted).

    python examples/file_discovery.py
"""

from __future__ import annotations

import logging
import os
import tempfile
import sys
import time

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


def write_atomically(path: str, text: str) -> None:
    """Write to a temporary file and rename it over the old one, so the mesh
    never reads a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def wait_for_version(mesh: meshlib.Mesh, service: str, version: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while mesh.endpoints(service).version < version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} never reached version {version}")
        time.sleep(0.02)


def main() -> None:
    logging.basicConfig(level=logging.ERROR, format="  log: %(message)s", stream=sys.stdout)
    a, b = Backend("backend-A"), Backend("backend-B")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "endpoints.yaml")
        write_atomically(path, f"services:\n  orders:\n    endpoints:\n      - {a.address}\n")
        config = {"discovery": f"file://{path}", "file_poll_interval": "100ms"}
        try:
            with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
                print("v1:", mesh.endpoints("orders"))
                answers = {session.get("http://orders/").json()["backend"] for _ in range(3)}
                print("  answered by", sorted(answers))
                assert answers == {"backend-A"}

                # Move the service to backend B (a mapping entry with a zone and tags).
                write_atomically(
                    path,
                    f"services:\n  orders:\n    endpoints:\n"
                    f"      - {{address: {b.address}, zone: z1, tags: [blue]}}\n",
                )
                wait_for_version(mesh, "orders", 2)
                print("v2:", mesh.endpoints("orders"))
                answers = {session.get("http://orders/").json()["backend"] for _ in range(3)}
                print("  answered by", sorted(answers))
                assert answers == {"backend-B"}

                # A broken file is rejected; the last good endpoints stay.
                write_atomically(path, "services:\n  orders:\n    endpoints: [not-an-address]\n")
                deadline = time.monotonic() + 5
                while mesh.stats()["discovery"][0]["errors"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                status = mesh.stats()["discovery"][0]
                print(f"after a broken file: {mesh.endpoints('orders')}, reloads={status['reloads']}, errors={status['errors']}")
                assert status["errors"] == 1
                answers = {session.get("http://orders/").json()["backend"] for _ in range(3)}
                print("  still answered by", sorted(answers))
                assert answers == {"backend-B"}
        finally:
            a.stop()
            b.stop()


if __name__ == "__main__":
    main()
