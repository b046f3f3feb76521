"""dns: each service's name resolved to A/AAAA records, re-resolved on an interval.

Every declared service without static endpoints is looked up as its
``dns_name`` (default: the service name) with its ``port``. A refresh whose
sorted address list equals the last one publishes nothing, so pickers and
their statistics are not rebuilt. A failed lookup (an error of any kind) keeps
the last good addresses and is counted in ``mesh.stats()``. An answer that is
not an IP address is skipped with a warning and counted (``skipped_answers``);
a lookup whose answers are all unusable counts as failed.
"""

from __future__ import annotations

import ipaddress
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


def usable_addresses(answers: object) -> tuple[tuple[str, ...], list[str]]:
    """The IP addresses in a lookup's answers (sorted, de-duplicated, in
    their canonical spelling) and the answers that are not one."""
    good: set[str] = set()
    bad: list[str] = []
    if isinstance(answers, (str, bytes)) or not hasattr(answers, "__iter__"):
        return (), [repr(answers)[:80]]
    for answer in answers:  # type: ignore[attr-defined]
        try:
            if not isinstance(answer, str):
                raise ValueError("not a string")
            good.add(str(ipaddress.ip_address(answer)))
        except ValueError:
            bad.append(repr(answer)[:80])
    return tuple(sorted(good)), bad


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
        self.skipped = 0
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
                    addrs, bad = usable_addresses(self._lookup(dns_name, port))
                    if bad:
                        self.skipped += len(bad)
                        log.warning("meshlib: DNS lookup of %s for %r: skipped answers that are not IP addresses: %s", dns_name, name, ", ".join(bad[:5]))
                        if not addrs:
                            raise ValueError("no answer is an IP address")
                except Exception as exc:  # OSError, UnicodeError, a lookup that misbehaves: never fatal
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
        return {"kind": "dns", "services": len(self._targets), "lookups": self.lookups, "errors": self.errors,
                "skipped_answers": self.skipped, "last_error": self.last_error}  # fmt: skip
