"""Priority levels: traffic spills from priority 0 to priority 1 as P0 loses health.

Four P0 backends and two P1 backends, listed in an endpoints file whose
``healthy`` flags we flip (in production, discovery or health checking sets
them). Each step rewrites the file, waits for the mesh to reload it, then
sends 400 calls and compares the measured split with the planned one:

    health(P) = min(100, 1.4 x 100 x healthy / total)

and below a 50% healthy share, with total health under 100%, a level
panics and balances over all its hosts, healthy or not.

    python examples/priority_failover.py
"""

from __future__ import annotations

import collections
import os
import tempfile
import time

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


def write_endpoints(path: str, backends: list[tuple[Backend, int, bool]]) -> None:
    lines = ["services:", "  ledger:", "    endpoints:"]
    for b, priority, healthy in backends:
        lines.append(f"      - {{address: {b.address}, priority: {priority}, healthy: {str(healthy).lower()}}}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)  # atomic: the mesh never sees half a file


def wait_for_version(mesh: meshlib.Mesh, version: int) -> None:
    deadline = time.monotonic() + 5
    while mesh.endpoints("ledger").version < version:
        if time.monotonic() > deadline:
            raise TimeoutError("the endpoints file was not reloaded")
        time.sleep(0.02)


STEPS = [
    # (label, healthy P0 hosts, healthy P1 hosts)
    ("all healthy", 4, 2),
    ("P0 2/4 healthy", 2, 2),
    ("P0 1/4 healthy", 1, 2),
    ("P0 1/4, P1 0/2 healthy", 1, 0),
]


def main() -> None:
    # keep_alive: HTTP/1.1, so the mesh reuses one connection per endpoint
    p0 = [Backend(f"p0-{i}", keep_alive=True) for i in range(1, 5)]
    p1 = [Backend(f"p1-{i}", keep_alive=True) for i in range(1, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "endpoints.yaml")
        write_endpoints(path, [(b, 0, True) for b in p0] + [(b, 1, True) for b in p1])
        config = {"discovery": f"file://{path}", "file_poll_interval": "50ms", "lb_policy": "round_robin"}
        try:
            with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
                for version, (label, ok0, ok1) in enumerate(STEPS, start=1):
                    if version > 1:
                        write_endpoints(
                            path,
                            [(b, 0, i < ok0) for i, b in enumerate(p0)] + [(b, 1, i < ok1) for i, b in enumerate(p1)],
                        )
                        wait_for_version(mesh, version)
                    levels = mesh.stats()["services"]["ledger"]["priorities"]
                    counts = collections.Counter(session.get("http://ledger/").json()["backend"] for _ in range(400))
                    to_p0 = sum(n for name, n in counts.items() if name.startswith("p0")) / 4
                    plan = ", ".join(f"P{lv['priority']} {lv['load']:g}%" + (" (panic)" if lv["panic"] else "") for lv in levels)
                    print(f"{label:24} planned: {plan:34} measured: P0 {to_p0:.0f}%, P1 {100 - to_p0:.0f}%")
                    if label.startswith("P0 1/4, P1 0/2"):
                        hit = sorted(name for name in counts if name.startswith("p0"))
                        print(f"{'':24} P0 in panic: calls went to all of {hit}, healthy or not")
                        assert hit == ["p0-1", "p0-2", "p0-3", "p0-4"]
                    assert abs(to_p0 - levels[0]["load"]) < 10, (to_p0, levels)
        finally:
            for b in p0 + p1:
                b.stop()


if __name__ == "__main__":
    main()
