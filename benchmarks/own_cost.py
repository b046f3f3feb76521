"""A call's own machinery: a decorated no-op against the bare function.

For every balancing policy, at 10, 1,000 and 10,000 endpoints, with the
default configuration (retry policy, retry budget, circuit-breaker thresholds
and outlier detection on), ``@mesh.call("svc")`` wraps a function that does
nothing; the bare function runs in the same interleaved rounds. The table
shows the µs meshlib adds per call (median of the per-round differences, in
this thread's CPU time: no I/O is involved, and other processes on a busy
machine disturb it far less than wall time) and
the lock acquisitions per call (counted in a separate pass with every
``threading.Lock`` made by the Mesh replaced by a counting one).

Targets (issue 10): at most 5 µs added per call for every policy at 1,000
endpoints, at most 1.3x that at 10,000; at most one lock acquisition per call.

Run alone: ``python -m benchmarks.own_cost [--quick]``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import meshlib
from meshlib.balancing import POLICIES

from ._harness import interleaved, median, spread, table, verdict

SIZES = (10, 1_000, 10_000)
TARGET_US = 5.0
GROWTH = 1.3
MAX_LOCKS = 1.0


def _endpoints(n: int) -> str:
    return ",".join(f"127.0.{i // 250}.{1 + i % 250}:8080" for i in range(n))


#: Telemetry off: no metrics, no access log, no trace context made or sent.
TELEMETRY_OFF = {"metrics": False, "access_log": False, "tracing": "off", "propagators": "none"}
#: What ``_mesh`` adds to the default configuration (``run(telemetry=False)`` sets TELEMETRY_OFF).
EXTRA: dict[str, object] = {}


def _mesh(policy: str, n: int) -> meshlib.Mesh:
    # No servers listen here: load reports (llm, least_loaded, wrr_orca) are
    # off, so no poller or ORCA stream chases 10,000 absent endpoints; the
    # pickers then score by in-flight counts, as they do without fresh reports.
    return meshlib.Mesh(config={**EXTRA, "services": {"svc": {"endpoints": _endpoints(n), "lb_policy": policy, "load_reports": "off"}}})


def _noop(endpoint: Any) -> None:
    return None


def _batch(fn: Callable[[Any], None], arg: Any, n: int) -> Callable[[], None]:
    def batch() -> None:
        for _ in range(n):
            fn(arg)

    return batch


class _CountingLock:
    """A ``threading.Lock`` stand-in that counts acquisitions (``with`` included)."""

    count = 0
    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _REAL_LOCK()

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        _CountingLock.count += 1
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_REAL_LOCK = threading.Lock


def locks_per_call(policy: str, n: int, calls: int = 2_000) -> float:
    """Lock acquisitions per decorated call, every lock of the Mesh counted."""
    threading.Lock = _CountingLock  # type: ignore[misc]
    try:
        mesh = _mesh(policy, n)
    finally:
        threading.Lock = _REAL_LOCK  # type: ignore[misc]
    with mesh:
        fn = mesh.call("svc")(_noop)
        for _ in range(200):
            fn()
        mesh._ticker.stop()  # its own timer thread must not count
        before = _CountingLock.count
        for _ in range(calls):
            fn()
        return (_CountingLock.count - before) / calls


def measure(rounds: int, n_calls: int) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(policy, size) -> (µs added per call, spread %, locks per call).

    One Mesh at a time (a service of ``size`` endpoints, as an application
    with one large service has), timed in rounds interleaved with the bare function."""
    out: dict[tuple[str, int], tuple[float, float, float]] = {}
    for size in SIZES:
        for policy in POLICIES:
            mesh = _mesh(policy, size)
            try:
                decorated = mesh.call("svc")(_noop)
                batches: dict[str, Callable[[], None]] = {
                    "bare": _batch(_noop, None, n_calls),
                    policy: lambda d=decorated: [d() for _ in range(n_calls)] and None,
                }
                samples = interleaved(batches, rounds, n_calls, timer=time.thread_time)
            finally:
                mesh.close()
            added = [(m - b) * 1e6 for m, b in zip(samples[policy], samples["bare"])]
            out[(policy, size)] = (median(added), spread(samples[policy]), locks_per_call(policy, size))
    return out


def run(quick: bool = False, telemetry: bool = True) -> bool:
    rounds, n_calls = (3, 2_000) if quick else (9, 20_000)
    EXTRA.clear()
    if not telemetry:
        EXTRA.update(TELEMETRY_OFF)
    which = "default configuration" if telemetry else "default configuration, telemetry off"
    print(f"## A call's own cost ({which}): @mesh.call over a no-op vs the bare function (median of {rounds} interleaved rounds x {n_calls:,} calls)\n")
    results = measure(rounds, n_calls)
    rows = []
    ok = True
    for policy in POLICIES:
        at = {size: results[(policy, size)] for size in SIZES}
        base = at[1_000][0]
        fine = base <= TARGET_US and at[10_000][0] <= GROWTH * max(base, 1e-9) and all(v[2] <= MAX_LOCKS for v in at.values())
        ok &= fine
        rows.append(
            [policy]
            + [f"{at[s][0]:.2f}" for s in SIZES]
            + [f"{at[10_000][0] / base:.2f}x" if base > 0 else "-", " / ".join(f"{at[s][2]:.2f}" for s in SIZES), f"{max(v[1] for v in at.values()):.0f}%", verdict(fine)]
        )
    print(table(["policy", "µs @10", "µs @1,000", "µs @10,000", "10,000 / 1,000", "locks per call (10 / 1k / 10k)", "spread", "target"], rows))
    print(f"\nTargets: ≤ {TARGET_US:g} µs added per call at 1,000 endpoints, ≤ {GROWTH}x that at 10,000, ≤ {MAX_LOCKS:g} lock per call.\n")
    return ok


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.own_cost", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short, rough run")
    parser.add_argument("--telemetry-off", action="store_true", help="also switch off metrics, the access log and trace propagation")
    args = parser.parse_args(argv)
    run(quick=args.quick, telemetry=not args.telemetry_off)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
