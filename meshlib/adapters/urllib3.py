"""urllib3 adapter: a PoolManager that balances mesh-service URLs.

Pools are per endpoint (urllib3 keys pools by scheme, host and port) and are
reused across calls. urllib3's own connect retries are turned off for mesh
calls so that a refused connection moves to another endpoint at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import urllib3
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .._driver import run
from ..endpoint import Endpoint
from ._common import TLS_NAME, classify_exception, endpoint_url, judge_status, split_url

if TYPE_CHECKING:
    from ..mesh import Mesh

#: urllib3's default (3 retries) but no connect retries: meshlib moves those to
#: another endpoint. Used unless the call or the pool sets ``retries``.
MESH_RETRIES = Retry(3, connect=0, redirect=3)


def _judge(response: Any) -> str:
    return judge_status(response.status)


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
        if "timeout" not in kw and "timeout" not in self.connection_pool_kw:
            timeout = self._timeouts.get(cfg.connect_timeout)
            if timeout is None:
                timeout = self._timeouts.setdefault(cfg.connect_timeout, Timeout(connect=cfg.connect_timeout, read=None))
            kw["timeout"] = timeout
        key = None
        if cluster.hashing and cfg.hash_header:
            key = _header(headers, cfg.hash_header)
        call = cluster.start_call(key)
        token = TLS_NAME.set(host) if scheme == "https" else None
        try:

            def send(ep: Endpoint) -> Any:
                return TLSNamePoolManager.urlopen(self, method, endpoint_url(scheme, ep.address, rest), redirect=redirect, **kw)

            return run(call, send, classify_exception, _judge)
        finally:
            if token is not None:
                TLS_NAME.reset(token)


def _header(headers: dict[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None
