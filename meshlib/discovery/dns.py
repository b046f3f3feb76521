"""dns: each service's name resolved to A/AAAA records, re-resolved on an interval.

Every declared service without static endpoints is looked up as its
``dns_name`` (default: the service name) with its ``port``. A refresh whose
sorted address list equals the last one publishes nothing, so pickers and
their statistics are not rebuilt. A failed lookup keeps the last good
addresses and is counted in ``mesh.stats()``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Mapping

from .._background import PeriodicWorker
from ..endpoint import Endpoint, EndpointSnapshot
from .base import Publish

log = logging.getLogger("meshlib.discovery.dns")

#: ``lookup(name, port) -> [ip, ...]``; the default asks the system resolver.
Lookup = Callable[[str, int], list[str]]


def system_lookup(name: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class DnsResolver:
    def __init__(
        self,
        targets: Mapping[str, tuple[str, int, float]],
        *,
        lookup: Lookup = system_lookup,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """``targets`` maps service -> (dns name, port, refresh interval)."""
        self._targets = dict(targets)
        self._lookup = lookup
        self._now = now
        self._last: dict[str, tuple[str, ...]] = {}
        self._due: dict[str, float] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._publish: Publish | None = None
        self._worker: PeriodicWorker | None = None
        self.lookups = 0
        self.errors = 0
        self.last_error = ""

    def services(self) -> frozenset[str]:
        return frozenset(self._targets)

    def start(self, publish: Publish) -> None:
        self._publish = publish
        for name in self._targets:
            publish(EndpointSnapshot(name, (), version=0, source="dns"))
        self.refresh(force=True)
        if self._targets:
            tick = min(t[2] for t in self._targets.values())
            self._worker = PeriodicWorker("dns-resolver", min(tick, 1.0), self.refresh)
            self._worker.start()

    def refresh(self, force: bool = False) -> None:
        """Resolve every service that is due (all of them with ``force``)."""
        with self._lock:
            now = self._now()
            for name, (dns_name, port, interval) in self._targets.items():
                if not force and now < self._due.get(name, 0.0):
                    continue
                self._due[name] = now + interval
                self.lookups += 1
                try:
                    addrs = tuple(sorted(set(self._lookup(dns_name, port))))
                except (OSError, UnicodeError) as exc:
                    self.errors += 1
                    self.last_error = f"{dns_name}: {exc}"
                    log.warning("meshlib: DNS lookup of %s for %r failed, keeping the last good addresses: %s", dns_name, name, exc)
                    continue
                if addrs == self._last.get(name):
                    continue
                self._last[name] = addrs
                self._versions[name] = self._versions.get(name, 0) + 1
                assert self._publish is not None
                self._publish(
                    EndpointSnapshot(name, tuple(Endpoint(a, port) for a in addrs), version=self._versions[name], source=f"dns:{dns_name}")
                )

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    def status(self) -> dict[str, Any]:
        return {"kind": "dns", "services": len(self._targets), "lookups": self.lookups, "errors": self.errors, "last_error": self.last_error}
