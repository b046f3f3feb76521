"""Child-process helpers shared by the test servers and the benchmarks."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["dying_with_parent", "terminate"]


def dying_with_parent(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run so that Linux sends it SIGTERM when this process dies, even
    by SIGKILL, so no server is left over.

    This goes through util-linux's ``setpriv --pdeathsig`` rather than a
    ``preexec_fn``: a ``preexec_fn`` makes subprocess fork instead of vfork,
    which runs grpcio's fork handlers in the child, and those restart gRPC's
    poller thread just before the child closes its file descriptors; the
    poller then aborts the child (seen as etcd "exiting" with -6 before exec).
    The signal is armed by setpriv just before it execs ``cmd``: a parent
    killed in the instant between ``Popen`` returning and that leaves it be."""
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "TERM", *cmd] if setpriv else list(cmd)


@functools.lru_cache(maxsize=1)
def _setpriv() -> str | None:
    return shutil.which("setpriv") if sys.platform == "linux" else None


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it if it lingers past ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
