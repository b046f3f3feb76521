"""The sync mesh channel: :class:`MeshChannel`, a real ``grpc.Channel``
(generated stubs work on it unchanged) balancing every call over a mesh
service's endpoints, one ordinary channel per endpoint (see :mod:`.pool`).

Every unary-response call goes through the same attempt loop as the HTTP
adapters (``meshlib.core.driver``): admission, a pick, per-attempt
deadline, outcome bookkeeping, retries and hedging. ``.future()`` runs that
loop on a worker thread and can be cancelled while it runs (see
:mod:`.future`); response streams are :class:`~.stream.ResponseStream`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import grpc

from ...core.call import Call
from ...core.driver import run
from ...core.services import Services
from ...endpoint import Endpoint
from ... import telemetry
from ...errors import MeshError
from .errors import aborted, rpc_error, settle
from .future import FutureCall
from .pool import STATE_RANK, ChannelPool, channel_options, follow_tls, pool_key
from .replay import Replay, ReplayExchange
from .status import EXCHANGE, NO_REPORTS, hash_header, with_attempt
from .stream import ResponseStream

__all__ = ["MeshChannel", "channel"]


class _Method:
    """What every call of one method on a MeshChannel shares."""

    __slots__ = ("owner", "pool", "method", "key", "make")

    def __init__(self, owner: "MeshChannel", kind: str, method: str, ser: Any, deser: Any, extra: dict[str, Any]) -> None:
        self.owner = owner
        self.pool = owner.pool
        self.method = method
        self.key = (kind, method, ser, deser, tuple(sorted(extra.items())))
        # channel.unary_unary(...) etc. on an endpoint's channel, made once per channel
        self.make = lambda ch: getattr(ch, kind)(method, request_serializer=ser, response_deserializer=deser, **extra)


class _Attempts(tuple):  # type: ignore[type-arg]
    """One unary-response call's attempts: the driver calls :meth:`send` once
    per attempt. One object per call (not a closure and its cells): a tuple
    of (method, call, request, Replay or None, metadata, grpcio keywords,
    FutureCall or None, plain), made in one C call (``_attempts``)."""

    __slots__ = ()

    def send(self, ep: Endpoint, limit: float | None) -> Any:
        """One attempt on ``ep`` within ``limit`` seconds: its answer, or its RpcError."""
        m, call, request, requests, metadata, kw, future, plain = self
        if future is not None:
            future.check()
        sub = m.pool.acquire(ep)
        try:
            mc = sub.callables.get(m.key) or sub.callable(m.key, m.make)
            attempt = call.attempt
            if attempt > 1:  # a retry or hedge: x-envoy-attempt-count
                metadata = with_attempt(metadata, attempt)
            md = telemetry.inject(list(metadata or ()), ep)  # telemetry: the attempt's span and trace metadata
            body = request if requests is None else requests.view()
            if future is not None:
                return _attempt_future(future, mc.future(body, timeout=limit, metadata=md, **kw))
            try:
                if plain:
                    return mc(body, timeout=limit, metadata=md, **kw)
                return mc.with_call(body, timeout=limit, metadata=md, **kw)
            except grpc.RpcError as err:
                return err
        finally:
            sub.release()


_attempts = tuple.__new__


class _UnaryResponse(grpc.UnaryUnaryMultiCallable, grpc.StreamUnaryMultiCallable):
    """``unary_unary`` and ``stream_unary``: the whole attempt loop per call."""

    def __init__(self, m: _Method, streaming: bool) -> None:
        self._m = m
        self._streaming = streaming

    def _run(self, request: Any, timeout: float | None, metadata: Any, kw: dict[str, Any], future: FutureCall | None = None, plain: bool = False) -> Any:
        """One call: ``(response, call)``, or raise its error. With ``future``,
        each attempt is a grpcio future its :meth:`FutureCall.cancel` reaches.
        ``plain``: the caller wants the response alone (returned alone), so
        attempts use grpcio's plain call, which builds no call object (unless
        the service reads per-call load reports from the trailers)."""
        m = self._m
        cluster = m.owner.cluster
        if future is not None:
            call = future.call
        elif cluster.hashing:
            call = cluster.start_call(hash_header(cluster, metadata), True, timeout)
        else:
            call = Call(cluster, None, True, timeout)
        requests = Replay(request) if self._streaming else None
        reports = cluster.load_reports is not None
        attempts = _attempts(_Attempts, (m, call, request, requests, metadata, kw, future, plain and not reports))
        # Without load reports, an answer's trailers are not read (NO_REPORTS).
        exchange = (EXCHANGE if reports else NO_REPORTS) if requests is None else ReplayExchange(requests)
        try:
            with telemetry.call(cluster, rpc=m.method, headers=metadata):  # telemetry: the call's scope
                result = run(call, attempts.send, exchange, aborted)
        except MeshError as exc:
            raise rpc_error(exc) from exc.__cause__
        if isinstance(result, grpc.RpcError):
            settle(call, result)  # raises its error
        if plain and reports:
            return result[0]  # an answer with its call, read for its load report
        return result

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> tuple[Any, grpc.Call]:
        return self._run(request, timeout, metadata, {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression})

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self._run(request, timeout, metadata, {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}, plain=True)

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> FutureCall:
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}
        cluster = self._m.owner.cluster
        call = cluster.start_call(hash_header(cluster, metadata), True, timeout)
        return FutureCall(lambda fc: self._run(request, timeout, metadata, kw, fc), self._m.owner.pool.workers.get(), call)


def _attempt_future(future: FutureCall, rpc: Any) -> Any:
    """Wait for one attempt made with grpcio's ``.future()``: ``(response,
    call)``, or its RpcError (the attempt itself, if the caller cancelled it)."""
    future.track(rpc)
    try:
        return rpc.result(), rpc
    except grpc.FutureCancelledError:
        return rpc
    except grpc.RpcError as err:
        return err
    finally:
        future.untrack(rpc)


class _ResponseStreaming(grpc.UnaryStreamMultiCallable, grpc.StreamStreamMultiCallable):
    """``unary_stream`` and ``stream_stream``: a :class:`ResponseStream` per call."""

    def __init__(self, m: _Method, streaming: bool) -> None:
        self._m = m
        self._streaming = streaming

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> ResponseStream:
        return ResponseStream(self._m, request, self._streaming, timeout, metadata, credentials, wait_for_ready, compression)

class MeshChannel(grpc.Channel):
    """A ``grpc.Channel`` balancing every call over a mesh service's endpoints.

    Made by ``mesh.grpc_channel(name)``. Its per-endpoint channels live in a
    pool the Mesh owns (shared by every MeshChannel of the same service and
    options); :meth:`close` lets go of it, and the last user closes them.
    """

    def __init__(self, mesh: "Services", service: str, *, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (), compression: grpc.Compression | None = None) -> None:
        self.cluster = cluster = mesh.cluster(service)
        self.service = cluster.name
        tls = mesh.tls(cluster) if credentials is None else None  # TLS_MODE tls/mtls, unless credentials are given
        opts = channel_options(cluster.name, options, credentials is not None or tls is not None)

        def make(ep: Endpoint) -> grpc.Channel:
            if credentials is not None:
                return grpc.secure_channel(ep.address, credentials, options=opts, compression=compression)
            return grpc.insecure_channel(ep.address, options=opts, compression=compression)

        if tls is not None:
            make = tls.grpc().factory(opts, compression)
        key = pool_key("grpc", cluster.name, credentials or tls, opts, compression)
        self.pool: ChannelPool = mesh.resource(key, lambda: follow_tls(tls, ChannelPool(cluster, make, _close_sync)))
        self.pool.attach()
        self._closed = False
        self._subscriptions: dict[Callable[[grpc.ChannelConnectivity], None], list[tuple[Any, Callable[[Any], None]]]] = {}

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.UnaryUnaryMultiCallable:
        return _UnaryResponse(_Method(self, "unary_unary", method, request_serializer, response_deserializer, kwargs), False)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.UnaryStreamMultiCallable:
        return _ResponseStreaming(_Method(self, "unary_stream", method, request_serializer, response_deserializer, kwargs), False)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.StreamUnaryMultiCallable:
        return _UnaryResponse(_Method(self, "stream_unary", method, request_serializer, response_deserializer, kwargs), True)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **kwargs: Any) -> grpc.StreamStreamMultiCallable:
        return _ResponseStreaming(_Method(self, "stream_stream", method, request_serializer, response_deserializer, kwargs), True)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        """Connectivity across the endpoints of the moment: READY when any is
        READY, else the most hopeful state among them (CONNECTING, IDLE,
        TRANSIENT_FAILURE). Endpoints added later are not followed."""
        states: dict[int, grpc.ChannelConnectivity] = {}
        lock = threading.Lock()
        last: list[grpc.ChannelConnectivity | None] = [None]
        subs = []
        for host in self.cluster.hosts:
            sub = self.pool.acquire(host.endpoint)
            sub.release()
            subs.append(sub)
        for i, sub in enumerate(subs):

            def on_change(state: grpc.ChannelConnectivity, i: int = i) -> None:
                with lock:
                    states[i] = state
                    best = min(states.values(), key=STATE_RANK.__getitem__)
                    if best is last[0]:
                        return
                    last[0] = best
                callback(best)

            sub.channel.subscribe(on_change, try_to_connect=try_to_connect)
            self._subscriptions.setdefault(callback, []).append((sub.channel, on_change))

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        for ch, on_change in self._subscriptions.pop(callback, []):
            ch.unsubscribe(on_change)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for callback in list(self._subscriptions):
                self.unsubscribe(callback)
            self.pool.detach()

    def __enter__(self) -> "MeshChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MeshChannel service={self.service!r} endpoints={len(self.cluster.hosts)}>"


def _close_sync(ch: grpc.Channel) -> None:
    ch.close()


def channel(mesh: "Services", name: str, *, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (), compression: grpc.Compression | None = None) -> MeshChannel:
    return MeshChannel(mesh, name, credentials=credentials, options=options, compression=compression)


