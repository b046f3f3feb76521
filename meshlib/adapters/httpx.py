"""httpx adapter (optional extra ``meshlib[httpx]``): mesh transports for
``httpx.Client`` and ``httpx.AsyncClient``.

The mesh transport wraps an ordinary ``HTTPTransport`` (whose connection pool
is keyed by origin, so each endpoint has its own reused connections). A
request to a mesh service has its URL pointed at a picked endpoint for the
attempt, keeps its ``Host`` header, and sends the service name as TLS SNI;
anything else goes to the wrapped transport untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError("mesh.httpx_client() needs httpx: pip install 'meshlib[httpx]'") from exc

from .._driver import run, run_async
from ..cluster import Call, Cluster
from ..endpoint import Endpoint
from ..host import Outcome
from ._common import classify_exception, judge_status

if TYPE_CHECKING:
    from ..mesh import Mesh

#: Client keyword arguments that configure the transport rather than the client.
TRANSPORT_KWARGS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def classify(exc: BaseException) -> str:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Outcome.CONNECT_FAILURE
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return Outcome.TIMEOUT
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return Outcome.RESET
    return classify_exception(exc)


def _judge(response: httpx.Response) -> str:
    return judge_status(response.status_code)


def _begin(mesh: "Mesh", request: httpx.Request) -> tuple[Cluster, Call] | None:
    cluster = mesh.lookup(request.url.host)
    if cluster is None:
        return None
    cfg = cluster.config
    key = request.headers.get(cfg.hash_header) if cluster.hashing and cfg.hash_header else None
    if request.url.scheme == "https":
        request.extensions = {**request.extensions, "sni_hostname": request.url.host}
    return cluster, cluster.start_call(key)


class _Pointed:
    """Points a request at one endpoint for the duration of an attempt."""

    __slots__ = ("request", "original")

    def __init__(self, request: httpx.Request, ep: Endpoint) -> None:
        self.request = request
        self.original = request.url
        request.url = self.original.copy_with(host=ep.host, port=ep.port)

    def restore(self) -> None:
        self.request.url = self.original


class MeshTransport(httpx.BaseTransport):
    def __init__(self, mesh: "Mesh", inner: httpx.BaseTransport) -> None:
        self._mesh = mesh
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        begun = _begin(self._mesh, request)
        if begun is None:
            return self._inner.handle_request(request)

        def send(ep: Endpoint) -> httpx.Response:
            pointed = _Pointed(request, ep)
            try:
                return self._inner.handle_request(request)
            finally:
                pointed.restore()

        return run(begun[1], send, classify, _judge)

    def close(self) -> None:
        self._inner.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    def __init__(self, mesh: "Mesh", inner: httpx.AsyncBaseTransport) -> None:
        self._mesh = mesh
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        begun = _begin(self._mesh, request)
        if begun is None:
            return await self._inner.handle_async_request(request)

        async def send(ep: Endpoint) -> httpx.Response:
            pointed = _Pointed(request, ep)
            try:
                return await self._inner.handle_async_request(request)
            finally:
                pointed.restore()

        return await run_async(begun[1], send, classify, _judge)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    transport_kw = {k: kwargs.pop(k) for k in TRANSPORT_KWARGS if k in kwargs}
    return transport_kw, kwargs.pop("transport", None)


def client(mesh: "Mesh", **kwargs: Any) -> httpx.Client:
    transport_kw, inner = _split(kwargs)
    inner = inner or httpx.HTTPTransport(**transport_kw)
    return httpx.Client(transport=MeshTransport(mesh, inner), **kwargs)


def async_client(mesh: "Mesh", **kwargs: Any) -> httpx.AsyncClient:
    transport_kw, inner = _split(kwargs)
    inner = inner or httpx.AsyncHTTPTransport(**transport_kw)
    return httpx.AsyncClient(transport=AsyncMeshTransport(mesh, inner), **kwargs)
