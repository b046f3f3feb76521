"""httpx adapter (optional extra ``meshlib[httpx]``): mesh transports for
``httpx.Client`` and ``httpx.AsyncClient``.

The mesh transport wraps an ordinary ``HTTPTransport`` (whose connection pool
is keyed by origin, so each endpoint has its own reused connections). A
request to a mesh service has its URL pointed at a picked endpoint for the
attempt, keeps its ``Host`` header, and sends the service name as TLS SNI;
anything else goes to the wrapped transport untouched. https mesh calls use
one wrapped transport per service name, so a connection verified for one
service is never reused for another; a TLS_MODE tls/mtls service one per
identity generation, the previous ones drained and closed after a rotation
(``_httpx_pools``). Environment proxies (``HTTP_PROXY``)
are not applied by these clients, since httpx ignores them once a transport
is given.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError("mesh.httpx_client() and mesh.httpx_async_client() need httpx: pip install 'meshlib-client[httpx]'") from exc

from httpx._multipart import MultipartStream

from .keyed import KeyFn, key_of
from ..core.driver import run, run_async
from ..core.call import Call
from ..core.exchange import tls_refused
from ..endpoint import Endpoint
from ..errors import MeshError
from ..outcome import Outcome
from ..resilience.fault import FaultDecision
from ..outcome import AttemptResult
from ..resilience.retry import is_idempotent
from ..core.services import Services
from ..health.load import LOAD_HEADER
from .. import telemetry
from ._httpx_pools import Pools
from ._mirror import mirror_httpx, mirror_httpx_async
from ._common import (
    DRAIN_LIMIT,
    FAULT_BODY,
    FAULT_HEADERS,
    TIMEOUT_HEADER,
    End,
    Ending,
    HttpExchange,
    OneShotExchange,
    classify_exception,
    file_body,
    judge_response,
    judge_status,
    mid_body,
    one_shot,
    timeout_header,
)


_LOAD = LOAD_HEADER.encode("ascii")

#: Client keyword arguments that configure the transport rather than the client.
TRANSPORT_KWARGS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def classify(exc: BaseException) -> str:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        # A refused TLS handshake (certificate, SPIFFE ID) is local origin for
        # outlier detection, like a connect failure, but never retried.
        return Outcome.TLS_FAILURE if tls_refused(exc) else Outcome.CONNECT_FAILURE
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return Outcome.TIMEOUT
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return Outcome.RESET
    return classify_exception(exc)


class HttpxExchange(HttpExchange):
    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def judge(self, response: httpx.Response) -> AttemptResult:
        status = response.status_code
        if status < 400:  # the common case: no Retry-After to read; a load report is rare
            for item in response.headers._list:  # (raw name, lower-case name, value), what Headers.get scans
                if item[1] == _LOAD:
                    break
            else:
                return judge_status(status)
        return judge_response(status, response.headers)

    def discard(self, response: httpx.Response) -> None:
        # Read what is left of the body (within bounds) so that closing the
        # response puts its connection back in the pool rather than closing it.
        try:
            left = DRAIN_LIMIT
            for chunk in response.iter_raw():
                left -= len(chunk)
                if left < 0:
                    break
        except Exception:  # a broken connection: closed below
            pass
        response.close()

    def defer(self, response: httpx.Response, end: End) -> bool:
        """The client reads the body after the transport returns (at once, or
        as you iterate with ``client.stream()``): the attempt ends with it
        (``end`` is called once). False for an answer meshlib made itself."""
        if hasattr(response, "_content"):
            return False
        response.stream = _WatchedStream(response.stream, Ending(end))
        return True


class _WatchedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that reports its end: read to the end, closed or
    collected (``None``), broken off mid-body (a reset, or a timeout)."""

    def __init__(self, inner: Any, ending: Ending) -> None:
        self._inner = inner
        self._ending = ending

    def __del__(self) -> None:
        self._ending(None)

    def __iter__(self) -> Any:
        try:
            yield from self._inner
        except Exception as exc:
            self._ending(mid_body(classify(exc)))
            raise
        self._ending(None)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._ending(None)

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            self._ending(mid_body(classify(exc)))
            raise
        self._ending(None)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._ending(None)


