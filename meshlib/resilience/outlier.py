"""Outlier detection (passive health checking) with Envoy's semantics and defaults.

Pure logic: no I/O, no threads. The cluster feeds every finished attempt to
:meth:`OutlierDetector.record` and calls :meth:`OutlierDetector.tick` every
``interval`` (or :meth:`OutlierDetector.maybe_tick` from any convenient place);
both return True when the ejected set changed, which is the cue to rebuild the
picker with ejected hosts marked unusable.

How outcomes count (``meshlib.outcome.Outcome``; Envoy's router does the same):

* A response: its HTTP status decides (``SUCCESS`` without a status is 200,
  ``FAILURE`` without one is 500; gRPC callers pass the status Envoy maps the
  grpc-status to, e.g. UNAVAILABLE 503). Any 5xx counts towards
  ``consecutive_5xx``; 502/503/504 also towards ``consecutive_gateway_failure``
  (another 5xx resets that one); anything below 500, 4xx included, is a success
  and resets both.
* ``CONNECT_FAILURE``, ``TLS_FAILURE`` (a refused certificate or SPIFFE ID) and
  ``RESET`` are local-origin failures (Envoy's LocalOriginConnectFailed),
  ``TIMEOUT`` too (LocalOriginTimeout). Unless ``split_external_local_origin_errors``,
  they count as 503 and 504, towards both consecutive counters and the success rate. In split mode they
  count only towards ``consecutive_local_origin_failure`` and the local-origin
  success rate, and every response counts as a local-origin success.
* ``ERROR`` (an exception meshlib does not classify) is Envoy's
  ExtOriginRequestFailed: a 500 (503 in split mode, as Envoy maps it).

Consecutive detectors eject inline, when a counter reaches its threshold (a
threshold of 0 never fires). Success rate and failure percentage run on each
tick over the requests of the interval just ended: a host takes part only
with at least ``*_request_volume`` requests, and only if at least
``*_minimum_hosts`` hosts do. Success rate ejects hosts whose rate is below
``mean - success_rate_stdev_factor / 1000 x stdev`` (population stdev);
failure percentage ejects hosts whose failure percentage is
``>= failure_percentage_threshold``.

Each detection is enforced with probability ``enforcing_*`` % (drawn from the
injected rng), and only while ``100 x (ejected + 1) <= max_ejection_percent x
hosts``; with ``always_eject_one_host`` one host may be ejected whatever the
percentage. A host stays ejected for ``min(base_ejection_time x multiplier,
max(base_ejection_time, max_ejection_time))`` plus a random jitter up to
``max_ejection_time_jitter``; the multiplier grows by one per ejection (up to
the cap) and drops by one on each tick at which the host has been back in
service for at least an interval. Hosts return on the first tick after their
time is up; returning resets the consecutive counters.

Active health checks: ejection is a flag of its own, beside the endpoint's
active-health flag; a host takes traffic only when healthy *and* not ejected.
With ``successful_active_health_check_uneject_host`` (default true, as
Envoy) the health checker calls :meth:`OutlierDetector.health_check_passed`
after each passing check, which returns an ejected host at once (resetting
its consecutive counters; the multiplier is kept, so a relapse is ejected for
longer). With it false, passing checks leave ejections alone. A failing
check never ejects: it marks the endpoint unhealthy through the checker.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from ..clock import SYSTEM_CLOCK, Clock
from ..outcome import Outcome
from .outlier_config import OutlierConfig

__all__ = ["OutlierConfig", "OutlierDetector", "success_rate_threshold", "REASONS"]

# Ejection reasons: Envoy's OutlierEjectionType names, lower-cased.
CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
SUCCESS_RATE = "success_rate"
SUCCESS_RATE_LOCAL_ORIGIN = "success_rate_local_origin"
FAILURE_PERCENTAGE = "failure_percentage"
FAILURE_PERCENTAGE_LOCAL_ORIGIN = "failure_percentage_local_origin"
REASONS = (
    CONSECUTIVE_5XX,
    CONSECUTIVE_GATEWAY_FAILURE,
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    SUCCESS_RATE,
    SUCCESS_RATE_LOCAL_ORIGIN,
    FAILURE_PERCENTAGE,
    FAILURE_PERCENTAGE_LOCAL_ORIGIN,
)
# Un-ejection reasons.
EJECTION_TIME_ELAPSED = "ejection_time_elapsed"
ACTIVE_HEALTH_CHECK = "active_health_check"

_GATEWAY = frozenset({502, 503, 504})


def success_rate_threshold(rates: Sequence[float], stdev_factor: float) -> tuple[float, float]:
    """Envoy's success-rate ejection threshold: ``(mean, mean - stdev_factor x stdev)``
    over success rates in percent, with the population standard deviation.

    >>> success_rate_threshold([50, 100, 100, 100, 100], 1.9)
    (90.0, 52.0)
    """
    mean = sum(rates) / len(rates)
    stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
    return mean, mean - stdev_factor * stdev


_SUCCESS = Outcome.SUCCESS
_CANCELLED = Outcome.CANCELLED


class _HostState:
    __slots__ = (
        "ejected",
        "times_ejected",
        "multiplier",
        "ejected_at",
        "unejected_at",
        "jitter",
        "reason",
        "c5xx",
        "cgw",
        "clocal",
        "ext",
        "loc",
        "success_rate",
        "source",
        "base",
        "seen",
        "extra",
    )

    def __init__(self) -> None:
        self.ejected = False
        self.times_ejected = 0
        self.multiplier = 0
        self.ejected_at = 0.0
        self.unejected_at: float | None = None
        self.jitter = 0.0
        self.reason: str | None = None
        self.c5xx = self.cgw = self.clocal = 0
        self.ext = [0, 0]  # this interval's [requests, successes], external origin
        self.loc = [0, 0]  # the same for local origin (split mode)
        self.success_rate: float | None = None
        #: The host counting its own successes (``successes``), if the cluster handed one
        #: over; its count when the interval began (``base``) and at the latest failure
        #: (``seen``); successes it counted that are 5xx failures here (``extra``).
        self.source: Any = None
        self.base = self.seen = self.extra = 0


Event = tuple[float, Hashable, str, str]


class OutlierDetector:
    """Ejects hosts, keyed by any hashable, from one cluster. One lock; thread-safe."""

    def __init__(
        self,
        config: OutlierConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        *,
        max_events: int = 256,
    ) -> None:
        self.config = cfg = config or OutlierConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._hosts: dict[Hashable, _HostState] = {}
        self._active = 0
        self._events: deque[Event] = deque(maxlen=max_events)
        self._counters = {"ejections_overflow": 0, "ejections_enforced_total": 0}
        for r in REASONS:
            self._counters[f"ejections_detected_{r}"] = 0
            self._counters[f"ejections_enforced_{r}"] = 0
        self._sr: dict[str, tuple[float, float] | None] = {SUCCESS_RATE: None, SUCCESS_RATE_LOCAL_ORIGIN: None}
        self._cap = max(cfg.base_ejection_time, cfg.max_ejection_time)
        self._enforcing = {
            CONSECUTIVE_5XX: cfg.enforcing_consecutive_5xx,
            CONSECUTIVE_GATEWAY_FAILURE: cfg.enforcing_consecutive_gateway_failure,
            CONSECUTIVE_LOCAL_ORIGIN_FAILURE: cfg.enforcing_consecutive_local_origin_failure,
            SUCCESS_RATE: cfg.enforcing_success_rate,
            SUCCESS_RATE_LOCAL_ORIGIN: cfg.enforcing_local_origin_success_rate,
            FAILURE_PERCENTAGE: cfg.enforcing_failure_percentage,
            FAILURE_PERCENTAGE_LOCAL_ORIGIN: cfg.enforcing_failure_percentage_local_origin,
        }
        self._next_tick = clock.monotonic() + cfg.interval
        self._split = cfg.split_external_local_origin_errors
        #: Hosts count their own successes (set_hosts got them): nothing to do on a success.
        self._quick = False
        #: Called with the host an attempt just got ejected (the cluster rebuilds its picker).
        self.on_eject: Callable[[Any], None] = lambda host: None

    # -- host set ------------------------------------------------------------------

    def set_hosts(self, keys: Iterable[Hashable]) -> bool:
        """Adopt the current host set: keep the state of hosts that stay, start
        new ones fresh, forget the rest. True if an ejected host left.

        ``keys`` may map each key to its host, anything with a ``successes``
        count that only grows (the cluster's ``Host``). Unless external and
        local-origin errors are split, a success then costs nothing here: the
        interval's successes are read from the hosts at each tick, and a
        failure first checks whether a success came since the last one (which
        ends a run of consecutive failures)."""
        hosts = keys if isinstance(keys, Mapping) else None
        with self._lock:
            old = self._hosts
            if hosts is None:
                self._hosts = {k: old.get(k) or _HostState() for k in keys}
            else:
                self._hosts = {k: self._counted_by(old.get(k) or _HostState(), host) for k, host in hosts.items()}
                self._quick = not self._split
            gone = sum(1 for k, h in old.items() if h.ejected and k not in self._hosts)
            self._active -= gone
            return gone > 0

    @staticmethod
    def _counted_by(h: _HostState, host: Any) -> _HostState:
        if h.source is not host:
            if h.source is not None:  # the same key, a new host: keep the old one's successes
                n = h.source.successes - h.base - h.extra
                h.ext[0], h.ext[1] = h.ext[0] + n, h.ext[1] + n
            h.source = host
            h.base = h.seen = host.successes
            h.extra = 0
        return h

    def _settle(self, h: _HostState) -> None:
        """Successes since a counted host's last failure end its failure runs (lock held)."""
        source = h.source
        if source is not None and self._quick:
            now = source.successes
            if now != h.seen:
                h.seen = now
                h.c5xx = h.cgw = 0

    # -- the call path ---------------------------------------------------------------

    def record(self, key: Hashable, outcome: str, status: int | None = None) -> bool:
        """Count one finished attempt on ``key``; True if it ejected the host.
        Attempts on hosts outside the current set are ignored."""
        split = self.config.split_external_local_origin_errors
        if outcome == _SUCCESS and not split and (status is None or status < 500):
            self._success(key)
            return False
        lock = self._lock
        lock.acquire()
        try:
            h = self._hosts.get(key)
            if h is None:
                return False
            self._settle(h)
            if outcome == Outcome.SUCCESS and h.source is not None and self._quick:
                h.extra += 1  # its host counted a success; here it is a 5xx
            if outcome == Outcome.SUCCESS or outcome == Outcome.FAILURE:
                if split:
                    h.loc[0] += 1
                    h.loc[1] += 1
                    h.clocal = 0
                if status is None:
                    status = 200 if outcome == Outcome.SUCCESS else 500
                if status < 500:
                    # The common case, inline (_response's first branch).
                    ext = h.ext
                    ext[0] += 1
                    ext[1] += 1
                    h.c5xx = h.cgw = 0
                    return False
                return self._response(key, h, status)
            if outcome in Outcome.LOCAL_ORIGIN:
                if split:
                    return self._local_failure(key, h)
                return self._response(key, h, 504 if outcome == Outcome.TIMEOUT else 503)
            # Outcome.ERROR, or anything unknown: Envoy's ExtOriginRequestFailed.
            return self._response(key, h, status if status is not None else (503 if split else 500))
        finally:
            lock.release()

    def _success(self, key: Hashable) -> None:
        """A success, without the lock: it counts and clears the consecutive-failure
        counts (when set). Two racing threads may both read a count before either
        stores it, so the success-rate window may miss a success under contention,
        as an unsynchronised statistic may; ejection decisions take the lock."""
        h = self._hosts.get(key)
        if h is not None:
            ext = h.ext
            ext[0] += 1
            ext[1] += 1
            if h.c5xx or h.cgw:
                h.c5xx = h.cgw = 0

    def attempt_ended(self, host: Any, record: Any) -> None:
        """As an observer of finished attempts (anything with ``host.key`` and
        ``record.outcome`` / ``record.status``): :meth:`record`, then
        ``on_eject(host)`` if it ejected the host."""
        outcome = record.outcome
        if outcome == _SUCCESS and not self._split:
            status = record.status
            if status is None or status < 500:  # record()'s lock-free common case, inline
                if not self._quick:  # else counted by the host itself (see set_hosts)
                    self._success(host.key)
                return
        if outcome != _CANCELLED and self.record(host.key, outcome, record.status):
            self.on_eject(host)

    def is_ejected(self, key: Hashable) -> bool:
        h = self._hosts.get(key)
        return h is not None and h.ejected

    def ejected(self) -> frozenset[Hashable]:
        with self._lock:
            return frozenset(k for k, h in self._hosts.items() if h.ejected)

    # -- the interval timer ---------------------------------------------------------

    def tick(self) -> bool:
        """One interval's work, as Envoy's interval timer: return hosts whose time
        is up, run success-rate and failure-percentage detection over the interval's
        counts, decay multipliers, reset the counts. True if the ejected set changed."""
        with self._lock:
            return self._tick(self._clock.monotonic())

    def maybe_tick(self) -> bool:
        """:meth:`tick` if an interval has passed since the last one, else nothing."""
        now = self._clock.monotonic()
        if now < self._next_tick:
            return False
        with self._lock:
            return now >= self._next_tick and self._tick(now)

    def health_check_passed(self, key: Hashable) -> bool:
        """An active health check of ``key`` passed; with
        ``successful_active_health_check_uneject_host`` an ejected host returns
        now. True if it did."""
        if not self.config.successful_active_health_check_uneject_host:
            return False
        with self._lock:
            h = self._hosts.get(key)
            if h is None or not h.ejected:
                return False
            self._uneject(key, h, self._clock.monotonic(), ACTIVE_HEALTH_CHECK)
            return True

    # -- reads ------------------------------------------------------------------------

    def host_stats(self, key: Hashable) -> dict[str, object]:
        """One host's outlier state (KeyError if it is not in the set)."""
        with self._lock:
            h = self._hosts[key]
            self._settle(h)
            return {
                "ejected": h.ejected,
                "times_ejected": h.times_ejected,
                "ejection_multiplier": h.multiplier,
                "ejected_until": h.ejected_at + self._duration(h) if h.ejected else None,
                "consecutive_5xx": h.c5xx,
                "consecutive_gateway_failure": h.cgw,
                "consecutive_local_origin_failure": h.clocal,
                "last_ejection_reason": h.reason,
                "success_rate": h.success_rate,
            }

    def stats(self) -> dict[str, object]:
        """Cluster-wide counters, named as Envoy's ``outlier_detection.*`` stats."""
        with self._lock:
            out: dict[str, object] = dict(self._counters)
            out["ejections_active"] = self._active
            for kind, nums in self._sr.items():
                prefix = "" if kind == SUCCESS_RATE else "local_origin_"
                out[f"{prefix}success_rate_average"] = nums[0] if nums else None
                out[f"{prefix}success_rate_ejection_threshold"] = nums[1] if nums else None
            return out

    @property
    def events(self) -> list[Event]:
        """The latest ``(time, key, "eject" | "uneject", reason)``, oldest first."""
        with self._lock:
            return list(self._events)

    # -- internals (lock held) -----------------------------------------------------------

    def _response(self, key: Hashable, h: _HostState, status: int) -> bool:
        cfg = self.config
        h.ext[0] += 1
        if not 500 <= status <= 599:
            h.ext[1] += 1
            h.c5xx = h.cgw = 0
            return False
        ejected = False
        if status in _GATEWAY:
            h.cgw += 1
            if h.cgw == cfg.consecutive_gateway_failure:
                ejected = self._consecutive(key, h, CONSECUTIVE_GATEWAY_FAILURE)
        else:
            h.cgw = 0
        h.c5xx += 1
        if h.c5xx == cfg.consecutive_5xx:
            ejected = self._consecutive(key, h, CONSECUTIVE_5XX) or ejected
        return ejected

    def _local_failure(self, key: Hashable, h: _HostState) -> bool:
        h.loc[0] += 1
        h.clocal += 1
        if h.clocal == self.config.consecutive_local_origin_failure:
            return self._consecutive(key, h, CONSECUTIVE_LOCAL_ORIGIN_FAILURE)
        return False

    def _consecutive(self, key: Hashable, h: _HostState, reason: str) -> bool:
        # As Envoy: an ejected host keeps counting (no second ejection) until it
        # returns; otherwise the counter restarts whether or not it was enforced.
        if h.ejected:
            return False
        self._counters[f"ejections_detected_{reason}"] += 1
        ejected = self._eject(key, h, reason)
        if reason == CONSECUTIVE_5XX:
            h.c5xx = 0
        elif reason == CONSECUTIVE_GATEWAY_FAILURE:
            h.cgw = 0
        else:
            h.clocal = 0
        return ejected

    def _eject(self, key: Hashable, h: _HostState, reason: str) -> bool:
        cfg = self.config
        allowed = 100 * (self._active + 1) <= cfg.max_ejection_percent * len(self._hosts)
        if not allowed and not (cfg.always_eject_one_host and self._active == 0):
            self._counters["ejections_overflow"] += 1
            return False
        pct = self._enforcing[reason]
        if pct <= 0 or (pct < 100 and self._rng.random() * 100.0 >= pct):
            return False
        now = self._clock.monotonic()
        jitter = cfg.max_ejection_time_jitter
        h.ejected = True
        h.times_ejected += 1
        h.ejected_at = now
        h.reason = reason
        h.jitter = self._rng.uniform(0.0, jitter) if jitter > 0 else 0.0
        if h.multiplier * cfg.base_ejection_time < self._cap + cfg.base_ejection_time:
            h.multiplier += 1
        self._active += 1
        self._counters[f"ejections_enforced_{reason}"] += 1
        self._counters["ejections_enforced_total"] += 1
        self._events.append((now, key, "eject", reason))
        return True

    def _uneject(self, key: Hashable, h: _HostState, now: float, reason: str) -> None:
        h.ejected = False
        h.unejected_at = now
        h.c5xx = h.cgw = h.clocal = 0
        self._active -= 1
        self._events.append((now, key, "uneject", reason))

    def _duration(self, h: _HostState) -> float:
        return min(self.config.base_ejection_time * h.multiplier, self._cap) + h.jitter

    def _tick(self, now: float) -> bool:
        cfg = self.config
        self._next_tick = now + cfg.interval
        changed = False
        for key, h in self._hosts.items():
            source = h.source
            if source is not None and self._quick:  # the interval's successes, counted by the host
                count = source.successes
                n = count - h.base - h.extra
                h.base, h.extra = count, 0
                h.ext[0] += n
                h.ext[1] += n
            h.success_rate = None
            if h.ejected and now - h.ejected_at >= self._duration(h):
                self._uneject(key, h, now, EJECTION_TIME_ELAPSED)
                changed = True
        if self._rates(0, SUCCESS_RATE, FAILURE_PERCENTAGE):
            changed = True
        if cfg.split_external_local_origin_errors and self._rates(1, SUCCESS_RATE_LOCAL_ORIGIN, FAILURE_PERCENTAGE_LOCAL_ORIGIN):
            changed = True
        for h in self._hosts.values():
            if not h.ejected and h.multiplier and h.unejected_at is not None and now - h.unejected_at >= cfg.interval:
                h.multiplier -= 1
            h.ext[0] = h.ext[1] = h.loc[0] = h.loc[1] = 0
        return changed

    def _rates(self, origin: int, sr_reason: str, fp_reason: str) -> bool:
        """Success-rate and failure-percentage detection over one origin's counts."""
        cfg = self.config
        n = len(self._hosts)
        self._sr[sr_reason] = None
        if n < cfg.success_rate_minimum_hosts and n < cfg.failure_percentage_minimum_hosts:
            return False
        sr_hosts: list[tuple[Hashable, _HostState, float]] = []
        fp_hosts: list[tuple[Hashable, _HostState, float]] = []
        for key, h in self._hosts.items():
            total, ok = h.loc if origin else h.ext
            if h.ejected or total == 0:
                continue
            rate = 100.0 * ok / total
            if origin == 0 and total >= min(cfg.success_rate_request_volume, cfg.failure_percentage_request_volume):
                h.success_rate = rate
            if total >= cfg.success_rate_request_volume:
                sr_hosts.append((key, h, rate))
            if total >= cfg.failure_percentage_request_volume:
                fp_hosts.append((key, h, rate))
        changed = False
        if sr_hosts and len(sr_hosts) >= cfg.success_rate_minimum_hosts:
            mean, threshold = success_rate_threshold([r for _, _, r in sr_hosts], cfg.success_rate_stdev_factor / 1000.0)
            self._sr[sr_reason] = (mean, threshold)
            for key, h, rate in sr_hosts:
                if rate < threshold:
                    self._counters[f"ejections_detected_{sr_reason}"] += 1
                    changed = self._eject(key, h, sr_reason) or changed
        if fp_hosts and len(fp_hosts) >= cfg.failure_percentage_minimum_hosts:
            for key, h, rate in fp_hosts:
                if not h.ejected and 100.0 - rate >= cfg.failure_percentage_threshold:
                    self._counters[f"ejections_detected_{fp_reason}"] += 1
                    changed = self._eject(key, h, fp_reason) or changed
        return changed
