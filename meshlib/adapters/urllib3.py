"""urllib3 adapter: a PoolManager that balances mesh-service URLs.

Pools are per endpoint (urllib3 keys pools by scheme, host and port) and are
reused across calls. urllib3's own connect retries are turned off for mesh
calls so that a refused connection moves to another endpoint at once, under
the service's retry policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import urllib3
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .._driver import Exchange, run
from ..endpoint import Endpoint
from ..resilience.fault import FaultDecision
from ..resilience.retry import AttemptResult
from ._common import FAULT_BODY, FAULT_HEADERS, TIMEOUT_HEADER, TLS_NAME, classify_exception, endpoint_url, judge_status, split_url, timeout_header

if TYPE_CHECKING:
    from ..mesh import Mesh

#: urllib3's default (3 retries) but no connect, read or status retries:
#: meshlib's retry policy owns those. Used unless the call or the pool sets ``retries``.
MESH_RETRIES = Retry(total=3, connect=0, read=0, status=0, other=0, redirect=3)


class Urllib3Exchange(Exchange):
    def classify(self, exc: BaseException) -> str:
        return classify_exception(exc)

    def judge(self, response: Any) -> AttemptResult:
        status = response.status
        return judge_status(status, response.headers.get("retry-after") if status >= 400 else None)

    def discard(self, response: Any) -> None:
        response.drain_conn()
        response.release_conn()



def _aborted(fault: FaultDecision) -> Any:
    return urllib3.HTTPResponse(body=FAULT_BODY, headers=dict(FAULT_HEADERS), status=fault.abort_status, preload_content=True)


EXCHANGE = Urllib3Exchange()


class TLSNamePoolManager(urllib3.PoolManager):
    """A PoolManager that verifies (and sends SNI for) the service name, not
    the endpoint's IP, while a mesh call is being sent over https."""

    def connection_from_host(self, host: str | None, port: int | None = None, scheme: str | None = "http", pool_kwargs: dict[str, Any] | None = None) -> Any:
        name = TLS_NAME.get()
        if name is not None and scheme == "https":
            pool_kwargs = {**(pool_kwargs or {}), "server_hostname": name, "assert_hostname": name}
        return super().connection_from_host(host, port, scheme, pool_kwargs)


class MeshPoolManager(TLSNamePoolManager):
    def __init__(self, *, mesh: "Mesh", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mesh = mesh
        self._timeouts: dict[float, Timeout] = {}

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        scheme, authority, host, rest = split_url(url)
        cluster = self._mesh.lookup(host)
        if cluster is None:
            return super().urlopen(method, url, redirect=redirect, **kw)
        cfg = cluster.config
        headers = dict(kw.get("headers") or self.headers)
        headers["Host"] = authority.rpartition("@")[2]
        kw["headers"] = headers
        if "retries" not in kw and "retries" not in self.connection_pool_kw:
            kw["retries"] = MESH_RETRIES
        user_timeout = kw.get("timeout", self.connection_pool_kw.get("timeout"))
        if user_timeout is None:
            timeout = self._timeouts.get(cfg.connect_timeout)
            if timeout is None:
                timeout = self._timeouts.setdefault(cfg.connect_timeout, Timeout(connect=cfg.connect_timeout, read=None))
            kw["timeout"] = timeout
        key = None
        if cluster.hashing and cfg.hash_header:
            key = _header(headers, cfg.hash_header)
        call = cluster.start_call(key, method)
        token = TLS_NAME.set(host) if scheme == "https" else None

        def send(ep: Endpoint, limit: float | None) -> Any:
            attempt_kw = kw
            if limit is not None:
                attempt_kw = dict(kw, headers={**headers, TIMEOUT_HEADER: timeout_header(limit)})
                attempt_kw["timeout"] = _bounded(user_timeout, cfg.connect_timeout, limit)
            return TLSNamePoolManager.urlopen(self, method, endpoint_url(scheme, ep.address, rest), redirect=redirect, **attempt_kw)

        try:
            return run(call, send, EXCHANGE, _aborted)
        finally:
            if token is not None:
                TLS_NAME.reset(token)


def _bounded(timeout: Any, connect: float, limit: float) -> Timeout:
    """The caller's timeout (None, a number or a ``Timeout``) within ``limit`` seconds."""
    if timeout is None:
        return Timeout(connect=min(connect, limit), read=limit)
    if not isinstance(timeout, Timeout):
        return Timeout(connect=min(float(timeout), limit), read=min(float(timeout), limit))
    c, r = timeout.connect_timeout, timeout.read_timeout
    c = limit if not isinstance(c, (int, float)) else min(c, limit)
    r = limit if not isinstance(r, (int, float)) else min(r, limit)
    return Timeout(connect=c, read=r)


def _header(headers: dict[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None