class AsyncHttpxExchange(HttpxExchange):
    def discard(self, response: httpx.Response) -> None:
        # Reading and closing an async stream are coroutines: let the loop do
        # them. The task is held until done (the loop keeps only a weak
        # reference) and on the caller's request, whose next attempt waits for
        # it, so that attempt can reuse the connection.
        task = asyncio.ensure_future(_drain(response))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
        if response.request is not None:
            response.request._meshlib_drain = task  # type: ignore[attr-defined]


async def _drain(response: httpx.Response) -> None:
    try:
        left = DRAIN_LIMIT
        async for chunk in response.aiter_raw():
            left -= len(chunk)
            if left < 0:
                break
    except Exception:  # a broken connection: closed below
        pass
    await response.aclose()


_CLOSING: set[asyncio.Future[Any]] = set()


class _OneShotStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """One attempt's view of a one-shot body: it notes when sending began."""

    def __init__(self, ex: OneShotExchange) -> None:
        self._ex = ex

    def __iter__(self) -> Any:
        return self._ex.attempt_body()

    def __aiter__(self) -> Any:
        return self._ex.attempt_body_async()


def _body(request: httpx.Request, call: Call, base: HttpExchange) -> tuple[HttpExchange, Any]:
    """The exchange for a call, and the stream its attempts send: the
    module's exchange and the request's stream for bytes and multipart forms
    (which rewind their files themselves); a rewinding exchange for a file
    that can seek (read into memory once if the call hedges); else one-shot."""
    stream = request.stream
    if isinstance(stream, (httpx.ByteStream, MultipartStream)):
        return base, stream
    source = getattr(stream, "_stream", None)  # what IteratorByteStream reads
    if isinstance(stream, httpx.SyncByteStream) and hasattr(source, "read"):
        ex, body = file_body(base, source, call)
        if ex is base:
            return ex, httpx.ByteStream(body)
        if isinstance(ex, OneShotExchange):
            return ex, _OneShotStream(ex)
        return ex, stream
    ex = one_shot(base, stream, call)
    return ex, _OneShotStream(ex)


EXCHANGE = HttpxExchange()
ASYNC_EXCHANGE = AsyncHttpxExchange()


def _aborter(call: Call, request: httpx.Request) -> Callable[[FaultDecision], httpx.Response] | None:
    """What a fault-aborted call answers; None (nothing made) without fault injection."""
    if call.cluster.fault is None:
        return None
    return lambda fault: httpx.Response(fault.abort_status, headers=FAULT_HEADERS, content=FAULT_BODY, request=request)


#: A request URL's parsed form (httpx's ``ParseResult``) -> (host, path and
#: query, the URL's text, scheme), as ``httpx.URL`` gives them.
_PARTS: dict[Any, tuple[str, str, str, str]] = {}
_PARTS_SIZE = 2048


def _parts(url: httpx.URL) -> tuple[str, str, str, str]:
    """(host, path and query, text, scheme) of ``url``, remembered by its
    parsed form: ``httpx.URL`` works each out afresh on every read, and
    services are called with the same URLs again and again."""
    ref = getattr(url, "_uri_reference", None)
    found = _PARTS.get(ref) if ref is not None else None
    if found is None:
        found = (url.host, url.raw_path.decode("ascii"), str(url), url.scheme)
        if ref is not None:
            if len(_PARTS) >= _PARTS_SIZE:
                _PARTS.clear()
            _PARTS[ref] = found
    return found


def _begin(mesh: "Services", request: httpx.Request, key_fn: KeyFn | None = None) -> tuple[Call, str, str] | None:
    """The call for a request to a mesh service, with its URL's host and
    text; None for any other request."""
    host, target, text, scheme = _parts(request.url)
    cluster = mesh.route(host, target, request.headers)  # routed names go through their routes
    if cluster is None:
        return None
    if mesh.closed:
        raise MeshError(f"this Mesh is closed; create a new one (a request to mesh service {cluster.name!r})")
    cfg = cluster.config
    key: str | bytes | None = None
    if cluster.hashing:  # the client's hash_key function (unless a meshlib.hash_key block is open), then HASH_HEADER
        if key_fn is not None:
            key = key_of(key_fn, request)
        if key is None and cfg.hash_header:
            key = request.headers.get(cfg.hash_header)
    extensions = dict(request.extensions)
    timeouts = extensions.get("timeout", {})
    # httpx always fills in a client timeout (5 s unless told), so a caller's
    # own connect timeout cannot be told from the default: the shorter wins.
    connect = timeouts.get("connect")
    extensions["timeout"] = {**timeouts, "connect": cfg.connect_timeout if connect is None else min(connect, cfg.connect_timeout)}
    if scheme == "https":
        extensions["sni_hostname"] = host
    request.extensions = extensions
    return cluster.start_call(key, is_idempotent(request.method)), host, text


