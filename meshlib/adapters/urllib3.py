"""urllib3 adapter: a PoolManager that balances mesh-service URLs.

Pools are per endpoint (urllib3 keys pools by scheme, host and port) and are
reused across calls. urllib3's own connect retries are turned off for mesh
calls so that a refused connection moves to another endpoint at once, under
the service's retry policy.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urljoin

import urllib3
from urllib3._collections import HTTPHeaderDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout
from urllib3.util.url import parse_url

from ..core.driver import run
from ..endpoint import Endpoint
from ..errors import MeshError
from ..resilience.fault import FaultDecision
from ..outcome import AttemptResult
from ..resilience.retry import is_idempotent
from ..core.services import Services
from .. import telemetry
from ._common import (
    FAULT_BODY,
    FAULT_HEADERS,
    PLAIN_BODIES,
    TIMEOUT_HEADER,
    TLS_NAME,
    End,
    HttpExchange,
    body_exchange,
    judge_response,
    release_unread,
    split_url,
    timeout_header,
    watch_urllib3,
)
from ._mirror import mirror


log = logging.getLogger("meshlib")

#: urllib3's default (3 retries) but no connect, read or status retries:
#: meshlib's retry policy owns those. Used unless the call or the pool sets ``retries``.
MESH_RETRIES = Retry(total=3, connect=0, read=0, status=0, other=0, redirect=3)


class Urllib3Exchange(HttpExchange):
    """For ``preload_content=True`` (the default): urllib3 reads the body
    before the attempt returns."""

    def judge(self, response: Any) -> AttemptResult:
        return judge_response(response.status, response.headers)

    def discard(self, response: Any) -> None:
        release_unread(response)


class StreamingUrllib3Exchange(Urllib3Exchange):
    """For ``preload_content=False``: the caller reads the body after the call."""

    def defer(self, response: Any, end: End) -> bool:
        """The attempt ends with the body (``end`` is called once, see :func:`watch_urllib3`)."""
        return watch_urllib3(response, end)


def _aborted(fault: FaultDecision) -> Any:
    return urllib3.HTTPResponse(body=FAULT_BODY, headers=dict(FAULT_HEADERS), status=fault.abort_status, preload_content=True)


EXCHANGE = Urllib3Exchange()
STREAMING = StreamingUrllib3Exchange()


class ConnectTimeout(float):
    """``CONNECT_TIMEOUT`` as the mesh hands it to urllib3 and requests when
    the caller gave no timeout: it bounds opening a connection (Envoy's
    ``connect_timeout``) and nothing else. urllib3 also bounds the send of
    a request on a kept-alive connection with its connect timeout, which
    costs a ``poll()`` before every send and bounds nothing the raw client
    bounds; the mesh's connections leave it out there (see :class:`_KeptAlive`)."""

    __slots__ = ()


@functools.lru_cache(maxsize=64)
def connect_only(seconds: float) -> Timeout:
    """The urllib3 timeout of a mesh call the caller gave none: ``seconds``
    to connect (a :class:`ConnectTimeout`), no read limit. One per value."""
    return Timeout(connect=ConnectTimeout(seconds), read=None)


class _KeptAlive:
    """A connection whose only timeout is the connect timeout
    (:class:`ConnectTimeout`) bounds connecting with it and sends the
    request without it, on a new socket as on a kept-alive one: as with
    plain urllib3 without a timeout, the socket blocks while the request
    goes out. Any other timeout (the caller's, an attempt's time limit)
    bounds the send as urllib3 does."""

    sock: Any
    timeout: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if type(self.timeout) is ConnectTimeout:
            self.sock.settimeout(None)  # connected (and TLS shaken hands): the rest is not the connect timeout's

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.sock is not None and type(self.timeout) is ConnectTimeout:
            self.timeout = None  # connected already: nothing left to bound
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_KeptAlive, HTTPConnection):
    pass


