"""A cluster: one service's hosts, its picker and its policies.

Discovery calls :meth:`Cluster.update` with each new snapshot (off the hot
path); it rebuilds the picker and swaps one reference. Calls read that
reference without a lock. The cluster composes the service's policies once,
from its immutable configuration, into three fixed tuples and objects:

* ``gates`` — admission (local rate limit, cluster breaker, fault injection);
* ``host_gate`` — per-endpoint breakers, or the null object that admits any host;
* ``observers`` — who hears of every finished attempt (load metric,
  thresholds, outlier detection, endpoint breakers, plus extra observers such
  as telemetry, given at construction).

A policy that is off is absent from its tuple (or a null object), so the call
path never asks whether it is on. :class:`~meshlib.core.call.Call` holds one
logical call's decisions; ``core.driver`` runs its attempts.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

from .._background import PeriodicWorker
from .._tally import Tally
from ..balancing import AUTO_LOAD_REPORTS, HASHING, POLICIES, Picker, build_picker
from ..balancing.load import report_view
from ..balancing.locality import PriorityLevel
from ..clock import SYSTEM_CLOCK, Clock
from ..endpoint import EndpointSnapshot
from ..health import HealthChecker, Probe
from ..health.load import LOAD_FORMAT_HEADER, LoadReports
from ..resilience.breaker import OPEN, CircuitBreaker
from ..resilience.outlier import OutlierDetector
from ..resilience.ratelimit import TokenBucket
from ..resilience.thresholds import Thresholds
from .call import Call, current_hash_key
from .gates import ANY_HOST, BreakerGate, EndpointBreakers, FaultGate, Gate, RateLimitGate
from .host import Host
from .observers import AttemptEnded, EndpointBreakerFeed, ObserverFactory

if TYPE_CHECKING:  # the model the config layer builds; the core only reads it
    from ..config import ServiceConfig

__all__ = ["Cluster", "COUNTERS"]

log = logging.getLogger("meshlib")

@dataclass(frozen=True)
class _State:
    """Everything a pick reads, swapped as one reference."""

    snapshot: EndpointSnapshot
    hosts: tuple[Host, ...]
    picker: Picker
    levels: tuple[PriorityLevel, ...]
    #: The snapshot as callers see it: health checks and ejections folded in.
    view: EndpointSnapshot


#: Counters every cluster keeps besides ``calls`` (a :class:`Tally`, taken on
#: every call), e.g. ``mesh.stats()["services"][name]["retries"]``.
COUNTERS = (
    "retries",
    "retries_budget_exhausted",
    "retries_overflow",
    "retries_skipped_body",
    "hedges",
    "hedges_budget_exhausted",
    "deadline_exceeded",
    "rate_limited",
    "breaker_rejected",
    "overflow",
    "fault_delays",
    "fault_aborts",
)


class Cluster:
    """One service inside a Mesh."""

    def __init__(
        self,
        name: str,
        cfg: ServiceConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        executor: Callable[[], Any] | None = None,
        health_probe: Probe | None = None,
        observers: Sequence[ObserverFactory] = (),
    ) -> None:
        self.name = name
        self.clock = clock
        self.rng = rng or random.Random()
        #: Returns the Mesh's thread pool (for hedged sync calls), made on first use.
        self.executor = executor
        self._hosts: dict[tuple[str, int], Host] = {}
        self._write_lock = threading.Lock()  # snapshot rebuilds only
        self._stats_lock = threading.Lock()  # counters; never waits for a rebuild
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.calls = Tally()

        self._observer_factories = tuple(observers)
        self._health_probe = health_probe
        self._health_worker: PeriodicWorker | None = None
        self._compose(cfg)

        #: Called with each adopted snapshot (see :meth:`watch`).
        self._watchers: list[Callable[[EndpointSnapshot], None]] = []

        picker, levels = build_picker(name, (), (), cfg.lb, self._policy, self.rng, clock)
        empty = EndpointSnapshot(name, ())
        self._state = _State(empty, (), picker, tuple(levels), empty)
        #: The current picker (swapped with each rebuild; read without a lock).
        self.picker: Picker = picker

    def _compose(self, cfg: "ServiceConfig") -> None:
        """Compose the service's policies from its immutable configuration
        (at construction, and again by :meth:`reconfigure`)."""
        self.config = cfg
        self.hashing = cfg.lb_policy in HASHING
        self._policy = POLICIES[cfg.lb_policy]
        self.retry = cfg.retry
        self.timeout = cfg.timeout
        self.per_try_timeout = cfg.retry.per_try_timeout
        self.hedge = cfg.hedge
        self.hedges = cfg.hedge.enabled
        self.budget = cfg.retry_budget.build(self.clock)
        self.budget_limited = cfg.retry_budget.kind != "none"
        self.budget_in_flight = self.budget.tracks_in_flight
        self.thresholds = Thresholds(cfg.max_requests, cfg.max_pending_requests, cfg.max_retries, cfg.max_connections, service=self.name)
        self.breaker = CircuitBreaker(cfg.breaker_config, clock=self.clock, name=self.name) if cfg.breaker == "cluster" else None
        self.endpoint_breakers: dict[Hashable, CircuitBreaker] = {}
        self.outlier = OutlierDetector(cfg.outlier, self.clock, random.Random(f"{self.name}/outlier")) if cfg.outlier_detection else None
        self.limiter = TokenBucket(cfg.rate_limit, cfg.rate_limit_burst, now=self.clock.monotonic) if cfg.rate_limit > 0 else None
        self.fault = cfg.fault if cfg.fault.enabled else None
        self.health: HealthChecker | None = None
        if cfg.health_check.enabled:
            self.health = HealthChecker(self.name, cfg.health_check, probe=self._health_probe, clock=self.clock, on_pass=self._health_passed)

        gates: list[Gate] = []
        if self.limiter is not None:
            gates.append(RateLimitGate(self.limiter, self))
        if self.breaker is not None:
            gates.append(BreakerGate(self.breaker, self))
        if self.fault is not None:
            gates.append(FaultGate(self.fault, self))
        #: Admission, in order; empty by default.
        self.gates: tuple[Gate, ...] = tuple(gates)
        self._per_endpoint_breakers = cfg.breaker == "endpoint"
        self.host_gate = EndpointBreakers(self) if self._per_endpoint_breakers else ANY_HOST
        feeds: list[AttemptEnded] = [Host.attempt_ended, self.thresholds.attempt_ended]
        if self.outlier is not None:
            self.outlier.on_eject = self._ejected
            feeds.append(self.outlier.attempt_ended)
        if self._per_endpoint_breakers:
            feeds.append(EndpointBreakerFeed(lambda: self.endpoint_breakers).attempt_ended)
        #: Servers' load reports (``load_reports``): an observer, and pollers started with the cluster.
        self.load_reports: LoadReports | None = None
        sources = cfg.load_reports if cfg.load_reports != "auto" else AUTO_LOAD_REPORTS.get(cfg.lb_policy, ())
        if sources:
            self.load_reports = LoadReports(
                self.name, sources, self.clock, lambda: self.hosts,
                metric_names=(cfg.load_metrics_path, cfg.load_metric_waiting, cfg.load_metric_running, cfg.load_metric_kv),
                interval=cfg.load_metrics_interval, timeout=cfg.load_metrics_timeout, oob_interval=cfg.orca_oob_interval, lb=cfg.lb,
            )  # fmt: skip
            feeds.append(self.load_reports.attempt_ended)
        #: Headers an HTTP adapter adds to each attempt so servers attach their
        #: load report (vLLM answers ``endpoint-load-metrics`` only when asked).
        self.load_request_headers: dict[str, str] = {LOAD_FORMAT_HEADER: "TEXT"} if "header" in sources else {}
        for factory in self._observer_factories:
            extra = factory(self)
            if extra is not None:
                feeds.append(extra.attempt_ended)
        #: Every finished attempt's record goes to each of these (an observer's
        #: bound ``attempt_ended``), in order: the load metric (``Host``), the
        #: thresholds, outlier detection, endpoint breakers, extra observers.
        self.observers: tuple[AttemptEnded, ...] = tuple(feeds)

    def reconfigure(self, cfg: "ServiceConfig") -> None:
        """Adopt new settings (an xDS cluster update) in place: the policies are
        composed again, the hosts and their statistics kept, the picker
        rebuilt. Adapters holding this cluster see the change at once. Calls in
        flight finish under the objects they started with; their releases may
        count against the new thresholds and budget, which clamp at zero."""
        with self._write_lock:
            worker, self._health_worker = self._health_worker, None
            reports = self.load_reports
            self._compose(cfg)
        if worker is not None:
            worker.stop()
        if reports is not None:
            reports.close()
        self.start()
        self.update(self.snapshot)

    # -- discovery side -------------------------------------------------------

    def update(self, snapshot: EndpointSnapshot) -> None:
        """Adopt a new snapshot: keep the Host (and its statistics) of every
        endpoint that stays, add new ones, drop the rest, rebuild the picker."""
        cfg = self.config
        with self._write_lock:
            hosts: list[Host] = []
            fresh: dict[tuple[str, int], Host] = {}
            known = self._hosts.get
            for ep in snapshot.endpoints:
                host = known((ep.host, ep.port))
                if host is None:
                    host = Host(ep, decay=cfg.ewma_decay, default_rtt=cfg.ewma_default_rtt, failure_penalty=cfg.ewma_failure_penalty, clock=self.clock)
                else:
                    host.endpoint = ep
                fresh[host.key] = host  # the host's own key tuple: no second one kept per endpoint
                hosts.append(host)
            self._hosts = fresh
            if self.outlier is not None:
                self.outlier.set_hosts(fresh)
            if self.health is not None:
                if self.health.set_hosts(snapshot.endpoints) and self._health_worker is not None:
                    self._health_worker.wake()  # new endpoints are checked at once
            if self.load_reports is not None:
                self.load_reports.set_endpoints(snapshot.endpoints)
            if self._per_endpoint_breakers:
                old = self.endpoint_breakers
                self.endpoint_breakers = {k: old.get(k) or self._endpoint_breaker(k) for k in fresh}
            self._build(snapshot, tuple(hosts))
        for fn in tuple(self._watchers):
            try:
                fn(snapshot)
            except Exception:
                log.exception("meshlib: %s snapshot watcher %r failed", self.name, fn)

    def watch(self, fn: Callable[[EndpointSnapshot], None]) -> Callable[[], None]:
        """Call ``fn(snapshot)`` after each adopted snapshot, on the discovery
        thread (adapters close per-endpoint connections of endpoints that left).
        Returns a function that stops the calls."""
        self._watchers.append(fn)

        def unwatch() -> None:
            try:
                self._watchers.remove(fn)
            except ValueError:
                pass

        return unwatch

    def _ejected(self, host: Host) -> None:
        log.warning("meshlib: %s endpoint %s ejected (outlier detection)", self.name, host.endpoint.address)
        self.rebuild()

    def _endpoint_breaker(self, key: tuple[str, int]) -> CircuitBreaker:
        breaker = CircuitBreaker(self.config.breaker_config, clock=self.clock, name=f"{self.name}/{key[0]}:{key[1]}")
        breaker.on_transition(lambda old, new: self.rebuild() if OPEN in (old, new) else None)
        return breaker

    def _usable(self, host: Host) -> tuple[bool, bool]:
        """(passes health checks, is ejected) for one host."""
        key = host.key
        healthy = host.endpoint.healthy and (self.health is None or self.health.is_healthy(key))
        ejected = self.outlier is not None and self.outlier.is_ejected(key)
        if not ejected and self._per_endpoint_breakers:
            breaker = self.endpoint_breakers.get(key)
            ejected = breaker is not None and breaker.state == OPEN
        return healthy, ejected

    def usable(self, host: Host) -> bool:
        """Whether ``host`` may take traffic now: healthy and not ejected."""
        healthy, ejected = self._usable(host)
        return healthy and not ejected

    def _build(self, snapshot: EndpointSnapshot, hosts: tuple[Host, ...]) -> None:
        if self.health is None and self.outlier is None and not self._per_endpoint_breakers:
            # Nothing but discovery says who is usable: no per-host calls, and the view is the snapshot.
            usable = [h.endpoint.healthy for h in hosts]
            picker, levels = build_picker(self.name, hosts, usable, self.config.lb, self._policy, self.rng, self.clock)
            self._state = _State(snapshot, hosts, picker, tuple(levels), snapshot)
            self.picker = picker
            return
        flags = [self._usable(h) for h in hosts]
        usable = [healthy and not ejected for healthy, ejected in flags]
        picker, levels = build_picker(self.name, hosts, usable, self.config.lb, self._policy, self.rng, self.clock)
        if all(healthy == h.endpoint.healthy and not ejected for h, (healthy, ejected) in zip(hosts, flags)):
            view = snapshot
        else:
            eps = [replace(h.endpoint, healthy=healthy, ejected=ejected) for h, (healthy, ejected) in zip(hosts, flags)]
            view = EndpointSnapshot(snapshot.service, eps, snapshot.version, snapshot.source)
        self._state = _State(snapshot, hosts, picker, tuple(levels), view)
        self.picker = picker

    def rebuild(self) -> None:
        """Rebuild the picker after a health, ejection or breaker change."""
        with self._write_lock:
            state = self._state
            self._build(state.snapshot, state.hosts)

    # -- timers (a Mesh thread calls tick; tests call it directly) ------------

    def tick(self) -> bool:
        """Interval work: outlier detection's timer, and endpoint breakers whose
        open wait is over going half-open. True if the picker was rebuilt."""
        changed = False
        outlier = self.outlier
        if outlier is not None:
            before = outlier.ejected()
            changed = outlier.maybe_tick()
            if changed:
                after = outlier.ejected()
                for host, port in sorted(before - after):
                    log.info("meshlib: %s endpoint %s:%d returned to rotation (outlier detection)", self.name, host, port)
                for host, port in sorted(after - before):
                    log.warning("meshlib: %s endpoint %s:%d ejected (outlier detection)", self.name, host, port)
        if self._per_endpoint_breakers:
            for breaker in list(self.endpoint_breakers.values()):
                if breaker.probe_due() and breaker.try_acquire():  # now half-open
                    breaker.release()
                    changed = True
        if changed:
            self.rebuild()
        return changed

    def check_health(self) -> bool:
        """Run one round of active health checks now; True if the picker changed."""
        if self.health is None:
            return False
        changed = self.health.check_all()
        if changed:
            self.rebuild()
        return changed

    def start(self) -> None:
        """Start the active health-check thread, if checks are configured
        (and the load-report poller, if ``load_reports`` has ``metrics``)."""
        if self.load_reports is not None:
            self.load_reports.start()
        if self.health is not None and self._health_worker is None:
            self._health_worker = PeriodicWorker(f"health-{self.name}", self.config.health_check.interval, self.check_health)
            self._health_worker.start()
            self._health_worker.wake()  # the first round at once

    def close(self) -> None:
        if self.load_reports is not None:
            self.load_reports.close()
        if self._health_worker is not None:
            self._health_worker.stop()

    def _health_passed(self, key: object) -> bool:
        return self.outlier is not None and self.outlier.health_check_passed(key)

    # -- call side ------------------------------------------------------------

    @property
    def snapshot(self) -> EndpointSnapshot:
        return self._state.snapshot

    @property
    def view(self) -> EndpointSnapshot:
        """The snapshot with active health and ejections folded into each endpoint."""
        return self._state.view

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self._state.hosts

    @property
    def levels(self) -> tuple[PriorityLevel, ...]:
        return self._state.levels

    def pick(self, hash_value: int | None = None) -> Host:
        return self.picker.pick(hash_value)

    def count(self, counter: str, n: int = 1) -> None:
        with self._stats_lock:
            self.counters[counter] += n

    def start_call(self, header_hash_key: str | None = None, idempotent: bool = True, timeout: float | None = None) -> "Call":
        key: str | bytes | None = None
        if self.hashing:
            key = current_hash_key()
            if key is None:
                key = header_hash_key
        return Call(self, key, idempotent, timeout)

    def resilience_stats(self) -> dict[str, Any]:
        with self._stats_lock:
            out: dict[str, Any] = {"calls": self.calls.value, **self.counters}
        out["retry_budget"] = {"kind": self.config.retry_budget.kind, "balance": self.budget.balance()}
        out["thresholds"] = self.thresholds.snapshot()
        if self.breaker is not None:
            out["breaker"] = self.breaker.snapshot()
        if self.outlier is not None:
            od = self.outlier.stats()
            od["events"] = [
                {"at": round(at, 3), "address": f"{key[0]}:{key[1]}", "event": what, "reason": reason}
                for at, key, what, reason in self.outlier.events[-20:]
            ]
            out["outlier_detection"] = od
        if self.limiter is not None:
            out["rate_limit"] = self.limiter.snapshot()
        if self.load_reports is not None:
            out["load_reports"] = self.load_reports.stats()
        return out

    def host_resilience(self, host: Host) -> dict[str, Any]:
        key = host.key
        out: dict[str, Any] = {}
        if self.outlier is not None:
            try:
                od = self.outlier.host_stats(key)
            except KeyError:
                od = {}
            od["outlier_ejected"] = od.pop("ejected", False)  # "ejected" is the view's: ejection or an open breaker
            out.update(od)
        if self.health is not None:
            out.update(self.health.host_stats(key))
        if self._per_endpoint_breakers and key in self.endpoint_breakers:
            out["breaker"] = self.endpoint_breakers[key].state
        if self.load_reports is not None:
            out["load_report"] = report_view(host.load, self.clock.monotonic())
        return out
