"""What every benchmark shares: free ports, child processes, timing, tables.

Everything listens on 127.0.0.1 only. Child processes are registered so that
they are stopped on the way out, even when a benchmark fails halfway
(``try/finally`` in the callers, plus ``atexit`` here as a last resort).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator, Mapping, Sequence

import yaml

from meshlib.testing._process import dying_with_parent, terminate

LOOPBACK = "127.0.0.1"

# -- ports and processes ----------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


_children: list[subprocess.Popen] = []


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate one child (then kill it if it lingers) and forget it."""
    terminate(proc, timeout)
    if proc in _children:
        _children.remove(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_children):
        stop(proc)


def wait_http_ok(port: int, proc: subprocess.Popen, log_path: str, timeout: float = 20.0) -> None:
    """Poll ``GET /`` on the port until it answers 200; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=1.0)
            conn.request("GET", "/")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[0]} did not answer on port {port} within {timeout}s:\n{_tail(log_path)}")
        time.sleep(0.05)


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def serve(cmd: Sequence[str], port: int, workdir: str) -> Iterator[int]:
    """Run ``cmd`` (which listens on ``port``) until the block ends; yield the port."""
    with serve_until(cmd, workdir, lambda proc, log_path: wait_http_ok(port, proc, log_path)):
        yield port


@contextlib.contextmanager
def serve_until(cmd: Sequence[str], workdir: str, ready: Callable[[subprocess.Popen, str], None]) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` until the block ends, once ``ready(proc, log_path)`` returned
    (it raises if the child never gets ready); yield the process."""
    log_path = os.path.join(workdir, "stderr.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            dying_with_parent(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    _children.append(proc)
    try:
        ready(proc, log_path)
        yield proc
    finally:
        stop(proc)


def find_binary(name: str, *fallbacks: str) -> str:
    path = shutil.which(name) or next((p for p in fallbacks if os.access(p, os.X_OK)), None)
    if path is None:
        raise RuntimeError(f"{name} not found; run `bash scripts/setup.sh` (or `make setup`)")
    return path


# -- the upstream and the sidecar -------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx() -> Iterator[int]:
    """A single-process nginx answering ``200 ok`` on a free port; yields the port."""
    binary = find_binary("nginx", "/usr/sbin/nginx")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="meshlib-bench-nginx-") as d:
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=d, host=LOOPBACK, port=port))
        with serve([binary, "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")], port, d):
            yield port


def envoy_bootstrap(listen_port: int, upstream_port: int) -> dict:
    """Static bootstrap: no admin, one HTTP listener routing everything to one STATIC cluster."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": LOOPBACK, "port_value": listen_port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": LOOPBACK, "port_value": upstream_port}}}}]}
                        ],
                    },
                }
            ],
        }
    }


@contextlib.contextmanager
def envoy(upstream_port: int, *, http2: bool = False, ready: Callable[[int, subprocess.Popen, str], None] | None = None) -> Iterator[int]:
    """An Envoy sidecar (one worker thread) in front of 127.0.0.1:upstream_port; yields its port.

    ``http2``: the upstream speaks HTTP/2 (gRPC); the listener takes HTTP/1.1
    and HTTP/2 either way. ``ready(port, proc, log_path)`` waits until the
    sidecar answers (default: ``GET /`` gets 200)."""
    binary = find_binary("envoy")
    port = free_port()
    bootstrap = envoy_bootstrap(port, upstream_port)
    if http2:
        (cluster,) = bootstrap["static_resources"]["clusters"]
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    wait = ready or (lambda p, proc, log_path: wait_http_ok(p, proc, log_path))
    with tempfile.TemporaryDirectory(prefix="meshlib-bench-envoy-") as d:
        conf = os.path.join(d, "envoy.yaml")
        with open(conf, "w") as f:
            yaml.safe_dump(bootstrap, f, sort_keys=False)
        cmd = [binary, "-c", conf, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]
        with serve_until(cmd, d, lambda proc, log_path: wait(port, proc, log_path)):
            yield port


# -- upstreams that fail on cue, and an Envoy with any bootstrap ---------------------

# Runs in its own process (so the upstreams do not compete with the client for
# the GIL): ``python flaky_upstreams.py CONTROL_PORT PORT...``. Every upstream
# answers HTTP/1.1 keep-alive requests with ``200 ok`` ("ok"), ``503
# unavailable`` ("503"), or is hard-down ("down": listener closed, so a connect
# is refused, and its open connections closed, as when its process dies).
# The control port takes ``GET /`` (readiness), ``GET /mode/<index>/<mode>``
# and ``GET /counts`` (JSON: responses sent per upstream, by status).
FLAKY_UPSTREAMS_PY = r"""
import asyncio, json, sys

HOST = "127.0.0.1"
RESPONSES = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    "503": b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nunavailable",
}


class Conn(asyncio.Protocol):
    def __init__(self, owner):
        self.owner, self.buf, self.transport = owner, b"", None

    def connection_made(self, transport):
        self.transport = transport
        self.owner.conns.add(transport)

    def connection_lost(self, exc):
        self.owner.conns.discard(self.transport)

    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.transport.write(self.owner.respond(head))
            if b"\nconnection: close" in head.lower():
                self.transport.close()
                return


