"""Server load reports as the balancers read them: one immutable report per host.

A report (an ORCA ``OrcaLoadReport``, vLLM's ``endpoint-load-metrics`` header,
or a scrape of the server's Prometheus ``/metrics``; parsed in
``meshlib.health.load``) is stored whole on its host (``host.load``), stamped
with the clock's ``monotonic`` time and with the host's request count at that
moment, so a picker can tell how old it is and how many requests it has sent
there since. Everything here is pure: the balancers that use reports
(``least_loaded``, ``wrr_orca``, prefix affinity) call these functions.

``LoadSettings`` is the few :class:`~meshlib.balancing.settings.LbSettings`
fields these policies read, renamed in one place (``load_settings(lb)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Sequence, Sized

from .settings import LbSettings

__all__ = ["LoadReport", "LoadSettings", "load_settings", "bounded", "fresh_report", "est_queue", "saturated", "report_view", "scorer"]

_EMPTY: Mapping[str, float] = MappingProxyType({})


class LoadReport(NamedTuple):
    """One load report of one endpoint (None fields: not reported)."""

    #: ``clock.monotonic()`` when it arrived.
    at: float
    #: The host's request count when it arrived (requests sent since count against it).
    requests_at: int
    #: Where it came from: ``header`` (HTTP response), ``orca`` (gRPC trailer),
    #: ``oob`` (ORCA out-of-band stream) or ``metrics`` (a /metrics scrape).
    source: str
    #: Requests waiting in the server's queue (vLLM ``num_requests_waiting``).
    waiting: float | None = None
    #: Requests the server is running now (vLLM ``num_requests_running``).
    running: float | None = None
    #: KV-cache use, 0..1 (vLLM ``kv_cache_usage_perc``).
    kv: float | None = None
    cpu: float | None = None
    #: ORCA ``application_utilization`` (gRFC A58 prefers it over CPU).
    app: float | None = None
    #: ORCA ``rps_fractional`` and ``eps`` (queries and errors per second).
    rps: float | None = None
    eps: float | None = None
    named: Mapping[str, float] = _EMPTY
    #: gRFC A58: since when this host's reports have carried a usable weight.
    nonempty_since: float | None = None


@dataclass(frozen=True)
class LoadSettings:
    """What the load-aware policies read of the service's ``LbSettings``
    (its defaults are those of ``DEFAULT_LB``: ``load_settings(DEFAULT_LB)``)."""

    #: Reports older than this are ignored (own in-flight count only).
    max_age: float
    #: A host is saturated when its estimated queue is above this ...
    queue_threshold: float
    #: ... or its KV-cache use above this ...
    kv_threshold: float
    #: ... or its in-flight count above factor x the mean (Envoy hash_balance_factor / 100; 0: off).
    balance_factor: float
    #: least_loaded's score: weights of the estimated queue, KV use and own in-flight count.
    queue_weight: float
    kv_weight: float
    inflight_weight: float
    #: When every candidate is saturated: ``spill`` (the least loaded anyway) or ``fail``.
    saturation: str
    #: Prefix affinity: the key's first unsaturated owner (1), or the less loaded of its first two (2).
    affinity_choices: int
    #: gRFC A58 (wrr_orca).
    blackout: float
    expiration: float
    error_penalty: float
    update_period: float


def load_settings(cfg: LbSettings) -> LoadSettings:
    """The service's load-report settings (the one place that names them)."""
    return LoadSettings(
        max_age=cfg.load_report_max_age,
        queue_threshold=cfg.load_queue_threshold,
        kv_threshold=cfg.load_kv_threshold,
        balance_factor=cfg.hash_balance_factor / 100.0,
        queue_weight=cfg.load_queue_weight,
        kv_weight=cfg.load_kv_weight,
        inflight_weight=cfg.load_inflight_weight,
        saturation=cfg.load_saturation,
        affinity_choices=cfg.load_affinity_choices or 1,
        blackout=cfg.wrr_blackout_period,
        expiration=cfg.wrr_weight_expiration_period,
        error_penalty=cfg.wrr_error_utilization_penalty,
        update_period=cfg.wrr_weight_update_period,
    )


def bounded(cfg: LbSettings) -> bool:
    """Whether ring_hash / maglev keep keys off saturated owners: with
    ``hash_balance_factor`` set, or with load reports read explicitly."""
    return cfg.hash_balance_factor > 0 or (isinstance(cfg.load_reports, tuple) and bool(cfg.load_reports))


def fresh_report(host: Any, now: float, max_age: float) -> LoadReport | None:
    """The host's report if it is younger than ``max_age``, else None."""
    report = host.load
    if report is None or now - report.at > max_age:
        return None
    return report


def est_queue(host: Any, report: LoadReport) -> float:
    """The server's queue as this client estimates it: the reported waiting
    requests plus the requests sent there since the report (so a burst between
    two reports cannot herd onto one replica)."""
    since = host.requests - report.requests_at
    return (report.waiting or 0.0) + (since if since > 0 else 0)


def saturated(host: Any, report: LoadReport | None, s: LoadSettings, inflight_cap: float) -> bool:
    """Whether ``host`` should take no more traffic now: its reported queue or
    KV use over threshold, or its in-flight count over ``inflight_cap``."""
    if len(host.inflight) > inflight_cap:
        return True
    if report is None:
        return False
    if report.kv is not None and report.kv > s.kv_threshold:
        return True
    return est_queue(host, report) > s.queue_threshold


def inflight_cap(hosts: Any, factor: float) -> float:
    """Bounded load as Envoy's ``hash_balance_factor`` (Mirrokni et al.): a host
    is overloaded when it holds more than
    ``max(ceil(ceil((total in flight + 1) x factor) / hosts), 1)`` attempts."""
    if factor <= 0:
        return math.inf
    total = sum(map(len, [h.inflight for h in hosts]))
    return max(math.ceil(math.ceil((total + 1) * factor) / len(hosts)), 1)


def cap_of(lists: Sequence[Sized], factor: float) -> float:
    """:func:`inflight_cap` over the hosts' in-flight lists (kept by a picker: one C-level pass)."""
    return max(math.ceil(math.ceil((sum(map(len, lists)) + 1) * factor) / len(lists)), 1)


def scorer(s: LoadSettings) -> Callable[[Any, float], float]:
    """least_loaded's score of a host at ``now`` (lower: less loaded); see ``least_loaded``."""
    qw, kw, iw, max_age = s.queue_weight, s.kv_weight, s.inflight_weight, s.max_age

    def score(host: Any, now: float) -> float:
        own = iw * len(host.inflight)
        report = host.load
        if report is not None and now - report.at <= max_age:
            own += qw * est_queue(host, report) + kw * (report.kv or 0.0)
        return own / host.endpoint.weight

    return score


def report_view(report: LoadReport | None, now: float) -> dict[str, Any] | None:
    """A report as ``mesh.stats()`` shows it (None: no report)."""
    if report is None:
        return None
    out: dict[str, Any] = {"source": report.source, "age_s": round(max(now - report.at, 0.0), 3)}
    for name in ("waiting", "running", "kv", "cpu", "app", "rps", "eps"):
        value = getattr(report, name)
        if value is not None:
            out[name] = value
    if report.named:
        out["named"] = dict(report.named)
    return out
