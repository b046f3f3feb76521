"""The sync client interceptor: a service's policies around a channel of
the caller's own (``grpc.intercept_channel(ch, *mesh.grpc_interceptors("svc"))``)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import grpc

from ...core.driver import run, sit_out_fault
from ...core.exchange import Exchange
from ...core.services import Services
from ...endpoint import Endpoint
from ... import telemetry
from ...errors import MeshError
from .errors import aborted, rpc_error, settle
from .future import FutureCall, Workers
from .own_channel import InterceptorBase
from .replay import Replay, ReplayExchange
from .status import EXCHANGE, judge_finished, with_attempt

__all__ = ["MeshClientInterceptor", "interceptors"]


def _details(details: Any, timeout: float | None, metadata: Any) -> Any:
    """A copy of ``grpc.ClientCallDetails`` with another timeout and metadata."""
    fields = {
        "method": details.method,
        "timeout": timeout,
        "metadata": metadata,
        "credentials": getattr(details, "credentials", None),
        "wait_for_ready": getattr(details, "wait_for_ready", None),
        "compression": getattr(details, "compression", None),
    }
    return _CallDetails(**fields)


def _blocking(continuation: Callable[..., Any]) -> bool:
    """Whether grpcio is making a blocking call (``__call__`` / ``with_call``),
    which waits for the interceptor's answer at once: its continuation is made
    in grpcio's ``_with_call``, not in ``future``. The call then runs on the
    caller's thread. (Anything else, or a grpcio that names it differently,
    takes the ``.future()`` path: a worker thread, correct either way.)"""
    return "._with_call." in getattr(continuation, "__qualname__", "")


class _FirstMessage(grpc.Call, grpc.Future):
    """A response stream of the caller's channel, as grpcio made it, noting
    when the caller got its first message: the attempt's first byte (time to
    first byte and the latency balancers learn from), where grpcio's sync
    stream shows no other sign of it. Everything else is the stream's own."""

    __slots__ = ("_rpc", "_clock", "first")

    def __init__(self, rpc: Any, clock: Callable[[], float]) -> None:
        self._rpc = rpc
        self._clock = clock
        self.first: float | None = None

    def __iter__(self) -> "_FirstMessage":
        return self

    def __next__(self) -> Any:
        message = next(self._rpc)
        if self.first is None:
            self.first = self._clock()
        return message

    next = __next__

    def __getattr__(self, name: str) -> Any:  # debug_error_string and the like
        return getattr(self._rpc, name)

    def is_active(self) -> bool:
        return self._rpc.is_active()

    def time_remaining(self) -> float | None:
        return self._rpc.time_remaining()

    def cancel(self) -> bool:
        return self._rpc.cancel()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return self._rpc.add_callback(callback)

    def initial_metadata(self) -> Any:
        return self._rpc.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._rpc.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._rpc.code()

    def details(self) -> str:
        return self._rpc.details()

    def cancelled(self) -> bool:
        return self._rpc.cancelled()

    def running(self) -> bool:
        return self._rpc.running()

    def done(self) -> bool:
        return self._rpc.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._rpc.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._rpc.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._rpc.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._rpc.add_done_callback(lambda _rpc: fn(self))


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class MeshClientInterceptor(
    InterceptorBase,
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """The service's policies around ``continuation``, for a channel of your
    own (``grpc.intercept_channel(ch, *mesh.grpc_interceptors("svc"))``).

    Unary-response calls get admission (rate limit, breaker, thresholds),
    the deadline (caller's ``timeout``, ``meshlib.deadline()`` and the
    service's ``timeout``, the shortest), retries under ``retry_on`` within
    the budget, hedging, and fault injection; they return a live
    ``grpc.Future`` at once (for ``.future()``: cancel works, and a request
    stream may be fed after it returns). Response streams get admission,
    the deadline and bookkeeping; one that fails before it starts is an
    iterator raising its ``grpc.RpcError``. Metadata (``traceparent``,
    ``tracestate``, ``baggage``) passes through unchanged to every attempt;
    retries and hedges also carry ``x-envoy-attempt-count``. Balancing,
    outlier detection and per-endpoint breakers need ``mesh.grpc_channel``.
    """

    def __init__(self, mesh: Services, name: str) -> None:
        super().__init__(mesh, name)
        self._workers: Workers = mesh.resource(("grpc-interceptor-workers", self.cluster.name), lambda: Workers(self.cluster.name))

    def _unary(self, continuation: Callable[..., Any], details: Any, exchange: Exchange, view: Callable[[], Any]) -> Any:
        call = self.start(details.timeout)
        metadata = details.metadata

        def body(future: FutureCall | None) -> tuple[Any, Any]:
            def send(ep: Endpoint, limit: float | None) -> Any:
                if future is not None:
                    future.check()
                outcome = continuation(_details(details, limit, telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)), view())
                if future is None:  # grpcio's blocking call: the outcome is complete
                    exc = outcome.exception()
                else:
                    future.track(outcome)
                    try:
                        exc = outcome.exception()  # a grpcio future waits here
                    except grpc.FutureCancelledError:
                        return outcome  # the attempt the caller cancelled: its status is CANCELLED
                    finally:
                        future.untrack(outcome)
                if exc is None:
                    return outcome.result(), outcome
                if isinstance(exc, grpc.RpcError):
                    return exc
                raise exc

            try:
                with telemetry.call(self.cluster, rpc=details.method, headers=metadata):  # telemetry: the call's scope
                    result = run(call, send, exchange, aborted)
                return settle(call, result)  # type: ignore[no-any-return]
            except MeshError as exc:
                raise rpc_error(exc) from exc.__cause__

        if _blocking(continuation):  # grpcio reads .result() of the answer at once
            try:
                return body(None)[1]
            except grpc.RpcError as err:
                return err  # also a finished grpc.Future, raising itself
        return FutureCall(body, self._workers.get(), call)

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return self._unary(continuation, client_call_details, EXCHANGE, lambda: request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Iterable[Any]) -> Any:
        requests = Replay(request_iterator)
        return self._unary(continuation, client_call_details, ReplayExchange(requests), requests.view)

    def _stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        with telemetry.call(self.cluster, rpc=details.method, headers=details.metadata, stream=True):  # telemetry: the stream's scope, ended with it
            return self._start_stream(continuation, details, request)

    def _start_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        call = self.start(details.timeout)
        try:
            fault = call.begin()
        except MeshError as exc:
            return rpc_error(exc)  # an iterator raising it, like a failed grpcio stream
        try:
            if fault is not None and sit_out_fault(call, fault):
                call.finish()
                return aborted(fault)
            host = call.pick(None)
        except BaseException as exc:
            call.finish()
            if isinstance(exc, MeshError):
                return rpc_error(exc)
            raise
        perf_counter = call.cluster.clock.perf_counter
        started = perf_counter()
        rpc = continuation(_details(details, call.remaining(), telemetry.inject(list(details.metadata or ()), host.endpoint)), request)
        timed = _FirstMessage(rpc, perf_counter)

        def over() -> None:
            call.done(host, started, judge_finished(rpc), decide=False, first_byte=timed.first)
            call.finish()

        if not rpc.add_callback(over):
            over()
        return timed

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return self._stream(continuation, client_call_details, request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Iterable[Any]) -> Any:
        return self._stream(continuation, client_call_details, request_iterator)


def interceptors(mesh: Services, name: str) -> list[MeshClientInterceptor]:
    return [MeshClientInterceptor(mesh, name)]
