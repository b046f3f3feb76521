"""Observability: trace propagation, spans, metrics and access logs.

Everything here attaches to the call path as an observer of each attempt's
record (``Cluster(observers=[telemetry.observer])``) plus three hooks an
adapter calls, and decides nothing about the call:

* ``with telemetry.call(cluster, method=..., url=...)`` (or ``rpc=...``)
  around one logical call;
* ``telemetry.inject(headers, endpoint)`` where an attempt's outgoing headers
  (or gRPC metadata) are built: the attempt's span and trace headers;
* ``with telemetry.attempt(endpoint)`` around an attempt of a decorated
  function, whose own requests then carry the attempt's context
  (``meshlib.inject(headers)``).

Server side: :func:`incoming`, :func:`extract` and the WSGI / ASGI / gRPC
helpers in ``server``. See docs/observability.md.
"""

from __future__ import annotations

import functools
from logging import INFO
from typing import TYPE_CHECKING, Any

from .hub import _OWNERS, Telemetry, default_propagation, owner_of
from .redact import scrub_url
from .scope import NULL_SCOPE, CallScope, QuietScope, current_scope
from .server import asgi_middleware, extract, grpc_aio_server_interceptor, grpc_server_interceptor, incoming, wsgi_middleware
from .settings import TelemetryConfig

if TYPE_CHECKING:
    from ..core.cluster import Cluster
    from ..endpoint import Endpoint

__all__ = [
    "Telemetry",
    "TelemetryConfig",
    "call",
    "http_call",
    "inject",
    "attempt",
    "extract",
    "incoming",
    "wsgi_middleware",
    "asgi_middleware",
    "grpc_server_interceptor",
    "grpc_aio_server_interceptor",
]


def call(cluster: "Cluster", method: str | None = None, url: str | None = None, *, rpc: str | None = None, address: str | None = None, port: int | None = None, headers: Any = None, stream: bool = False) -> Any:
    """The telemetry scope of one logical call to ``cluster`` (a context manager;
    a no-op when the cluster has no telemetry). ``url`` is scrubbed of
    credentials and query; ``address``/``port`` are what the caller named
    (default: the service name); ``headers`` are read only for the access
    log's configured, redacted header fields. ``stream``: the call's answer
    outlives the block (a response stream: ``start``/``current``/``close``)."""
    owner = _OWNERS.get(id(cluster))  # owner_of(), inline: this runs on every call
    if owner is None or owner.cluster is not cluster:
        return NULL_SCOPE
    if isinstance(rpc, bytes):  # grpc.aio's ClientCallDetails.method
        rpc = rpc.decode("utf-8", "replace")
    if not stream and _quiet(owner):
        # owner.rpc_label(rpc), its common case (a method seen before) inline
        return QuietScope(owner, method, port, rpc if rpc is None or rpc in owner.rpc_names else owner.rpc_label(rpc))
    return CallScope(owner, method, address, port, None if url is None else _url_parts(url)[0], rpc, headers)


@functools.lru_cache(maxsize=2048)
def _url_parts(url: str) -> tuple[str, str, int | None]:
    """(url.full without credentials or query, host, port the caller named or the scheme's)."""
    full = scrub_url(url)
    scheme, _, rest = full.partition("://")
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    default = {"http": 80, "https": 443}.get(scheme.lower())
    return full, host, int(port) if port.isdigit() else default


def http_call(cluster: "Cluster", method: str | None, url: str, headers: Any = None) -> Any:
    """:func:`call` for an HTTP request to ``url`` (``server.address``/``server.port`` from it)."""
    owner = _OWNERS.get(id(cluster))  # owner_of(), inline: this runs on every call
    if owner is None or owner.cluster is not cluster:
        return NULL_SCOPE
    full, host, port = _url_parts(url)
    if _quiet(owner):
        return QuietScope(owner, method, port)
    return CallScope(owner, method, host, port, full, None, headers)


def _quiet(owner: Any) -> bool:
    """Whether nothing but metrics can come of a call now (see ``QuietScope``):
    no trace ids to make, no TracerProvider set, ``meshlib.access`` not logging."""
    if not owner.no_ids:
        return False
    api, enabled = owner.span_api, owner.log_enabled
    return (api is None or getattr(api, "_TRACER_PROVIDER", api) is None) and (enabled is None or not enabled(INFO))


def inject(carrier: Any, endpoint: "Endpoint | None" = None, scope: Any = None) -> Any:
    """Write the trace context into ``carrier`` (a headers mapping, or gRPC
    metadata as a list of pairs) and return it.

    Inside a mesh call, with ``endpoint`` (adapters, once per attempt): opens
    that attempt (its span; its trace headers). ``scope``: the call's scope
    (from :func:`call`) when the attempt starts outside its block, as a
    stream's retries do. Anywhere else: the current context (OpenTelemetry's,
    or meshlib's own; a new trace if there is none)."""
    if endpoint is not None:
        if scope is None:
            scope = current_scope()
            if scope is not None and not scope.closed:
                scope.open(endpoint, carrier)
                return carrier
        elif type(scope) is CallScope and not scope.finished:
            scope.open(endpoint, carrier)
            return carrier
    default_propagation().inject(carrier)
    return carrier


class attempt:
    """``with telemetry.attempt(endpoint):`` an attempt of a decorated function:
    opened like :func:`inject`'s, and current while the block runs."""

    __slots__ = ("_endpoint", "_token", "_prop")

    def __init__(self, endpoint: "Endpoint") -> None:
        self._endpoint = endpoint
        self._token: Any = None

    def __enter__(self) -> "attempt":
        scope = current_scope()
        if scope is not None and not scope.closed:
            parent = scope.ctx
            ctx = scope.open(self._endpoint, None)
            if ctx is not None and ctx is not parent:  # a context of its own (a span, a native parent-id)
                self._prop = scope.owner.hub.prop
                self._token = self._prop.attach(ctx)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            self._prop.detach(self._token)
