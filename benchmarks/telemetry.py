"""Telemetry's cost per call: off vs on, side by side with the raw client.

One nginx upstream (``200 ok``, keep-alive) as a child process; requests
calls it from one thread, sequentially, in five variants timed in
interleaved rounds (see ``_harness.interleaved``):

* raw        — a plain ``requests.Session`` to nginx;
* off        — the mesh session, telemetry off (``tracing=off``,
               ``metrics=off``, ``access_log=off``);
* on         — propagation (meshlib's own W3C), metrics, and the access log at
               a 1% sample with ``logging`` configured (a handler that drops);
* on+spans   — the same plus OpenTelemetry spans on an SDK TracerProvider
               whose exporter drops everything (created in this run);
* raw+span   — the raw client, plus one span per call made by that SDK
               directly (the attributes of a CLIENT span, no meshlib): the
               floor any instrumentation with the application's SDK pays,
               shown beside the target ("telemetry adds" is over raw).

Every session has ``trust_env = False``: a default requests session reads the
environment's proxy variables per request and the mesh session does not (for
mesh URLs), which would make the raw client look slower than it is here.

Targets: telemetry on (with spans) adds at most 3% of the raw client's per-call
time; and, measured on meshlib's own machinery alone (``core.driver.run`` with
a canned answer, each call timed between two real calls), telemetry with spans
off adds at most 3 µs per call.

Run alone: ``python -m benchmarks.telemetry [--quick]``.
"""

from __future__ import annotations

import io
import logging
from time import perf_counter
from typing import Any, Callable

import requests

import meshlib
from meshlib import telemetry

from ._harness import LOOPBACK, interleaved, main_for, median, nginx, spread, table, verdict

MAX_SHARE = 0.03  # telemetry-added / raw
MAX_OWN_US = 3.0
VARIANTS = ("raw", "raw+span", "off", "on", "on+spans")
OFF = {"tracing": "off", "metrics": False, "access_log": False}
ON = {"tracing": "native", "access_log_sample": 0.01}
SPANS = {"tracing": "otel", "access_log_sample": 0.01}


def _spans_to_nowhere() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)


