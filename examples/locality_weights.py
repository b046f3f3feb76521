"""Locality-weighted balancing: traffic per zone follows LOCALITY_WEIGHTS, scaled by zone health.

Zone ``a`` has weight 3, zone ``b`` weight 1, zone ``c`` is not listed (it gets
nothing). A zone's effective weight is

    locality_weight x min(100%, 1.4 x healthy / total in the zone)

so with one of zone a's two hosts unhealthy, a's weight drops to 3 x 0.7 = 2.1
and the split becomes 2.1 : 1 (68% / 32%).

    python examples/locality_weights.py
"""

from __future__ import annotations

import collections

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


def split(backends: list[Backend], unhealthy: set[str]) -> dict[str, float]:
    endpoints = [
        {"address": b.address, "zone": b.name.split("-")[0], "healthy": b.name not in unhealthy}
        for b in backends
    ]
    config = {
        "lb_policy": "round_robin",
        "locality_weights": "a=3,b=1",
        "services": {"feed": {"endpoints": endpoints}},
    }
    with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
        zones = collections.Counter(session.get("http://feed/").json()["backend"].split("-")[0] for _ in range(400))
    return {z: zones[z] / 4 for z in ("a", "b", "c")}


def main() -> None:
    backends = [Backend(n, keep_alive=True) for n in ("a-1", "a-2", "b-1", "b-2", "c-1")]
    try:
        for label, unhealthy, expect_a in [("all healthy", set(), 75.0), ("a-2 unhealthy", {"a-2"}, 2.1 / 3.1 * 100)]:
            pct = split(backends, unhealthy)
            print(f"{label:14} zone a {pct['a']:5.1f}%  zone b {pct['b']:5.1f}%  zone c {pct['c']:4.1f}%   (planned a {expect_a:.1f}%)")
            assert pct["c"] == 0
            assert abs(pct["a"] - expect_a) < 10, pct
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()
