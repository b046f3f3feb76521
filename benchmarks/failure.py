"""Failure scenario: 1 of 4 upstreams returns 503, then is hard-down — meshlib vs an Envoy sidecar.

Four upstreams on 127.0.0.1 (``_harness.flaky_upstreams``: one child
process, HTTP/1.1 keep-alive, ``200 ok``) and one Envoy in front of all four
run as child processes. Three variants make sequential, idempotent ``GET``
calls from one thread of this process:

* raw      — a plain ``requests.Session``, round-robin over the four upstream
             URLs by hand, no retries, no ejection: what the failure costs
             without any resilience
* meshlib  — ``mesh.requests_session()`` calling ``http://bench/``, with the
             retry policy and outlier detection of :data:`POLICY`
* envoy    — a plain ``requests.Session`` calling the Envoy sidecar, whose
             route and cluster carry the same policy (:func:`envoy_bootstrap`)

The run has three phases, back to back: (a) all four healthy, (b) upstream 0
answers every request with 503, (c) upstream 0 is hard-down (its listener is
closed, so connects are refused, and its open connections are closed). Each
phase is timed in slices: every slice runs each variant for the same wall
time, the order alternating from slice to slice, so all variants see the same
upstream state, the same ejection clock and the same machine noise. Nothing is
reset between phases: (c) starts with whatever ejection (b) left behind, as in
a real incident.

Per phase and variant the table shows the calls made, the share that returned
``200 ok`` to the caller, p50 / p99 / p99.9 / max latency over all calls
(failed ones included), the latency added to the same variant's healthy
phase, and the retries and ejections the variant's own counters report
(``mesh.stats()``; Envoy's admin ``/stats``).

Target: meshlib's success rate is at least 99.9% in every phase.

Run alone: ``python -m benchmarks.failure [--quick]``.
"""

from __future__ import annotations

import gc
import http.client
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import requests

import meshlib

from ._harness import LOOPBACK, FlakyUpstreams, envoy_from, flaky_upstreams, free_port, main_for, table, verdict

MIN_SUCCESS = 0.999  # meshlib, every phase

N_UPSTREAMS = 4
FAILING = 0  # index of the upstream that fails
VARIANTS = ("raw", "meshlib", "envoy")
PHASES = (
    ("a", "all healthy", "ok"),
    ("b", "1 of 4 returns 503", "503"),
    ("c", "that one hard-down", "down"),
)
CLIENT_TIMEOUT = 10.0  # seconds; nothing here should come close

# The policy both sides run, in meshlib's keys. Envoy's equivalents are in
# envoy_bootstrap(); values not listed are both sides' defaults (retry back-off
# 25 ms base, 250 ms cap; consecutive_gateway_failure not enforced;
# success-rate and failure-percentage detection need 5 hosts, so never run).
POLICY = {
    "lb_policy": "round_robin",
    "retry_on": "5xx,reset,connect-failure",
    "num_retries": 2,
    "connect_timeout": "1s",
    "timeout": "15s",  # Envoy's default route timeout
    "outlier_detection": True,
    "outlier_consecutive_5xx": 5,
    "outlier_interval": "1s",
    "outlier_base_ejection_time": "5s",
    "outlier_max_ejection_time": "300s",
    "outlier_max_ejection_percent": 50,
}