class Upstream:
    def __init__(self, port):
        self.port, self.mode, self.server, self.conns = port, "ok", None, set()
        self.counts = {"200": 0, "503": 0}

    def respond(self, head):
        status = "200" if self.mode == "ok" else "503"
        self.counts[status] += 1
        return RESPONSES[self.mode]

    async def set_mode(self, mode):
        if mode == "down":
            if self.server is not None:
                self.server.close()  # no listener: connects are refused
                self.server = None
            for t in list(self.conns):
                t.close()
        elif self.server is None:
            self.server = await asyncio.get_running_loop().create_server(lambda: Conn(self), HOST, self.port, reuse_address=True, backlog=1024)
        self.mode = mode if mode != "down" else self.mode


class Control:
    def __init__(self, ups):
        self.ups, self.conns = ups, set()

    def respond(self, head):
        path = head.split(b" ", 2)[1].decode()
        parts = path.strip("/").split("/")
        body = b"ok"
        if parts[0] == "mode":
            asyncio.get_running_loop().create_task(self.ups[int(parts[1])].set_mode(parts[2]))
        elif parts[0] == "counts":
            body = json.dumps([dict(u.counts, mode=u.mode if u.server else "down") for u in self.ups]).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def main():
    control_port, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
    ups = [Upstream(p) for p in ports]
    for u in ups:
        await u.set_mode("ok")
    control = Control(ups)
    await asyncio.get_running_loop().create_server(lambda: Conn(control), HOST, control_port, reuse_address=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


class FlakyUpstreams:
    """Handle on the upstreams of :func:`flaky_upstreams`."""

    def __init__(self, ports: list[int], control_port: int) -> None:
        self.ports = ports
        self.control_port = control_port

    def _get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection(LOOPBACK, self.control_port, timeout=5.0)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"upstream control GET {path} answered {response.status}")
            return body
        finally:
            conn.close()

    def set_mode(self, index: int, mode: str) -> None:
        """``"ok"``, ``"503"`` or ``"down"`` for upstream ``index``; returns once in effect."""
        if mode not in ("ok", "503", "down"):
            raise ValueError(mode)
        self._get(f"/mode/{index}/{mode}")
        # The switch runs as a task in the child: wait until it reports it.
        deadline = time.monotonic() + 5.0
        while self.counts()[index]["mode"] != mode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"upstream {index} did not switch to {mode}")
            time.sleep(0.005)

    def counts(self) -> list[dict]:
        """Per upstream: responses sent by status (``"200"``, ``"503"``) and its ``"mode"``."""
        import json

        return json.loads(self._get("/counts"))


@contextlib.contextmanager
def flaky_upstreams(n: int) -> Iterator[FlakyUpstreams]:
    """``n`` HTTP upstreams on free ports, in one child process, that can be
    switched to 503 or hard-down (connection refused) on cue."""
    ports = [free_port() for _ in range(n)]
    control = free_port()
    with tempfile.TemporaryDirectory(prefix="meshlib-bench-upstreams-") as d:
        script = os.path.join(d, "flaky_upstreams.py")
        with open(script, "w") as f:
            f.write(FLAKY_UPSTREAMS_PY)
        cmd = [sys.executable, script, str(control), *map(str, ports)]
        with serve(cmd, control, d):
            yield FlakyUpstreams(ports, control)


@contextlib.contextmanager
def envoy_from(bootstrap: Callable[[int], dict]) -> Iterator[int]:
    """An Envoy (one worker thread) running ``bootstrap(listen_port)``; yields
    the listen port once ``GET /`` through it answers 200."""
    binary = find_binary("envoy")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="meshlib-bench-envoy-") as d:
        conf = os.path.join(d, "envoy.yaml")
        with open(conf, "w") as f:
            yaml.safe_dump(bootstrap(port), f, sort_keys=False)
        cmd = [binary, "-c", conf, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]
        with serve(cmd, port, d):
            yield port


# -- timing -----------------------------------------------------------------------


def time_batch(batch: Callable[[], object], n: int, timer: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per iteration of ``batch()``, which runs ``n`` iterations."""
    gc.collect()
    t0 = timer()
    batch()
    return (timer() - t0) / n


def interleaved(batches: Mapping[str, Callable[[], object]], rounds: int, n: int, timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time every batch (of ``n`` iterations) once per round, ``rounds`` times.

    Each batch first runs once untimed (warm-up). Each round runs all batches
    back to back, alternating forward and reverse order, so slow drifts of a
    noisy machine hit every variant alike and same-round values can be
    compared pairwise. Returns per-iteration seconds, one per round, by name.
    ``timer``: ``time.thread_time`` counts only this thread's CPU time, which
    other processes on a busy machine disturb far less than wall time.
    """
    names = list(batches)
    for name in names:
        batches[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    # Set-up objects (clusters, sessions) go to the permanent generation, so
    # the collection before each batch costs little and the same every time.
    gc.collect()
    gc.freeze()
    try:
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                samples[name].append(time_batch(batches[name], n, timer))
    finally:
        gc.unfreeze()
    return samples


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> float:
    """Interquartile range relative to the median, in percent: how noisy the rounds were."""
    if len(xs) < 4:
        return 100.0 * (max(xs) - min(xs)) / statistics.median(xs)
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return 100.0 * (q3 - q1) / statistics.median(xs)


# -- output -----------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown pipe table, aligned so it also reads well in a terminal."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def main_for(run: Callable[..., object], prog: str, doc: str | None, argv: list[str] | None = None) -> int:
    """The command line every benchmark module shares: ``--quick`` for a short, rough run."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="a short, rough run")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0
