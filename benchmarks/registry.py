"""Registries: propagation latency from a write to the picker, and the CPU cost of watching.

**Propagation.** A consumer ``Mesh`` watches the registry (a real etcd, or the
Consul API double in a child process). The benchmark makes 200 changes, one
every 40 ms, round-robin over 20 services: it adds an instance
(etcd: ``put``; Consul: ``PUT /v1/agent/service/register`` through py-consul)
or removes the one it added before (``delete`` / ``deregister``). For each,
the clock runs from just before the write until the consumer's cluster for
that service has been rebuilt with (or without) the endpoint, polled every
0.2 ms; the benchmark then checks that the picker hands out the new endpoint.
Target: p99 under 100 ms for both registries.

**Watching 1,000 services x 10 endpoints.** The registry is loaded first
(etcd: 10,000 puts; Consul double: 10,000 instances added in its own
process). Then a ``Mesh`` starts on it and the benchmark measures, in this
process only: wall and CPU time until all 10,000 endpoints are in the mesh;
CPU use while nothing changes (10 s); CPU per change over 100 changes; the
threads and resident memory that watching costs.

Run alone: ``python -m benchmarks.registry [--quick]``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable

import meshlib
from meshlib.discovery.etcd_client import EtcdClient
from meshlib.discovery.consul import make_client
from meshlib.config import RegistryConfig
from meshlib.testing.etcd_server import EtcdServer

from ._harness import LOOPBACK, free_port, main_for, table, verdict

TARGET_P99_MS = 100.0
CHANGES = 200
SERVICES = 20
SPACING = 0.040

_DOUBLE_SCRIPT = """
import sys, time
from meshlib.testing.consul_double import ConsulDouble
double = ConsulDouble(port=int(sys.argv[1]))
services, per = int(sys.argv[2]), int(sys.argv[3])
for s in range(services):
    for i in range(per):
        double.add_instance(f"svc-{s:04d}", 20000 + i, address=f"10.{s // 250}.{s % 250}.{i + 1}")
