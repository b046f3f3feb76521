"""Per-call overhead: raw client vs meshlib vs an Envoy sidecar hop, same nginx.

One nginx upstream (``200 ok``, keep-alive) and one Envoy in front of it run as
child processes. For requests and for urllib3, three variants call the same
nginx from one thread, sequentially:

* raw      — the plain client, ``http://127.0.0.1:<nginx>/``
* meshlib  — the client from ``mesh.requests_session()`` / ``mesh.urllib3_pool()``,
             ``http://bench/`` with ``bench`` a static service on nginx
             (default config: peak_ewma)
* envoy    — the plain client, ``http://127.0.0.1:<envoy>/``

A third row repeats requests with ``trust_env = False`` on every session:
a default Session reads the proxy variables of the environment on each
request, which the mesh session skips for mesh URLs (it never proxies them),
so that row compares the two with the same work left to requests.

All nine variants are timed in interleaved rounds (order alternating each
round); the table shows the median µs per call over the rounds, and the
median of the per-round differences and ratios (paired within a round, so
that slow drifts of a noisy machine cancel).

Targets: meshlib adds at most 5% to the raw client's time per call, and less
than a fifth of what the Envoy hop adds.

meshlib's adapters also skip work the raw clients do on every request (parsing
the URL again and rebuilding urllib3's pool key), so the end-to-end figure is
net of that saving. To show what the resilience stack costs on its own, a
second measurement times meshlib's per-call decisions alone (``core.driver.run``
with the default stack and a send that returns a canned response: admission,
deadline, budget deposit, pick, thresholds, host and outlier bookkeeping),
each call timed between two real urllib3 calls so that caches are as cold as
in real use, and prints it against the raw clients' time per call.

Run alone: ``python -m benchmarks.overhead [--quick]``.
"""

from __future__ import annotations

from typing import Callable

import requests
import urllib3

import meshlib

from ._harness import LOOPBACK, main_for, envoy, interleaved, median, nginx, spread, table, verdict

MAX_OVERHEAD = 0.05  # meshlib-added / raw
MAX_ENVOY_SHARE = 0.20  # meshlib-added / envoy-added

#: "requests, no env": both sessions with ``trust_env = False``. A default
#: Session reads the proxy variables of the environment on every request
#: (tens of µs); the mesh session skips that for mesh URLs, which it never
#: proxies. This row compares the two with the same work left to requests.
NO_ENV = "requests, no env"
CLIENTS = ("requests", NO_ENV, "urllib3")
VARIANTS = ("raw", "meshlib", "envoy")


def _requests_batch(session: requests.Session, url: str, n: int) -> Callable[[], None]:
    get = session.get

    def batch() -> None:
        for _ in range(n):
            get(url).content

    return batch


def _urllib3_batch(pool: urllib3.PoolManager, url: str, n: int) -> Callable[[], None]:
    request = pool.request

    def batch() -> None:
        for _ in range(n):
            request("GET", url).data

    return batch


def _no_env(session: requests.Session) -> requests.Session:
    session.trust_env = False
    return session


def _check(client: str, session: object, url: str) -> None:
    """One call first: every variant must really reach nginx and get its ``ok``."""
    if client.startswith("requests"):
        r = session.get(url)  # type: ignore[attr-defined]
        status, body = r.status_code, r.content
    else:
        r = session.request("GET", url)  # type: ignore[attr-defined]
        status, body = r.status, r.data
    if status != 200 or body != b"ok":
        raise RuntimeError(f"{client} GET {url} answered {status} {body[:80]!r}, expected 200 b'ok'")


def measure(rounds: int, calls: int) -> dict[tuple[str, str], list[float]]:
    """Per-call seconds of every round, keyed by (client, variant)."""
    with nginx() as upstream, envoy(upstream) as sidecar:
        mesh = meshlib.Mesh(config={"services": {"bench": {"endpoints": f"{LOOPBACK}:{upstream}"}}})
        try:
            direct = f"http://{LOOPBACK}:{upstream}/"
            via_envoy = f"http://{LOOPBACK}:{sidecar}/"
            clients = {
                ("requests", "raw"): (requests.Session(), direct),
                ("requests", "meshlib"): (mesh.requests_session(), "http://bench/"),
                ("requests", "envoy"): (requests.Session(), via_envoy),
                (NO_ENV, "raw"): (_no_env(requests.Session()), direct),
                (NO_ENV, "meshlib"): (_no_env(mesh.requests_session()), "http://bench/"),
                (NO_ENV, "envoy"): (_no_env(requests.Session()), via_envoy),
                ("urllib3", "raw"): (urllib3.PoolManager(), direct),
                ("urllib3", "meshlib"): (mesh.urllib3_pool(), "http://bench/"),
                ("urllib3", "envoy"): (urllib3.PoolManager(), via_envoy),
            }
            batches = {}
            for (client, variant), (session, url) in clients.items():
                _check(client, session, url)
                make = _requests_batch if client.startswith("requests") else _urllib3_batch
                batches[(client, variant)] = make(session, url, calls)  # type: ignore[arg-type]
            return interleaved(batches, rounds=rounds, n=calls)
        finally:
            mesh.close()


