"""httpx adapter (optional extra ``meshlib[httpx]``): mesh transports for
``httpx.Client`` and ``httpx.AsyncClient``.

The mesh transport wraps an ordinary ``HTTPTransport`` (whose connection pool
is keyed by origin, so each endpoint has its own reused connections). A
request to a mesh service has its URL pointed at a picked endpoint for the
attempt, keeps its ``Host`` header, and sends the service name as TLS SNI;
anything else goes to the wrapped transport untouched. https mesh calls use
one wrapped transport per service name, so a connection verified for one
service is never reused for another. Environment proxies (``HTTP_PROXY``)
are not applied by these clients, since httpx ignores them once a transport
is given.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from typing import Any, Callable, Generic, TypeVar

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError("mesh.httpx_client() and mesh.httpx_async_client() need httpx: pip install 'meshlib-client[httpx]'") from exc

from ..core.driver import run, run_async
from ..core.call import Call
from ..endpoint import Endpoint
from ..outcome import Outcome
from ..resilience.fault import FaultDecision
from ..outcome import AttemptResult
from ..resilience.retry import is_idempotent
from ..core.services import Services
from .. import telemetry
from ._common import FAULT_BODY, FAULT_HEADERS, TIMEOUT_HEADER, HttpExchange, classify_exception, judge_response, timeout_header


#: Client keyword arguments that configure the transport rather than the client.
TRANSPORT_KWARGS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def _tls_failure(exc: BaseException) -> bool:
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, ssl.SSLError):
            return True
        e = e.__cause__ or e.__context__
    return False


def classify(exc: BaseException) -> str:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        # A failed TLS handshake is not a connect failure to retry elsewhere:
        # every endpoint would present the same certificate problem.
        return Outcome.ERROR if _tls_failure(exc) else Outcome.CONNECT_FAILURE
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return Outcome.TIMEOUT
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return Outcome.RESET
    return classify_exception(exc)


class HttpxExchange(HttpExchange):
    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def judge(self, response: httpx.Response) -> AttemptResult:
        return judge_response(response.status_code, response.headers)

    def discard(self, response: httpx.Response) -> None:
        response.close()


class AsyncHttpxExchange(HttpxExchange):
    def discard(self, response: httpx.Response) -> None:
        # Closing an async stream is a coroutine: let the loop finish it,
        # holding the task until it is done (the loop keeps only a weak reference).
        task = asyncio.ensure_future(response.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Future[Any]] = set()


EXCHANGE = HttpxExchange()
ASYNC_EXCHANGE = AsyncHttpxExchange()


def _aborter(call: Call, request: httpx.Request) -> Callable[[FaultDecision], httpx.Response] | None:
    """What a fault-aborted call answers; None (nothing made) without fault injection."""
    if call.cluster.fault is None:
        return None
    return lambda fault: httpx.Response(fault.abort_status, headers=FAULT_HEADERS, content=FAULT_BODY, request=request)


T = TypeVar("T")


class _Pools(Generic[T]):
    """The wrapped transport for everything but https mesh calls, plus one
    transport per service name for those: httpx pools connections by origin,
    so without this a connection verified for one service could be reused for
    another service that shares an endpoint."""

    def __init__(self, default: T, make: Callable[[], T] | None) -> None:
        self.default = default
        self._make = make
        self._tls: dict[str, T] = {}
        self._lock = threading.Lock()

    def for_request(self, request: httpx.Request, service: str) -> T:
        if request.url.scheme != "https" or self._make is None:
            return self.default
        t = self._tls.get(service)
        if t is None:
            with self._lock:
                t = self._tls.get(service)
                if t is None:
                    t = self._tls[service] = self._make()
        return t

    def all(self) -> list[T]:
        return [self.default, *self._tls.values()]


def _begin(mesh: "Services", request: httpx.Request) -> Call | None:
    cluster = mesh.route(request.url.host, request.url.raw_path.decode("ascii"), request.headers)  # routed names go through their routes
    if cluster is None:
        return None
    cfg = cluster.config
    key = request.headers.get(cfg.hash_header) if cluster.hashing and cfg.hash_header else None
    extensions = dict(request.extensions)
    timeouts = extensions.get("timeout", {})
    # httpx always fills in a client timeout (5 s unless told), so a caller's
    # own connect timeout cannot be told from the default: the shorter wins.
    connect = timeouts.get("connect")
    extensions["timeout"] = {**timeouts, "connect": cfg.connect_timeout if connect is None else min(connect, cfg.connect_timeout)}
    if request.url.scheme == "https":
        extensions["sni_hostname"] = request.url.host
    request.extensions = extensions
    return cluster.start_call(key, is_idempotent(request.method))


def _pointed(request: httpx.Request, ep: Endpoint, limit: float | None) -> httpx.Request:
    """A copy of ``request`` aimed at one endpoint, within ``limit`` seconds:
    each attempt (hedged ones run at once) has its own URL and timeouts."""
    headers = request.headers
    extensions = request.extensions
    if limit is not None:
        headers = headers.copy()
        headers[TIMEOUT_HEADER] = timeout_header(limit)
        t = dict(extensions.get("timeout", {}))
        for phase in ("connect", "read", "write", "pool"):
            t[phase] = limit if t.get(phase) is None else min(t[phase], limit)
        extensions = {**extensions, "timeout": t}
    return httpx.Request(request.method, _endpoint_url(request.url, ep.host, ep.port), headers=headers, stream=request.stream, extensions=extensions)


@functools.lru_cache(maxsize=2048)
def _endpoint_url(url: httpx.URL, host: str, port: int) -> httpx.URL:
    """``url`` aimed at an endpoint, memoised: ``copy_with`` re-parses the URL
    (about 17 µs), and services are called with the same URLs again and again."""
    return url.copy_with(host=host, port=port)


def _restore(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    response.request = request
    return response


class MeshTransport(httpx.BaseTransport):
    def __init__(self, mesh: "Services", inner: httpx.BaseTransport, make: Callable[[], httpx.BaseTransport] | None = None) -> None:
        self._mesh = mesh
        self._pools = _Pools(inner, make)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _begin(self._mesh, request)
        if call is None:
            return self._pools.default.handle_request(request)
        inner = self._pools.for_request(request, call.cluster.name)

        def send(ep: Endpoint, limit: float | None) -> httpx.Response:
            pointed = _pointed(request, ep, limit)
            telemetry.inject(pointed.headers, ep)  # telemetry: this attempt's span and trace headers
            return _restore(inner.handle_request(pointed), request)

        with telemetry.http_call(call.cluster, request.method, str(request.url), request.headers):  # telemetry: the call's scope
            return run(call, send, EXCHANGE, _aborter(call, request))

    def close(self) -> None:
        for t in self._pools.all():
            t.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    def __init__(self, mesh: "Services", inner: httpx.AsyncBaseTransport, make: Callable[[], httpx.AsyncBaseTransport] | None = None) -> None:
        self._mesh = mesh
        self._pools = _Pools(inner, make)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = _begin(self._mesh, request)
        if call is None:
            return await self._pools.default.handle_async_request(request)
        inner = self._pools.for_request(request, call.cluster.name)

        async def send(ep: Endpoint, limit: float | None) -> httpx.Response:
            pointed = _pointed(request, ep, limit)
            telemetry.inject(pointed.headers, ep)  # telemetry: this attempt's span and trace headers
            return _restore(await inner.handle_async_request(pointed), request)

        with telemetry.http_call(call.cluster, request.method, str(request.url), request.headers):  # telemetry: the call's scope
            return await run_async(call, send, ASYNC_EXCHANGE, _aborter(call, request))

    async def aclose(self) -> None:
        for t in self._pools.all():
            await t.aclose()


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    transport_kw = {k: kwargs.pop(k) for k in TRANSPORT_KWARGS if k in kwargs}
    if "trust_env" in transport_kw:
        kwargs["trust_env"] = transport_kw["trust_env"]
    return transport_kw, kwargs.pop("transport", None)


def client(mesh: "Services", **kwargs: Any) -> httpx.Client:
    """A given ``transport=`` is wrapped as is (and shared by every service);
    otherwise meshlib builds ``HTTPTransport``s from the transport keywords."""
    transport_kw, inner = _split(kwargs)
    if inner is not None:
        return httpx.Client(transport=MeshTransport(mesh, inner), **kwargs)
    make = lambda: httpx.HTTPTransport(**transport_kw)  # noqa: E731
    return httpx.Client(transport=MeshTransport(mesh, make(), make), **kwargs)


def async_client(mesh: "Services", **kwargs: Any) -> httpx.AsyncClient:
    transport_kw, inner = _split(kwargs)
    if inner is not None:
        return httpx.AsyncClient(transport=AsyncMeshTransport(mesh, inner), **kwargs)
    make = lambda: httpx.AsyncHTTPTransport(**transport_kw)  # noqa: E731
    return httpx.AsyncClient(transport=AsyncMeshTransport(mesh, make(), make), **kwargs)
