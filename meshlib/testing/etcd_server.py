"""A real single-member etcd on free 127.0.0.1 ports, for tests, benchmarks and the demo.

Runs the ``etcd`` binary (Debian package ``etcd-server``; ``scripts/setup.sh``
installs it) with a temporary data directory::

    with EtcdServer() as etcd:
        print(etcd.url)            # etcd://127.0.0.1:PORT, for MESHLIB_DISCOVERY
        etcd.stop()                # SIGTERM; the data directory stays
        etcd.start()               # the same member again, same ports and data
        etcd.kill()                # SIGKILL

Timings are shortened for tests (50 ms heartbeats, 500 ms elections), which
also lowers etcd's minimum lease TTL to under a second.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

from ._process import dying_with_parent, terminate

__all__ = ["EtcdServer", "etcd_binary", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary() -> str | None:
    """The etcd executable, or None when it is not installed."""
    return shutil.which("etcd") or next((p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd") if os.access(p, os.X_OK)), None)


class EtcdServer:
    def __init__(
        self,
        *,
        name: str = "meshlib-test",
        start: bool = True,
        extra_args: tuple[str, ...] = (),
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """``tls``: (server certificate, its key, CA) PEM paths: clients must
        then use https and present a certificate signed by the CA."""
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd not found; run `bash scripts/setup.sh` (Debian package etcd-server)")
        self.binary = binary
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="meshlib-etcd-")
        self.extra_args = extra_args
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self._log = os.path.join(self.data_dir, "etcd.log")
        if start:
            self.start()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.client_port

    @property
    def url(self) -> str:
        """The value for ``MESHLIB_DISCOVERY``."""
        return f"etcd://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        if self._started:
            self._start(timeout)  # a restart keeps its ports: clients know them
            return
        # The first start may lose its ports to another process between
        # free_port() and etcd binding them: pick others and try again.
        for attempt in range(3):
            try:
                self._start(timeout)
                break
            except RuntimeError:
                if attempt == 2 or "address already in use" not in self.log_tail():
                    raise
                shutil.rmtree(os.path.join(self.data_dir, "member"), ignore_errors=True)
                self.client_port, self.peer_port = free_port(), free_port()
        self._started = True

    def _start(self, timeout: float) -> None:
        client = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls_args: list[str] = []
        if self.tls:
            cert, key, ca = self.tls
            tls_args = ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"]
        cmd = [
            self.binary,
            "--name", self.name,
            "--data-dir", os.path.join(self.data_dir, "member"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--logger", "zap",
            "--log-level", "error",
            *tls_args,
            *self.extra_args,
        ]  # fmt: skip
        log = open(self._log, "ab")
        try:
            self._proc = subprocess.Popen(
                dying_with_parent(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}/health"
        context = None
        if self.tls:
            cert, key, ca = self.tls
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)  # the server's pair is signed by the same CA
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy on port {self.client_port} within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; the data directory stays for :meth:`start`."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop and remove the data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self._log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "EtcdServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