def _over_tls(request: httpx.Request, host: str) -> str:
    """A TLS_MODE tls/mtls call goes out over https with the service name
    (``host``) as SNI, whatever its URL's scheme (the mesh's context checks
    the name or SPIFFE ID). ``_begin`` gave the request its own extensions dict."""
    request.extensions["sni_hostname"] = host
    return "https"


_new_request = httpx.Request.__new__
_new_headers = httpx.Headers.__new__


def _pointed(request: httpx.Request, url: str, ep: Endpoint, limit: float | None, stream: Any, extra: dict[str, str], scheme: str | None = None) -> httpx.Request:
    """A copy of ``request`` (whose URL is ``url``) aimed at one endpoint,
    within ``limit`` seconds: each attempt (hedged ones run at once) has its
    own URL, headers and timeouts. ``extra``: the cluster's
    ``load_request_headers`` (usually empty). Made as ``httpx.Request(...,
    stream=...)`` makes it (method, URL, a copy of the headers, the
    extensions, the stream), without re-checking what the client checked."""
    headers = _new_headers(httpx.Headers)  # the attempt's own (its trace headers go here), as Headers(request.headers) makes it
    headers._list = list(request.headers._list)
    headers._encoding = None
    extensions = request.extensions
    if extra:
        headers.update(extra)
    if limit is not None:
        headers[TIMEOUT_HEADER] = timeout_header(limit)
        t = dict(extensions.get("timeout", {}))
        for phase in ("connect", "read", "write", "pool"):
            t[phase] = limit if t.get(phase) is None else min(t[phase], limit)
        extensions = {**extensions, "timeout": t}
    # else the call's own dict (``_begin`` copied it), shared by its attempts: httpx only reads it
    pointed = _new_request(httpx.Request)
    pointed.method = request.method
    pointed.url = _endpoint_url(url, ep.host, ep.port, scheme)
    pointed.headers = headers
    pointed.extensions = extensions
    pointed.stream = stream
    return pointed


@functools.lru_cache(maxsize=2048)
def _endpoint_url(url: str, host: str, port: int, scheme: str | None = None) -> httpx.URL:
    """``url`` aimed at an endpoint (over ``scheme`` if given), memoised by
    its text: ``copy_with`` re-parses the URL (about 17 µs), and services
    are called with the same URLs again and again."""
    if scheme is None:
        return httpx.URL(url).copy_with(host=host, port=port)
    return httpx.URL(url).copy_with(scheme=scheme, host=host, port=port)


def _route(mesh: "Services", pools: Pools[Any], request: httpx.Request, cluster: Any, host: str) -> tuple[dict[str, str], Any, str | None, Any]:
    """Where a mesh call's attempts go: (the extra headers its service asks
    for, the transport, the scheme TLS_MODE imposes or None, the held TLS
    transport to give back after the call or None). ``host``: its URL's."""
    tls = mesh.tls(cluster)
    if tls is None:
        return cluster.load_request_headers, pools.for_request(request, cluster.name), None, None
    held = pools.for_mesh_tls(tls)
    return cluster.load_request_headers, held.transport, _over_tls(request, host), held


