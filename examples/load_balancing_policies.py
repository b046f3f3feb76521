"""Every load-balancing policy against the same three backends.

Backends: ``fast-1`` (weight 2), ``fast-2`` (weight 1) and ``slow`` (weight 1,
20 ms per answer). Four client threads make 15 calls each per policy; the
table shows where the 60 calls went.

- round_robin ignores weights: 20 / 20 / 20 exactly.
- weighted_round_robin follows weights exactly: 30 / 15 / 15.
- random follows weights on average.
- least_request and peak_ewma react to load and latency: slow gets less.
- ring_hash and maglev without a hash key pick at random (see
  ring_hash_affinity.py for keyed calls).

    python examples/load_balancing_policies.py
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py

POLICIES = ["round_robin", "weighted_round_robin", "random", "least_request", "peak_ewma", "ring_hash", "maglev"]


def run_policy(policy: str, backends: dict[str, Backend]) -> collections.Counter:
    endpoints = [
        f"{backends['fast-1'].address};weight=2",
        f"{backends['fast-2'].address};weight=1",
        f"{backends['slow'].address};weight=1",
    ]
    config = {"lb_policy": policy, "services": {"work": {"endpoints": endpoints}}}
    with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:

        def client(_: int) -> list[str]:
            return [session.get("http://work/job").json()["backend"] for _ in range(15)]

        with ThreadPoolExecutor(4) as pool:
            return collections.Counter(name for names in pool.map(client, range(4)) for name in names)


def main() -> None:
    # keep_alive: HTTP/1.1, so the mesh reuses connections per endpoint
    backends = {
        "fast-1": Backend("fast-1", keep_alive=True),
        "fast-2": Backend("fast-2", keep_alive=True),
        "slow": Backend("slow", delay=0.02, keep_alive=True),
    }
    try:
        print(f"{'policy':22} {'fast-1 (w2)':>12} {'fast-2 (w1)':>12} {'slow (w1)':>10}")
        for policy in POLICIES:
            c = run_policy(policy, backends)
            print(f"{policy:22} {c['fast-1']:12} {c['fast-2']:12} {c['slow']:10}")
            assert sum(c.values()) == 60
            if policy == "round_robin":
                assert c == {"fast-1": 20, "fast-2": 20, "slow": 20}, c
            if policy == "weighted_round_robin":
                assert c == {"fast-1": 30, "fast-2": 15, "slow": 15}, c
            if policy == "peak_ewma":
                assert c["slow"] < c["fast-1"], c
    finally:
        for b in backends.values():
            b.stop()


if __name__ == "__main__":
    main()
