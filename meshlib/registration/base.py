"""A registration: one instance of a service in a registry, kept alive until closed.

:class:`Registration` owns a ``meshlib-register(<id>)`` thread that
registers the instance (retrying with jittered back-off while the registry is
unreachable), then refreshes it every TTL/3. A refresh that finds the
registration gone (the lease expired, the agent forgot the check) registers
again. ``close()`` stops the thread and deregisters; so do ``mesh.close()``,
leaving a ``with`` block, SIGTERM and interpreter exit.

The registry-specific part is three methods: ``_register``, ``_refresh``
(False when the registration was lost) and ``_deregister``.
"""

from __future__ import annotations

import abc
import logging
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Union

from ..discovery.registry import RegistryUnavailable, reconnecting
from . import _exit

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig

log = logging.getLogger("meshlib.registration")

#: ``health``: None (alive while the process heartbeats), a callable returning
#: True when healthy, or an http(s) URL answering 2xx when healthy.
Health = Union[None, Callable[[], bool], str]


@dataclass(frozen=True)
class Instance:
    """What is registered."""

    service: str
    id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    weight: int = 1
    zone: str = ""
    priority: int = 0

    @property
    def hostport(self) -> str:
        if not self.address:
            return f"(agent's address):{self.port}"  # Consul: the agent's node address
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


def default_instance_id(service: str, port: int) -> str:
    """``<service>-<hostname>-<port>``: stable across restarts of the same
    agent, so a restarted process replaces its old entry."""
    raw = f"{service}-{socket.gethostname()}-{port}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", raw)


def local_address_towards(host: str, port: int) -> str:
    """The address of this machine on the route to ``host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def probe(health: Health, timeout: float) -> bool:
    """Run a health check: the callable, or a GET of the URL (2xx is healthy)."""
    if health is None:
        return True
    if callable(health):
        try:
            return bool(health())
        except Exception:
            log.exception("meshlib: health check raised; reporting unhealthy")
            return False
    try:
        with urllib.request.urlopen(health, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Registration(abc.ABC):
    """A handle on a registered instance. Close it (or use ``with``) to deregister."""

    kind = "registry"

    def __init__(self, instance: Instance, cfg: RegistryConfig, health: Health = None) -> None:
        self.instance = instance
        self.cfg = cfg
        self.health = health
        self.ttl = cfg.registry_ttl
        self.interval = max(0.2, self.ttl / 3.0)
        self.registered = False
        self.healthy = True
        self.registrations = 0
        self.refreshes = 0
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"meshlib-register({instance.id})", daemon=True)

    @property
    def id(self) -> str:
        return self.instance.id

    @property
    def service(self) -> str:
        return self.instance.service

    def start(self) -> "Registration":
        """Register now if the registry answers (else keep trying in the
        background), then keep the registration alive."""
        try:
            self._do_register()
        except RegistryUnavailable as exc:
            self._failed(exc, "registering")
        _exit.track(self)
        self._thread.start()
        return self

    # -- the loop -------------------------------------------------------------------

    def _do_register(self) -> None:
        self.healthy = probe(self.health, self.cfg.registry_timeout)
        self._register()
        self.registered = True
        self.registrations += 1
        log.info("meshlib: registered %s %s at %s in %s", self.instance.service, self.instance.id, self.instance.hostport, self.kind)

    def _failed(self, exc: BaseException, doing: str) -> None:
        self.errors += 1
        self.last_error = str(exc)
        log.warning("meshlib: %s %s in %s failed, will retry: %s", doing, self.instance.id, self.kind, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval if self.registered else 0.0):
            if not self.registered:
                try:
                    reconnecting(self.cfg, self._stop, lambda exc: self._failed(exc, "registering"))(self._do_register)
                except RegistryUnavailable:
                    return  # stopped while retrying
                continue
            try:
                healthy = probe(self.health, self.cfg.registry_timeout)
                alive = self._refresh(healthy)
                self.healthy = healthy
                self.refreshes += 1
            except RegistryUnavailable as exc:
                self._failed(exc, "refreshing")
                continue
            except Exception:  # a bug must not end the heartbeat: the TTL would remove a live agent
                self.errors += 1
                log.exception("meshlib: refreshing %s in %s failed", self.instance.id, self.kind)
                continue
            if not alive and not self._stop.is_set():
                log.warning("meshlib: registration of %s in %s was lost (expired or removed); registering again", self.instance.id, self.kind)
                self.registered = False

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop refreshing and deregister (best effort: an unreachable registry
        lets the TTL remove the entry). Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        _exit.untrack(self)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.cfg.registry_timeout + 1.0)
        try:
            self._deregister()
            log.info("meshlib: deregistered %s %s from %s", self.instance.service, self.instance.id, self.kind)
        except RegistryUnavailable as exc:
            log.warning("meshlib: deregistering %s from %s failed; its TTL will remove it: %s", self.instance.id, self.kind, exc)
        finally:
            self.registered = False
            self._release()

    deregister = close

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Registration":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.instance.service,
            "id": self.instance.id,
            "address": self.instance.hostport,
            "registered": self.registered,
            "healthy": self.healthy,
            "ttl_seconds": self.ttl,
            "registrations": self.registrations,
            "refreshes": self.refreshes,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("registered" if self.registered else "registering")
        return f"<{type(self).__name__} {self.instance.service} {self.instance.id} at {self.instance.hostport} ({state})>"

    # -- registry-specific ------------------------------------------------------------

    @abc.abstractmethod
    def _register(self) -> None:
        """Create or replace the registration; raise RegistryUnavailable on failure."""

    @abc.abstractmethod
    def _refresh(self, healthy: bool) -> bool:
        """Keep the registration alive and report ``healthy``; False if it was lost."""

    @abc.abstractmethod
    def _deregister(self) -> None:
        """Remove the registration."""

    def _release(self) -> None:
        """Free client resources after deregistering (nothing by default)."""