def decisions(calls: int = 3000) -> float:
    """Seconds of meshlib's per-call decisions (default stack, canned
    response), each call timed alone right after a real urllib3 call."""
    from time import perf_counter

    from meshlib.core.driver import run as drive
    from meshlib.adapters.urllib3 import EXCHANGE

    class Canned:
        status = 200
        headers: dict[str, str] = {}

    canned = Canned()

    def send(endpoint: object, limit: object) -> Canned:
        return canned

    with nginx() as upstream:
        mesh = meshlib.Mesh(config={"services": {"bench": {"endpoints": f"{LOOPBACK}:{upstream}"}}})
        try:
            cluster = mesh.cluster("bench")
            pool, url = urllib3.PoolManager(), f"http://{LOOPBACK}:{upstream}/"
            samples = []
            for _ in range(calls):
                pool.request("GET", url).data
                t = perf_counter()
                drive(cluster.start_call(None, "GET"), send, EXCHANGE)
                samples.append(perf_counter() - t)
            return median(samples)
        finally:
            mesh.close()


def _paired(samples: dict[tuple[str, str], list[float]], client: str) -> dict[str, float]:
    """Medians over rounds; differences and ratios are taken within each round
    (whose variants ran back to back) before the median, which cancels the
    slow drifts of a noisy machine."""
    raw, mesh, env = (samples[(client, v)] for v in VARIANTS)
    return {
        "raw": median(raw) * 1e6,
        "meshlib": median(mesh) * 1e6,
        "envoy": median(env) * 1e6,
        "mesh_added": median([m - r for m, r in zip(mesh, raw)]) * 1e6,
        "envoy_added": median([e - r for e, r in zip(env, raw)]) * 1e6,
        "overhead": median([m / r - 1 for m, r in zip(mesh, raw)]),
        "share": median([(m - r) / (e - r) for m, r, e in zip(mesh, raw, env)]),
        "noise": max(spread(samples[(client, v)]) for v in VARIANTS),
    }


def report(samples: dict[tuple[str, str], list[float]]) -> tuple[str, bool]:
    """The results table and whether every target passed."""
    rows = []
    all_ok = True
    for client in CLIENTS:
        p = _paired(samples, client)
        ok_overhead, ok_share = p["overhead"] <= MAX_OVERHEAD, p["share"] < MAX_ENVOY_SHARE
        all_ok = all_ok and ok_overhead and ok_share
        rows.append(
            [
                client,
                f"{p['raw']:.1f}",
                f"{p['meshlib']:.1f}",
                f"{p['envoy']:.1f}",
                f"{p['mesh_added']:+.1f}",
                f"{p['overhead']:+.1%} {verdict(ok_overhead)}",
                f"{p['envoy_added']:+.1f}",
                f"{p['share']:.2f} {verdict(ok_share)}",
                f"{p['noise']:.0f}%",
            ]
        )
    headers = [
        "client",
        "raw µs",
        "meshlib µs",
        "envoy µs",
        "meshlib adds µs",
        "meshlib overhead (≤5%)",
        "envoy adds µs",
        "meshlib/envoy added (<0.20)",
        "round IQR",
    ]
    return table(headers, rows), all_ok


def run(quick: bool = False) -> bool:
    rounds, calls = (5, 200) if quick else (25, 500)
    print(f"## Per-call overhead (median of {rounds} interleaved rounds x {calls} sequential calls, one thread)\n")
    samples = measure(rounds, calls)
    text, ok = report(samples)
    print(text)
    own = decisions(1000 if quick else 3000)
    raws = ", ".join(f"{own / median(samples[(c, 'raw')]):.1%} of a raw {c} call" for c in CLIENTS)
    print(f"\nmeshlib's per-call decisions alone (default resilience stack, timed between real calls): {own * 1e6:.1f} µs = {raws}.")
    print(
        "\nraw: plain client to nginx; meshlib: http://bench/ through the mesh client (peak_ewma) to the same nginx;"
        "\nenvoy: plain client through an Envoy sidecar (1 worker) to the same nginx."
        "\nµs columns: median over rounds. Added µs, overhead and ratio: median over rounds of the value within"
        "\neach round (variants run back to back). round IQR: largest interquartile range of a variant's rounds,"
        "\nrelative to its median (how noisy the machine was).\n"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    return main_for(run, "python -m benchmarks.overhead", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
