"""gRPC server interceptors for :class:`meshlib.security.peer.AllowList`.

The caller's identity is only known inside the call (its servicer context), so
the interceptor wraps the handler: a caller not on the list gets
``PERMISSION_DENIED`` before the servicer runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

if TYPE_CHECKING:  # pragma: no cover
    from .peer import AllowList

MESSAGE = "caller identity not allowed"


def _wrap(handler: Any, allow: "AllowList", aio: bool) -> Any:
    if handler is None:
        return None
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, make in kinds:
        behaviour = getattr(handler, attr)
        if behaviour is None:
            continue
        if aio:
            async def guarded_aio(request: Any, context: Any, _b: Any = behaviour, _stream: bool = attr.endswith("stream")) -> Any:
                if not allow.admits(context):
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, MESSAGE)
                result = _b(request, context)
                if hasattr(result, "__aiter__"):
                    return result
                return await result

            if attr.endswith("stream"):
                async def guarded_gen(request: Any, context: Any, _b: Any = behaviour) -> Any:
                    if not allow.admits(context):
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, MESSAGE)
                    async for item in _b(request, context):
                        yield item

                fn: Any = guarded_gen
            else:
                fn = guarded_aio
        else:
            def fn(request: Any, context: Any, _b: Any = behaviour) -> Any:
                if not allow.admits(context):
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, MESSAGE)
                return _b(request, context)

        return make(fn, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    return handler


class _Sync(grpc.ServerInterceptor):
    def __init__(self, allow: "AllowList") -> None:
        self.allow = allow

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return _wrap(continuation(handler_call_details), self.allow, aio=False)


class _Aio(grpc.aio.ServerInterceptor):
    def __init__(self, allow: "AllowList") -> None:
        self.allow = allow

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return _wrap(await continuation(handler_call_details), self.allow, aio=True)


def sync_interceptor(allow: "AllowList") -> grpc.ServerInterceptor:
    return _Sync(allow)


def aio_interceptor(allow: "AllowList") -> Any:
    return _Aio(allow)