def envoy_bootstrap(listen_port: int, admin_port: int, upstream_ports: list[int]) -> dict:
    """One listener routing everything to one ROUND_ROBIN cluster of the
    upstreams, with :data:`POLICY`'s retries and outlier detection; an admin
    interface on 127.0.0.1 for the counters."""
    route = {
        "cluster": "upstream",
        "retry_policy": {
            "retry_on": POLICY["retry_on"],
            "num_retries": POLICY["num_retries"],
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
                }
            ],
            # meshlib, too, re-picks up to 3 times for a host not yet tried.
            "host_selection_retry_max_attempts": 3,
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ],
    }

    def addr(port: int) -> dict:
        return {"socket_address": {"address": LOOPBACK, "port_value": port}}

    return {
        "admin": {"address": addr(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": addr(listen_port),
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "lb_policy": "ROUND_ROBIN",
                    "connect_timeout": POLICY["connect_timeout"],
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(p)}} for p in upstream_ports]}],
                    },
                    "outlier_detection": {
                        "consecutive_5xx": POLICY["outlier_consecutive_5xx"],
                        "interval": POLICY["outlier_interval"],
                        "base_ejection_time": POLICY["outlier_base_ejection_time"],
                        "max_ejection_time": POLICY["outlier_max_ejection_time"],
                        "max_ejection_percent": POLICY["outlier_max_ejection_percent"],
                    },
                }
            ],
        },
    }


# -- counters -------------------------------------------------------------------------


def _envoy_counters(admin_port: int) -> dict[str, int]:
    conn = http.client.HTTPConnection(LOOPBACK, admin_port, timeout=5.0)
    try:
        conn.request("GET", "/stats?filter=^cluster%5C.upstream%5C.")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name.removeprefix("cluster.upstream.")] = int(value)
    return {
        "retries": out.get("upstream_rq_retry", 0),
        "ejections": out.get("outlier_detection.ejections_enforced_total", 0),
    }


def _mesh_counters(mesh: meshlib.Mesh) -> dict[str, int]:
    s = mesh.stats()["services"]["bench"]
    return {
        "retries": s["retries"],
        "ejections": s.get("outlier_detection", {}).get("ejections_enforced_total", 0),
        "budget_exhausted": s["retries_budget_exhausted"],
    }


# -- the load ---------------------------------------------------------------------------


