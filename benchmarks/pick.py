"""Cost of ``Cluster.pick()`` per policy and endpoint count, and of ``Cluster.update()``.

For every policy and for 10, 100, 1,000 and 10,000 endpoints, a
``meshlib.core.cluster.Cluster`` gets one snapshot and ``cluster.pick(h)`` is called
in a tight loop: ``h`` is a precomputed random 64-bit int for ring_hash and
maglev, ``None`` for the others. All (policy, size) batches and two baselines
(an empty Python function call, ``random.random()``) run in interleaved
rounds with the same loop; the table shows the median ns per call.

Targets: at most 2 µs per pick for round_robin, random, least_request and
peak_ewma, 3 µs for ring_hash and maglev, flat in the endpoint count (the
slowest size at most 2x the fastest). ``update()`` of a 10,000-endpoint
snapshot (ring / table build) under 100 ms for ring_hash and maglev.

Run alone: ``python -m benchmarks.pick [--quick]``.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Callable, Sequence

from meshlib.balancing import HASHING
from meshlib.core.cluster import Cluster
from meshlib.config import load_config
from meshlib.endpoint import Endpoint, EndpointSnapshot

from ._harness import LOOPBACK, main_for, interleaved, median, table, verdict

POLICIES = ("round_robin", "weighted_round_robin", "random", "least_request", "peak_ewma", "ring_hash", "maglev")
SIZES = (10, 100, 1_000, 10_000)
#: ns per pick; weighted_round_robin has no stated target.
TARGET_NS = {"round_robin": 2000, "random": 2000, "least_request": 2000, "peak_ewma": 2000, "ring_hash": 3000, "maglev": 3000}
#: "Flat": the slowest size at most 2x the fastest. 10 to 10,000 endpoints is
#: 1000x more; an O(n) picker grows ~1000x, an O(1) one only by cache misses.
FLAT = 2.0
UPDATE_SIZE = 10_000
UPDATE_TARGET_MS = {"ring_hash": 100.0, "maglev": 100.0}


def snapshot(n: int) -> EndpointSnapshot:
    """n distinct endpoints (never contacted: pick() does no I/O)."""
    return EndpointSnapshot("bench", [Endpoint(LOOPBACK, 20_000 + i) for i in range(n)])


def new_cluster(policy: str) -> Cluster:
    return Cluster("bench", load_config(environ={}, overrides={"lb_policy": policy}).service("bench"))


def _batch(fn: Callable[[object], object], args: Sequence[object]) -> Callable[[], None]:
    def batch() -> None:
        for a in args:
            fn(a)

    return batch


def _random_batch(args: Sequence[object]) -> Callable[[], None]:
    rand = random.random

    def batch() -> None:
        for _ in args:
            rand()

    return batch


def _empty(_: object) -> None:
    return None


def measure_picks(rounds: int, picks: int) -> dict[str, list[float]]:
    """Per-pick seconds of every round, keyed ``policy/size`` (and the baselines)."""
    rng = random.Random(42)
    hashes = [rng.getrandbits(64) for _ in range(picks)]
    nones = [None] * picks
    batches = {"empty call": _batch(_empty, nones), "random.random()": _random_batch(nones)}
    for size in SIZES:
        snap = snapshot(size)
        for policy in POLICIES:
            cluster = new_cluster(policy)
            cluster.update(snap)
            batches[f"{policy}/{size}"] = _batch(cluster.pick, hashes if policy in HASHING else nones)
    return interleaved(batches, rounds=rounds, n=picks)


def _timed_update(cluster: Cluster, snap: EndpointSnapshot) -> float:
    gc.collect()
    t0 = time.perf_counter()
    cluster.update(snap)
    return time.perf_counter() - t0


def measure_updates(repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds of every ``update()`` at UPDATE_SIZE endpoints, per policy:
    (first snapshot into a new cluster, then the same minus one endpoint)."""
    full = snapshot(UPDATE_SIZE)
    less = EndpointSnapshot("bench", full.endpoints[1:], version=1)
    times: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in POLICIES}
    for _ in range(repeats):
        for policy in POLICIES:
            cluster = new_cluster(policy)
            first, changed = times[policy]
            first.append(_timed_update(cluster, full))
            changed.append(_timed_update(cluster, less))
    return times


def report_picks(samples: dict[str, list[float]]) -> tuple[str, str, bool]:
    ns = {name: median(xs) * 1e9 for name, xs in samples.items()}
    floor = ns["empty call"]
    baselines = table(
        ["baseline (same loop)", "ns/call"],
        [["empty Python function call f(h)", f"{floor:.0f}"], ["random.random()", f"{ns['random.random()']:.0f}"]],
    )
    rows, all_ok = [], True
    for policy in POLICIES:
        per_size = [ns[f"{policy}/{size}"] for size in SIZES]
        worst, flatness = max(per_size), max(per_size) / min(per_size)
        target = TARGET_NS.get(policy)
        ok_target = target is None or worst <= target
        ok_flat = flatness <= FLAT
        all_ok = all_ok and ok_target and ok_flat
        rows.append(
            [
                policy,
                *(f"{x:.0f}" for x in per_size),
                f"{worst / floor:.1f}x",
                "—" if target is None else f"≤{target:,} {verdict(ok_target)}",
                f"{flatness:.2f} {verdict(ok_flat)}",
            ]
        )
    headers = ["policy", *(f"{s:,} eps" for s in SIZES), "worst / empty call", "target ns", f"slowest/fastest (≤{FLAT})"]
    return table(headers, rows), baselines, all_ok


def report_updates(updates: dict[str, tuple[list[float], list[float]]]) -> tuple[str, bool]:
    rows, all_ok = [], True
    for policy, runs in updates.items():
        target = UPDATE_TARGET_MS.get(policy)
        cells = []
        for seconds in runs:
            ms = median(seconds) * 1e3
            ok = target is None or ms < target
            all_ok = all_ok and ok
            cells.append(f"{ms:.1f} (min {min(seconds) * 1e3:.1f})" + ("" if target is None else f" {verdict(ok)}"))
        rows.append([policy, *cells, "—" if target is None else f"<{target:.0f}"])
    headers = ["policy", "new cluster, first snapshot ms", "one endpoint removed ms", "target ms"]
    return table(headers, rows), all_ok


def run(quick: bool = False) -> bool:
    rounds, picks, repeats = (3, 5_000, 1) if quick else (15, 50_000, 5)
    print(f"## pick() cost, ns per call (median of {rounds} interleaved rounds x {picks:,} picks)\n")
    picks_table, baselines, ok_picks = report_picks(measure_picks(rounds, picks))
    print(picks_table)
    print("\nns include the loop; worst / empty call: the slowest size over an empty function call in the same loop.\n")
    print(baselines)
    print(f"\n## update() of a {UPDATE_SIZE:,}-endpoint snapshot, ms (median of {repeats}, and the fastest)\n")
    updates_table, ok_updates = report_updates(measure_updates(repeats))
    print(updates_table)
    print("\nnew cluster: every Host is created and the picker built; one endpoint removed: Hosts kept, picker rebuilt.\n")
    return ok_picks and ok_updates


def main(argv: list[str] | None = None) -> int:
    return main_for(run, "python -m benchmarks.pick", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
