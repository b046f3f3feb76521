"""The child-process helper behind the test etcd and the benchmark servers:
starting a server while this process uses gRPC never kills it before it runs,
and a server never outlives the process that started it."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from meshlib.testing._process import dying_with_parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="parent-death signals are Linux's")


def test_children_started_while_grpc_polls_all_run():
    # A preexec_fn made subprocess fork, grpcio's fork handlers restarted its
    # poller in the child, and about 1 child in 40 aborted (-6) before exec.
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
        codes = [subprocess.run(dying_with_parent(["true"]), stderr=subprocess.DEVNULL).returncode for _ in range(300)]
    finally:
        channel.close()
        server.stop(None)
    assert codes == [0] * 300


def test_a_child_is_terminated_when_its_parent_is_killed():
    script = (
        "import subprocess, sys, time\n"
        "from meshlib.testing._process import dying_with_parent\n"
        "child = subprocess.Popen(dying_with_parent(['sleep', '60']))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    # setpriv arms the signal and then execs the command: wait for the command.
    deadline = time.monotonic() + 5
    while _command(child) != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _command(child) == "sleep"
    parent.kill()
    parent.wait(5)
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, already dead, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except FileNotFoundError:
        return ""
