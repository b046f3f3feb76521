"""xDS: how fast an EDS update is applied, what an endpoint costs, and route matching.

**EDS update latency.** One control plane (the test tree's, in this process)
configures three clients, one after the other, over ADS, with the same snapshots: meshlib
(a ``Mesh`` in a child process), a real Envoy, and grpcio's own xDS client (an
``xds:///`` channel in a child process). Each round changes one cluster's
ClusterLoadAssignment (one endpoint is replaced by a new one, the usual
scale-up/scale-down event; the whole assignment is sent, as state of the world
does) and pushes it. Each client runs alone (the machine has two cores).
The clock runs from the push (``monotonic()`` just before the control plane
sends) until:

* meshlib: the cluster's picker has been swapped (a cluster watcher in the
  child stamps ``monotonic()``; the clock is system-wide on Linux), and its ACK;
* Envoy: its ACK reaches the control plane (Envoy applies an EDS update before
  ACKing it);
* grpcio: its ACK (grpcio ACKs once the update is parsed; its picker is
  updated asynchronously after that, so this is a lower bound).

Sizes 10, 1,000 and 10,000 endpoints. Targets (meshlib, picker swapped): p99
under 50 ms at 1,000 endpoints and under 200 ms at 10,000.

**Memory per endpoint.** Resident memory of each client process (Envoy's,
meshlib's child, grpcio's child) with 10,000 endpoints minus with 10, divided
by 9,990. Target: under 2 KB for meshlib.

**Route matching.** One call's route lookup with 100 routes (the last one
matches; and 100 routes told apart by one header), against a dict lookup
measured in the same run. Target: 2 µs.

Run alone: ``python -m benchmarks.xds [--quick]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import timeit
from typing import Any

from ._harness import main_for, table, verdict

SIZES = (10, 1_000, 10_000)
TARGETS_MS = {1_000: 50.0, 10_000: 200.0}
TARGET_BYTES = 2048
TARGET_ROUTE_US = 2.0

_CHILD = r"""
import json, os, sys, threading, time
kind = sys.argv[1]
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
if kind == "meshlib":
    import meshlib
    mesh = meshlib.Mesh(config={"discovery": "xds", "xds_bootstrap_config": os.environ["BOOTSTRAP"], "xds_listeners": "inventory"})
    watched = set()
    def watch():
        for name in mesh.services():
            if name == "c1" and name not in watched:
                watched.add(name)
                c = mesh.lookup(name)
                c.watch(lambda snap: print(f"swap {snap.version} {len(snap)} {time.monotonic()}", flush=True))
    watch()
else:
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = os.environ["BOOTSTRAP"]
    import grpc
    ch = grpc.insecure_channel("xds:///inventory")
    ch.subscribe(lambda s: None, try_to_connect=True)
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "rss":
        import gc; gc.collect()
        print(f"rss {rss()}", flush=True)
    elif cmd == "watch" and kind == "meshlib":
        watch()
        print("watching", flush=True)
