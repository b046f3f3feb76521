"""Child-process helpers shared by the test servers and the benchmarks."""

from __future__ import annotations

import ctypes
import signal
import subprocess

__all__ = ["die_with_parent", "terminate"]


def die_with_parent() -> None:
    """Use as ``preexec_fn``: in the child before exec, have Linux send it
    SIGTERM when the parent dies, even by SIGKILL, so no server is left over."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it if it lingers past ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