def _access_log_on() -> None:
    logger = logging.getLogger("meshlib.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(io.StringIO()))


def _session(session: requests.Session) -> requests.Session:
    session.trust_env = False
    return session


def _batch(session: requests.Session, url: str, n: int) -> Callable[[], None]:
    get = _session(session).get

    def batch() -> None:
        for _ in range(n):
            get(url).content

    return batch


def _span_batch(session: requests.Session, url: str, n: int) -> Callable[[], None]:
    """Raw calls, each with one SDK span as an instrumentation would make it."""
    from opentelemetry import trace

    tracer = trace.get_tracer("benchmarks.telemetry")
    get = _session(session).get
    client = trace.SpanKind.CLIENT
    attributes = {"http.request.method": "GET", "server.address": LOOPBACK, "server.port": 80, "url.full": url}

    def batch() -> None:
        for _ in range(n):
            span = tracer.start_span("GET", kind=client, attributes=attributes)
            status = get(url).status_code
            span.set_attribute("http.response.status_code", status)
            span.end()

    return batch


def _mesh(upstream: int, extra: dict[str, Any]) -> meshlib.Mesh:
    return meshlib.Mesh(config={**extra, "services": {"bench": {"endpoints": f"{LOOPBACK}:{upstream}"}}})


def measure(upstream: int, rounds: int, calls: int) -> dict[str, list[float]]:
    meshes = {"off": _mesh(upstream, OFF), "on": _mesh(upstream, ON), "on+spans": _mesh(upstream, SPANS)}
    try:
        url = f"http://{LOOPBACK}:{upstream}/"
        batches = {"raw": _batch(requests.Session(), url, calls), "raw+span": _span_batch(requests.Session(), url, calls)}
        for name, mesh in meshes.items():
            batches[name] = _batch(mesh.requests_session(), "http://bench/", calls)
        return interleaved(batches, rounds=rounds, n=calls)
    finally:
        for mesh in meshes.values():
            mesh.close()


def own_cost(upstream: int, calls: int) -> dict[str, float]:
    """Median seconds of meshlib's own per-call work (canned answer) per variant,
    each call timed alone right after a real call, variants interleaved."""
    import urllib3

    from meshlib.adapters.urllib3 import EXCHANGE
    from meshlib.core.driver import run as drive

    class Canned:
        status = 200
        headers: dict[str, str] = {}

    canned = Canned()
    meshes = {"off": _mesh(upstream, OFF), "on": _mesh(upstream, ON), "on+spans": _mesh(upstream, SPANS)}
    try:
        pool, url = urllib3.PoolManager(), f"http://{LOOPBACK}:{upstream}/"
        samples: dict[str, list[float]] = {name: [] for name in meshes}
        clusters = {name: m.cluster("bench") for name, m in meshes.items()}

        def send(endpoint: Any, limit: Any) -> Canned:
            telemetry.inject({}, endpoint)  # what the adapters do per attempt
            return canned

        for i in range(calls):
            for name in meshes if i % 2 == 0 else reversed(list(meshes)):
                cluster = clusters[name]
                pool.request("GET", url).data
                t = perf_counter()
                with telemetry.http_call(cluster, "GET", "http://bench/"):
                    drive(cluster.start_call(None, True), send, EXCHANGE)
                samples[name].append(perf_counter() - t)
        return {name: median(xs) for name, xs in samples.items()}
    finally:
        for mesh in meshes.values():
            mesh.close()


def run(quick: bool = False) -> bool:
    rounds, calls = (5, 200) if quick else (21, 400)
    _spans_to_nowhere()
    _access_log_on()
    print(f"## Telemetry cost per call (requests; median of {rounds} interleaved rounds x {calls} sequential calls, one thread)\n")
    with nginx() as upstream:
        samples = measure(upstream, rounds, calls)
        own = own_cost(upstream, 1000 if quick else 4000)
    raw = samples["raw"]
    rows = []
    ok = True
    for name in VARIANTS:
        xs = samples[name]
        base = raw if name == "raw+span" else samples["off"]  # the SDK's own span: over the raw client
        added = median([x - o for x, o in zip(xs, base)]) if name != "raw" else 0.0
        share = median([(x - o) / r for x, o, r in zip(xs, base, raw)]) if name != "raw" else 0.0
        vs_raw = median([x / r for x, r in zip(xs, raw)])
        cell = "" if name in ("raw", "off") else f"{share:+.2%} {'(the SDK alone)' if name == 'raw+span' else verdict(share <= MAX_SHARE)}"
        if name == "on+spans":
            ok = ok and share <= MAX_SHARE
        own_us = "" if name in ("raw", "raw+span") else f"{own[name] * 1e6:.2f}"
        own_added = "" if name in ("raw", "raw+span", "off") else f"{(own[name] - own['off']) * 1e6:+.2f}"
        if name == "on":
            ok = ok and (own[name] - own["off"]) * 1e6 <= MAX_OWN_US
            own_added += f" {verdict((own[name] - own['off']) * 1e6 <= MAX_OWN_US)}"
        rows.append([name, f"{median(xs) * 1e6:.1f}", f"{vs_raw:.3f}", f"{added * 1e6:+.1f}" if name != "raw" else "", cell, own_us, own_added, f"{spread(xs):.0f}%"])
    headers = ["variant", "µs/call", "x raw", "telemetry adds µs", "telemetry / raw (≤3%)", "own µs (canned)", "own adds µs (≤3 µs, spans off)", "round IQR"]
    print(table(headers, rows))
    print(
        "\nx raw, added µs and shares: medians over rounds of the within-round values (variants run back to back);"
        "\nraw+span: the raw client with one OpenTelemetry SDK span per call, no meshlib (added over raw)."
        "\nown µs: meshlib's call machinery alone (core.driver.run, canned answer, telemetry hooks as the adapters call them),"
        "\neach call timed between two real urllib3 calls; medians of 1 call samples, variants interleaved.\n"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    return main_for(run, "python -m benchmarks.telemetry", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
