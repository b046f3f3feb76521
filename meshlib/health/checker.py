"""Active health checking: probe each endpoint on a timer, as Envoy's health checker.

Each host of a service with ``health_check_path`` set is probed every
``interval``: an HTTP ``GET`` of the path with the service name as ``Host``
(Envoy's default host), passing when the status is in ``expected_statuses``
within ``timeout``. A healthy host turns unhealthy after
``unhealthy_threshold`` failed probes in a row and back after
``healthy_threshold`` passing ones. A host new to the service is usable until
its first probe, which decides at once (Envoy's default, without
``ignore_new_hosts_until_first_hc``). With gRPC the probe is the standard
``grpc.health.v1.Health/Check`` (:mod:`.grpc_probe`); probes are registered
by name in :mod:`.probes`.

Together with outlier detection, as in Envoy: a host takes traffic only when
it passes its checks *and* is not ejected, and a passing probe returns an
ejected host at once when ``successful_active_health_check_uneject_host`` is on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable

from ..clock import SYSTEM_CLOCK, Clock
from ..endpoint import Endpoint
from ..errors import ConfigError
from .probes import Probe, http_probe, make_probe, probe_names

__all__ = ["HealthCheckConfig", "HealthChecker", "Probe", "http_probe", "parse_statuses"]

log = logging.getLogger("meshlib")

_ACCEPTED = "comma-separated HTTP statuses or ranges, e.g. 200 or 200-299,404"


def parse_statuses(value: object, name: str) -> frozenset[int]:
    """``"200-299,404"`` (inclusive ranges) or a list of codes."""
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if items is None:
        raise ConfigError(name, value, _ACCEPTED)
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        lo, _, hi = text.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ConfigError(name, value, _ACCEPTED, detail=f"{text!r} is not a status or range")
        a, b = int(lo), int(hi or lo)
        if not 100 <= a <= b <= 599:
            raise ConfigError(name, value, _ACCEPTED, detail=f"{text!r} is outside 100-599")
        out.update(range(a, b + 1))
    if not out:
        raise ConfigError(name, value, _ACCEPTED, detail="no status given")
    return frozenset(out)


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str = ""
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    expected_statuses: frozenset[int] = frozenset({200})
    #: "http" or "grpc" (``grpc.health.v1``; ``path`` is then the service name checked).
    protocol: str = "http"

    def __post_init__(self) -> None:
        if self.path and self.protocol == "http" and not self.path.startswith("/"):
            raise ConfigError("health_check_path", self.path, "an HTTP path starting with /, or empty for no active checks")
        if self.protocol not in probe_names():
            raise ConfigError("health_check_protocol", self.protocol, " or ".join(probe_names()))
        for name in ("interval", "timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"health_check_{name}", getattr(self, name), "a duration greater than 0")
        for name in ("healthy_threshold", "unhealthy_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"health_check_{name}", v, "a whole number from 1 up")
        object.__setattr__(self, "expected_statuses", parse_statuses(self.expected_statuses, "health_check_expected_statuses"))

    @property
    def enabled(self) -> bool:
        return bool(self.path) or self.protocol == "grpc"


class _State:
    __slots__ = ("healthy", "checked", "passes", "fails", "checks", "failures", "last")

    def __init__(self) -> None:
        self.healthy = True
        self.checked = False
        self.passes = 0
        self.fails = 0
        self.checks = 0
        self.failures = 0
        self.last: float | None = None


class HealthChecker:
    """One service's active health state. ``check_all`` runs a round of probes;
    the owner calls it every ``interval`` (a Mesh runs a ``meshlib-health-<service>``
    thread) and rebuilds its picker when it returns True."""

    def __init__(
        self,
        service: str,
        config: HealthCheckConfig,
        *,
        probe: Probe | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_pass: Callable[[Hashable], bool] | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self._probe: Probe = probe or make_probe(config.protocol, service)
        self._clock = clock
        self._on_pass = on_pass
        self._lock = threading.Lock()
        self._hosts: dict[Hashable, tuple[Endpoint, _State]] = {}

    def set_hosts(self, endpoints: Iterable[Endpoint]) -> bool:
        """Adopt the service's endpoints; True if any is new (and so unchecked)."""
        with self._lock:
            old = self._hosts
            self._hosts = {ep.key: (ep, old[ep.key][1] if ep.key in old else _State()) for ep in endpoints}
            return any(key not in old for key in self._hosts)

    def is_healthy(self, key: Hashable) -> bool:
        entry = self._hosts.get(key)
        return entry is None or entry[1].healthy

    def check_all(self) -> bool:
        """Probe every host once; True if any host's health changed (or an
        ejected host was returned by a passing probe)."""
        changed = False
        for key, (ep, state) in list(self._hosts.items()):
            ok = self._probe(ep, self.config)
            changed |= self._record(key, ep, state, ok)
            if ok and self._on_pass is not None:
                changed |= bool(self._on_pass(key))
        return changed

    def _record(self, key: Hashable, ep: Endpoint, s: _State, ok: bool) -> bool:
        cfg = self.config
        with self._lock:
            s.checks += 1
            s.last = self._clock.monotonic()
            before = s.healthy
            if ok:
                s.passes += 1
                s.fails = 0
                if not s.checked or s.passes >= cfg.healthy_threshold:
                    s.healthy = True
            else:
                s.failures += 1
                s.fails += 1
                s.passes = 0
                if not s.checked or s.fails >= cfg.unhealthy_threshold:
                    s.healthy = False
            s.checked = True
            if s.healthy != before:
                log.warning("meshlib: %s endpoint %s is now %s (active health check)", self.service, ep.address, "healthy" if s.healthy else "unhealthy")
                return True
            return False

    def host_stats(self, key: Hashable) -> dict[str, object]:
        entry = self._hosts.get(key)
        if entry is None:
            return {}
        s = entry[1]
        return {"health_check": "passing" if s.healthy else "failing", "checks": s.checks, "check_failures": s.failures}