"""


class Child:
    def __init__(self, kind: str, bootstrap: dict[str, Any]) -> None:
        env = dict(os.environ, BOOTSTRAP=json.dumps(bootstrap), PYTHONPATH=os.pathsep.join(sys.path))
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.swaps: list[tuple[int, int, float]] = []
        self._lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            with self._cond:
                if parts and parts[0] == "swap":
                    self.swaps.append((int(parts[1]), int(parts[2]), float(parts[3])))
                else:
                    self._lines.append(line.strip())
                self._cond.notify_all()

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(l.startswith(prefix) for l in self._lines), timeout)
            if not ok:
                raise RuntimeError(f"child never said {prefix!r}")
            line = next(l for l in self._lines if l.startswith(prefix))
            self._lines.remove(line)
            return line

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def rss(self) -> int:
        self.send("rss")
        return int(self.expect("rss").split()[1])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)


def _proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def eds_latency(quick: bool) -> bool:
    from tests.xds_control_plane import CDS, EDS, ControlPlane, bootstrap, endpoints, service
    from tests.xds_envoy import envoy_ads
    from ._harness import free_port

    rounds = {10: 10, 1_000: 8, 10_000: 4} if quick else {10: 50, 1_000: 50, 10_000: 25}
    cp = ControlPlane()
    envoy_port = free_port()

    def snap(n: int, shift: int) -> dict:
        s = service("inventory", {"c1": []}, envoy_ports={"inventory": envoy_port})
        addrs = [f"127.0.{(i // 250) % 250 + 1}.{i % 250 + 1}:10000" for i in range(n - 1)] + [f"127.1.0.1:{10000 + shift}"]
        s[EDS]["c1"] = endpoints("c1", addrs)
        return s

    results: dict[tuple[str, int], list[float]] = {}
    rss: dict[tuple[str, int], int] = {}
    try:
        # One client at a time on the same control plane and snapshots: the
        # machine has two cores, and grpcio's parsing alone would load both.
        for label in ("meshlib", "Envoy", "grpcio"):
            cp.set(snap(10, 0))
            with contextlib.ExitStack() as stack:
                if label == "Envoy":
                    envoy = stack.enter_context(envoy_ads(cp.port))
                    node, pid, child = envoy.node, _envoy_pid(envoy.admin_port), None
                else:
                    node = "meshlib" if label == "meshlib" else "grpc"
                    child = Child(node, bootstrap(cp.address, node=node))
                    stack.callback(child.close)
                    pid = child.proc.pid
                _ack_time(cp, node, EDS, str(cp.version))
                shift = 0
                for n in SIZES:
                    for r in range(rounds[n] + 1):
                        shift += 1
                        s = snap(n, shift)
                        t0 = time.monotonic()
                        version = cp.set(s)
                        ack = _ack_time(cp, node, EDS, version)
                        swap = _swap_time(child, n, t0) if label == "meshlib" else None
                        if r == 0:
                            continue  # the first round at a size warms caches up
                        results.setdefault((f"{label} (ACK)", n), []).append((ack - t0) * 1000)
                        if swap is not None:
                            results.setdefault(("meshlib (picker swapped)", n), []).append((swap - t0) * 1000)
                    if n in (10, 10_000):
                        time.sleep(0.5)
                        rss[(label, n)] = child.rss() if child is not None else _proc_rss(pid) if pid else 0
    finally:
        cp.stop()

    rows = []
    ok = True
    for (label, n), xs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        p50, p99 = statistics.median(xs), _percentile(xs, 0.99)
        target = TARGETS_MS.get(n) if label.startswith("meshlib (picker") else None
        passed = target is None or p99 < target
        ok = ok and passed
        rows.append((label, f"{n:,}", f"{p50:.1f}", f"{p99:.1f}", f"< {target:g}" if target else "", verdict(passed) if target else ""))
    print("### EDS update: control plane send → applied\n")
    print(table(("client", "endpoints", "p50 ms", "p99 ms", "p99 target", ""), rows))
    mem_rows = []
    for label in ("meshlib", "Envoy", "grpcio"):
        per = (rss[(label, 10_000)] - rss[(label, 10)]) / 9_990
        passed = label != "meshlib" or per < TARGET_BYTES
        ok = ok and passed
        mem_rows.append((label, f"{per:,.0f}", f"< {TARGET_BYTES:,}" if label == "meshlib" else "", verdict(passed) if label == "meshlib" else ""))
    per = _python_bytes_per_endpoint()
    mem_rows.append(("meshlib, Python objects only (tracemalloc)", f"{per:,.0f}", "", ""))
    print("\n### Resident memory per endpoint (10,000 endpoints minus 10)\n")
    print(table(("client", "bytes / endpoint", "target", ""), mem_rows))
    return ok


def _python_bytes_per_endpoint() -> float:
    """What meshlib keeps per endpoint, in Python objects: the translated
    assignment, the snapshot and the cluster's hosts and picker (tracemalloc)."""
    import gc
    import tracemalloc

    from meshlib.config import ServiceConfig
    from meshlib.core.cluster import Cluster
    from meshlib.xds.resources import EDS, decode
    from tests.xds_control_plane import endpoints, pack

    raw = pack(endpoints("c1", [f"127.0.{(i // 250) % 250 + 1}.{i % 250 + 1}:10000" for i in range(10_000)]))
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        _, assignment, _msg = decode(EDS, raw)
        del _msg
        cluster = Cluster("c1", ServiceConfig(name="c1", lb_policy="weighted_round_robin", outlier_detection=False))
        cluster.update(assignment.snapshot("c1", 1))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(d.size_diff for d in after.compare_to(before, "filename")) / 10_000


def _envoy_pid(admin_port: int) -> int | None:
    out = subprocess.run(["pgrep", "-f", "--", f"--base-id {admin_port}"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def _ack_time(cp: Any, node: str, type_url: str, version: str, timeout: float = 60.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with cp._lock:
            for r in reversed(cp.requests):
                if r.node == node and r.type_url == type_url and r.version == version and r.nonce and not r.error:
                    return r.at
        time.sleep(0.0005)
    raise RuntimeError(f"{node} never ACKed {type_url} v{version}")


def _swap_time(child: Child, n: int, t0: float, timeout: float = 60.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with child._cond:
            for _, size, at in reversed(child.swaps):
                if at >= t0 and size == n:
                    return at
        time.sleep(0.0005)
    raise RuntimeError("meshlib never swapped its picker")


def route_matching(quick: bool) -> bool:
    from meshlib.routing import HeaderMatcher, PathMatcher, Route, RouteAction, RouteConfig, Router, VirtualHost

    def host(routes: list[Route]) -> Any:
        return Router(RouteConfig("rc", (VirtualHost("vh", ("*",), tuple(routes)),))).host("inventory")

    by_path = host([Route(path=PathMatcher("prefix", f"/svc{i}/"), action=RouteAction(cluster=f"c{i}")) for i in range(99)]
                   + [Route(action=RouteAction(cluster="last"))])  # fmt: skip
    by_header = host([Route(headers=(HeaderMatcher("x-v", "exact", f"v{i}"),), action=RouteAction(cluster=f"c{i}")) for i in range(100)])
    table_ = {f"/svc{i}/": i for i in range(100)}
    n = 20_000 if quick else 200_000
    headers = {"x-v": "v99"}
    cases = {
        "100 path routes, last matches": lambda: by_path.decide("/zzz/items?x=1", {}),
        "100 header routes, last matches": lambda: by_header.decide("/a", headers),
        "dict lookup (baseline)": lambda: table_.get("/svc99/"),
    }
    rows = []
    ok = True
    base = min(timeit.repeat(cases["dict lookup (baseline)"], number=n, repeat=5)) / n * 1e6
    for label, fn in cases.items():
        us = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
        target = label != "dict lookup (baseline)"
        passed = not target or us <= TARGET_ROUTE_US
        ok = ok and passed
        rows.append((label, f"{us:.2f}", f"{us / base:.1f}x", f"≤ {TARGET_ROUTE_US:g}" if target else "", verdict(passed) if target else ""))
    print("\n### Route matching, per call\n")
    print(table(("case", "µs", "vs dict lookup", "target µs", ""), rows))
    return ok


def run(quick: bool = False) -> bool:
    print("## xDS\n")
    ok = eds_latency(quick)
    ok = route_matching(quick) and ok
    print()
    return ok


if __name__ == "__main__":
    sys.exit(main_for(run, "python -m benchmarks.xds", __doc__))
