"""LLM-aware balancing on a simulated model-server fleet: ``python -m benchmarks.llm [--quick]``.

Four simulated replicas (``tests/llm_sim.py``: continuous batching, a queue, a
KV budget, an LRU prefix cache of 16-token blocks; one replica at half speed)
serve an open-loop workload: Poisson arrivals of streamed completions from
agents sharing a dozen system prompts (Zipf-popular, so one prompt is hot).
Each policy runs through meshlib's httpx async client at about 60% and 90% of
the fleet's capacity, on the same arrival sequence per run index; two
reference pickers written here, outside meshlib, set the bar:

* R1: the replica with the lowest reported load (``/metrics`` polled every 50ms);
* R2: a consistent hash on the prefix that spills to the least-loaded replica
  when the owner's reported queue exceeds 4.

Printed per policy (means over the runs): TTFT p50/p99, end-to-end p99,
tokens/s, the deepest queue on any replica, prefix-cache hit rate, each
replica's share of requests (the last is the slow one), and ratios against
round_robin measured in the same run. The first 8 s of each run warm the
caches and are not measured (requests sent then still load the fleet); "cold"
is the share of prefix blocks measured that missed because the replica had
never cached them before (a prefix's first visit there), the startup part of
the misses, which a long-running fleet no longer pays.

Fleets differ only by their replicas' ports, which place the prompts on the
hash rings (the policies' and R2's), and results differ with them: the ports
are printed first, ``--ports P1,P2,P3,P4`` reruns a fleet, ``--load 0.6``
runs one load.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

import meshlib
from meshlib.balancing.hashing import hash_key, host_hash

from ._harness import LOOPBACK, free_port, stop

SPEEDS = (1.0, 1.0, 1.0, 0.5)
PROMPTS = 12
SYSTEM_TOKENS = 512
USER_TOKENS = 64
MAX_TOKENS = 16
#: Requests per second one full-speed replica sustains with its prefixes cached
#: (tests/llm_sim.py defaults: batch 4, 16 tokens; measured: 4 concurrent requests
#: with a cached prefix take about 0.72 s).
REPLICA_RPS = 5.5
CAPACITY = REPLICA_RPS * sum(SPEEDS)

#: Name -> meshlib service keys (None: a reference picker).
POLICIES: dict[str, dict[str, Any] | None] = {
    "round_robin": {"lb_policy": "round_robin"},
    "least_request": {"lb_policy": "least_request"},
    "peak_ewma": {"lb_policy": "peak_ewma"},
    "ring_hash": {"lb_policy": "ring_hash", "hash_header": "x-prefix-key"},
    "ring_hash+bounded": {"lb_policy": "ring_hash", "hash_header": "x-prefix-key", "hash_balance_factor": 150, "load_reports": "metrics"},
    "least_loaded": {"lb_policy": "least_loaded", "load_reports": "header,metrics"},
    "wrr_orca": {"lb_policy": "wrr_orca"},
    "llm": {"lb_policy": "llm", "hash_header": "x-prefix-key"},
    "R1": None,
    "R2": None,
}


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# -- the reference pickers (outside meshlib) -------------------------------------------


class Reports:
    """Polls every replica's /metrics every 50ms (what R1 and R2 read)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.waiting = {p: 0.0 for p in ports}
        self.running = {p: 0.0 for p in ports}
        self._task: asyncio.Task | None = None

    async def _poll(self, client: httpx.AsyncClient) -> None:
        while True:
            for p in self.ports:
                try:
                    text = (await client.get(f"http://{LOOPBACK}:{p}/metrics")).text
                    for line in text.splitlines():
                        if line.startswith("vllm:num_requests_waiting"):
                            self.waiting[p] = float(line.split()[-1])
                        elif line.startswith("vllm:num_requests_running"):
                            self.running[p] = float(line.split()[-1])
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.05)

    def start(self, client: httpx.AsyncClient) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(client))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def least_loaded(self) -> int:
        return min(self.ports, key=lambda p: (self.waiting[p], self.running[p], random.random()))


class Ring:
    def __init__(self, ports: list[int]) -> None:
        entries = sorted((host_hash(f"{LOOPBACK}:{p}", k), p) for p in ports for k in range(256))
        self.hashes = [h for h, _ in entries]
        self.owners = [p for _, p in entries]

    def owner(self, key: str) -> int:
        i = bisect.bisect_left(self.hashes, hash_key(key))
        return self.owners[i % len(self.owners)]


# -- one run ------------------------------------------------------------------------------


async def _stream(client: httpx.AsyncClient, url: str, body: dict, headers: dict, t0: float) -> tuple[float, float, int]:
    ttft = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers, timeout=60.0) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if ttft is None:
                ttft = time.perf_counter() - t0
            if line != "data: [DONE]":
                tokens += json.loads(line[6:])["tokens"]
    end = time.perf_counter() - t0
    return (ttft if ttft is not None else end), end, tokens


