"""Helpers for the registry tests: polling with deadlines, etcd authentication,
a cuttable TCP proxy, a traffic loop, and a subprocess that registers itself."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

import meshlib


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005, what: str = "condition") -> float:
    """Poll until ``predicate()`` is truthy; return the seconds it took. Fails the test at the deadline."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


def addresses(mesh: meshlib.Mesh, service: str) -> set[str]:
    if not mesh.is_mesh_service(service):
        return set()
    return {ep.address for ep in mesh.endpoints(service)}


def enable_etcd_auth(port: int, user: str, password: str) -> None:
    """Turn authentication on in the etcd on ``port``, with ``user`` as root."""
    import etcd3.etcdrpc as rpc
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        auth = rpc.AuthStub(channel)
        auth.UserAdd(rpc.AuthUserAddRequest(name=user, password=password))
        auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role="root"))
        auth.AuthEnable(rpc.AuthEnableRequest())
    finally:
        channel.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every connection
    and refuses new ones until ``restore()``. Lets a test take a registry away
    from one client while the registry itself stays up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._listener.close()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restore()

    def restore(self) -> None:
        self._stop.clear()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, name="test-tcp-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(socks, [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(2)

    def close(self) -> None:
        self.cut()


class Traffic:
    """Calls ``url`` through ``mesh.requests_session()`` from one thread until
    stopped; counts answers and failures."""

    def __init__(self, mesh: meshlib.Mesh, url: str) -> None:
        self.mesh = mesh
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-traffic", daemon=True)

    def _run(self) -> None:
        with self.mesh.requests_session() as session:
            while not self._stop.is_set():
                try:
                    resp = session.get(self.url, timeout=5)
                    if resp.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"HTTP {resp.status_code}")
                except Exception as exc:  # the count of failures is what the test asserts
                    self.failures.append(repr(exc))
                time.sleep(0.002)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


REGISTER_SCRIPT = """
import sys, time, meshlib
mesh = meshlib.Mesh(config={"discovery": sys.argv[1], "registry_ttl": sys.argv[2], "etcd_prefix": sys.argv[3]})
mesh.register(sys.argv[4], port=int(sys.argv[5]), address="127.0.0.1", instance_id=sys.argv[6])
print("registered", flush=True)
time.sleep(600)
"""


def registering_process(url: str, service: str, port: int, instance_id: str, *, ttl: str = "2s", prefix: str = "/meshlib/services") -> subprocess.Popen[str]:
    """A Python process that registers ``service`` and then just lives (until killed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLIB_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", REGISTER_SCRIPT, url, ttl, prefix, service, str(port), instance_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "registered":
        proc.kill()
        raise AssertionError(f"the registering process did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc
