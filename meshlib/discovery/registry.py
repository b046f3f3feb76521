"""What the consul:// and etcd:// resolvers share.

- :class:`ServiceTable`: the current endpoints of every service seen in the
  registry; publishes a new snapshot for a service only when its endpoints
  changed (a service that leaves gets an empty snapshot and stays known).
- :class:`Staleness`: whether the registry is reachable, since when it is not,
  the last error; logged once per outage and shown in ``mesh.stats()``.
- :func:`reconnecting`: tenacity's jittered exponential back-off, interrupted
  by ``close()``.
- :class:`BadEntries`: one warning per malformed registry entry (by key and
  revision), so a bad entry that stays is not logged on every reload.
- :func:`run_guarded`: a resolver loop that hits an unexpected error logs it,
  reports itself unhealthy, backs off and resumes; no exception ends it.

Registration (``meshlib.registration``) uses :class:`RegistryUnavailable` and
:func:`reconnecting` too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import tenacity

from ..endpoint import Endpoint, EndpointSnapshot
from .base import Publish

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig

log = logging.getLogger("meshlib.discovery")


class RegistryUnavailable(Exception):
    """The registry could not be reached, or answered with an error; try again later."""


def _order(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(sorted(endpoints, key=lambda ep: (ep.host, ep.port)))


class ServiceTable:
    """Service name -> endpoints as last published, and their versions."""

    def __init__(self, source: str, publish: Publish, wanted: Callable[[str], bool]) -> None:
        self.source = source
        self._publish = publish
        self._wanted = wanted
        self._current: dict[str, tuple[Endpoint, ...]] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self.updates = 0

    def names(self) -> frozenset[str]:
        return frozenset(self._current)

    def declare(self, services: Iterable[str]) -> None:
        """Publish an empty snapshot for each service not seen yet, so it is a
        mesh service (with no endpoints) before the registry answers."""
        for name in services:
            if self._wanted(name):
                with self._lock:
                    if name in self._current:
                        continue
                    self._current[name] = ()
                    self._versions[name] = 0
                self._publish(EndpointSnapshot(name, (), version=0, source=self.source))

    def set(self, service: str, endpoints: Iterable[Endpoint]) -> bool:
        """Adopt ``service``'s endpoints; publish if they changed. True if published."""
        if not self._wanted(service):
            return False
        eps = _order(endpoints)
        with self._lock:
            if self._current.get(service) == eps:
                return False
            self._current[service] = eps
            version = self._versions[service] = self._versions.get(service, 0) + 1
            self.updates += 1
            # Published under the lock, so two threads cannot publish one
            # service's versions out of order.
            self._publish(EndpointSnapshot(service, eps, version=version, source=self.source))
        return True

    def replace_all(self, services: Mapping[str, Iterable[Endpoint]]) -> int:
        """A full listing: every service in it is set, every other known one
        is emptied. Returns how many services changed."""
        changed = 0
        for name in set(self._current) | set(services):
            changed += self.set(name, services.get(name, ()))
        return changed