async def one_run(policy: str, ports: list[int], rate: float, duration: float, seed: int, warmup: float) -> dict[str, Any]:
    rng = random.Random(seed)
    zipf = [1.0 / (k + 1) for k in range(PROMPTS)]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200)) as admin:
        await asyncio.gather(*(admin.post(f"http://{LOOPBACK}:{p}/reset") for p in ports))
        keys = POLICIES[policy]
        mesh = None
        reports = Reports(ports)
        ring = Ring(ports)
        if keys is not None:
            service = {"endpoints": ",".join(f"{LOOPBACK}:{p}" for p in ports), "outlier_detection": False, "retry_on": "", **keys}
            mesh = meshlib.Mesh(config={"services": {"llm": service}})
            client = mesh.httpx_async_client(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        else:
            client = admin
            reports.start(admin)
        results: list[tuple[float, float, int]] = []
        failures = 0

        async def request(system: int, measured: bool) -> None:
            nonlocal failures
            body = {"system": f"sys-{system}", "system_tokens": SYSTEM_TOKENS, "user_tokens": USER_TOKENS, "max_tokens": MAX_TOKENS, "stream": True}
            headers = {"x-prefix-key": f"sys-{system}"}
            t0 = time.perf_counter()
            if policy == "R1":
                url = f"http://{LOOPBACK}:{reports.least_loaded()}/v1/completions"
            elif policy == "R2":
                port = ring.owner(f"sys-{system}")
                if reports.waiting[port] > 4:
                    port = reports.least_loaded()
                url = f"http://{LOOPBACK}:{port}/v1/completions"
            else:
                url = "http://llm/v1/completions"
            try:
                result = await _stream(client, url, body, headers, t0)
            except Exception:
                failures += measured
                return
            if measured:
                results.append(result)
                ends.append(time.perf_counter())

        async def end_warmup() -> None:
            await asyncio.sleep(warmup)
            await asyncio.gather(*(admin.post(f"http://{LOOPBACK}:{p}/reset?stats-only") for p in ports))

        ends: list[float] = []
        tasks = [asyncio.create_task(end_warmup())]
        start = time.perf_counter()
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            if t >= duration:
                break
            system = rng.choices(range(PROMPTS), weights=zipf)[0]
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(request(system, t >= warmup)))
        await asyncio.gather(*tasks)
        elapsed = (max(ends) - start - warmup) if ends else float("nan")
        reports.stop()
        if mesh is not None:
            await client.aclose()
            mesh.close()
        stats = [json.loads((await admin.get(f"http://{LOOPBACK}:{p}/stats")).text) for p in ports]
    total = sum(s["requests"] for s in stats) or 1
    return {
        "ttft_p50": pct([r[0] for r in results], 50),
        "ttft_p99": pct([r[0] for r in results], 99),
        "e2e_p99": pct([r[1] for r in results], 99),
        "tokens_s": sum(r[2] for r in results) / elapsed,
        "deepest": max(s["deepest_queue"] for s in stats),
        "hit": sum(s["prefix_hits"] for s in stats) / max(1, sum(s["prefix_blocks"] for s in stats)),
        "cold": sum(s["cold_misses"] for s in stats) / max(1, sum(s["prefix_blocks"] for s in stats)),
        "shares": [s["requests"] / total for s in stats],
        "failures": failures,
    }


# -- the table -------------------------------------------------------------------------------


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(r[key] for r in runs)


