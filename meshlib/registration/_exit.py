"""Deregister on the way out: at interpreter exit, and on SIGTERM.

``atexit`` covers a normal exit (including ``sys.exit`` from a signal handler
of the application). Python's default SIGTERM action kills the process
without running ``atexit``, so when no handler is installed yet (the
disposition is still ``SIG_DFL``) meshlib installs one, on the main thread
only: it deregisters every live registration, restores the default action
and sends itself SIGTERM again, so the process still ends by that signal. An
application that installs its own SIGTERM handler keeps it; it should close
its Mesh (or exit through ``sys.exit``) there.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from typing import Any, Protocol

log = logging.getLogger("meshlib.registration")


class _Closable(Protocol):
    def close(self) -> None: ...


_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def track(reg: _Closable) -> None:
    global _installed
    with _lock:
        _live.add(reg)
        if _installed:
            return
        _installed = True
    atexit.register(deregister_all)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def untrack(reg: _Closable) -> None:
    with _lock:
        _live.discard(reg)


def deregister_all() -> None:
    with _lock:
        regs = list(_live)
    for reg in regs:
        try:
            reg.close()
        except Exception:  # on the way out: one failure must not keep the others registered
            log.exception("meshlib: deregistering %r failed", reg)


def _on_sigterm(signum: int, frame: object) -> None:
    deregister_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
