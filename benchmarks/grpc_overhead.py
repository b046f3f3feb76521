"""gRPC per-call overhead and streaming throughput: raw grpcio vs meshlib vs Envoy.

One grpcio upstream (``benchmarks/_grpc_upstream.py``, its own process) and
one Envoy in front of it (HTTP/2 to the upstream) run as child processes.
Four variants make sequential unary calls from one thread, each on its own
channel to the same upstream:

* raw         — ``grpc.insecure_channel("127.0.0.1:<upstream>")``
* meshlib     — ``mesh.grpc_channel("bench")``, ``bench`` a static service on
                the upstream (default config: peak_ewma, outlier detection)
* round_robin — grpcio's own balancing: ``grpc.insecure_channel("ipv4:127.0.0.1:<upstream>",
                options=[("grpc.lb_policy_name", "round_robin")])``
* envoy       — ``grpc.insecure_channel("127.0.0.1:<envoy>")``
* intercepted — ``grpc.intercept_channel(<a raw channel>, *mesh.grpc_interceptors("bench"))``:
                meshlib's policies on a channel of the caller's own (reported, no target)

All are timed in interleaved rounds (order alternating each round); added
times and ratios are taken within each round, then the median over rounds.

Streaming: a unary-stream call of 2,000 16-byte messages, raw vs meshlib,
also interleaved; messages per second.

Targets: meshlib adds at most 10% to the raw channel's time per unary call
and less than a fifth of what the Envoy hop adds; its streams run at 90% or
more of raw grpcio's messages per second.

Run alone: ``python -m benchmarks.grpc_overhead [--quick]``.
"""

from __future__ import annotations

import contextlib
import subprocess
import os
import sys
import time
from typing import Callable, Iterator

import grpc

import meshlib

from ._grpc_upstream import ECHO, STREAM
from ._harness import LOOPBACK, envoy, free_port, interleaved, main_for, median, serve_until, spread, table, verdict

MAX_OVERHEAD = 0.10  # meshlib-added / raw
MAX_ENVOY_SHARE = 0.20  # meshlib-added / envoy-added
MIN_STREAM_RATIO = 0.90  # meshlib messages/s / raw messages/s
STREAM_MESSAGES = 2000

VARIANTS = ("raw", "meshlib", "round_robin", "envoy", "intercepted")


def _wait_grpc(port: int, proc: subprocess.Popen, log_path: str, timeout: float = 20.0) -> None:
    """Poll a unary call on the port until it answers; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as ch:
        echo = ch.unary_unary(ECHO)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
            try:
                if echo(b"", timeout=1.0) == b"ok":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered gRPC on port {port} within {timeout}s (log: {log_path})")
            time.sleep(0.05)


@contextlib.contextmanager
def grpc_upstream() -> Iterator[int]:
    """The grpcio upstream in a child process; yields its port."""
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="meshlib-bench-grpc-") as d:
        # The child runs in a scratch directory: point it at this checkout.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        boot = f"import runpy, sys; sys.path.insert(0, {root!r}); runpy.run_module('benchmarks._grpc_upstream', run_name='__main__')"
        cmd = [sys.executable, "-c", boot, str(port)]
        with serve_until(cmd, d, lambda proc, log_path: _wait_grpc(port, proc, log_path)):
            yield port


def _unary_batch(call: Callable[[bytes], bytes], n: int) -> Callable[[], None]:
    def batch() -> None:
        for _ in range(n):
            call(b"hi")

    return batch


def _stream_batch(stream: Callable[[bytes], Iterator[bytes]], n: int) -> Callable[[], None]:
    count = str(STREAM_MESSAGES).encode()

    def batch() -> None:
        for _ in range(n):
            for _message in stream(count):
                pass

    return batch


def measure(rounds: int, calls: int, streams: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-call seconds of every round by variant, and per-stream seconds (raw, meshlib)."""
    with grpc_upstream() as upstream, envoy(upstream, http2=True, ready=_wait_grpc) as sidecar:
        mesh = meshlib.Mesh(config={"services": {"bench": {"endpoints": f"{LOOPBACK}:{upstream}"}}})
        channels = {
            "raw": grpc.insecure_channel(f"{LOOPBACK}:{upstream}"),
            "meshlib": mesh.grpc_channel("bench"),
            "round_robin": grpc.insecure_channel(f"ipv4:{LOOPBACK}:{upstream}", options=[("grpc.lb_policy_name", "round_robin")]),
            "envoy": grpc.insecure_channel(f"{LOOPBACK}:{sidecar}"),
            "intercepted": grpc.intercept_channel(grpc.insecure_channel(f"{LOOPBACK}:{upstream}"), *mesh.grpc_interceptors("bench")),
        }
        try:
            unary = {}
            for name, ch in channels.items():
                echo = ch.unary_unary(ECHO)
                answer = echo(b"hi")
                if answer != b"ok":
                    raise RuntimeError(f"{name} answered {answer!r}, expected b'ok'")
                unary[name] = _unary_batch(echo, calls)
            stream = {}
            for name in ("raw", "meshlib"):
                call = channels[name].unary_stream(STREAM)
                got = sum(1 for _ in call(str(STREAM_MESSAGES).encode()))
                if got != STREAM_MESSAGES:
                    raise RuntimeError(f"{name} stream gave {got} messages, expected {STREAM_MESSAGES}")
                stream[name] = _stream_batch(call, streams)
            return interleaved(unary, rounds=rounds, n=calls), interleaved(stream, rounds=rounds, n=streams)
        finally:
            for ch in channels.values():
                ch.close()
            mesh.close()


