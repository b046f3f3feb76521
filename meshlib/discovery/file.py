"""file://: endpoints from a YAML or JSON file, reloaded when it changes.

The file lists services and their endpoints::

    services:
      inventory:
        endpoints:
          - 127.0.0.1:8001;weight=2          # the same spec as ENDPOINTS
          - {address: 127.0.0.1:8002, zone: b, tags: [gpu], metadata: {model: x}}
      billing: ["127.0.0.1:9001", "127.0.0.1:9002"]   # a bare list works too

The file is checked every ``file_poll_interval``. A change that parses is
applied without a restart (only services whose endpoints changed are
rebuilt); one that does not parse is logged and the last good endpoints stay.
A bad file at start-up raises :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

from .._background import PeriodicWorker
from ..config import canonical_service, parse_document
from ..endpoint import Endpoint, EndpointSnapshot, endpoint_from_mapping
from ..errors import ConfigError
from .base import Publish

log = logging.getLogger("meshlib.discovery.file")


def parse_endpoints_file(data: bytes, path: str) -> dict[str, tuple[Endpoint, ...]]:
    doc = parse_document(data, path, f"MESHLIB_DISCOVERY=file://{path}")
    services = doc.get("services", {})
    if not isinstance(services, Mapping):
        raise ConfigError(f"services ({path})", services, "a mapping of service name to its endpoints")
    unknown = set(doc) - {"services"}
    if unknown:
        raise ConfigError(f"{path}", sorted(unknown), "an endpoints file has one top-level key: services")
    out: dict[str, tuple[Endpoint, ...]] = {}
    for name, body in services.items():
        where = f"services.{name} ({path})"
        if isinstance(body, Mapping):
            extra = set(body) - {"endpoints"}
            if extra:
                raise ConfigError(where, sorted(extra), "a service entry holds 'endpoints' (other keys belong in MESHLIB_CONFIG)")
            body = body.get("endpoints") or []
        if isinstance(body, str):
            body = [s for s in (p.strip() for p in body.split(",")) if s]
        if not isinstance(body, list):
            raise ConfigError(where, body, "a list of endpoints")
        out[canonical_service(str(name))] = tuple(
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
        self._current = parse_endpoints_file(self._read(), path)
        self._versions = {name: 1 for name in self._current}
        self._publish: Publish | None = None
        self._worker: PeriodicWorker | None = None
        self.reloads = 0
        self.errors = 0
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
            self._signature = sig
            try:
                fresh = parse_endpoints_file(self._read(), self.path)
            except (ConfigError, OSError) as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.error("meshlib: endpoints file %s rejected, keeping the last good endpoints: %s", self.path, exc)
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
        if self._worker is not None:
            self._worker.stop()

    def status(self) -> dict[str, Any]:
        return {
            "kind": "file",
            "path": self.path,
            "services": len(self._current),
            "reloads": self.reloads,
            "errors": self.errors,
            "last_error": self.last_error,
        }