class RegistryResolver:
    """What the consul:// and etcd:// resolvers share: the target, which
    services they answer for, their service table."""

    kind = "registry"

    def __init__(
        self,
        host: str,
        port: int,
        cfg: "RegistryConfig",
        *,
        declared: frozenset[str] = frozenset(),
        exclude: frozenset[str] = frozenset(),
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.host, self.port = host, port
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.now = now
        self._declared = declared
        self._exclude = exclude
        self._table: ServiceTable | None = None
        self.staleness = Staleness(f"{self.kind} {self.target}", now)
        self.bad = BadEntries(f"{self.kind} {self.target}")

    def services(self) -> frozenset[str]:
        table = self._table
        return (table.names() if table else frozenset()) | {s for s in self._declared if self._wanted(s)}

    def _wanted(self, service: str) -> bool:
        return service not in self._exclude and (self.cfg.registry_watch == "all" or service in self._declared)

    def _start_table(self, source: str, publish: Publish) -> ServiceTable:
        self._table = ServiceTable(source, publish, self._wanted)
        self._table.declare(sorted(self._declared))
        return self._table

    def _warn_not_synced(self) -> None:
        log.warning(
            "meshlib: %s %s did not answer within %gs; its services appear once it does (%s)",
            self.kind,
            self.target,
            self.cfg.registry_timeout,
            self.staleness.last_error or "no answer yet",
        )


class Staleness:
    """Reachability of one registry, for logs and ``mesh.stats()``."""

    def __init__(self, what: str, now: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._now = now
        self._lock = threading.Lock()
        #: Unexpected errors in the resolver's own loops (bugs, hostile input);
        #: the loop logs, backs off and resumes. Unhealthy until it next succeeds.
        self.internal_errors = 0
        self.connected = False
        self.ever_connected = False
        self.lost_at: float | None = None
        self.last_contact: float | None = None
        self.errors = 0
        self.reconnects = 0
        self.last_error = ""
        self._failing: set[str] = set()

    def ok(self, part: str = "") -> None:
        """A request to the registry succeeded (``part``: which watch, if several)."""
        with self._lock:
            self._failing.discard(part)
            self.last_contact = self._now()
            if self._failing or self.connected:
                return
            recovered = self.ever_connected and self.lost_at is not None
            stale_for = self.last_contact - self.lost_at if self.lost_at is not None else 0.0
            self.connected = self.ever_connected = True
            self.lost_at = None
            if recovered:
                self.reconnects += 1
        if recovered:
            log.warning("meshlib: %s reachable again after %.1fs; endpoints are current", self.what, stale_for)

    def failed(self, error: BaseException | str, part: str = "") -> None:
        text = str(error) or type(error).__name__
        with self._lock:
            self.errors += 1
            self.last_error = text
            self._failing.add(part)
            first = self.connected or (self.lost_at is None)
            if self.lost_at is None:
                self.lost_at = self._now()
            self.connected = False
            stale_for = self._now() - self.lost_at
        if first:
            log.warning("meshlib: %s unreachable, routing on the last good endpoints: %s", self.what, text)
        else:
            log.info("meshlib: %s still unreachable (stale for %.1fs): %s", self.what, stale_for, text)

    def broken(self, error: BaseException, part: str = "") -> None:
        """An unexpected error in a resolver loop (not the registry's fault):
        counted apart, and the resolver reports itself unhealthy until ``part``
        next succeeds."""
        with self._lock:
            self.internal_errors += 1
        self.failed(f"internal error ({type(error).__name__}); see the log", part)

    def stale_for(self) -> float:
        """Seconds since the registry was last known good; 0 while it is."""
        lost = self.lost_at
        return 0.0 if lost is None else max(0.0, self._now() - lost)

    def status(self) -> dict[str, Any]:
        now = self._now()
        return {
            "connected": self.connected,
            "stale": not self.connected,
            "stale_seconds": round(self.stale_for(), 3),
            "since_last_contact_seconds": None if self.last_contact is None else round(now - self.last_contact, 3),
            "healthy": self.connected,
            "errors": self.errors,
            "internal_errors": self.internal_errors,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


def reconnecting(cfg: "RegistryConfig", stop: threading.Event, on_retry: Callable[[BaseException], None]) -> tenacity.Retrying:
    """Retry on :class:`RegistryUnavailable` with full-jitter exponential
    back-off (attempt n waits random [0, base x 2^n), capped at
    ``registry_backoff_max``), until ``stop`` is set; then the last error is
    re-raised."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            on_retry(exc)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RegistryUnavailable),
        wait=tenacity.wait_random_exponential(multiplier=cfg.registry_backoff_base, max=cfg.registry_backoff_max),
        stop=lambda state: stop.is_set(),
        sleep=stop.wait,
        before_sleep=before_sleep,
        reraise=True,
    )


class BadEntries:
    """Malformed registry entries: warn once per key and revision (or reason
    when the registry has no revisions), count every skip."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._seen: dict[str, object] = {}
        self._lock = threading.Lock()
        self.skipped = 0

    def skip(self, key: str, reason: str, revision: object = None) -> None:
        mark = reason if revision is None else revision
        with self._lock:
            self.skipped += 1
            repeat = self._seen.get(key) == mark
            self._seen[key] = mark
        if repeat:
            log.debug("meshlib: %s entry %s still skipped: %s", self.what, key, reason)
        else:
            log.warning("meshlib: %s entry %s skipped, the rest of the service stands: %s", self.what, key, reason)

    def forget(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)


def run_guarded(
    what: str,
    body: Callable[[], None],
    stop: threading.Event,
    staleness: Staleness,
    cfg: "RegistryConfig",
    part: str = "",
    now: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``body`` until it returns or ``stop`` is set. An exception that
    escapes it (a bug, input nobody foresaw) is logged with its traceback,
    marks the registry unhealthy in ``staleness`` (so ``mesh.stats()`` says so)
    and ``body`` runs again after a jittered exponential back-off; routing
    stays on the last good endpoints meanwhile."""
    failures, last = 0, 0.0
    while not stop.is_set():
        try:
            body()
            return
        except Exception as exc:
            at = now()
            failures = 1 if at - last > 2 * cfg.registry_backoff_max else failures + 1
            last = at
            log.exception("meshlib: %s hit an unexpected error; backing off, then resuming", what)
            staleness.broken(exc, part)
            cap = min(cfg.registry_backoff_max, cfg.registry_backoff_base * 2 ** min(failures, 20))
            stop.wait(random.uniform(cap / 2, cap))
