"""One service's load reports: from responses, scrapes and ORCA streams onto its hosts.

:class:`LoadReports` is an observer (``attempt_ended``) that reads the raw
report an adapter attached to the attempt's result (see
:func:`meshlib.health.load.with_load_report`), and it runs the service's
``/metrics`` poller and ORCA out-of-band streams when those are configured.
Each report is stored whole on its host (``host.load``), stamped with the
clock's time and the host's request count (see ``balancing.load``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from ...balancing.load import LoadReport
from ...balancing.settings import LbSettings
from ...clock import Clock
from ...endpoint import Endpoint
from .parse import Fields, fields_of_orca, parse_header
from .queue import SaturationQueue

__all__ = ["LoadReports", "store", "SOURCES"]

log = logging.getLogger("meshlib")

#: What ``load_reports`` may list.
SOURCES = ("header", "metrics", "orca_oob")


def store(host: Any, fields: Fields, source: str, now: float, requests_at: int | None = None) -> LoadReport:
    """Put a parsed report on ``host`` (replacing the last one whole); the
    requests sent to it since ``requests_at`` (default: its count now) count against it."""
    previous = host.load
    usable = (fields.get("rps") or 0) > 0 and ((fields.get("app") or 0) > 0 or (fields.get("cpu") or 0) > 0)
    since = None
    if usable:
        since = previous.nonempty_since if previous is not None and previous.nonempty_since is not None else now
    report = LoadReport(now, host.requests if requests_at is None else requests_at, source, nonempty_since=since, **fields)
    host.load = report
    return report


class LoadReports:
    """The load-report observer and pollers of one cluster."""

    def __init__(
        self, service: str, sources: Iterable[str], clock: Clock, hosts: Callable[[], Iterable[Any]], *,
        metric_names: tuple[str, str, str, str], interval: float, timeout: float, oob_interval: float, lb: LbSettings | None = None,
    ) -> None:  # fmt: skip
        self.service = service
        self.sources = frozenset(sources)
        self._clock = clock
        self._hosts = hosts
        self._index: tuple[Any, dict[Any, Any]] = (None, {})
        self.reports = 0
        self.rejected = 0
        self.poller = None
        self.oob = None
        #: ``load_saturation=wait``: the calls waiting for an endpoint to free up (woken by every report and ended attempt).
        self.queue: SaturationQueue | None = None
        if lb is not None and lb.load_saturation == "wait":
            self.queue = SaturationQueue(service, lb.load_wait_queue, clock, hosts, lb.load_report_max_age)
        if "metrics" in self.sources:
            from .poll import MetricsPoller

            self.poller = MetricsPoller(service, metric_names, interval, timeout, self._from_scrape, self._requests_of)
        if "orca_oob" in self.sources:
            from .orca import OobStreams

            self.oob = OobStreams(service, oob_interval, self._from_oob)

    # -- per attempt (the observer) -------------------------------------------

    def attempt_ended(self, host: Any, record: Any) -> None:
        raw = record.load
        if raw is not None:
            fields = parse_header(raw)
            if fields is None:
                self.rejected += 1
            else:
                self.reports += 1
                store(host, fields, "orca" if isinstance(raw, bytes) else "header", self._clock.monotonic())
        if self.queue is not None:  # an ended attempt, or its report, may have freed the host
            self.queue.wake()

    # -- polled ----------------------------------------------------------------

    def _host(self, endpoint: Endpoint) -> Any:
        hosts = self._hosts()
        cached, index = self._index
        if cached is not hosts:  # the cluster swapped its host tuple: index the new one
            index = {h.key: h for h in hosts}
            self._index = (hosts, index)
        return index.get(endpoint.key)

    def _requests_of(self, endpoint: Endpoint) -> int | None:
        host = self._host(endpoint)
        return None if host is None else host.requests

    def _from_scrape(self, endpoint: Endpoint, fields: Fields, requests_at: int | None = None) -> None:
        host = self._host(endpoint)
        if host is not None:
            self.reports += 1
            store(host, fields, "metrics", self._clock.monotonic(), requests_at)
            if self.queue is not None:
                self.queue.wake()

    def _from_oob(self, endpoint: Endpoint, message: Any) -> None:
        fields = fields_of_orca(message)
        host = self._host(endpoint)
        if fields is None or host is None:
            self.rejected += fields is None
            return
        self.reports += 1
        store(host, fields, "oob", self._clock.monotonic())
        if self.queue is not None:
            self.queue.wake()

    # -- lifecycle (the cluster's) ---------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        endpoints = tuple(endpoints)
        if self.poller is not None:
            self.poller.set_endpoints(endpoints)
        if self.oob is not None:
            self.oob.set_endpoints(endpoints)

    def start(self) -> None:
        if self.poller is not None:
            self.poller.start()

    def close(self) -> None:
        if self.poller is not None:
            self.poller.close()
        if self.oob is not None:
            self.oob.close()
        if self.queue is not None:
            self.queue.wake_all()  # they look again (and keep their own deadlines)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sources": sorted(self.sources), "reports": self.reports, "rejected": self.rejected}
        if self.poller is not None:
            out["scrapes"] = self.poller.scrapes
            out["scrape_failures"] = self.poller.scrape_failures
        if self.queue is not None:
            out["wait_queue"] = self.queue.stats()
        return out