print("ready", flush=True)
time.sleep(3600)
"""


class _Double:
    """The Consul double in a child process, so its CPU is not counted here."""

    def __init__(self, services: int = 0, per_service: int = 0) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLIB_")}
        self.proc = subprocess.Popen([sys.executable, "-c", _DOUBLE_SCRIPT, str(self.port), str(services), str(per_service)], stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the Consul double did not start")
        self.url = f"consul://{LOOPBACK}:{self.port}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _wait(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.0002) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise RuntimeError("change not seen within 10 s")
        time.sleep(interval)


def _addresses(mesh: meshlib.Mesh, service: str) -> set[str]:
    cluster = mesh.lookup(service)
    return set() if cluster is None else {h.endpoint.address for h in cluster.hosts}


def propagation(kind: str, changes: int) -> list[float]:
    """Seconds from each write to the consumer's picker having the change."""
    etcd = double = None
    if kind == "etcd":
        etcd = EtcdServer(name="meshlib-bench")
        url = etcd.url
        client = EtcdClient(LOOPBACK, etcd.port, timeout=5)
    else:
        double = _Double()
        url = double.url
        consul_client, _ = make_client(LOOPBACK, double.port, RegistryConfig())
    prefix = "/meshlib/services"
    added: dict[str, str] = {}
    samples = []
    try:
        with meshlib.Mesh(config={"discovery": url, "lb_policy": "round_robin"}) as mesh:
            for n in range(changes):
                service = f"bench-{n % SERVICES:02d}"
                removing = service in added and n % (2 * SERVICES) >= SERVICES
                port = 30000 + n
                address = added.pop(service) if removing else f"127.0.0.1:{port}"
                t0 = time.perf_counter()
                if kind == "etcd":
                    key = f"{prefix}/{service}/{address.rsplit(':', 1)[1]}"
                    client.delete(key) if removing else client.put(key, json.dumps({"address": address}))
                elif removing:
                    consul_client.agent.service.deregister(f"{service}-{address.rsplit(':', 1)[1]}")
                else:
                    consul_client.agent.service.register(service, service_id=f"{service}-{port}", address="127.0.0.1", port=port)
                if removing:
                    _wait(lambda: address not in _addresses(mesh, service))
                else:
                    _wait(lambda: address in _addresses(mesh, service))
                samples.append(time.perf_counter() - t0)
                if not removing:
                    added[service] = address
                    cluster = mesh.cluster(service)
                    picked = {cluster.pick().endpoint.address for _ in range(2 * len(cluster.hosts))}
                    assert address in picked, "the picker does not use the new endpoint"
                time.sleep(SPACING)
    finally:
        if etcd is not None:
            client.close()
            etcd.close()
        if double is not None:
            double.close()
    return samples


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def watching(kind: str, services: int, per_service: int, idle: float, changes: int) -> dict[str, float]:
    etcd = double = None
    if kind == "etcd":
        etcd = EtcdServer(name="meshlib-bench")
        url = etcd.url
        loader = EtcdClient(LOOPBACK, etcd.port, timeout=10)
        for s in range(services):
            for i in range(per_service):
                loader.put(f"/meshlib/services/svc-{s:04d}/{i}", json.dumps({"address": f"10.{s // 250}.{s % 250}.{i + 1}:20000"}))
    else:
        double = _Double(services, per_service)
        url = double.url
        consul_client, _ = make_client(LOOPBACK, double.port, RegistryConfig())
    threads_before = threading.active_count()
    rss_before = _rss_mb()
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        mesh = meshlib.Mesh(config={"discovery": url, "registry_timeout": "60s"})
        _wait(lambda: sum(len(_addresses(mesh, f"svc-{s:04d}")) for s in range(services)) == services * per_service, timeout=120, interval=0.05)
        sync_wall, sync_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        threads = threading.active_count() - threads_before
        rss = _rss_mb() - rss_before
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(idle)
        idle_pct = 100 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        cpu0 = time.process_time()
        for n in range(changes):
            service = f"svc-{(n * 37) % services:04d}"
            address = f"127.0.0.1:{40000 + n}"
            if kind == "etcd":
                loader.put(f"/meshlib/services/{service}/extra-{n}", json.dumps({"address": address}))
            else:
                consul_client.agent.service.register(service, service_id=f"extra-{n}", address="127.0.0.1", port=40000 + n)
            _wait(lambda: address in _addresses(mesh, service), interval=0.001)
        per_change_ms = 1000 * (time.process_time() - cpu0) / changes
        mesh.close()
        return {"sync_s": sync_wall, "sync_cpu_s": sync_cpu, "idle_cpu_pct": idle_pct, "change_cpu_ms": per_change_ms, "threads": threads, "rss_mb": rss}
    finally:
        if etcd is not None:
            loader.close()
            etcd.close()
        if double is not None:
            double.close()


def run(quick: bool = False) -> bool:
    changes = 40 if quick else CHANGES
    services, per = (100, 10) if quick else (1000, 10)
    idle = 2.0 if quick else 10.0
    print(f"## Registries: propagation ({changes} changes) and watching {services:,} services x {per} endpoints\n")
    rows, ok = [], True
    for kind in ("etcd", "consul"):
        ms = sorted(1000 * s for s in propagation(kind, changes))
        p50 = statistics.median(ms)
        p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
        good = p99 < TARGET_P99_MS
        ok = ok and good
        label = "etcd (real, etcd-server)" if kind == "etcd" else "Consul (API double)"
        rows.append((label, f"{p50:.1f}", f"{p99:.1f}", f"{ms[-1]:.1f}", f"< {TARGET_P99_MS:.0f}", verdict(good)))
    print(table(("registry", "p50 ms", "p99 ms", "max ms", "p99 target", ""), rows))
    print()
    rows = []
    for kind in ("etcd", "consul"):
        r = watching(kind, services, per, idle, 100 if not quick else 20)
        label = "etcd: 1 watch stream" if kind == "etcd" else f"Consul: {services} blocking queries"
        rows.append((label, f"{r['sync_s']:.2f}", f"{r['sync_cpu_s']:.2f}", f"{r['idle_cpu_pct']:.2f}", f"{r['change_cpu_ms']:.2f}", str(r["threads"]), f"{r['rss_mb']:.0f}"))
    print(table(("watching", "initial sync s", "sync CPU s", "idle CPU %", "CPU ms / change", "threads", "RSS MB"), rows))
    print()
    return ok


if __name__ == "__main__":
    sys.exit(main_for(run, "python -m benchmarks.registry", __doc__))