@dataclass
class Samples:
    """One variant's calls in one phase."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.latencies)


def _caller(get: Callable[[], requests.Response]) -> Callable[[float, Samples], None]:
    """Sequential calls until ``until`` (perf_counter), booked into ``samples``."""
    clock = time.perf_counter

    def run(until: float, samples: Samples) -> None:
        lat = samples.latencies
        ok = 0
        t0 = clock()
        while t0 < until:
            try:
                r = get()
                good = r.status_code == 200 and r.content == b"ok"
                if not good:
                    key = str(r.status_code)
                    samples.errors[key] = samples.errors.get(key, 0) + 1
            except requests.RequestException as exc:
                good = False
                key = type(exc).__name__
                samples.errors[key] = samples.errors.get(key, 0) + 1
            t1 = clock()
            lat.append(t1 - t0)
            ok += good
            t0 = t1
        samples.ok += ok

    return run


def _check(name: str, get: Callable[[], requests.Response]) -> None:
    for _ in range(2 * N_UPSTREAMS):  # every upstream at least once, and warm
        r = get()
        if r.status_code != 200 or r.content != b"ok":
            raise RuntimeError(f"{name}: GET answered {r.status_code} {r.content[:80]!r}, expected 200 b'ok'")


@dataclass
class Run:
    phases: dict[str, dict[str, Samples]]
    durations: dict[str, float]
    slice_s: float
    events: list[str]
    upstream_counts: dict[str, list[dict]]


def measure(durations: dict[str, float], slice_s: float) -> Run:
    with flaky_upstreams(N_UPSTREAMS) as ups:
        admin = free_port()
        with envoy_from(lambda port: envoy_bootstrap(port, admin, ups.ports)) as sidecar:
            endpoints = ",".join(f"{LOOPBACK}:{p}" for p in ups.ports)
            mesh = meshlib.Mesh(config={**POLICY, "services": {"bench": {"endpoints": endpoints}}})
            try:
                return _phases(ups, mesh, sidecar, admin, durations, slice_s)
            finally:
                mesh.close()


def _phases(ups: FlakyUpstreams, mesh: meshlib.Mesh, sidecar: int, admin: int, durations: dict[str, float], slice_s: float) -> Run:
    raw_urls = itertools.cycle([f"http://{LOOPBACK}:{p}/" for p in ups.ports])
    raw_s, mesh_s, env_s = requests.Session(), mesh.requests_session(), requests.Session()
    env_url = f"http://{LOOPBACK}:{sidecar}/"
    gets: dict[str, Callable[[], requests.Response]] = {
        "raw": lambda: raw_s.get(next(raw_urls), timeout=CLIENT_TIMEOUT),
        "meshlib": lambda: mesh_s.get("http://bench/", timeout=CLIENT_TIMEOUT),
        "envoy": lambda: env_s.get(env_url, timeout=CLIENT_TIMEOUT),
    }
    for name, get in gets.items():
        _check(name, get)
    callers = {name: _caller(get) for name, get in gets.items()}
    counters: dict[str, Callable[[], dict[str, int]]] = {
        "raw": dict,
        "meshlib": lambda: _mesh_counters(mesh),
        "envoy": lambda: _envoy_counters(admin),
    }

    phases: dict[str, dict[str, Samples]] = {}
    upstream_counts: dict[str, list[dict]] = {}
    cluster = mesh.cluster("bench")
    seen_events = len(cluster.outlier.events) if cluster.outlier is not None else 0
    events: list[str] = []
    gc.collect()
    gc.freeze()
    try:
        r = 0
        for phase, _, mode in PHASES:
            before = {name: counters[name]() for name in VARIANTS}
            ups.set_mode(FAILING, mode)
            start_mono = time.monotonic()
            samples = {name: Samples() for name in VARIANTS}
            end = time.perf_counter() + durations[phase]
            while time.perf_counter() < end:
                for name in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
                    callers[name](min(end, time.perf_counter() + slice_s / len(VARIANTS)), samples[name])
                r += 1
            for name in VARIANTS:
                after = counters[name]()
                samples[name].counters = {k: after[k] - before[name].get(k, 0) for k in after}
            phases[phase] = samples
            upstream_counts[phase] = ups.counts()
            if cluster.outlier is not None:
                evs = cluster.outlier.events
                for t, key, what, reason in evs[seen_events:]:
                    events.append(f"{phase}+{t - start_mono:.1f}s {what} {key[0]}:{key[1]}" + (f" ({reason})" if what == "eject" else ""))
                seen_events = len(evs)
    finally:
        gc.unfreeze()
        for s in (raw_s, mesh_s, env_s):
            s.close()
    return Run(phases, durations, slice_s, events, upstream_counts)


# -- the report ---------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def _stats(s: Samples) -> dict[str, float]:
    xs = sorted(s.latencies)
    return {
        "success": s.ok / s.calls if s.calls else float("nan"),
        "p50": _pct(xs, 0.50),
        "p99": _pct(xs, 0.99),
        "p999": _pct(xs, 0.999),
        "max": xs[-1],
    }


def report(run: Run) -> tuple[str, str, bool]:
    """The results table, the ratio table, and whether every target passed."""
    stats = {(p, v): _stats(run.phases[p][v]) for p, _, _ in PHASES for v in VARIANTS}
    rows = []
    ok_all = True
    for phase, title, _ in PHASES:
        for v in VARIANTS:
            s, base, smp = stats[(phase, v)], stats[("a", v)], run.phases[phase][v]
            success = f"{s['success']:.3%}"
            if v == "meshlib":
                ok = s["success"] >= MIN_SUCCESS
                ok_all = ok_all and ok
                success += f" {verdict(ok)}"
            c = smp.counters
            rows.append(
                [
                    f"({phase}) {title}" if v == VARIANTS[0] else "",
                    v,
                    f"{smp.calls:,}",
                    success,
                    _us(s["p50"]),
                    _us(s["p99"]),
                    _us(s["p999"]),
                    _us(s["max"]),
                    "—" if phase == "a" else f"{(s['p50'] - base['p50']) * 1e6:+,.0f}",
                    "—" if phase == "a" else f"{(s['p99'] - base['p99']) * 1e6:+,.0f}",
                    str(c["retries"]) if "retries" in c else "—",
                    str(c["ejections"]) if "ejections" in c else "—",
                ]
            )
    headers = ["phase", "variant", "calls", "success (meshlib ≥99.9%)", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "+p50 µs", "+p99 µs", "retries", "ejections"]
    ratio_rows = []
    for phase, title, _ in PHASES:
        m, e, raw = stats[(phase, "meshlib")], stats[(phase, "envoy")], stats[(phase, "raw")]
        ratio_rows.append(
            [
                f"({phase}) {title}",
                f"{m['success']:.3%} / {e['success']:.3%}",
                f"{m['p50'] / e['p50']:.2f}",
                f"{m['p99'] / e['p99']:.2f}",
                f"{m['p999'] / e['p999']:.2f}",
                f"{m['p50'] / raw['p50']:.2f}",
            ]
        )
    ratio_headers = ["phase", "success meshlib / envoy", "p50 meshlib/envoy", "p99 meshlib/envoy", "p99.9 meshlib/envoy", "p50 meshlib/raw"]
    return table(headers, rows), table(ratio_headers, ratio_rows), ok_all


def run(quick: bool = False) -> bool:
    durations = {"a": 4.0, "b": 12.0, "c": 12.0} if quick else {"a": 15.0, "b": 50.0, "c": 50.0}
    slice_s = 0.6
    print(
        f"## Failure scenario (4 upstreams; phases of {durations['a']:g} s / {durations['b']:g} s / {durations['c']:g} s,"
        f" sliced {slice_s:g} s per round over the variants, sequential GETs, one thread)\n"
    )
    # meshlib logs each ejection as a warning; the events are printed below instead.
    quiet = logging.NullHandler()
    logging.getLogger("meshlib").addHandler(quiet)
    try:
        result = measure(durations, slice_s)
    finally:
        logging.getLogger("meshlib").removeHandler(quiet)
    text, ratios, ok = report(result)
    print(text)
    print()
    print(ratios)
    mesh_errors = {p: result.phases[p]["meshlib"].errors for p, _, _ in PHASES if result.phases[p]["meshlib"].errors}
    env_errors = {p: result.phases[p]["envoy"].errors for p, _, _ in PHASES if result.phases[p]["envoy"].errors}
    budget = {p: result.phases[p]["meshlib"].counters.get("budget_exhausted", 0) for p, _, _ in PHASES}
    print(
        "\nraw: plain requests, round-robin over the 4 upstream URLs, no retries; meshlib: mesh.requests_session() to"
        "\nhttp://bench/; envoy: plain requests through an Envoy sidecar (1 worker). meshlib and Envoy: round_robin,"
        f"\nretry_on {POLICY['retry_on']}, num_retries {POLICY['num_retries']}, previous-hosts, consecutive_5xx"
        f" {POLICY['outlier_consecutive_5xx']}, interval {POLICY['outlier_interval']},"
        f"\nbase_ejection_time {POLICY['outlier_base_ejection_time']}, max_ejection_percent {POLICY['outlier_max_ejection_percent']}."
        " Latencies over all calls, failed ones included;"
        "\n+p50/+p99: against the same variant's healthy phase. retries/ejections: the variant's own counters."
    )
    print(f"failed calls, meshlib: {mesh_errors or 'none'}; envoy: {env_errors or 'none'}; meshlib retries refused by the budget: {budget}")
    print("meshlib ejections: " + ("; ".join(result.events) or "none"))
    sent = {p: [c["503"] for c in counts] for p, counts in result.upstream_counts.items()}
    print(f"503s sent by upstream 0, cumulative after each phase (all variants): { {p: v[FAILING] for p, v in sent.items()} }\n")
    return ok


def main(argv: list[str] | None = None) -> int:
    return main_for(run, "python -m benchmarks.failure", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