class _HTTPSConnection(_KeptAlive, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection  # type: ignore[assignment]


#: How many (host, port, scheme, TLS name, pool options) a pool manager
#: remembers the pool key of before it starts over.
_POOL_CACHE_SIZE = 1024


class TLSNamePoolManager(urllib3.PoolManager):
    """A PoolManager that verifies (and sends SNI for) the service name, not
    the endpoint's IP, while a mesh call is being sent over https.

    It also remembers the pool key of each (host, port, scheme, TLS name, pool
    options): urllib3 rebuilds and normalises the key on every request, which
    costs more than everything meshlib decides for a call. The pool is still
    fetched from urllib3's own container, so its least-recently-used order,
    evictions and ``clear()`` work as ever; a key no longer there is built afresh.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self._pool_keys: dict[tuple[Any, ...], Any] = {}

    def connection_from_host(self, host: str | None, port: int | None = None, scheme: str | None = "http", pool_kwargs: dict[str, Any] | None = None) -> Any:
        name = TLS_NAME.get() if scheme == "https" else None
        cache_key: tuple[Any, ...] | None = (host, port, scheme, name, None if not pool_kwargs else tuple(pool_kwargs.items()))
        try:
            pool_key = self._pool_keys.get(cache_key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable pool option: nothing remembered
            cache_key = pool_key = None
        if pool_key is not None:
            pool = self.pools.get(pool_key)  # marks it recently used, as urllib3 does
            if pool is not None:
                return pool
        if name is not None:  # the caller's pool_kwargs (mesh TLS: assert_hostname=False) win
            pool_kwargs = {"server_hostname": name, "assert_hostname": name, **(pool_kwargs or {})}
        pool = super().connection_from_host(host, port, scheme, pool_kwargs)
        if cache_key is not None:
            keys = self._pool_keys
            if len(keys) >= _POOL_CACHE_SIZE:
                keys.clear()
            keys[cache_key] = getattr(pool, "_meshlib_pool_key", None)
        return pool

    def connection_from_pool_key(self, pool_key: Any, request_context: dict[str, Any]) -> Any:
        pool = super().connection_from_pool_key(pool_key, request_context)
        pool._meshlib_pool_key = pool_key  # read back by connection_from_host
        return pool


class MeshPoolManager(TLSNamePoolManager):
    def __init__(self, *, mesh: "Services", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mesh = mesh

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        scheme, authority, host, rest = split_url(url)
        cluster = self._mesh.route(host, rest, kw.get("headers") or self.headers)  # routed names go through their routes
        if cluster is None:
            return super().urlopen(method, url, redirect=redirect, **kw)
        if self._mesh.closed:
            raise MeshError(f"this Mesh is closed; create a new one (a request to mesh service {cluster.name!r})")
        cfg = cluster.config
        headers = _with_host(kw.get("headers") or self.headers, authority)
        # Each attempt goes straight to the endpoint's pool (as PoolManager.urlopen
        # would after parsing the endpoint URL again); redirects are followed
        # below, through the mesh.
        attempt_kw = dict(kw, headers=headers, assert_same_host=False, redirect=False)
        if "retries" not in kw and "retries" not in self.connection_pool_kw:
            attempt_kw["retries"] = MESH_RETRIES
        user_timeout = kw.get("timeout", self.connection_pool_kw.get("timeout"))
        if user_timeout is None:
            attempt_kw["timeout"] = connect_only(cfg.connect_timeout)
        key = _header(headers, cfg.hash_header) if cluster.hashing and cfg.hash_header else None
        call = cluster.start_call(key, is_idempotent(method))
        if getattr(cluster, "mirrors", None):  # the route mirrors its calls (shadow traffic)
            mirror(self._mesh, cluster.mirrors, lambda name: self._shadow(method, scheme, name, rest, headers, kw))
        base: HttpExchange = EXCHANGE if kw.get("preload_content", True) else STREAMING
        ex = base
        body = kw.get("body")
        if body is not None and not isinstance(body, PLAIN_BODIES):
            ex, body = body_exchange(base, body, call)
            if ex is base:  # a file read once for a hedged call, still sent chunked
                attempt_kw["body"] = (body,)
        target = _request_target(rest)
        tls = self._mesh.tls(cluster)  # TLS_MODE tls/mtls: the mesh's TLS, whatever the URL says
        wire = scheme if tls is None else "https"
        token = TLS_NAME.set(host) if wire == "https" else None
        extra = cluster.load_request_headers

        def send(ep: Endpoint, limit: float | None) -> Any:
            akw = attempt_kw
            if extra or limit is not None:
                limited = headers.copy()
                if extra:  # the servers' load reports, asked for (load_reports header)
                    limited.update(extra)
                akw = dict(attempt_kw, headers=limited)
                if limit is not None:
                    limited[TIMEOUT_HEADER] = timeout_header(limit)
                    akw["timeout"] = _bounded(user_timeout, cfg.connect_timeout, limit)
            if ex is not base:
                akw = dict(akw, body=ex.attempt_body())  # type: ignore[attr-defined]
            if akw is attempt_kw:  # no per-attempt copy of the caller's headers yet
                akw = dict(akw, headers=headers.copy())
            telemetry.inject(akw["headers"], ep)  # telemetry: this attempt's span and trace headers
            host = ep.host if ":" not in ep.host else f"[{ep.host}]"  # as parse_url gives an IPv6 host
            return self.connection_from_host(host, ep.port, wire, tls and tls.pool_kwargs()).urlopen(method, target, **akw)

        try:
            with telemetry.http_call(cluster, method, url, headers):  # telemetry: the call's scope
                response = run(call, send, ex, _aborted)
        finally:
            if token is not None:
                TLS_NAME.reset(token)
        if redirect and response.get_redirect_location():
            return self._follow(method, url, response, kw)
        return response

    def _shadow(self, method: str, scheme: str, target: str, rest: str, headers: dict[str, Any], kw: dict[str, Any]) -> None:
        """A copy of the request to the mirror cluster ``target`` (a body that
        cannot be sent twice is never mirrored)."""
        body = kw.get("body")
        if body is not None and not isinstance(body, (bytes, str)):
            return
        shadow = {**headers, "Host": f"{_header(headers, 'host')}-shadow"}
        self.urlopen(method, f"{scheme}://{target}{rest}", redirect=False, body=body, headers=shadow).release_conn()

    def _follow(self, method: str, url: str, response: Any, kw: dict[str, Any]) -> Any:
        """Follow a redirect the way ``PoolManager.urlopen`` does (303 turns into
        a body-less GET, ``Retry`` counts and limits redirects, headers in
        ``remove_headers_on_redirect`` are dropped when the origin changes),
        except that a location relative to a mesh-service URL stays on the
        service: it is balanced again rather than sent to the same endpoint."""
        location = urljoin(url, response.get_redirect_location())
        headers = kw.get("headers") or self.headers
        if response.status == 303:
            method = "GET"
            kw["body"] = None
            headers = HTTPHeaderDict(headers)._prepare_for_method_change()
        retries = kw.get("retries", response.retries)
        if not isinstance(retries, Retry):
            retries = Retry.from_int(retries, redirect=True)
        if retries.remove_headers_on_redirect and split_url(location)[:2] != split_url(url)[:2]:
            kept = headers.copy()
            for name in headers:
                if name.lower() in retries.remove_headers_on_redirect:
                    kept.pop(name, None)
            headers = kept
        try:
            retries = retries.increment(method, url, response=response)
        except MaxRetryError:
            if retries.raise_on_redirect:
                response.drain_conn()
                raise
            return response
        kw["headers"], kw["retries"] = headers, retries
        log.info("Redirecting %s -> %s", url, location)
        response.drain_conn()
        return self.urlopen(method, location, redirect=True, **kw)


@functools.lru_cache(maxsize=2048)
def _request_target(rest: str) -> str:
    """What goes on the request line for a URL's path, query and fragment:
    urllib3's own normalisation (``parse_url(...).request_uri``), memoised."""
    return parse_url(rest).request_uri


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


def _with_host(given: Any, authority: str) -> Any:
    """The caller's headers as urllib3 keeps them, with a ``Host``: theirs,
    in any spelling, stands (the container is used as is); else the URL's
    authority, first. An ``HTTPHeaderDict`` stays one, its repeated fields
    apart; a plain mapping (which cannot repeat a field) stays a dict, which
    is far cheaper to build."""
    for name in given:
        if name.lower() == "host":
            return given
    host = authority.rpartition("@")[2]
    if isinstance(given, HTTPHeaderDict):
        headers = HTTPHeaderDict()
        headers["Host"] = host
        for name, value in given.iteritems():
            headers.add(name, value)
        return headers
    return {"Host": host, **given}


def _header(headers: Any, name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v  # type: ignore[no-any-return]
    return None