def table(load: float, by_policy: dict[str, list[dict[str, Any]]]) -> str:
    rr = by_policy["round_robin"]
    rr_p99, rr_q, rr_tok = _mean(rr, "ttft_p99"), _mean(rr, "deepest"), _mean(rr, "tokens_s")
    lines = [
        f"### {load:.0%} of capacity ({load * CAPACITY:.1f} req/s), means over {len(rr)} run(s)\n",
        "| policy | TTFT p50 s | TTFT p99 s | e2e p99 s | tokens/s | deepest queue | prefix hit | cold | shares (slow last) | p99 / rr | queue / rr | tok/s / rr |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in by_policy.items():
        shares = [statistics.fmean(r["shares"][i] for r in runs) for i in range(len(SPEEDS))]
        p99, q, tok = _mean(runs, "ttft_p99"), _mean(runs, "deepest"), _mean(runs, "tokens_s")
        fails = sum(r["failures"] for r in runs)
        lines.append(
            f"| {name}{f' ({fails} failed)' if fails else ''} | {_mean(runs, 'ttft_p50'):.3f} | {p99:.3f} | {_mean(runs, 'e2e_p99'):.3f} | {tok:.0f} "
            f"| {q:.1f} | {_mean(runs, 'hit'):.1%} | {_mean(runs, 'cold'):.1%} | {' / '.join(f'{s:.0%}' for s in shares)} "
            f"| {p99 / rr_p99:.2f} | {q / rr_q if rr_q else float('nan'):.2f} | {tok / rr_tok:.2f} |"
        )
    return "\n".join(lines)


def targets(loads: dict[float, dict[str, list[dict[str, Any]]]], policy: str = "llm") -> list[tuple[str, bool]]:
    out = []
    slow_share = SPEEDS[-1] / sum(SPEEDS)
    for load, by in loads.items():
        mine = _mean(by[policy], "ttft_p99")
        best_ref = min(_mean(by["R1"], "ttft_p99"), _mean(by["R2"], "ttft_p99"))
        out.append((f"{load:.0%}: TTFT p99 {mine:.3f}s <= better reference {best_ref:.3f}s", mine <= best_ref))
        share = statistics.fmean(r["shares"][-1] for r in by[policy])
        out.append((f"{load:.0%}: slow replica share {share:.1%} within 5 points of {slow_share:.1%}", abs(share - slow_share) <= 0.05))
        if load >= 0.85:
            rr = by["round_robin"]
            out.append((f"{load:.0%}: TTFT p99 <= 0.35x round_robin ({mine / _mean(rr, 'ttft_p99'):.2f}x)", mine <= 0.35 * _mean(rr, "ttft_p99")))
            q = _mean(by[policy], "deepest") / max(_mean(rr, "deepest"), 1e-9)
            out.append((f"{load:.0%}: deepest queue <= 0.5x round_robin ({q:.2f}x)", q <= 0.5))
            tok = _mean(by[policy], "tokens_s") / _mean(rr, "tokens_s")
            out.append((f"{load:.0%}: tokens/s >= 1.0x round_robin ({tok:.2f}x)", tok >= 0.995))
        else:
            hit = _mean(by[policy], "hit")
            out.append((f"{load:.0%}: prefix-cache hit {hit:.1%} >= 95%", hit >= 0.95))
    return out


def start_fleet(ports: list[int] | None = None) -> tuple[subprocess.Popen, list[int]]:
    """The simulated replicas, on ``ports`` (default: free ones). Fleets differ
    only by their ports, which place the prompts on the policies' hash rings."""
    ports = list(ports) if ports else [free_port() for _ in SPEEDS]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "tests.llm_sim", *(f"{p}:{s}" for p, s in zip(ports, SPEEDS))], stdout=subprocess.PIPE, env=env, cwd=root)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    return proc, [int(p) for p in line]


def run(quick: bool = False, policies: list[str] | None = None, ports: list[int] | None = None, loads: list[float] | None = None) -> bool:
    runs, duration, warmup = (1, 2.5, 1.0) if quick else (3, 20.0, 8.0)
    names = policies or list(POLICIES)
    for required in ("round_robin", "R1", "R2"):
        if required not in names:
            names.append(required)
    print(f"## LLM balancing: 4 simulated replicas (one at half speed), {PROMPTS} shared system prompts, capacity ~{CAPACITY:.1f} req/s\n")
    proc, ports = start_fleet(ports)
    print(f"Fleet: ports {','.join(map(str, ports))} (slow last)\n")
    by_load: dict[float, dict[str, list[dict[str, Any]]]] = {}
    try:
        for load in loads or (0.6, 0.9):
            by: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for i in range(runs):
                for name in names:  # interleaved, so drift on a shared machine hits every policy alike
                    by[name].append(asyncio.run(one_run(name, ports, load * CAPACITY, duration, 1000 * i + int(load * 100), warmup)))
            by_load[load] = by
            print(table(load, by) + "\n", flush=True)
    finally:
        stop(proc)
    ok = True
    if "llm" in names:
        print("Targets for the recommended configuration (lb_policy=llm):\n")
        for text, passed in targets(by_load):
            ok = ok and passed
            print(f"- {'PASS' if passed else 'MISS'} {text}")
        print()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run per policy and load (about a minute)")
    parser.add_argument("--policy", action="append", choices=sorted(POLICIES), help="run only this policy (repeatable; round_robin, R1 and R2 always run)")
    parser.add_argument("--ports", help="serve the replicas on these ports, comma-separated (slow last), to rerun a fleet: its ports place the prompts on the rings")
    parser.add_argument("--load", action="append", type=float, choices=(0.6, 0.9), help="run only this load (repeatable)")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",")] if args.ports else None
    if ports is not None and len(ports) != len(SPEEDS):
        parser.error(f"--ports takes {len(SPEEDS)} ports")
    run(quick=args.quick, policies=args.policy, ports=ports, loads=args.load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
