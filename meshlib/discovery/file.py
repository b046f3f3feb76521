"""file://: endpoints from a YAML or JSON file, reloaded when it changes.

The file lists services and their endpoints::

    services:
      inventory:
        endpoints:
          - 127.0.0.1:8001;weight=2          # the same spec as ENDPOINTS
          - {address: 127.0.0.1:8002, zone: b, tags: [gpu], metadata: {model: x}}
      billing: ["127.0.0.1:9001", "127.0.0.1:9002"]   # a bare list works too

The file is checked every ``file_poll_interval``. A change is read once the
file has stopped changing for ``SETTLE`` (100 ms), so a file rewritten in
place (truncated, then written, possibly in pieces) is not read half-written.
A change that parses is applied without a restart (only services whose
endpoints changed are rebuilt); one that does not parse is logged, counted in
``mesh.stats()`` (``errors``, ``last_error``) and the last good endpoints stay.

An empty document, one without a ``services`` key, and one with a service or
``endpoints`` left empty (``inventory:`` with nothing after it) are taken as
not written yet: they never replace the current endpoints. To take endpoints
away, say so: ``services: {}`` removes every service's endpoints,
``inventory: []`` (or ``endpoints: []``) removes one service's, and a service
no longer listed in a complete document has none.

A bad file at start-up raises :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Mapping

from .._background import PeriodicWorker
from .._documents import parse_document
from ..endpoint import Endpoint, EndpointSnapshot, endpoint_from_mapping
from ..errors import ConfigError
from ..names import check_service_name
from .base import Publish

log = logging.getLogger("meshlib.discovery.file")

#: A change is read once the file has not changed for this long (seconds).
SETTLE = 0.1


class Incomplete(Exception):
    """The document is empty or stops short: not written yet."""


def parse_endpoints_file(data: bytes, path: str) -> dict[str, tuple[Endpoint, ...]]:
    """The endpoints of every service in an endpoints file. Raises
    :class:`Incomplete` for a document that is empty or stops short, and
    :class:`ConfigError` (only) for anything else that is wrong with it."""
    try:
        return _parse(data, path)
    except (ConfigError, Incomplete):
        raise
    except Exception as exc:  # whatever the input, the answer is ConfigError
        raise ConfigError(f"MESHLIB_DISCOVERY=file://{path}", path, "an endpoints file (see docs/discovery.md)", detail=f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _parse(data: bytes, path: str) -> dict[str, tuple[Endpoint, ...]]:
    doc = parse_document(data, path, f"MESHLIB_DISCOVERY=file://{path}")
    if "services" not in doc:
        if doc:
            raise ConfigError(f"{path}", sorted(map(str, doc)), "an endpoints file has one top-level key: services")
        raise Incomplete("the document is empty")
    services = doc["services"]
    if services is None:
        raise Incomplete("'services' has nothing under it")
    if not isinstance(services, Mapping):
        raise ConfigError(f"services ({path})", services, "a mapping of service name to its endpoints")
    unknown = set(doc) - {"services"}
    if unknown:
        raise ConfigError(f"{path}", sorted(map(str, unknown)), "an endpoints file has one top-level key: services")
    out: dict[str, tuple[Endpoint, ...]] = {}
    for name, body in services.items():
        where = f"services.{name} ({path})"
        if isinstance(body, Mapping):
            extra = set(body) - {"endpoints"}
            if extra:
                raise ConfigError(where, sorted(map(str, extra)), "a service entry holds 'endpoints' (other keys belong in MESHLIB_CONFIG)")
            body = body.get("endpoints")
        if body is None:
            raise Incomplete(f"services.{name} has no endpoints written (write [] for none)")
        if isinstance(body, str):
            body = [s for s in (p.strip() for p in body.split(",")) if s]
        if not isinstance(body, list):
            raise ConfigError(where, body, "a list of endpoints")
        out[check_service_name(str(name), where)] = tuple(
            endpoint_from_mapping(item, name=f"services.{name}.endpoints[{i}] ({path})") for i, item in enumerate(body)
        )
    return out


class FileResolver:
    def __init__(self, path: str, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._signature = self._stat()
        if self._signature is None:
            raise ConfigError("MESHLIB_DISCOVERY", f"file://{path}", "a file:// URL naming an existing YAML or JSON file")
        try:
            self._current = parse_endpoints_file(self._read(), path)
        except Incomplete as exc:
            log.warning("meshlib: endpoints file %s is not completely written (%s); its services appear once it is", path, exc)
            self._current, self._signature = {}, None  # read it again at the first check
        except OSError as exc:
            raise ConfigError("MESHLIB_DISCOVERY", f"file://{path}", "a readable YAML or JSON file", detail=str(exc)) from None
        self._versions = {name: 1 for name in self._current}
        self._publish: Publish | None = None
        self._worker: PeriodicWorker | None = None
        self._closing = threading.Event()
        self.reloads = 0
        self.errors = 0
        self.incomplete = 0
        self.last_error = ""

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def _settled(self, sig: tuple[int, int, int]) -> tuple[tuple[int, int, int], bytes] | None:
        """The file's signature and content once it has not changed for
        ``SETTLE`` seconds (waiting for that, a few times at most); None if it
        keeps changing or disappears (the next check tries again)."""
        for _ in range(10):
            age = time.time() - sig[0] / 1e9
            wait = min(SETTLE, SETTLE - max(0.0, age))
            if wait > 0:
                if self._closing.wait(wait):
                    return None
                later = self._stat()
                if later != sig:
                    if later is None:
                        return None
                    sig = later
                    continue
            data = self._read()
            if self._stat() == sig:
                return sig, data
            sig = self._stat() or sig
        return None

    def services(self) -> frozenset[str]:
        return frozenset(self._current)

    def start(self, publish: Publish) -> None:
        self._publish = publish
        for name, eps in self._current.items():
            publish(EndpointSnapshot(name, eps, version=1, source=f"file://{self.path}"))
        self._worker = PeriodicWorker(f"file-resolver({os.path.basename(self.path)})", self.interval, self.check)
        self._worker.start()

    def check(self) -> bool:
        """Reload if the file changed; return True if any service changed."""
        with self._lock:
            sig = self._stat()
            if sig is None:
                if self._signature is not None:
                    log.warning("meshlib: endpoints file %s disappeared; keeping the last good endpoints", self.path)
                self._signature = None
                return False
            if sig == self._signature:
                return False
            try:
                settled = self._settled(sig)
                if settled is None:
                    return False
                self._signature, data = settled
                fresh = parse_endpoints_file(data, self.path)
            except Incomplete as exc:
                self.incomplete += 1
                log.info("meshlib: endpoints file %s is not completely written (%s); keeping the current endpoints", self.path, exc)
                return False
            except Exception as exc:  # ConfigError, OSError, or anything else: counted, never fatal
                self.errors += 1
                self.last_error = str(exc) or type(exc).__name__
                log.error("meshlib: endpoints file %s rejected, keeping the last good endpoints: %s", self.path, self.last_error)
                return False
            self.reloads += 1
            self.last_error = ""
            changed = False
            assert self._publish is not None
            for name in set(fresh) | set(self._current):
                new = fresh.get(name, ())
                old = self._current.get(name)
                if new == old:
                    continue
                if name not in fresh:
                    log.warning("meshlib: service %r left %s; it now has no endpoints", name, self.path)
                changed = True
                self._versions[name] = self._versions.get(name, 0) + 1
                self._publish(EndpointSnapshot(name, new, version=self._versions[name], source=f"file://{self.path}"))
            self._current = {**{n: () for n in self._current}, **fresh}
            return changed

    def close(self) -> None:
        self._closing.set()
        if self._worker is not None:
            self._worker.stop()

    def status(self) -> dict[str, Any]:
        return {
            "kind": "file",
            "path": self.path,
            "services": len(self._current),
            "reloads": self.reloads,
            "errors": self.errors,
            "incomplete_reads": self.incomplete,
            "last_error": self.last_error,
        }