class MeshTransport(httpx.BaseTransport):
    def __init__(self, mesh: "Services", inner: httpx.BaseTransport, make: Callable[..., httpx.BaseTransport] | None = None, key_fn: KeyFn | None = None) -> None:
        self._mesh = mesh
        self._pools: Pools[httpx.BaseTransport] = Pools(inner, make)
        self._key_fn = key_fn

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        begun = _begin(self._mesh, request, self._key_fn)
        if begun is None:
            return self._pools.default.handle_request(request)
        call, host, url = begun
        cluster = call.cluster
        if getattr(cluster, "mirrors", None):  # the route mirrors its calls (shadow traffic)
            mirror_httpx(self._mesh, cluster.mirrors, request, self.handle_request)
        ex, stream = _body(request, call, EXCHANGE)
        extra, inner, scheme, held = _route(self._mesh, self._pools, request, cluster, host)

        def send(ep: Endpoint, limit: float | None) -> httpx.Response:
            pointed = _pointed(request, url, ep, limit, stream, extra, scheme)
            telemetry.inject(pointed.headers, ep)  # telemetry: this attempt's span and trace headers
            response = inner.handle_request(pointed)
            response.request = request
            return response

        try:
            with telemetry.http_call(cluster, request.method, url, request.headers):  # telemetry: the call's scope
                return run(call, send, ex, _aborter(call, request))
        finally:
            if held is not None:
                held.busy.pop()
            if self._pools.retired:  # after a rotation: close what the old identity's transport no longer serves
                for old in self._pools.take_drained():
                    old.close()

    def close(self) -> None:
        for t in self._pools.all():
            t.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    def __init__(self, mesh: "Services", inner: httpx.AsyncBaseTransport, make: Callable[..., httpx.AsyncBaseTransport] | None = None, key_fn: KeyFn | None = None) -> None:
        self._mesh = mesh
        self._pools: Pools[httpx.AsyncBaseTransport] = Pools(inner, make)
        self._key_fn = key_fn

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        begun = _begin(self._mesh, request, self._key_fn)
        if begun is None:
            return await self._pools.default.handle_async_request(request)
        call, host, url = begun
        cluster = call.cluster
        if getattr(cluster, "mirrors", None):  # the route mirrors its calls (shadow traffic)
            mirror_httpx_async(self._mesh, cluster.mirrors, request, self.handle_async_request)
        ex, stream = _body(request, call, ASYNC_EXCHANGE)
        extra, inner, scheme, held = _route(self._mesh, self._pools, request, cluster, host)

        async def send(ep: Endpoint, limit: float | None) -> httpx.Response:
            drain = getattr(request, "_meshlib_drain", None)
            if drain is not None:  # the previous attempt's response: its connection first
                request._meshlib_drain = None  # type: ignore[attr-defined]
                await asyncio.shield(drain)
            pointed = _pointed(request, url, ep, limit, stream, extra, scheme)
            telemetry.inject(pointed.headers, ep)  # telemetry: this attempt's span and trace headers
            response = await inner.handle_async_request(pointed)
            response.request = request
            return response

        try:
            with telemetry.http_call(cluster, request.method, url, request.headers):  # telemetry: the call's scope
                return await run_async(call, send, ex, _aborter(call, request))
        finally:
            if held is not None:
                held.busy.pop()
            if self._pools.retired:  # after a rotation: close what the old identity's transport no longer serves
                for old in self._pools.take_drained():
                    await old.aclose()

    async def aclose(self) -> None:
        for t in self._pools.all():
            await t.aclose()


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    transport_kw = {k: kwargs.pop(k) for k in TRANSPORT_KWARGS if k in kwargs}
    if "trust_env" in transport_kw:
        kwargs["trust_env"] = transport_kw["trust_env"]
    return transport_kw, kwargs.pop("transport", None)


def client(mesh: "Services", *, hash_key: KeyFn | None = None, **kwargs: Any) -> httpx.Client:
    """A given ``transport=`` is wrapped as is (and shared by every service);
    otherwise meshlib builds ``HTTPTransport``s from the transport keywords.
    ``hash_key``: a function of the request giving its hash key (``adapters.keyed``)."""
    transport_kw, inner = _split(kwargs)
    if inner is not None:
        return httpx.Client(transport=MeshTransport(mesh, inner, key_fn=hash_key), **kwargs)
    make = lambda **tls: httpx.HTTPTransport(**{**transport_kw, **tls})  # noqa: E731
    return httpx.Client(transport=MeshTransport(mesh, make(), make, hash_key), **kwargs)


def async_client(mesh: "Services", *, hash_key: KeyFn | None = None, **kwargs: Any) -> httpx.AsyncClient:
    transport_kw, inner = _split(kwargs)
    if inner is not None:
        return httpx.AsyncClient(transport=AsyncMeshTransport(mesh, inner, key_fn=hash_key), **kwargs)
    make = lambda **tls: httpx.AsyncHTTPTransport(**{**transport_kw, **tls})  # noqa: E731
    return httpx.AsyncClient(transport=AsyncMeshTransport(mesh, make(), make, hash_key), **kwargs)
