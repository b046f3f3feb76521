"""requests adapter: a real ``requests.Session`` with a mesh transport adapter.

The adapter is mounted for ``http://`` and ``https://``. A URL whose host is
a mesh service is sent to a picked endpoint with the original ``Host``
header; the response's ``url`` stays the service URL, so cookies and
relative redirects keep going through the mesh. Any other URL goes through
the ordinary ``HTTPAdapter`` code path, untouched.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict

from ..core.driver import run
from ..endpoint import Endpoint
from ..errors import MeshError
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
    endpoint_url,
    judge_response,
    release_unread,
    split_url,
    timeout_header,
    watch_urllib3,
)
from ._mirror import mirror
from .urllib3 import TLSNamePoolManager, connect_only


class RequestsExchange(HttpExchange):
    """For ``stream=False``: each attempt reads its body before it ends."""

    def judge(self, response: Any) -> AttemptResult:
        return judge_response(response.status_code, response.headers)

    def discard(self, response: Any) -> None:
        # A read body has already gone back to the pool with its connection;
        # an unread (stream=True) one is drained, within bounds, so that its
        # connection goes back too.
        if not getattr(response, "_content_consumed", False):
            release_unread(response.raw)


class StreamingRequestsExchange(RequestsExchange):
    """For ``stream=True``: the body is read by the caller, after the call."""

    def defer(self, response: Any, end: End) -> bool:
        """The attempt ends with the body (``end`` is called once)."""
        if getattr(response, "_content_consumed", False):
            return False
        return watch_urllib3(response.raw, end)


EXCHANGE = RequestsExchange()
STREAMING = StreamingRequestsExchange()


def _aborted(request: requests.PreparedRequest, url: str, status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = "Fault Injected"
    response.headers = CaseInsensitiveDict(FAULT_HEADERS)
    response._content = FAULT_BODY
    response.url = url
    response.request = request
    return response


def _limit_timeout(timeout: Any, connect: float, limit: float) -> Any:
    """requests' timeout (None, a number or (connect, read)) bounded by ``limit``."""
    if timeout is None:
        return (min(connect, limit), limit)
    if isinstance(timeout, tuple):
        c, r = timeout
        return (limit if c is None else min(c, limit), limit if r is None else min(r, limit))
    return min(timeout, limit)


_new_headers = CaseInsensitiveDict.__new__


class _Attempt(requests.PreparedRequest):
    """One attempt of a mesh request, sent to an endpoint's URL.

    A lean copy of the caller's request: headers are the call's (``Host``
    first, as a client sends it) and copied if the attempt adds the timeout
    header, body and hooks are shared, and so
    is the cookie jar, which sending never reads (cookies are already in the
    headers). ``origin`` is the endpoint URL's (scheme, host, port) and the
    name its certificate is verified against over https (else None)."""

    origin: tuple[str, str, int, str | None]
    #: The mesh's TLS for this attempt (TLS_MODE tls/mtls), else None.
    tls: Any

    def __init__(self, request: requests.PreparedRequest, url: str, origin: tuple[str, str, int, str | None], headers: CaseInsensitiveDict[str], tls: Any = None) -> None:
        # PreparedRequest.__init__ would only set what is overwritten here.
        self.method = request.method
        self.url = url
        self.headers = headers
        self._cookies = request._cookies  # type: ignore[attr-defined]
        self.body = request.body
        self.hooks = request.hooks
        self._body_position = request._body_position  # type: ignore[attr-defined]
        self.origin = origin
        self.tls = tls


#: How many (endpoint origin, verify, cert, mesh TLS context) an adapter
#: remembers the pool parameters and pool key of before it starts over.
_PARAMS_CACHE_SIZE = 1024


class MeshAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that balances requests to mesh services."""

    def __init__(self, mesh: "Services", **kwargs: Any) -> None:
        self._mesh = mesh
        #: (endpoint origin, verify, cert, mesh TLS context) -> (host parameters,
        #: pool keywords, the pool's key in the pool manager).
        self._pool_params: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], Any]] = {}
        super().__init__(**kwargs)

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None) -> Any:
        """The endpoint's pool. For a mesh attempt (never proxied) the pool
        parameters depend only on the endpoint's origin, ``verify`` and
        ``cert``, so they are worked out once rather than by parsing the URL
        on every request."""
        if not isinstance(request, _Attempt):
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        tls_kw = None if request.tls is None else request.tls.pool_kwargs()
        key = (request.origin, verify, cert, tls_kw and tls_kw["ssl_context"])
        try:
            params = self._pool_params.get(key)
        except TypeError:  # an unhashable verify or cert: nothing remembered
            return super().get_connection_with_tls_context(request, verify, proxies=None, cert=cert)
        if params is not None:
            # The pool itself, from urllib3's container (which marks it recently
            # used), unless it was evicted or cleared: then made again below.
            pool = self.poolmanager.pools.get(params[2])
            if pool is not None:
                return pool
        else:
            try:
                host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
            except ValueError as e:
                raise requests.exceptions.InvalidURL(e, request=request) from None
            if tls_kw is not None:
                pool_kwargs = {**pool_kwargs, **tls_kw}
            params = (host_params, pool_kwargs, None)
        host_params, pool_kwargs, _ = params
        pool = self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        if len(self._pool_params) >= _PARAMS_CACHE_SIZE:
            self._pool_params.clear()
        self._pool_params[key] = (host_params, pool_kwargs, getattr(pool, "_meshlib_pool_key", None))
        return pool

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = TLSNamePoolManager(num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs)

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:  # type: ignore[override]
        url = request.url or ""
        scheme, authority, host, rest = split_url(url)
        cluster = self._mesh.route(host, rest, request.headers)  # routed names go through their routes
        if cluster is None:
            return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        if self._mesh.closed:
            raise MeshError(f"this Mesh is closed; create a new one (a request to mesh service {cluster.name!r})")
        cfg = cluster.config
        user_timeout = timeout
        if timeout is None:  # (CONNECT_TIMEOUT, None), as the urllib3 timeout requests would make of it
            timeout = connect_only(cfg.connect_timeout)
        key = request.headers.get(cfg.hash_header) if cluster.hashing and cfg.hash_header else None
        call = cluster.start_call(key, is_idempotent(request.method or "GET"))
        # The caller's own Host header stands; else the URL's authority, sent
        # first, where the client would have put it.
        headers = request.headers
        given = headers._store  # type: ignore[attr-defined]
        if "host" not in given:
            # Its store holds (name as given, value) by lower-case name; made
            # directly, as copy() does: the constructor and update() go through
            # MutableMapping, several times slower.
            headers = _new_headers(CaseInsensitiveDict)
            headers._store = store = OrderedDict(host=("Host", authority.rpartition("@")[2]))
            store.update(given)
        body = request.body
        base: HttpExchange = STREAMING if stream else EXCHANGE
        ex = base
        if body is not None and not isinstance(body, PLAIN_BODIES):
            ex, body = body_exchange(base, body, call)
        send_base = super().send
        tls = self._mesh.tls(cluster)  # TLS_MODE tls/mtls: the mesh's TLS, whatever the URL says
        wire = scheme if tls is None else "https"
        tls_name = host if wire == "https" else None  # the name verified (TLSNamePoolManager): pools differ by it
        extra = cluster.load_request_headers

        def send(ep: Endpoint, limit: float | None) -> requests.Response:
            attempt = _Attempt(request, endpoint_url(wire, ep.address, rest), (wire, ep.host, ep.port, tls_name), headers, tls)
            if ex is not base:
                attempt.body = ex.attempt_body()  # type: ignore[attr-defined]
            elif body is not request.body:  # a file read once for a hedged call
                attempt.body = body
            telemetry.inject(attempt.headers, ep)  # telemetry: this attempt's span and trace headers
            t = timeout
            if extra or limit is not None:
                attempt.headers = headers.copy()
                if extra:  # the servers' load reports, asked for (load_reports header)
                    attempt.headers.update(extra)
                if limit is not None:
                    attempt.headers[TIMEOUT_HEADER] = timeout_header(limit)
                    t = _limit_timeout(user_timeout, cfg.connect_timeout, limit)
            # Mesh endpoints are reached directly, never through an HTTP proxy.
            response = send_base(attempt, stream=stream, timeout=t, verify=verify, cert=cert, proxies=None)
            response.url = url
            response.request = request
            if not stream:
                # Read now, as the session would on return: the attempt lasts
                # until its body is in, and a body broken midway is its error.
                response.content
            return response

        if getattr(cluster, "mirrors", None):  # the route mirrors its calls (shadow traffic)
            mirror(self._mesh, cluster.mirrors, lambda target: self._shadow(request, scheme, target, rest, headers["Host"], verify, cert))
        token = TLS_NAME.set(host) if tls_name is not None else None
        try:
            abort = None if cluster.fault is None else (lambda fault: _aborted(request, url, fault.abort_status))
            with telemetry.http_call(cluster, request.method, url, request.headers):  # telemetry: the call's scope
                return run(call, send, ex, abort)
        finally:
            if token is not None:
                TLS_NAME.reset(token)


    def _shadow(self, request: requests.PreparedRequest, scheme: str, target: str, rest: str, host_header: str, verify: Any, cert: Any) -> None:
        """A copy of ``request`` to the mirror cluster ``target`` (a body that
        cannot be sent twice is never mirrored)."""
        if request.body is not None and not isinstance(request.body, (bytes, str)):
            return
        copy = request.copy()
        copy.url = f"{scheme}://{target}{rest}"
        copy.headers["Host"] = f"{host_header}-shadow"
        self.send(copy, verify=verify, cert=cert).close()


class MeshSession(requests.Session):
    """A ``requests.Session`` that, for a URL naming a mesh service, skips
    requests' reading of the proxy variables of the environment: a mesh
    attempt goes straight to its endpoint (:meth:`MeshAdapter.send` never
    proxies it), and requests re-reads every environment variable twice per
    request to find them (tens of µs). ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE``, ``.netrc`` and every other URL are as in requests."""

    def __init__(self, mesh: "Services") -> None:
        super().__init__()
        self._mesh = mesh

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        if not self.trust_env or not isinstance(url, str) or not self._names_service(split_url(url)[2]):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        # requests' own merge, less the proxy scan (the CA bundle variables still apply)
        if verify is True or verify is None:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }

    def _names_service(self, host: str) -> bool:
        try:
            return self._mesh.route(host) is not None
        except MeshError:  # a routed name none of whose routes matches "/": still the mesh's
            return True


def session(mesh: "Services", **adapter_kwargs: Any) -> requests.Session:
    s = MeshSession(mesh)
    adapter = MeshAdapter(mesh, **adapter_kwargs)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
