"""mTLS: meshlib's cost over the raw client on the same mutual-TLS server.

The upstream is a small asyncio HTTP/1.1 server in a child Python process
(keep-alive, TLS 1.3, client certificates required) that answers each request
with the serial of the client's certificate. Certificates come from a
throwaway SPIFFE CA (``meshlib.testing.spiffe_ca``); the server's SVID also
carries the DNS name ``bench``.

* **kept-alive:** time per call on a kept-alive connection. raw: urllib3's
  ``PoolManager`` (and httpx's ``Client``) with the same certificate,
  key and bundle, verifying ``bench``; meshlib: ``mesh.urllib3_pool()`` /
  ``mesh.httpx_client()`` calling ``http://bench/`` with ``TLS_MODE=mtls`` and
  ``TLS_SPIFFE_IDS`` (the SPIFFE ID checked inside the handshake). Target:
  meshlib adds at most 5%.
  The httpx row is repeated with telemetry off (``TRACING``, ``METRICS``,
  ``ACCESS_LOG`` off), reported, to show what the telemetry layer costs.
* **new connection:** the same with ``Connection: close`` (a full TLS
  handshake per call). Reported, with the ratio.
* **rotation:** new files are renamed over ``MESHLIB_TLS_CERT``/``KEY``;
  the time until the first new connection presents the new certificate (the
  server's answer carries the new serial), p50 and p99, with
  ``TLS_WATCH_INTERVAL`` 50ms. Target: p99 within two watch intervals plus
  one call.

Run alone: ``python -m benchmarks.mtls [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

import httpx
import urllib3

import meshlib
from meshlib.testing.spiffe_ca import SpiffeCA

from ._harness import free_port, interleaved, main_for, median, stop, table, verdict

MAX_OVERHEAD = 0.05
WATCH = 0.05

_SERVER = r'''
import asyncio, ssl, sys
cert, key, ca, port = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED

async def handle(reader, writer):
    der = writer.get_extra_info("ssl_object").getpeercert(True)
    from cryptography import x509
    body = format(x509.load_der_x509_certificate(der).serial_number, "x").encode()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            close = b"connection: close" in head.lower()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"Connection: close\r\n" if close else b"", body))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(port), ssl=ctx)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


def _upstream(cert: str, key: str, ca: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, cert, key, ca, str(port)], stdout=subprocess.PIPE, text=True)
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        stop(proc)
        raise RuntimeError("the mTLS upstream did not start")
    return proc, port


def _batch(call: Callable[[], object], n: int) -> Callable[[], None]:
    def batch() -> None:
        for _ in range(n):
            call()

    return batch


def _raw_context(files: tuple[str, str, str]) -> "object":
    import ssl

    ctx = ssl.create_default_context(cafile=files[2])
    ctx.load_cert_chain(files[0], files[1])
    return ctx


def run(quick: bool = False) -> bool:
    rounds, n = (5, 50) if quick else (15, 200)
    ca = SpiffeCA("example.org")
    d = tempfile.mkdtemp(prefix="meshlib-bench-mtls-")
    server_files = ca.issue("spiffe://example.org/bench", dns=["bench"]).write(os.path.join(d, "server"))
    client_files = ca.issue("spiffe://example.org/client").write(os.path.join(d, "client"))
    proc, port = _upstream(*server_files)
    config = {
        "tls_cert": client_files[0], "tls_key": client_files[1], "tls_ca": client_files[2], "tls_watch_interval": WATCH,
        "services": {"bench": {"endpoints": f"127.0.0.1:{port}", "tls_mode": "mtls", "tls_spiffe_ids": "spiffe://example.org/bench"}},
    }  # fmt: skip
    mesh = meshlib.Mesh(config=config)
    quiet = meshlib.Mesh(config={**config, "tracing": "off", "metrics": "off", "access_log": "off"})  # the same, telemetry off
    ok = True
    try:
        raw_ctx = _raw_context(client_files)
        raw_pool = urllib3.PoolManager(ssl_context=raw_ctx, server_hostname="bench", assert_hostname="bench", maxsize=4)
        raw_url = f"https://127.0.0.1:{port}/"
        mesh_pool = mesh.urllib3_pool()
        raw_httpx = httpx.Client(verify=raw_ctx)
        mesh_httpx = mesh.httpx_client()
        quiet_httpx = quiet.httpx_client()
        sni = {"sni_hostname": "bench"}
        close = {"Connection": "close"}
        calls = {
            "urllib3 raw": lambda: raw_pool.request("GET", raw_url).data,
            "urllib3 meshlib": lambda: mesh_pool.request("GET", "http://bench/").data,
            "httpx raw": lambda: raw_httpx.get(f"https://127.0.0.1:{port}/", extensions=sni).content,
            "httpx meshlib": lambda: mesh_httpx.get("http://bench/").content,
            "httpx meshlib, telemetry off": lambda: quiet_httpx.get("http://bench/").content,
        }
        fresh = {
            "urllib3 raw": lambda: raw_pool.request("GET", raw_url, headers=close).data,
            "urllib3 meshlib": lambda: mesh_pool.request("GET", "http://bench/", headers=close).data,
        }
        for name, call in {**calls}.items():
            if not call():
                raise RuntimeError(f"{name}: no answer")
        kept = interleaved({k: _batch(c, n) for k, c in calls.items()}, rounds, n)
        new = interleaved({k: _batch(c, max(5, n // 10)) for k, c in fresh.items()}, rounds, max(5, n // 10))
        rows = []
        for client in ("urllib3", "httpx"):
            raw, mine = kept[f"{client} raw"], kept[f"{client} meshlib"]
            ratio = median([m / r for m, r in zip(mine, raw)]) - 1
            good = ratio <= MAX_OVERHEAD
            ok = ok and good
            rows.append([f"{client}, kept-alive", f"{median(raw) * 1e6:.0f}", f"{median(mine) * 1e6:.0f}", f"{ratio:+.1%}", f"<= +{MAX_OVERHEAD:.0%}", verdict(good)])
        raw, mine = kept["httpx raw"], kept["httpx meshlib, telemetry off"]
        ratio = median([m / r for m, r in zip(mine, raw)]) - 1
        rows.append(["httpx, kept-alive, telemetry off", f"{median(raw) * 1e6:.0f}", f"{median(mine) * 1e6:.0f}", f"{ratio:+.1%}", "reported", ""])
        raw, mine = new["urllib3 raw"], new["urllib3 meshlib"]
        ratio = median([m / r for m, r in zip(mine, raw)]) - 1
        rows.append(["urllib3, new connection (handshake)", f"{median(raw) * 1e6:.0f}", f"{median(mine) * 1e6:.0f}", f"{ratio:+.1%}", "reported", ""])
        print("### mTLS: µs per call, raw client vs meshlib on the same mTLS server\n")
        print(table(["variant", "raw µs", "meshlib µs", "meshlib vs raw", "target", ""], rows))
        ok = _rotation(ca, client_files, mesh_pool, 5 if quick else 30) and ok
        raw_pool.clear()
        raw_httpx.close()
        mesh_httpx.close()
        quiet_httpx.close()
    finally:
        quiet.close()
        mesh.close()
        stop(proc)
        shutil.rmtree(d, ignore_errors=True)
    print()
    return ok


def _rotation(ca: SpiffeCA, files: tuple[str, str, str], pool: urllib3.PoolManager, times: int) -> bool:
    stem = files[0][: -len(".crt")]
    waits = []
    for _ in range(times):
        svid = ca.issue("spiffe://example.org/client")
        start = time.perf_counter()
        svid.write(stem)
        want = format(svid.serial, "x").encode()
        while pool.request("GET", "http://bench/", headers={"Connection": "close"}).data != want:
            if time.perf_counter() - start > 10:
                raise RuntimeError("the rotated certificate was never used")
        waits.append(time.perf_counter() - start)
    waits.sort()
    p50 = waits[len(waits) // 2]
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    bound = 2 * WATCH + 0.05
    good = p99 <= bound
    print(f"\n### rotation: file renamed -> first new connection with the new certificate ({times} rotations, TLS_WATCH_INTERVAL {WATCH * 1000:.0f}ms)\n")
    print(table(["p50 ms", "p99 ms", "target p99", ""], [[f"{p50 * 1000:.1f}", f"{p99 * 1000:.1f}", f"<= {bound * 1000:.0f} ms", verdict(good)]]))
    return good


if __name__ == "__main__":
    raise SystemExit(main_for(run, "python -m benchmarks.mtls", __doc__))
