"""Run the benchmarks and print their tables: ``python -m benchmarks [--quick] [--only NAME]``.

Exit status 0 whether or not targets pass (the tables say PASS / MISS);
``--strict`` makes a missed target exit 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from . import failure, grpc_overhead, llm, mtls, overhead, own_cost, pick, registry, telemetry, xds

BENCHMARKS = {
    "own_cost": own_cost.run,
    "overhead": overhead.run,
    "pick": pick.run,
    "failure": failure.run,
    "grpc": grpc_overhead.run,
    "registry": registry.run,
    "mtls": mtls.run,
    "telemetry": telemetry.run,
    "xds": xds.run,
    "llm": llm.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="meshlib benchmarks (see docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="a short, rough run (seconds, not minutes)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any target is missed")
    args = parser.parse_args(argv)

    print(f"# meshlib benchmarks — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {platform.machine()}, {_cpus()} CPUs\n")
    ok = True
    for name in args.only or BENCHMARKS:
        ok = BENCHMARKS[name](quick=args.quick) and ok
    print(f"All targets: {'PASS' if ok else 'MISS'}")
    return 1 if args.strict and not ok else 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
