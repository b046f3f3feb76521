"""``meshlib demo --registry etcd|consul``: agents register, leave and crash; a caller's mesh follows live.

The registry is local: a real etcd (the ``etcd`` binary) on free 127.0.0.1
ports, or the Consul HTTP API double bundled with meshlib
(``meshlib.testing.consul_double``, which implements the parts of Consul's
HTTP API meshlib uses; no Consul binary is needed, and the demo says so).
Each agent is an HTTP server with a Mesh of its own that registers the
service ``worker``; one agent runs in a separate process. A caller's Mesh
discovers ``worker`` from the registry and calls it from a few threads. The
script, as fractions of the run:

- 0%:  agent-1 and agent-2 register (agent-2 with ``model=large``);
- 20%: agent-3 registers: picked up without a restart;
- 40%: agent-1 deregisters (``Registration.close()``): no call reaches it after;
- 45%: agent-4, a separate process, registers;
- 60%: agent-4 is killed with SIGKILL: no goodbye, its entry goes when its TTL does;
  meanwhile refused connections are retried on other agents.

The summary says when each change was seen by the caller and what the calls did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, TextIO

import requests

from .._table import format_table
from ..errors import MeshError
from ..mesh import Mesh
from .summary import fill, fitted, wrap
from .view import LiveView, terminal_width

__all__ = ["run_registry_demo", "RegistryDemoResult"]

SERVICE = "worker"
TTL = "1s"

_AGENT_SCRIPT = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading, meshlib
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"agent": sys.argv[3]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
mesh = meshlib.Mesh(config={"discovery": sys.argv[1], "registry_ttl": sys.argv[2]})
mesh.register(sys.argv[4], port=server.server_address[1], address="127.0.0.1", instance_id=sys.argv[3], meta={"process": "separate"})
print(server.server_address[1], flush=True)
time.sleep(3600)
"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_AgentServer"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without NODELAY, Nagle and the
        # caller's delayed ACK add 40 ms to every keep-alive call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        body = json.dumps({"agent": self.server.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the demo shows what the caller saw."""


class _AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    name = ""


@dataclass
class AgentRecord:
    name: str
    port: int = 0
    registered_at: float | None = None
    seen_at: float | None = None  # when the caller's mesh listed it
    left_at: float | None = None  # deregistered or killed
    gone_at: float | None = None  # when the caller's mesh dropped it
    last_call_at: float | None = None
    calls: int = 0
    how_left: str = ""
    handle: Any = field(default=None, repr=False, compare=False)  # its Mesh, or its process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class RegistryDemoResult:
    registry: str
    duration: float
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    ok_calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    events: list[str] = field(default_factory=list)
    summary: str = ""
    interrupted: bool = False


