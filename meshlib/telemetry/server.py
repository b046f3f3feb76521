"""Serving side: one call takes both the caller's trace context and its deadline.

``with meshlib.incoming(request.headers):`` makes the extracted context the
current one (OpenTelemetry's, or meshlib's own) and bounds everything inside
by the caller's deadline (``grpc-timeout``, ``x-envoy-expected-rq-timeout-ms``),
so an agent that serves a request and calls another keeps one trace and one
deadline. :func:`wsgi_middleware`, :func:`asgi_middleware` and
:func:`grpc_server_interceptor` do it for every request of an app or server.
"""

from __future__ import annotations

from typing import Any, Callable

from ..clock import SYSTEM_CLOCK, Clock
from ..resilience.deadline import deadline, timeout_from_headers
from . import carriers
from .hub import default_propagation

__all__ = ["incoming", "extract", "wsgi_middleware", "asgi_middleware", "grpc_server_interceptor", "grpc_aio_server_interceptor"]


def extract(carrier: Any) -> Any:
    """The trace context ``carrier`` (headers, WSGI environ, ASGI scope, gRPC
    metadata) holds: an OTel ``Context`` or a meshlib ``SpanContext`` (None if none)."""
    return default_propagation().extract(carrier)


class incoming:
    """Serve a request inside its caller's trace and deadline::

        with meshlib.incoming(request.headers):
            session.get("http://inventory/")   # same trace, what is left of the deadline
    """

    __slots__ = ("_carrier", "_timeout", "_clock", "_deadline", "_token", "_prop", "context")

    def __init__(self, carrier: Any, *, timeout: float | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._carrier = carrier
        self._timeout = timeout
        self._clock = clock

    def __enter__(self) -> "incoming":
        prop = self._prop = default_propagation()
        self.context = prop.extract(self._carrier)
        self._token = prop.attach(self.context) if self.context is not None else None
        t = self._timeout
        if t is None:
            t = timeout_from_headers(dict(carriers.pairs(self._carrier)))
        self._deadline = deadline(t, self._clock)
        self._deadline.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._deadline.__exit__(*exc)
        if self._token is not None:
            self._prop.detach(self._token)


def wsgi_middleware(app: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a WSGI app: each request is served inside :class:`incoming` of its environ."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with incoming(environ):
            return app(environ, start_response)

    return wrapped


def asgi_middleware(app: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an ASGI app: each HTTP request is served inside :class:`incoming` of its scope."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") not in ("http", "websocket"):
            return await app(scope, receive, send)
        with incoming(scope):
            return await app(scope, receive, send)

    return wrapped


def grpc_server_interceptor() -> Any:
    """A ``grpc.ServerInterceptor``: unary and streaming handlers run inside
    :class:`incoming` of the call's metadata and ``context.time_remaining()``."""
    import grpc

    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def handler(request: Any, context: Any) -> Any:
            with incoming(context.invocation_metadata(), timeout=context.time_remaining()):
                return behavior(request, context)

        return handler

    def wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def handler(request: Any, context: Any) -> Any:
            with incoming(context.invocation_metadata(), timeout=context.time_remaining()):
                yield from behavior(request, context)

        return handler

    class _Interceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
            h = continuation(details)
            if h is None:
                return None
            if h.unary_unary:
                return grpc.unary_unary_rpc_method_handler(wrap(h.unary_unary), h.request_deserializer, h.response_serializer)
            if h.unary_stream:
                return grpc.unary_stream_rpc_method_handler(wrap_stream(h.unary_stream), h.request_deserializer, h.response_serializer)
            if h.stream_unary:
                return grpc.stream_unary_rpc_method_handler(wrap(h.stream_unary), h.request_deserializer, h.response_serializer)
            if h.stream_stream:
                return grpc.stream_stream_rpc_method_handler(wrap_stream(h.stream_stream), h.request_deserializer, h.response_serializer)
            return h

    return _Interceptor()


def grpc_aio_server_interceptor() -> Any:
    """The ``grpc.aio.ServerInterceptor`` counterpart of :func:`grpc_server_interceptor`
    (coroutine and async-generator handlers, and plain ones)."""
    import inspect

    import grpc
    import grpc.aio

    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> Any:
                with incoming(context.invocation_metadata() or (), timeout=context.time_remaining()):
                    async for item in behavior(request, context):
                        yield item

            return stream

        async def unary(request: Any, context: Any) -> Any:
            with incoming(context.invocation_metadata() or (), timeout=context.time_remaining()):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        return unary

    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )

    class _AioInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
            h = await continuation(details)
            if h is None:
                return None
            for kind, make in kinds:
                behavior = getattr(h, kind)
                if behavior is not None:
                    return make(wrap(behavior), h.request_deserializer, h.response_serializer)
            return h

    return _AioInterceptor()
