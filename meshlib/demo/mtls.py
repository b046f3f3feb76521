"""``meshlib demo --mtls``: two agents talking over mutual TLS with SPIFFE IDs.

Everything is local: a throwaway SPIFFE CA (``meshlib.testing.spiffe_ca``)
for the trust domain ``example.org`` issues X.509-SVIDs into a temporary
directory. Two ``inventory`` agents (HTTPS servers from
``mesh.server_ssl_context()``, allowing only the planner) answer with the
caller's SPIFFE ID and certificate serial. The ``planner`` calls
``http://inventory/stock`` from a few threads through a Mesh with
``TLS_MODE=mtls``: the URL stays ``http://``, the mesh carries it over mTLS.
The script, as fractions of the run:

- 40%: the planner's certificate is rotated (new files renamed over the old):
  new connections present the new serial, no call fails;
- 65%: an impostor: the ``billing`` service's endpoint presents
  ``spiffe://example.org/impostor`` instead of ``spiffe://example.org/billing``;
  the planner refuses it inside the handshake, nothing is sent;
- 80%: an intruder workload (``spiffe://example.org/intruder``) calls
  inventory and gets 403 from the allow-list.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from .._table import format_table
from ..mesh import Mesh
from ..security import peer_identity
from ..testing.spiffe_ca import SpiffeCA
from .view import LiveView

__all__ = ["run_mtls_demo", "MtlsDemoResult"]

TD = "example.org"
PLANNER = f"spiffe://{TD}/planner"
INVENTORY = f"spiffe://{TD}/inventory"


@dataclass
class MtlsDemoResult:
    calls: int = 0
    failures: int = 0
    serials_before: set[str] = field(default_factory=set)
    serials_after: set[str] = field(default_factory=set)
    impostor_error: str = ""
    intruder_status: int | None = None
    interrupted: bool = False
    lines: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Agent"

    def do_GET(self) -> None:
        caller = peer_identity(self)
        der = self.connection.getpeercert(True)
        agent = self.server
        if not agent.allow.allows(caller):
            body = b"forbidden\n"
            self.send_response(403)
        else:
            from cryptography import x509

            serial = format(x509.load_der_x509_certificate(der).serial_number, "x") if der else "-"
            with agent.lock:
                agent.calls += 1
                agent.callers[caller or "-"] = serial
            body = json.dumps({"agent": agent.name, "caller": caller, "serial": serial}).encode()
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


class _Agent(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str, mesh: Mesh) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.socket = mesh.server_ssl_context().wrap_socket(self.socket, server_side=True)
        self.name = name
        self.mesh = mesh
        self.allow = mesh.allowed_callers()
        self.lock = threading.Lock()
        self.calls = 0
        self.callers: dict[str, str] = {}
        self.address = f"127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.mesh.close()


def _identity(ca: SpiffeCA, workdir: str, name: str, **extra: Any) -> dict[str, Any]:
    cert, key, bundle = ca.issue(f"spiffe://{TD}/{name}", dns=[name]).write(f"{workdir}/{name}")
    return {"tls_cert": cert, "tls_key": key, "tls_ca": bundle, **extra}


def run_mtls_demo(duration: float = 10.0, *, out: TextIO, live: bool | None = None, concurrency: int = 3) -> MtlsDemoResult:
    """Run the story above for ``duration`` seconds; print the live view and a summary."""
    result = MtlsDemoResult()
    workdir = tempfile.mkdtemp(prefix="meshlib-demo-mtls-")
    ca = SpiffeCA(TD)
    agents = [_Agent(f"inventory-{i}", Mesh(config=_identity(ca, workdir, "inventory", allowed_callers=PLANNER))) for i in (1, 2)]
    impostor = _Agent("billing?", Mesh(config=_identity(ca, workdir, "impostor")))
    services = {
        "inventory": {"endpoints": ",".join(a.address for a in agents), "tls_mode": "mtls", "tls_spiffe_ids": INVENTORY},
        "billing": {"endpoints": impostor.address, "tls_mode": "mtls", "tls_spiffe_ids": f"spiffe://{TD}/billing"},
    }
    planner = Mesh(config={**_identity(ca, workdir, "planner", tls_watch_interval="100ms"), "services": services})
    view = LiveView.for_stream(out, live)
    stop = threading.Event()
    lock = threading.Lock()
    rotated = threading.Event()

    def traffic() -> None:
        session = planner.requests_session()
        while not stop.is_set():
            try:
                answer = session.get("http://inventory/stock", timeout=5).json()
                with lock:
                    result.calls += 1
                    (result.serials_after if rotated.is_set() else result.serials_before).add(answer["serial"])
            except Exception:  # noqa: BLE001 - the demo counts every failed call
                with lock:
                    result.failures += 1
            time.sleep(0.01)
        session.close()

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(concurrency)]
    start = time.monotonic()
    events: list[str] = []
    try:
        for t in threads:
            t.start()
        step = 0
        while (elapsed := time.monotonic() - start) < duration:
            frac = elapsed / duration
            if step == 0 and frac >= 0.4:
                step = 1
                ca.issue(PLANNER, dns=["planner"]).write(f"{workdir}/planner")
                rotated.set()
                events.append(f"{elapsed:4.1f}s  planner certificate rotated (files renamed); new connections use it")
            if step == 1 and frac >= 0.65:
                step = 2
                result.impostor_error = _impostor(planner)
                events.append(f"{elapsed:4.1f}s  impostor refused: {result.impostor_error}")
            if step == 2 and frac >= 0.8:
                step = 3
                result.intruder_status = _intruder(ca, workdir, agents)
                events.append(f"{elapsed:4.1f}s  intruder spiffe://{TD}/intruder -> inventory: HTTP {result.intruder_status}")
            view.show(*_frame(planner, agents, result, events, elapsed, duration, lock))
            time.sleep(view.interval if view.interval != float("inf") else 0.1)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        title, table, footer, _ = _frame(planner, agents, result, events, time.monotonic() - start, duration, lock)
        view.close()
        result.lines = [title, *table, *footer]
        out.write("\n".join(["", *result.lines, *_summary(result)]) + "\n")
        out.flush()
        planner.close()
        for a in [*agents, impostor]:
            a.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _impostor(planner: Mesh) -> str:
    try:
        planner.requests_session().get("http://billing/charge", timeout=5)
    except Exception as exc:  # noqa: BLE001 - what the caller sees
        cause: BaseException | None = exc
        while cause is not None:
            if type(cause).__name__ == "PeerIdentityError":
                return str(cause).split(";")[0]
            cause = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
        return type(exc).__name__
    return "NOT REFUSED"


def _intruder(ca: SpiffeCA, workdir: str, agents: list[_Agent]) -> int:
    cfg = {**_identity(ca, workdir, "intruder"),
           "services": {"inventory": {"endpoints": agents[0].address, "tls_mode": "mtls", "tls_spiffe_ids": INVENTORY}}}  # fmt: skip
    with Mesh(config=cfg) as intruder:
        return intruder.requests_session().get("http://inventory/stock", timeout=5).status_code


def _frame(planner: Mesh, agents: list[_Agent], result: MtlsDemoResult, events: list[str], elapsed: float, duration: float, lock: threading.Lock) -> tuple[str, list[str], list[str], list[str]]:
    tls = planner.stats().get("tls", {})
    title = f"meshlib demo --mtls  {min(elapsed, duration):4.1f}s / {duration:.0f}s   planner is {tls.get('spiffe_id')} (serial {str(tls.get('serial'))[:12]}, rotations {tls.get('rotations', 0)})"
    rows = []
    for a in agents:
        with a.lock:
            callers = dict(a.callers)
            calls = a.calls
        serials = ", ".join(s[:12] for s in callers.values()) or "-"
        rows.append((a.name, a.address, INVENTORY, str(calls), ", ".join(callers) or "-", serials))
    table = format_table(("agent", "address", "presents", "calls", "callers seen", "caller serial (last)"), rows, "<<<><<")
    with lock:
        footer = [f"planner -> http://inventory/stock over mTLS: {result.calls} calls, {result.failures} failed", *events]
    return title, table, footer, ["ok"] * len(rows)


def _summary(result: MtlsDemoResult) -> list[str]:
    new_used = bool(result.serials_after - result.serials_before)
    return [
        "",
        f"calls: {result.calls}, failed: {result.failures}",
        f"rotation: {'new connections used the new certificate' if new_used else 'not reached'}",
        f"impostor: {result.impostor_error or 'not reached'}",
        f"intruder: {'HTTP ' + str(result.intruder_status) if result.intruder_status is not None else 'not reached'}",
    ]