class _Registry:
    """The local registry: a real etcd, or the Consul double."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "etcd":
            from ..testing.etcd_server import EtcdServer, etcd_binary

            if etcd_binary() is None:
                raise MeshError(
                    "the etcd demo runs a local etcd, and no `etcd` binary was found on PATH: install etcd "
                    "(Debian/Ubuntu: apt-get install etcd-server), or try `meshlib demo --registry consul`, "
                    "which runs against meshlib's bundled Consul API double and needs nothing else"
                )
            self._etcd = EtcdServer(name="meshlib-demo")
            self.url = self._etcd.url
            self.description = f"a local etcd ({self._etcd.url})"
        elif kind == "consul":
            from ..testing.consul_double import ConsulDouble

            self._consul = ConsulDouble()
            self.url = self._consul.url
            self.description = (
                f"meshlib's bundled Consul API double at {self._consul.url} (meshlib.testing.ConsulDouble: "
                "Consul's HTTP API as meshlib uses it, no Consul binary)"
            )
        else:
            raise ValueError(f"unknown registry {kind!r}: etcd or consul")

    def close(self) -> None:
        if self.kind == "etcd":
            self._etcd.close()
        else:
            self._consul.close()


def run_registry_demo(registry: str = "etcd", duration: float = 10.0, *, out: TextIO = sys.stdout, live: bool | None = None) -> RegistryDemoResult:
    result = RegistryDemoResult(registry=registry, duration=duration)
    view = LiveView.for_stream(out, live)
    reg = _Registry(registry)
    servers: list[_AgentServer] = []
    meshes: list[Mesh] = []
    procs: list[subprocess.Popen[str]] = []
    stop = threading.Event()
    lock = threading.Lock()
    origin = time.monotonic()

    def now() -> float:
        return time.monotonic() - origin

    def event(text: str) -> None:
        line = f"t={now():4.1f}s  {text}"
        with lock:
            result.events.append(line)

    def start_agent(name: str, **register: Any) -> None:
        server = _AgentServer(("127.0.0.1", 0), _Handler)
        server.name = name
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"demo-{name}", daemon=True).start()
        servers.append(server)
        rec = result.agents[name] = AgentRecord(name, server.server_address[1])
        mesh = Mesh(config={"discovery": reg.url, "registry_ttl": TTL})
        meshes.append(mesh)
        rec.registered_at = now()  # before the call: the caller may see the entry before it returns
        event(f"{name} registers {SERVICE} at {rec.address}" + (f" with {register}" if register else ""))
        mesh.register(SERVICE, port=rec.port, address="127.0.0.1", instance_id=name, **register)
        rec.handle = mesh

    def start_process_agent(name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLIB_")}
        proc = subprocess.Popen([sys.executable, "-c", _AGENT_SCRIPT, reg.url, TTL, name, SERVICE], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip() or 0)
        rec = result.agents[name] = AgentRecord(name, port)
        rec.registered_at = now()
        rec.handle = proc
        event(f"{name} (pid {proc.pid}) registered {SERVICE} at {rec.address}")

    def deregister(name: str) -> None:
        rec = result.agents[name]
        rec.handle.close()
        rec.left_at, rec.how_left = now(), "deregistered"
        event(f"{name} deregistered (Registration closed)")

    def kill(name: str) -> None:
        rec = result.agents[name]
        proc = rec.handle
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rec.left_at, rec.how_left = now(), "was killed"
        event(f"{name} killed with SIGKILL: no deregistration, its entry lasts until its {TTL} TTL runs out")

    caller = Mesh(config={"discovery": reg.url, "lb_policy": "round_robin", "services": {SERVICE: {}}})
    meshes.append(caller)

    def call_loop() -> None:
        with caller.requests_session() as session:
            while not stop.is_set():
                try:
                    name = session.get(f"http://{SERVICE}/", timeout=2).json()["agent"]
                except (requests.RequestException, ValueError, KeyError):
                    with lock:
                        result.failed_calls += 1
                    stop.wait(0.05)
                    continue
                with lock:
                    result.ok_calls += 1
                    rec = result.agents.get(name)
                    if rec is not None:
                        rec.calls += 1
                        rec.last_call_at = now()
                stop.wait(0.005)

    def watch() -> None:
        """Note when the caller's mesh starts and stops listing each agent."""
        while not stop.wait(0.01):
            listed = {ep.address for ep in caller.endpoints(SERVICE)}
            for rec in list(result.agents.values()):
                if rec.seen_at is None and rec.address in listed:
                    rec.seen_at = now()
                    event(f"caller's mesh picked up {rec.name} ({(rec.seen_at - (rec.registered_at or 0)) * 1000:.0f} ms after it registered)")
                if rec.seen_at is not None and rec.gone_at is None and rec.left_at is not None and rec.address not in listed:
                    rec.gone_at = now()
                    event(f"caller's mesh dropped {rec.name} ({rec.gone_at - rec.left_at:.2f}s after it {rec.how_left})")

    script: list[tuple[float, Callable[[], None]]] = [
        (0.20, lambda: start_agent("agent-3", tags=["gpu"])),
        (0.40, lambda: deregister("agent-1")),
        (0.45, lambda: start_process_agent("agent-4")),
        (0.60, lambda: kill("agent-4")),
    ]
    threads = [threading.Thread(target=call_loop, name=f"demo-caller-{i}", daemon=True) for i in range(2)]
    threads.append(threading.Thread(target=watch, name="demo-watch", daemon=True))
    try:
        event(f"{registry} registry: {reg.description}")
        start_agent("agent-1")
        start_agent("agent-2", meta={"model": "large"})
        for t in threads:
            t.start()
        next_draw = 0.0
        while now() < duration:
            while script and now() >= script[0][0] * duration:
                script.pop(0)[1]()
            if now() >= next_draw:
                _draw(view, result, caller, now())
                next_draw = now() + view.interval
            time.sleep(0.02)
        while script:  # a very short run still plays the whole script
            script.pop(0)[1]()
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        result.retries = caller.cluster(SERVICE).counters["retries"]
        for m in meshes:
            m.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s in servers:
            s.shutdown()
            s.server_close()
        reg.close()
        view.close()
    if view.mode != "off":
        out.write("\n")
    result.summary = _summary(result, terminal_width(out))
    out.write(result.summary)
    out.flush()
    return result


def _draw(view: LiveView, result: RegistryDemoResult, caller: Mesh, t: float) -> None:
    listed = {ep.address for ep in caller.endpoints(SERVICE)}
    rows, states = [], []
    for rec in result.agents.values():
        state = "listed" if rec.address in listed else ("gone" if rec.left_at is not None else "registering")
        rows.append((rec.name, rec.address, str(rec.calls), state))
        states.append("down" if state == "gone" else "up")
    table = format_table(("agent", "address", "calls", "in the caller's mesh"), rows, "<<><", width=view.width, optional=("address",))
    footer = [f"calls ok {result.ok_calls}, failed {result.failed_calls}", *result.events[-3:]]
    double = " (the bundled Consul API double)" if result.registry == "consul" else ""
    view.show(f"meshlib demo --registry {result.registry}{double}: t={t:4.1f}s", table, footer, states)


def _summary(r: RegistryDemoResult, width: int = 100) -> str:
    lines = wrap(f"meshlib demo summary: {r.registry} registry, {len(r.agents)} agents, service {SERVICE!r}, {r.duration:g}s", width)
    lines.append("")
    lines += [fill(e, width, "", "         ") for e in r.events]
    lines.append("")
    rows = []
    for rec in r.agents.values():
        seen = "-" if rec.seen_at is None or rec.registered_at is None else f"{(rec.seen_at - rec.registered_at) * 1000:.0f} ms"
        gone = "-" if rec.gone_at is None or rec.left_at is None else f"{rec.gone_at - rec.left_at:.2f} s"
        rows.append((rec.name, rec.how_left or "registered", str(rec.calls), seen, gone))
    lines += fitted(("agent", "state", "calls", "picked up after", "dropped after"), rows, "<<>>>", width)
    lines += [
        "",
        *wrap(f"Calls: {r.ok_calls} ok, {r.failed_calls} failed; {r.retries} failed attempts retried on another agent.", width),
        "",
    ]
    return "\n".join(lines)