def report(unary: dict[str, list[float]], stream: dict[str, list[float]]) -> tuple[str, bool]:
    raw, mesh, rr, env, icp = (unary[v] for v in VARIANTS)
    overhead = median([m / r - 1 for m, r in zip(mesh, raw)])
    share = median([(m - r) / (e - r) for m, r, e in zip(mesh, raw, env)])
    ok_overhead, ok_share = overhead <= MAX_OVERHEAD, share < MAX_ENVOY_SHARE
    headers = [
        "raw µs",
        "meshlib µs",
        "round_robin µs",
        "envoy µs",
        "meshlib adds µs",
        "meshlib overhead (≤10%)",
        "round_robin adds µs",
        "envoy adds µs",
        "meshlib/envoy added (<0.20)",
        "interceptors adds µs",
        "round IQR",
    ]
    row = [
        f"{median(raw) * 1e6:.1f}",
        f"{median(mesh) * 1e6:.1f}",
        f"{median(rr) * 1e6:.1f}",
        f"{median(env) * 1e6:.1f}",
        f"{median([m - r for m, r in zip(mesh, raw)]) * 1e6:+.1f}",
        f"{overhead:+.1%} {verdict(ok_overhead)}",
        f"{median([x - r for x, r in zip(rr, raw)]) * 1e6:+.1f}",
        f"{median([e - r for e, r in zip(env, raw)]) * 1e6:+.1f}",
        f"{share:.2f} {verdict(ok_share)}",
        f"{median([i - r for i, r in zip(icp, raw)]) * 1e6:+.1f} ({median([i / r - 1 for i, r in zip(icp, raw)]):+.1%})",
        f"{max(spread(unary[v]) for v in VARIANTS):.0f}%",
    ]
    text = table(["unary call"] + headers, [["Echo"] + row])

    raw_s, mesh_s = stream["raw"], stream["meshlib"]
    ratio = median([r / m for r, m in zip(raw_s, mesh_s)])  # (msgs/s meshlib) / (msgs/s raw)
    ok_stream = ratio >= MIN_STREAM_RATIO
    stream_row = [
        f"{STREAM_MESSAGES / median(raw_s):,.0f}",
        f"{STREAM_MESSAGES / median(mesh_s):,.0f}",
        f"{ratio:.3f} {verdict(ok_stream)}",
        f"{max(spread(raw_s), spread(mesh_s)):.0f}%",
    ]
    text += "\n\n" + table(
        ["server stream", "raw msgs/s", "meshlib msgs/s", "meshlib/raw (≥0.90)", "round IQR"],
        [[f"{STREAM_MESSAGES} x 16 B"] + stream_row],
    )
    return text, ok_overhead and ok_share and ok_stream


def run(quick: bool = False) -> bool:
    rounds, calls, streams = (5, 200, 3) if quick else (25, 500, 10)
    print(f"## gRPC per-call overhead (median of {rounds} interleaved rounds x {calls} sequential unary calls, one thread)\n")
    text, ok = report(*measure(rounds, calls, streams))
    print(text)
    print(
        "\nraw: a plain grpcio channel to the upstream; meshlib: mesh.grpc_channel('bench') (peak_ewma) to the same upstream;"
        "\nround_robin: grpcio's own round_robin over an ipv4: target list; envoy: a plain channel through an Envoy"
        "\nsidecar (1 worker, HTTP/2 upstream); intercepted: a plain channel with mesh.grpc_interceptors('bench'). Streams: one unary-stream call per iteration, read to the end."
        "\nAdded µs, overhead and ratios: median over rounds of the value within each round.\n"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    return main_for(run, "python -m benchmarks.grpc_overhead", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
