"""Polling each endpoint's Prometheus ``/metrics`` for its queue and KV-cache use.

For servers that report nothing per streamed response (vLLM attaches its
``endpoint-load-metrics`` header only to non-streamed ones). One daemon thread
per service (the health checker's :class:`~meshlib._background.PeriodicWorker`)
scrapes every endpoint in turn, then waits ``interval`` (as the Gateway API
inference extension's endpoint picker refreshes every 50ms), so a round over
many endpoints simply takes longer; it never overlaps the next. The scrape's cost is bounded: one kept-alive
connection per endpoint, a short timeout, a body of at most 1 MiB, and an
endpoint whose scrape fails (refused, 404, unparsable) is skipped for a
growing number of rounds (up to 100) before it is tried again.
"""

from __future__ import annotations

import http.client
import logging
from typing import Any, Callable

from ..._background import PeriodicWorker
from ...endpoint import Endpoint
from .parse import MAX_SCRAPE, Fields, parse_prometheus

__all__ = ["MetricsPoller", "MetricNames"]

log = logging.getLogger("meshlib")

#: (path, waiting gauge, running gauge, KV-cache gauge)
MetricNames = tuple[str, str, str, str]


class _Target:
    __slots__ = ("endpoint", "conn", "skip", "failures")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.conn: http.client.HTTPConnection | None = None
        self.skip = 0
        self.failures = 0


class MetricsPoller:
    """Scrapes ``names[0]`` of each endpoint every ``interval``; each parsed
    report goes to ``deliver(endpoint, fields, mark)``, ``mark`` being what
    ``mark(endpoint)`` returned just before the scrape was sent (the host's
    request count then: requests sent during the scrape count against it)."""

    def __init__(
        self, service: str, names: MetricNames, interval: float, timeout: float,
        deliver: Callable[[Endpoint, Fields, Any], None], mark: Callable[[Endpoint], Any] = lambda ep: None,
    ) -> None:  # fmt: skip
        self.service = service
        self.names = names
        self.timeout = timeout
        self._deliver = deliver
        self._mark = mark
        self._targets: dict[tuple[str, int], _Target] = {}
        self._worker = PeriodicWorker(f"load-{service}", interval, self.poll_all)
        self.scrapes = 0
        self.scrape_failures = 0

    def set_endpoints(self, endpoints: Any) -> None:
        old = self._targets
        self._targets = {ep.key: old.get(ep.key) or _Target(ep) for ep in endpoints}
        for key, target in old.items():
            if key not in self._targets and target.conn is not None:
                target.conn.close()

    def start(self) -> None:
        self._worker.start()
        self._worker.wake()

    def close(self) -> None:
        self._worker.stop()
        for target in list(self._targets.values()):
            if target.conn is not None:
                target.conn.close()

    def poll_all(self) -> None:
        for target in list(self._targets.values()):
            if target.skip > 0:
                target.skip -= 1
                continue
            mark = self._mark(target.endpoint)
            fields = self.scrape(target)
            self.scrapes += 1
            if fields is None:
                self.scrape_failures += 1
                target.failures += 1
                target.skip = min(100, 2 ** min(target.failures, 7) - 1)
                continue
            target.failures = 0
            self._deliver(target.endpoint, fields, mark)

    def scrape(self, target: _Target) -> Fields | None:
        ep = target.endpoint
        for fresh in (False, True):  # a kept-alive connection the server closed: once more on a new one
            conn = target.conn
            if conn is None or fresh:
                if conn is not None:
                    conn.close()
                conn = target.conn = http.client.HTTPConnection(ep.host, ep.port, timeout=self.timeout)
            try:
                conn.request("GET", self.names[0], headers={"Host": self.service, "User-Agent": "meshlib-load-poll", "Accept": "text/plain"})
                response = conn.getresponse()
                body = response.read(MAX_SCRAPE + 1)
                if response.status != 200 or len(body) > MAX_SCRAPE:
                    conn.close()
                    target.conn = None
                    return None
                return parse_prometheus(body.decode("utf-8", "replace"), *self.names[1:])
            except (OSError, http.client.HTTPException):
                conn.close()
                target.conn = None
                if fresh:
                    return None
        return None
