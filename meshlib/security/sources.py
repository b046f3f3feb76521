"""Where the workload identity comes from: the ``IdentitySource`` interface
and the file source (``MESHLIB_TLS_CERT`` / ``_KEY`` / ``_CA``).

A source always holds a good :class:`Identity` (it refuses to start without
one) and swaps in a new one only after it passed every check of
:func:`load_identity`. A failed reload keeps the last good identity, logs
once per new failure, and shows in ``status()``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from .._background import PeriodicWorker
from ..errors import ConfigError
from .identity import Identity, IdentityInvalid, load_identity

__all__ = ["IdentitySource", "FileIdentitySource", "StaticIdentitySource"]

log = logging.getLogger("meshlib")


class IdentitySource:
    """Holds the current identity; ``current()`` is a lock-free read."""

    kind = "static"

    def __init__(self, identity: Identity, *, now: Callable[[], float] = time.time) -> None:
        self._identity = identity
        self._now = now
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Identity], None]] = []
        self.rotations = 0
        self.errors = 0
        self.last_error = ""
        self.last_rotation: float | None = None

    def current(self) -> Identity:
        return self._identity

    def subscribe(self, listener: Callable[[Identity], None]) -> None:
        """Call ``listener(identity)`` after every rotation."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Identity], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _rotate(self, identity: Identity) -> None:
        with self._lock:
            self._identity = identity
            self.rotations += 1
            self.last_rotation = self._now()
            self.last_error = ""
            listeners = list(self._listeners)
        log.info("meshlib: TLS identity rotated to %r (%s)", identity, self.kind)
        for listener in listeners:
            try:
                listener(identity)
            except Exception:
                log.exception("meshlib: a TLS rotation listener failed")

    def _failed(self, reason: str) -> None:
        with self._lock:
            fresh = reason != self.last_error
            self.errors += 1
            self.last_error = reason
        if fresh:
            log.warning("meshlib: TLS identity not updated, keeping %r: %s", self._identity, reason)

    def status(self) -> dict[str, Any]:
        now = self._now()
        ident = self._identity
        expired = ident.not_after <= now
        return {
            "source": self.kind,
            "state": "expired" if expired else ("stale" if self.last_error else "ok"),
            **ident.summary(now),
            "rotations": self.rotations,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        return None


class StaticIdentitySource(IdentitySource):
    """A fixed identity (programmatic setup and tests)."""


def _signature(paths: tuple[str, ...]) -> tuple[Any, ...]:
    sig = []
    for p in paths:
        try:
            st = os.stat(p)
            sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            sig.append(("missing", exc.errno))
    return tuple(sig)


class FileIdentitySource(IdentitySource):
    """PEM files watched for changes (stat every ``interval`` seconds).

    A change is read only once the three files' inode, size and mtime are the
    same before and after reading them (a writer still busy shows as a
    change), and used only if it passes every check: a half-written file, a
    certificate whose new key is not there yet, an expired certificate never
    replace the good identity. Rotate by writing new files and renaming them
    over the old ones, in any order."""

    kind = "files"
    NAMES = ("MESHLIB_TLS_CERT", "MESHLIB_TLS_KEY", "MESHLIB_TLS_CA")

    def __init__(self, cert: str, key: str, ca: str, *, interval: float = 1.0, now: Callable[[], float] = time.time, watch: bool = True) -> None:
        self.paths = (cert, key, ca)
        for name, path in zip(self.NAMES, self.paths):
            if not path:
                raise ConfigError(name, "", "the path of a PEM file; MESHLIB_TLS_CERT, MESHLIB_TLS_KEY and MESHLIB_TLS_CA are set together")
        sig, data = self._read()
        if data is None:
            raise ConfigError(self.NAMES[0], cert, "readable PEM files that do not change while being read")
        try:
            identity = load_identity(*data, names=self.NAMES, source="files", now=now())
        except IdentityInvalid as exc:
            value = self.paths[self.NAMES.index(exc.setting)] if exc.setting in self.NAMES else cert
            raise ConfigError(exc.setting, value, "a valid, current certificate, its matching key and a trust bundle (PEM)", detail=exc.reason) from None
        super().__init__(identity, now=now)
        self._seen = sig
        self._pending: tuple[Any, ...] | None = None
        self._worker: PeriodicWorker | None = None
        if watch:
            self._worker = PeriodicWorker("tls-files", interval, self.poll)
            self._worker.start()

    def _read(self) -> tuple[tuple[Any, ...], tuple[bytes, bytes, bytes] | None]:
        before = _signature(self.paths)
        try:
            data = []
            for name, path in zip(self.NAMES, self.paths):
                with open(path, "rb") as f:
                    data.append(f.read())
        except OSError as exc:
            raise ConfigError(name, path, "a readable PEM file", detail=exc.strerror or "unreadable") from None
        after = _signature(self.paths)
        return after, (tuple(data) if before == after else None)  # type: ignore[return-value]

    def poll(self) -> bool:
        """Check the files once; True if a new identity was taken. A state
        that fails the checks is reported (``status()``, a warning) when a
        second look finds it unchanged."""
        if _signature(self.paths) == self._seen:
            return False
        try:
            sig, data = self._read()
        except ConfigError as exc:
            self._failed(str(exc))
            return False
        if data is None:
            return False  # still being written: look again next time
        try:
            identity = load_identity(*data, names=self.NAMES, source="files", now=self._now())
        except IdentityInvalid as exc:
            if self._pending != sig:
                # First sight of this state: maybe a rotation half done (the new
                # certificate renamed in, its key not yet). Look again next time.
                self._pending = sig
                return False
            self._seen = sig  # the same twice: judged; wait for the next change
            self._failed(str(exc))
            return False
        self._seen = sig
        self._pending = None
        if identity.sha256 == self._identity.sha256 and identity.bundle_pem == self._identity.bundle_pem and identity.key_pem == self._identity.key_pem:
            return False
        self._rotate(identity)
        return True

    def wake(self) -> None:
        if self._worker is not None:
            self._worker.wake()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "files": {"cert": self.paths[0], "key": self.paths[1], "ca": self.paths[2]}}

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
