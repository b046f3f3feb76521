"""A cluster: one service's hosts, its picker, its policies, and the per-call decisions.

Discovery calls :meth:`Cluster.update` with each new snapshot (off the hot
path); it rebuilds the picker and swaps one reference. Calls read that
reference without a lock. The cluster composes the service's resilience
policies (retry policy and budget, circuit-breaker thresholds, breakers,
outlier detection, active health checks, rate limit, fault injection), and
:class:`Call` holds one logical call's decisions as plain methods, shared by
the sync and async drivers in ``_driver``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from .._background import PeriodicWorker
from .._tally import Tally
from ..balancing import HASHING, POLICIES, Picker, build_picker
from ..balancing.hashing import hash_key as _hash
from ..balancing.locality import PriorityLevel
from ..clock import SYSTEM_CLOCK, Clock
from ..config import ServiceConfig
from ..endpoint import EndpointSnapshot
from ..errors import CircuitOpenError, DeadlineExceededError, NoHealthyEndpointsError, RateLimitedError
from ..outcome import Outcome
from .host import Host
from ..resilience.breaker import OPEN, CircuitBreaker
from ..resilience.deadline import current_deadline
from ..resilience.fault import FaultDecision
from ..health import HealthChecker, Probe
from ..resilience.outlier import OutlierDetector
from ..resilience.ratelimit import TokenBucket
from ..resilience.retry import AttemptResult
from ..resilience.thresholds import Thresholds

__all__ = ["Cluster", "Call", "hash_key"]

log = logging.getLogger("meshlib")

_HASH_KEY: contextvars.ContextVar[str | bytes | None] = contextvars.ContextVar("meshlib_hash_key", default=None)


class hash_key:
    """Give calls made inside the block an explicit hash key (ring_hash, maglev)::

        with meshlib.hash_key(user_id):
            session.get("http://profile/")
    """

    __slots__ = ("_key", "_token")

    def __init__(self, key: str | bytes) -> None:
        self._key = key

    def __enter__(self) -> "hash_key":
        self._token = _HASH_KEY.set(self._key)
        return self

    def __exit__(self, *exc: object) -> None:
        _HASH_KEY.reset(self._token)


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
    ) -> None:
        self.name = name
        self.config = cfg
        self.clock = clock
        self.hashing = cfg.lb_policy in HASHING
        self.rng = rng or random.Random()
        #: Returns the Mesh's thread pool (for hedged sync calls), made on first use.
        self.executor = executor
        self._policy = POLICIES[cfg.lb_policy]
        self._hosts: dict[tuple[str, int], Host] = {}
        self._write_lock = threading.Lock()  # snapshot rebuilds only
        self._stats_lock = threading.Lock()  # counters; never waits for a rebuild
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.calls = Tally()

        # Policies, composed once from the immutable config.
        self.retry = cfg.retry
        self.timeout = cfg.timeout
        self.per_try_timeout = cfg.retry.per_try_timeout
        self.hedge = cfg.hedge
        self.hedges = cfg.hedge.enabled
        self.budget = cfg.retry_budget.build(clock)
        self.budget_limited = cfg.retry_budget.kind != "none"
        self.budget_in_flight = self.budget.tracks_in_flight
        self.thresholds = Thresholds(cfg.max_requests, cfg.max_pending_requests, cfg.max_retries, cfg.max_connections, service=name)
        self.breaker = CircuitBreaker(cfg.breaker_config, clock=clock, name=name) if cfg.breaker == "cluster" else None
        self.endpoint_breakers: dict[tuple[str, int], CircuitBreaker] | None = {} if cfg.breaker == "endpoint" else None
        self.outlier = OutlierDetector(cfg.outlier, clock, random.Random(f"{name}/outlier")) if cfg.outlier_detection else None
        self.limiter = TokenBucket(cfg.rate_limit, cfg.rate_limit_burst, now=clock.monotonic) if cfg.rate_limit > 0 else None
        self.fault = cfg.fault if cfg.fault.enabled else None
        self.health: HealthChecker | None = None
        self._health_worker: PeriodicWorker | None = None
        if cfg.health_check.enabled:
            self.health = HealthChecker(name, cfg.health_check, probe=health_probe, clock=clock, on_pass=self._health_passed)

        #: Called with each adopted snapshot (see :meth:`watch`).
        self._watchers: list[Callable[[EndpointSnapshot], None]] = []

        picker, levels = build_picker(name, (), (), cfg, self._policy, self.rng, clock)
        empty = EndpointSnapshot(name, ())
        self._state = _State(empty, (), picker, tuple(levels), empty)

    # -- discovery side -------------------------------------------------------

    def update(self, snapshot: EndpointSnapshot) -> None:
        """Adopt a new snapshot: keep the Host (and its statistics) of every
        endpoint that stays, add new ones, drop the rest, rebuild the picker."""
        cfg = self.config
        with self._write_lock:
            hosts: list[Host] = []
            fresh: dict[tuple[str, int], Host] = {}
            for ep in snapshot.endpoints:
                host = self._hosts.get(ep.key)
                if host is None:
                    host = Host(ep, decay=cfg.ewma_decay, default_rtt=cfg.ewma_default_rtt, failure_penalty=cfg.ewma_failure_penalty, clock=self.clock)
                else:
                    host.endpoint = ep
                fresh[ep.key] = host
                hosts.append(host)
            self._hosts = fresh
            if self.outlier is not None:
                self.outlier.set_hosts(fresh)
            if self.health is not None:
                if self.health.set_hosts(snapshot.endpoints) and self._health_worker is not None:
                    self._health_worker.wake()  # new endpoints are checked at once
            if self.endpoint_breakers is not None:
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

    def _endpoint_breaker(self, key: tuple[str, int]) -> CircuitBreaker:
        breaker = CircuitBreaker(self.config.breaker_config, clock=self.clock, name=f"{self.name}/{key[0]}:{key[1]}")
        breaker.on_transition(lambda old, new: self.rebuild() if OPEN in (old, new) else None)
        return breaker

    def _usable(self, host: Host) -> tuple[bool, bool]:
        """(passes health checks, is ejected) for one host."""
        key = host.key
        healthy = host.endpoint.healthy and (self.health is None or self.health.is_healthy(key))
        ejected = self.outlier is not None and self.outlier.is_ejected(key)
        if not ejected and self.endpoint_breakers is not None:
            breaker = self.endpoint_breakers.get(key)
            ejected = breaker is not None and breaker.state == OPEN
        return healthy, ejected

    def usable(self, host: Host) -> bool:
        """Whether ``host`` may take traffic now: healthy and not ejected."""
        healthy, ejected = self._usable(host)
        return healthy and not ejected

    def _build(self, snapshot: EndpointSnapshot, hosts: tuple[Host, ...]) -> None:
        flags = [self._usable(h) for h in hosts]
        usable = [healthy and not ejected for healthy, ejected in flags]
        picker, levels = build_picker(self.name, hosts, usable, self.config, self._policy, self.rng, self.clock)
        if all(healthy == h.endpoint.healthy and not ejected for h, (healthy, ejected) in zip(hosts, flags)):
            view = snapshot
        else:
            eps = [replace(h.endpoint, healthy=healthy, ejected=ejected) for h, (healthy, ejected) in zip(hosts, flags)]
            view = EndpointSnapshot(snapshot.service, eps, snapshot.version, snapshot.source)
        self._state = _State(snapshot, hosts, picker, tuple(levels), view)

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
        if self.endpoint_breakers is not None:
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
        """Start the active health-check thread, if checks are configured."""
        if self.health is not None and self._health_worker is None:
            self._health_worker = PeriodicWorker(f"health-{self.name}", self.config.health_check.interval, self.check_health)
            self._health_worker.start()
            self._health_worker.wake()  # the first round at once

    def close(self) -> None:
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
        return self._state.picker.pick(hash_value)

    def count(self, counter: str, n: int = 1) -> None:
        with self._stats_lock:
            self.counters[counter] += n

    def start_call(self, header_hash_key: str | None = None, idempotent: bool = True, timeout: float | None = None) -> "Call":
        key: str | bytes | None = None
        if self.hashing:
            key = _HASH_KEY.get()
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
        if self.endpoint_breakers is not None and key in self.endpoint_breakers:
            out["breaker"] = self.endpoint_breakers[key].state
        return out


class Call:
    """One logical call's decisions: admission, which host next, whether and
    when to try again, and the bookkeeping each step owes the policies.

    Drivers call :meth:`begin` once, then for each attempt :meth:`pick`,
    :meth:`attempt_timeout` and :meth:`done`, and :meth:`finish` at the end
    (always, in a ``finally``).
    """

    __slots__ = ("cluster", "key", "idempotent", "tried", "attempt", "retries", "deadline", "started", "ok", "_breaker", "_is_retry", "_deposited", "_caller_deadline")

    def __init__(self, cluster: Cluster, key: str | bytes | None, idempotent: bool = True, timeout: float | None = None) -> None:
        """``timeout``: the caller's own limit for this call (gRPC's ``timeout=``),
        counted from now on the cluster's clock, as a ``meshlib.deadline`` block would."""
        self.cluster = cluster
        self._caller_deadline = None if timeout is None else cluster.clock.monotonic() + timeout
        self.key = key
        self.idempotent = idempotent
        self.tried: list[Host] = []
        self.attempt = 0
        self.retries = 0
        self.deadline: float | None = None
        self.started = 0.0
        self.ok = False
        self._breaker: CircuitBreaker | None = None
        self._is_retry = False  # the attempt in progress (or about to be) holds a granted retry
        self._deposited = False

    # -- admission ---------------------------------------------------------------

    def begin(self) -> FaultDecision | None:
        """Admit the call (rate limit, breaker), fix its deadline, count it for
        the budget; returns the fault to inject, if any. Raises
        ``RateLimitedError`` / ``CircuitOpenError`` without touching the network."""
        c = self.cluster
        if c.limiter is not None and not c.limiter.try_take():
            c.count("rate_limited")
            raise RateLimitedError(c.name, c.limiter.rate)
        if c.breaker is not None:
            if not c.breaker.try_acquire():
                c.count("breaker_rejected")
                raise CircuitOpenError(c.name, f"breaker open ({_breaker_reason(c.breaker)})")
            self._breaker = c.breaker
        self._start_clock()
        c.calls.add()
        decision = None
        if c.fault is not None:
            decision = c.fault.decide(c.rng)
            if decision.delay:
                c.count("fault_delays")
            if decision.abort_status is not None:
                c.count("fault_aborts")
                return decision  # never sent: not a request for the retry budget
        c.budget.deposit()
        self._deposited = True
        return decision

    def _start_clock(self) -> None:
        """Fix the call's deadline: the service timeout from now, or the caller's, if sooner."""
        c = self.cluster
        self.started = now = c.clock.monotonic()
        deadline = current_deadline()
        caller = self._caller_deadline
        if caller is not None and (deadline is None or caller < deadline):
            deadline = caller
        timeout = c.timeout
        if timeout is not None:
            mine = now + timeout
            deadline = mine if deadline is None or mine < deadline else deadline
        self.deadline = deadline

    def fault_delayed(self) -> None:
        """An injected delay is over: as behind Envoy's fault filter, the
        service timeout starts now (a caller's own deadline kept running)."""
        self._start_clock()

    @property
    def hedging(self) -> bool:
        """Whether this call hedges (the service hedges and the method is idempotent)."""
        return self.cluster.hedges and self.idempotent

    # -- attempts ----------------------------------------------------------------

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - self.cluster.clock.monotonic()

    def attempt_timeout(self) -> float | None:
        """This attempt's time limit: the per-try timeout or what is left of the
        deadline, whichever is shorter (None: no limit)."""
        per_try = self.cluster.per_try_timeout
        if self.deadline is None:
            return per_try
        left = self.deadline - self.cluster.clock.monotonic()
        return left if per_try is None or left < per_try else per_try

    def pick(self, failure: BaseException | None = None) -> Host:
        """Choose this attempt's host (another than those tried, where one
        exists), mark it started and return it. ``failure`` is the previous
        attempt's error: if no host is left to retry on, it is raised instead."""
        cluster = self.cluster
        if self.deadline is not None and self.deadline <= cluster.clock.monotonic():
            self.expired(failure)
        key = self.key
        try:
            host = cluster._state.picker.pick(None if key is None else _hash(key, self.attempt))
        except NoHealthyEndpointsError:
            if failure is not None:
                raise failure from None
            raise
        tried = self.tried
        if tried and host in tried:
            host = self._fresh_host(host)
        breakers = cluster.endpoint_breakers
        if breakers is not None:
            host = self._admit_endpoint(host, breakers, failure)
        try:
            cluster.thresholds.acquire_attempt()
        except CircuitOpenError:
            cluster.count("overflow")
            self._release_retry()
            if breakers is not None and host.key in breakers:
                breakers[host.key].release()  # the permit was never used
            if failure is not None:
                raise failure from None
            raise
        tried.append(host)
        self.attempt += 1
        host.start()
        return host

    def _fresh_host(self, host: Host) -> Host:
        """Envoy's previous_hosts predicate: re-pick a few times for a host not
        yet tried; failing that, the first usable untried one; failing that, ``host``."""
        cluster, key, tried = self.cluster, self.key, self.tried
        for extra in range(1, 4):
            candidate = cluster.pick(None if key is None else _hash(key, self.attempt + 7919 * extra))
            if candidate not in tried:
                return candidate
        for other in cluster.hosts:
            if other not in tried and cluster.usable(other):
                return other
        return host

    def _admit_endpoint(self, host: Host, breakers: dict[tuple[str, int], CircuitBreaker], failure: BaseException | None) -> Host:
        breaker = breakers.get(host.key)
        if breaker is None or breaker.try_acquire():
            return host
        for other in self.cluster.hosts:
            b = breakers.get(other.key)
            if other is not host and other not in self.tried and (b is None or b.try_acquire()):
                return other
        self.cluster.count("breaker_rejected")
        if failure is not None:
            raise failure
        raise CircuitOpenError(self.cluster.name, "breaker open on every endpoint")

    def done(self, host: Host, started: float, result: AttemptResult, *, decide: bool = True) -> float | None:
        """Record one finished attempt; return the delay before the next
        attempt, or None to stop (the result goes back to the caller). With
        ``decide=False`` (hedged attempts) only the bookkeeping is done."""
        elapsed = time.perf_counter() - started
        cluster = self.cluster
        outcome = result.outcome
        cluster.thresholds.release_attempt()
        if decide and self._is_retry:
            self._release_retry()
        host.done(elapsed, outcome)
        if outcome == Outcome.CANCELLED:
            return None
        self.ok = success = outcome == Outcome.SUCCESS
        outlier = cluster.outlier
        if outlier is not None and outlier.record(host.key, outcome, result.status):
            log.warning("meshlib: %s endpoint %s ejected (outlier detection)", cluster.name, host.endpoint.address)
            cluster.rebuild()
        if cluster.endpoint_breakers is not None:
            breaker = cluster.endpoint_breakers.get(host.key)
            if breaker is not None:
                breaker.on_result(success, elapsed)
        if not decide or (success and (result.status is None or result.status < 400)):
            return None
        return self._retry_delay(result)

    def _retry_delay(self, result: AttemptResult) -> float | None:
        cluster = self.cluster
        policy = cluster.retry
        if not policy.should_retry(result, idempotent=self.idempotent, retries_done=self.retries):
            return None
        delay = policy.next_delay(result, self.retries + 1, cluster.rng)
        left = self.remaining()
        if left is not None and delay >= left:
            return None  # no time left for another attempt
        if not self.grant_retry():
            return None
        self._is_retry = True
        return delay

    def grant_retry(self, counter: str = "retries") -> bool:
        """Ask the budget (or, without one, ``max_retries``) for one more
        attempt; each granted one is paid back with :meth:`retry_finished`."""
        cluster = self.cluster
        if cluster.budget_limited:
            if not cluster.budget.try_withdraw():
                cluster.count(f"{counter}_budget_exhausted")
                return False
        elif not cluster.thresholds.acquire_retry():
            cluster.count("retries_overflow")
            return False
        self.retries += 1
        cluster.count(counter)
        return True

    def skip_retry(self) -> None:
        """The retry just granted will not be sent: the request's body cannot be
        replayed. Hands the retry back, uncounts it and counts ``retries_skipped_body``."""
        cluster = self.cluster
        self._release_retry()
        self.retries -= 1
        with cluster._stats_lock:
            cluster.counters["retries"] -= 1
            cluster.counters["retries_skipped_body"] += 1

    def retry_finished(self) -> None:
        """A granted retry (or hedge) attempt is over, or was never made."""
        if self.cluster.budget_limited:
            self.cluster.budget.retry_done()
        else:
            self.cluster.thresholds.release_retry()

    def _release_retry(self) -> None:
        if self._is_retry:
            self._is_retry = False
            self.retry_finished()

    def enter_pending(self) -> bool:
        """Hold a ``max_pending_requests`` slot for the wait before the next
        attempt; False (and the granted retry handed back) if none is free."""
        try:
            self.cluster.thresholds.acquire_pending()
        except CircuitOpenError:
            self.cluster.count("overflow")
            self._release_retry()
            return False
        return True

    def sleep(self, delay: float) -> None:
        """Sleep out a back-off delay (after :meth:`enter_pending`), on the cluster's clock."""
        try:
            if delay > 0:
                self.cluster.clock.sleep(delay)
        finally:
            self.cluster.thresholds.release_pending()

    async def sleep_async(self, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self.cluster.thresholds.release_pending()

    def expired(self, cause: BaseException | None = None) -> None:
        """Raise ``DeadlineExceededError`` (from ``cause``)."""
        cluster = self.cluster
        cluster.count("deadline_exceeded")
        timeout = (self.deadline - self.started) if self.deadline is not None else 0.0
        raise DeadlineExceededError(cluster.name, timeout) from cause

    def is_expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def finish(self) -> None:
        """The call is over: release what it holds, tell the budget and breaker."""
        cluster = self.cluster
        if self._is_retry:
            self._release_retry()
        if self._deposited and cluster.budget_in_flight:
            cluster.budget.request_done()
        if self._breaker is not None:
            if self.attempt == 0:
                self._breaker.release()  # refused before any attempt: no verdict
            else:
                self._breaker.on_result(self.ok, cluster.clock.monotonic() - self.started)


def _breaker_reason(breaker: CircuitBreaker) -> str:
    snap = breaker.snapshot()
    cfg = breaker.config
    if snap["state"] == "half_open":
        return f"half-open, its {cfg.permitted_calls_half_open} probe calls are out"
    return (
        f"failure rate at or above {cfg.failure_rate_threshold:g}% or slow-call rate at or above "
        f"{cfg.slow_call_rate_threshold:g}%; probe calls go through {cfg.wait_duration_open:g}s after it opened"
    )
