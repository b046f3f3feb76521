"""gRPC adapter (optional extra ``meshlib[grpc]``): balanced channels,
interceptors, status-code outcomes and the ``grpc.health.v1`` probe.

grpcio's Python API has no pluggable resolver or balancer, so meshlib balances
per call itself: :class:`MeshChannel` is a real ``grpc.Channel`` (generated
stubs work on it unchanged) holding one ordinary channel per endpoint, made on
first use and closed when the endpoint leaves the service's snapshot (after
the calls on it finish) or when the Mesh closes. Every call goes through the
same attempt loop as the HTTP adapters (``meshlib.core.driver``): admission, a
pick, per-attempt deadline, outcome bookkeeping, retries and hedging.

How a gRPC status becomes an outcome (:func:`judge_rpc`): the status's HTTP
equivalent, by Envoy's ``Grpc::Utility::grpcToHttpStatus``
(``source/common/grpc/status.cc``), is what outlier detection counts, as
Envoy's router does for gRPC responses; ``retry_on`` matches the status name
(``unavailable``, ``deadline-exceeded``, ...). ``UNAVAILABLE`` that grpcio
raises because no connection could be made is a connect failure (the RPC
never left, so the default ``retry_on`` retries it on another endpoint, like
gRPC's transparent retries); one raised because the connection broke is a
reset; a locally expired per-attempt deadline is a timeout.

Streams (``unary_stream``, ``stream_stream``) are pinned to the endpoint
picked when they start. Until the first response message arrives they are
not committed (gRFC A6) and a failed attempt may be retried elsewhere, with
the request messages sent so far replayed from a buffer of up to 256 KiB
(gRPC's ``grpc.per_rpc_retry_buffer_size``); after that an error reaches the
caller. Streams do not hedge.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import logging
import threading
import time
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

try:
    import grpc
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError("mesh.grpc_channel() needs grpcio: pip install 'meshlib[grpc]'") from exc

from ..core.driver import Exchange, run, sit_out_fault
from ..core.call import Call
from ..core.cluster import Cluster
from ..endpoint import Endpoint, EndpointSnapshot
from ..errors import CircuitOpenError, DeadlineExceededError, MeshError, NoHealthyEndpointsError, RateLimitedError
from ..core.host import Host
from ..outcome import Outcome
from ..resilience.backoff import DO_NOT_RETRY, parse_grpc_pushback
from ..resilience.fault import FaultDecision
from ..health import HealthCheckConfig
from ..outcome import AttemptResult
from ..core.services import Services
from .. import telemetry


__all__ = [
    "MeshChannel",
    "MeshClientInterceptor",
    "RpcStatusError",
    "GRPC_TO_HTTP",
    "judge_rpc",
    "grpc_health_probe",
    "GrpcHealthProbe",
    "channel",
    "interceptors",
]

log = logging.getLogger("meshlib")

SC = grpc.StatusCode

#: Envoy's gRPC -> HTTP status mapping (``Grpc::Utility::grpcToHttpStatus``):
#: what outlier detection counts for a gRPC answer.
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    SC.OK: 200,
    SC.CANCELLED: 499,
    SC.UNKNOWN: 500,
    SC.INVALID_ARGUMENT: 400,
    SC.DEADLINE_EXCEEDED: 504,
    SC.NOT_FOUND: 404,
    SC.ALREADY_EXISTS: 409,
    SC.PERMISSION_DENIED: 403,
    SC.RESOURCE_EXHAUSTED: 429,
    SC.FAILED_PRECONDITION: 400,
    SC.ABORTED: 409,
    SC.OUT_OF_RANGE: 400,
    SC.UNIMPLEMENTED: 501,
    SC.INTERNAL: 500,
    SC.UNAVAILABLE: 503,
    SC.DATA_LOSS: 500,
    SC.UNAUTHENTICATED: 401,
}

#: Statuses a ``retry_on`` condition names: never a success, whatever their HTTP code.
_RETRYABLE_CODES = frozenset({SC.CANCELLED, SC.DEADLINE_EXCEEDED, SC.RESOURCE_EXHAUSTED, SC.INTERNAL, SC.UNAVAILABLE})

#: grpc-core's words for an RPC that never reached the server ...
_CONNECT_FAILED = ("failed to connect to all addresses", "Failed to connect to remote host", "DNS resolution failed", "Connection refused")
#: ... and for a connection that broke after it was sent.
_CONNECTION_LOST = ("Socket closed", "Connection reset", "Broken pipe", "Stream removed", "GOAWAY", "Connection timed out", "keepalive watchdog")

PUSHBACK_KEY = "grpc-retry-pushback-ms"
#: Envoy's attempt header (``include_request_attempt_count``), sent on retries
#: and hedges. (gRFC A6's ``grpc-previous-rpc-attempts`` is reserved: grpc-core
#: strips it from application metadata and sends it only for its own retries.)
ATTEMPT_COUNT_KEY = "x-envoy-attempt-count"
#: The per-call retry buffer for request streams (gRPC's per_rpc_retry_buffer_size).
RETRY_BUFFER_BYTES = 256 * 1024


def _code_of(name: str) -> grpc.StatusCode:
    return SC[name.strip().upper()]


_OK_RESULT = AttemptResult(Outcome.SUCCESS, 200, "OK")
_PLAIN: dict[tuple[grpc.StatusCode, str], AttemptResult] = {}


def judge_finished(rpc: Any) -> AttemptResult:
    """How a finished sync call counts: one the caller cancelled says nothing
    about the host (``CANCELLED``, as the asyncio adapter's ``verdict``);
    otherwise :func:`judge_rpc`."""
    if rpc.cancelled():
        return _CANCELLED_RESULT
    return judge_rpc(rpc)


_CANCELLED_RESULT = AttemptResult(Outcome.CANCELLED)


def judge_rpc(rpc: Any) -> AttemptResult:
    """How one finished gRPC attempt counts: ``rpc`` is a ``grpc.RpcError`` (or
    any object with ``code()``, ``details()`` and ``trailing_metadata()``)."""
    code = rpc.code()
    if code is SC.OK:
        return _OK_RESULT
    outcome = Outcome.FAILURE
    if code is SC.UNAVAILABLE:
        details = rpc.details() or ""
        if any(words in details for words in _CONNECT_FAILED):
            outcome = Outcome.CONNECT_FAILURE
        elif any(words in details for words in _CONNECTION_LOST):
            outcome = Outcome.RESET
    elif code is SC.DEADLINE_EXCEEDED:
        outcome = Outcome.TIMEOUT
    status = GRPC_TO_HTTP.get(code, 500)
    if outcome == Outcome.FAILURE and status < 500 and code not in _RETRYABLE_CODES:
        outcome = Outcome.SUCCESS  # the server answered (like an HTTP 4xx)
    pushback = _pushback(rpc)
    if pushback is None:
        key = (code, outcome)
        result = _PLAIN.get(key)
        if result is None:
            result = _PLAIN.setdefault(key, AttemptResult(outcome, status, code.name))
        return result
    return AttemptResult(outcome, status, code.name, retry_after=pushback)


def _pushback(rpc: Any) -> float | None:
    try:
        trailing = rpc.trailing_metadata()
    except Exception:  # a call that never started has none
        return None
    for key, value in trailing or ():
        if key == PUSHBACK_KEY:
            return parse_grpc_pushback(value.decode() if isinstance(value, bytes) else value)
    return None


# -- errors -------------------------------------------------------------------------


class RpcStatusError(grpc.RpcError, grpc.Call, grpc.Future):
    """A ``grpc.RpcError`` meshlib makes itself: a fault-injection abort, or a
    meshlib error (deadline, open breaker, rate limit, no endpoint) in the
    form gRPC callers catch. It is also a ``grpc.Call`` and a finished
    ``grpc.Future``, like grpcio's own errors."""

    _code: grpc.StatusCode
    _details: str
    _trailing: tuple[tuple[str, str], ...]

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self._set_status(code, details, trailing_metadata)

    def _set_status(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str]] = ()) -> None:
        self._code = code
        self._details = details
        self._trailing = tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def debug_error_string(self) -> str:
        return f"{self._code.name}: {self._details} (meshlib)"

    # grpc.RpcContext / grpc.Call
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    # grpc.Future: already finished, with this error.
    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> BaseException:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


#: The gRPC status each meshlib error stands for (Envoy answers an overflow, a
#: local rate limit and "no healthy upstream" with 503, which gRPC reads as UNAVAILABLE).
_MESH_CODES: tuple[tuple[type[MeshError], grpc.StatusCode], ...] = (
    (DeadlineExceededError, SC.DEADLINE_EXCEEDED),
    (CircuitOpenError, SC.UNAVAILABLE),
    (RateLimitedError, SC.UNAVAILABLE),
    (NoHealthyEndpointsError, SC.UNAVAILABLE),
)
_DUAL: dict[type, type] = {}


def rpc_error(exc: BaseException) -> BaseException:
    """``exc`` as gRPC callers see it: a meshlib error becomes an instance of a
    class deriving from both its own class and :class:`RpcStatusError`, so both
    ``except meshlib.DeadlineExceededError`` and ``except grpc.RpcError`` (with
    ``code()`` DEADLINE_EXCEEDED) catch it. Anything else is returned as is."""
    if not isinstance(exc, MeshError) or isinstance(exc, grpc.RpcError):
        return exc
    code = next((c for t, c in _MESH_CODES if isinstance(exc, t)), SC.UNAVAILABLE)
    cls = type(exc)
    dual = _DUAL.get(cls)
    if dual is None:
        dual = _DUAL.setdefault(cls, type(f"Rpc{cls.__name__}", (cls, RpcStatusError), {"__module__": __name__}))
    err = dual.__new__(dual, *exc.args)
    err.__dict__.update(exc.__dict__)
    err.args = exc.args
    err._set_status(code, str(exc))
    err.__cause__ = exc.__cause__
    err.__traceback__ = exc.__traceback__
    return err  # type: ignore[no-any-return]


def _aborted(fault: FaultDecision) -> RpcStatusError:
    return RpcStatusError(_code_of(fault.abort_grpc_status or "UNAVAILABLE"), "fault filter abort")


def settle(call: Call, result: Any) -> Any:
    """The value of a finished call, or raise its final error: an expired
    deadline as :class:`~meshlib.DeadlineExceededError` (also an RpcError
    with DEADLINE_EXCEEDED)."""
    if isinstance(result, grpc.RpcError):
        if result.code() is SC.DEADLINE_EXCEEDED and call.is_expired():  # type: ignore[attr-defined]
            try:
                call.expired(result)
            except DeadlineExceededError as exc:
                raise rpc_error(exc) from result
        raise result
    return result


# -- exchange -----------------------------------------------------------------------


class GrpcExchange(Exchange):
    """Attempts return their ``grpc.RpcError`` instead of raising it, so the
    status (not just an outcome) reaches the retry policy and outlier detection."""

    def classify(self, exc: BaseException) -> str:
        return Outcome.ERROR

    def judge(self, result: Any) -> AttemptResult:
        if isinstance(result, grpc.RpcError):
            return judge_rpc(result)
        return _OK_RESULT


EXCHANGE = GrpcExchange()


class ReplayExchange(GrpcExchange):
    """A request-streaming call: no retry once its retry buffer overflowed
    (sync and asyncio alike)."""

    def __init__(self, requests: "ReplayBuffer") -> None:
        self.requests = requests

    def judge(self, result: Any) -> AttemptResult:
        return self.requests.final(super().judge(result))


# -- call inputs --------------------------------------------------------------------


def hash_header(cluster: Cluster, metadata: Any) -> str | None:
    """The ring_hash / maglev key: the configured header's value in the call's metadata."""
    if not cluster.hashing or not metadata:
        return None
    name = cluster.config.hash_header
    if not name:
        return None
    for key, value in metadata:
        if key == name:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def with_attempt(metadata: Any, attempt: int) -> Any:
    """``metadata``, plus ``x-envoy-attempt-count`` on a retry or hedge (attempt 2 and up)."""
    if attempt <= 1:
        return metadata
    return (*(metadata or ()), (ATTEMPT_COUNT_KEY, str(attempt)))


def _size_of(message: Any) -> int:
    size = getattr(message, "ByteSize", None)
    if size is not None:
        try:
            return int(size())
        except Exception:
            return 64
    try:
        return len(message)
    except TypeError:
        return 64


_PULL = object()
_ENDED = object()


class ReplayBuffer:
    """The messages of a request stream kept for replay, up to
    :data:`RETRY_BUFFER_BYTES`; shared by the sync and asyncio replays."""

    def __init__(self) -> None:
        self._buffer: list[Any] = []
        self._size = 0
        self._ended = False
        self.overflowed = False
        self._owner: object | None = None

    def _step(self, index: int, token: object) -> tuple[Any, int]:
        """What the view ``token`` at ``index`` reads next: a buffered message
        (and the index after it), :data:`_PULL` (the caller's iterator must be
        read) or :data:`_ENDED`. Shared by the sync and asyncio views; the
        sync one calls it under its lock and yields outside it."""
        if self._owner is not None and self._owner is not token:
            raise RuntimeError("meshlib: this request stream was committed to another attempt")
        if index < len(self._buffer):
            item = self._buffer[index]
            index += 1
            if self._owner is token:  # committed to this view: nothing to keep
                del self._buffer[:index]
                index = 0
            return item, index
        return (_ENDED if self._ended else _PULL), index

    def final(self, verdict: AttemptResult) -> AttemptResult:
        """``verdict``, made final (no retry) if it failed after the buffer overflowed."""
        if verdict.outcome != Outcome.SUCCESS and self.overflowed:
            return AttemptResult(verdict.outcome, verdict.status, verdict.grpc_status, DO_NOT_RETRY)
        return verdict

    def _keep(self, item: Any, token: object) -> None:
        """Buffer a message the view ``token`` pulled; past the limit, the
        stream is that view's alone."""
        self._buffer.append(item)
        if self._owner is None and not self.overflowed:
            self._size += _size_of(item)
            if self._size > RETRY_BUFFER_BYTES:
                self.overflowed = True
                self._owner = token


class Replay(ReplayBuffer):
    """A request stream that retried attempts read again from the start.

    Messages are buffered as attempts pull them from the caller's iterator;
    a new attempt's :meth:`view` replays them first. Past
    :data:`RETRY_BUFFER_BYTES` the stream is committed to the attempt that
    pulled the last message (``overflowed``; no more retries), and the buffer
    is dropped. Thread-safe: grpcio reads each attempt's requests on a thread
    of its own."""

    def __init__(self, source: Iterable[Any]) -> None:
        super().__init__()
        self._source = iter(source)
        self._lock = threading.Lock()
        self._pull = threading.Lock()  # one reader of the caller's iterator at a time

    def view(self) -> Iterator[Any]:
        token = object()
        index = 0
        while True:
            with self._lock:
                item, index = self._step(index, token)
            if item is _ENDED:
                return
            if item is not _PULL:
                yield item  # outside the lock: grpcio may block here on flow control
                continue
            with self._pull:
                with self._lock:
                    if index < len(self._buffer) or self._ended:
                        continue
                try:
                    item = next(self._source)
                except StopIteration:
                    with self._lock:
                        self._ended = True
                    continue
                with self._lock:
                    self._keep(item, token)

    def commit(self) -> None:
        """The call committed: nothing needs replaying any more."""
        with self._lock:
            self.overflowed = True


# -- per-endpoint channels ----------------------------------------------------------


class Subchannel:
    """One endpoint's underlying channel, with the calls in flight on it.

    ``retire()`` (the endpoint left the snapshot) closes it once the last call
    releases it; ``close()`` closes it at once."""

    __slots__ = ("endpoint", "channel", "callables", "_closer", "_lock", "_refs", "_retired", "_closed")

    def __init__(self, endpoint: Endpoint, channel: Any, closer: Callable[[Any], None]) -> None:
        self.endpoint = endpoint
        self.channel = channel
        #: Multicallables made on this channel, by (kind, method, serializers).
        self.callables: dict[Hashable, Any] = {}
        self._closer = closer
        self._lock = threading.Lock()
        self._refs = 0
        self._retired = False
        self._closed = False

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            close = self._retired and self._refs == 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self._closer(self.channel)

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            close = self._refs == 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self._closer(self.channel)

    def close(self) -> None:
        with self._lock:
            self._retired = True
            close = not self._closed
            self._closed = True
        if close:
            self._closer(self.channel)

    def callable(self, key: Hashable, make: Callable[[Any], Any]) -> Any:
        found = self.callables.get(key)
        if found is None:
            found = self.callables.setdefault(key, make(self.channel))
        return found

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def active(self) -> int:
        return self._refs


class ChannelPool:
    """A service's per-endpoint channels for one channel configuration.

    ``make(endpoint)`` opens a channel, ``closer(channel)`` closes one. Channels
    are made on first use; an endpoint leaving the snapshot retires its
    channel (closed once its calls finish)."""

    def __init__(self, cluster: Cluster, make: Callable[[Endpoint], Any], closer: Callable[[Any], None]) -> None:
        self.cluster = cluster
        self._make = make
        self._closer = closer
        self._subs: dict[tuple[str, int], Subchannel] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._users = 0
        self._executor: cf.ThreadPoolExecutor | None = None
        self._unwatch = cluster.watch(self._update)

    def acquire(self, endpoint: Endpoint) -> Subchannel:
        """The endpoint's channel, held for one call: :meth:`Subchannel.release` it."""
        sub = self._subs.get(endpoint.key)
        if sub is not None and sub.acquire():
            return sub
        with self._lock:
            if self._closed:
                raise MeshError(f"the gRPC channels of {self.cluster.name!r} are closed (the Mesh or the channel was closed)")
            sub = self._subs.get(endpoint.key)
            if sub is None or not sub.acquire():
                sub = Subchannel(endpoint, self._make(endpoint), self._closer)
                sub.acquire()
                self._subs[endpoint.key] = sub
                if all(h.key != endpoint.key for h in self.cluster.hosts):
                    # The endpoint left between the pick and now: serve this call, then close.
                    del self._subs[endpoint.key]
                    sub.retire()
        return sub

    def _update(self, snapshot: EndpointSnapshot) -> None:
        keys = {ep.key for ep in snapshot}
        with self._lock:
            gone = [self._subs.pop(k) for k in list(self._subs) if k not in keys]
        for sub in gone:
            log.debug("meshlib: %s endpoint %s left; its gRPC channel closes after %d call(s)", self.cluster.name, sub.endpoint.address, sub.active)
            sub.retire()

    def subchannels(self) -> list[Subchannel]:
        return list(self._subs.values())

    def attach(self) -> None:
        with self._lock:
            self._users += 1

    def detach(self) -> None:
        """A channel using this pool was closed; the last one closes every endpoint channel."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub.close()

    def executor(self) -> cf.ThreadPoolExecutor:
        """Threads for ``.future()`` calls, made on first use."""
        pool = self._executor
        if pool is None:
            with self._lock:
                if self._executor is None:
                    self._executor = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"meshlib-grpc-{self.cluster.name}")
                pool = self._executor
        return pool

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs, self._subs = list(self._subs.values()), {}
            pool, self._executor = self._executor, None
        self._unwatch()
        for sub in subs:
            sub.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def channel_options(service: str, options: Sequence[tuple[str, Any]], secure: bool) -> tuple[tuple[str, Any], ...]:
    """The per-endpoint channel arguments: the caller's, plus the service name
    as ``:authority`` and (with TLS) as the name the certificate must carry."""
    opts = [tuple(o) for o in options]
    names = {o[0] for o in opts}
    if "grpc.default_authority" not in names:
        opts.append(("grpc.default_authority", service))
    if secure and "grpc.ssl_target_name_override" not in names:
        opts.append(("grpc.ssl_target_name_override", service))
    return tuple(opts)  # type: ignore[arg-type]


def _pool_key(kind: str, service: str, credentials: Any, options: tuple[Any, ...], compression: Any) -> Hashable:
    try:
        hash(options)
    except TypeError:
        options = (object(),)  # unhashable channel arguments: a pool of its own
    return (kind, service, id(credentials) if credentials is not None else None, options, compression)


# -- the sync channel ---------------------------------------------------------------


class _Method:
    """What every call of one method on a MeshChannel shares."""

    __slots__ = ("owner", "method", "key", "make")

    def __init__(self, owner: "MeshChannel", kind: str, method: str, ser: Any, deser: Any, extra: dict[str, Any]) -> None:
        self.owner = owner
        self.method = method
        self.key = (kind, method, ser, deser, tuple(sorted(extra.items())))
        # channel.unary_unary(...) etc. on an endpoint's channel, made once per channel
        self.make = lambda ch: getattr(ch, kind)(method, request_serializer=ser, response_deserializer=deser, **extra)


class _UnaryResponse(grpc.UnaryUnaryMultiCallable, grpc.StreamUnaryMultiCallable):
    """``unary_unary`` and ``stream_unary``: the whole attempt loop per call."""

    def __init__(self, m: _Method, streaming: bool) -> None:
        self._m = m
        self._streaming = streaming

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> tuple[Any, grpc.Call]:
        m = self._m
        owner = m.owner
        cluster = owner.cluster
        pool = owner.pool
        key, make = m.key, m.make
        requests = Replay(request) if self._streaming else None
        call = cluster.start_call(hash_header(cluster, metadata), True, timeout)

        def send(ep: Endpoint, limit: float | None) -> Any:
            sub = pool.acquire(ep)
            try:
                mc = sub.callables.get(key) or sub.callable(key, make)
                md = telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)  # telemetry: the attempt's span and trace metadata
                body = request if requests is None else requests.view()
                try:
                    return mc.with_call(body, timeout=limit, metadata=md, credentials=credentials, wait_for_ready=wait_for_ready, compression=compression)
                except grpc.RpcError as err:
                    return err
            finally:
                sub.release()

        exchange = EXCHANGE if requests is None else ReplayExchange(requests)
        try:
            with telemetry.call(cluster, rpc=m.method, headers=metadata):  # telemetry: the call's scope
                result = run(call, send, exchange, _aborted)
        except MeshError as exc:
            raise rpc_error(exc) from exc.__cause__
        return settle(call, result)  # type: ignore[no-any-return]

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)[0]

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> "FutureCall":
        ctx = contextvars.copy_context()
        return FutureCall(self._m.owner.pool.executor().submit(ctx.run, self.with_call, request, timeout, metadata, credentials, wait_for_ready, compression))


class _StatusOf:
    """``grpc.Call``'s status methods, read from the call ``_status_source()`` names."""

    _status_source: Callable[[], Any]

    def initial_metadata(self) -> Any:
        return self._status_source().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._status_source().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._status_source().code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._status_source().details()  # type: ignore[no-any-return]


class FutureCall(_StatusOf, grpc.Future, grpc.Call):
    """``.future()`` of a mesh call: the blocking call (with its retries) runs
    on a ``meshlib-grpc-<service>`` thread; this is its ``grpc.Future`` and,
    once it finished, its ``grpc.Call``."""

    def __init__(self, future: cf.Future[Any]) -> None:
        self._future = future

    def _status_source(self) -> Any:
        exc = self._future.exception()
        return exc if exc is not None else self._future.result()[1]

    def cancel(self) -> bool:
        return self._future.cancel()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def running(self) -> bool:
        return self._future.running()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._future.result(timeout)[0]
        except cf.TimeoutError:
            raise grpc.FutureTimeoutError() from None
        except cf.CancelledError:
            raise grpc.FutureCancelledError() from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return self._future.exception(timeout)
        except cf.TimeoutError:
            raise grpc.FutureTimeoutError() from None

    def traceback(self, timeout: float | None = None) -> Any:
        exc = self.exception(timeout)
        return None if exc is None else exc.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def is_active(self) -> bool:
        return not self._future.done()

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._future.done():
            return False
        self._future.add_done_callback(lambda _f: callback())
        return True


_END = object()  # a stream that ended before its first message
_NONE = object()  # no first message held back


class _Attempt:
    """One attempt of a response stream: its host, channel and grpcio call."""

    __slots__ = ("host", "sub", "rpc", "started", "terminated", "booked")

    def __init__(self, host: Host, sub: Subchannel, rpc: Any, started: float) -> None:
        self.host = host
        self.sub = sub
        self.rpc = rpc
        self.started = started
        self.terminated = False
        self.booked = False


class PinnedStream:
    """What the sync and aio response streams share: one call pinned to the
    endpoint of its current attempt, committed by its first message.

    An attempt that ends before committing is booked by the reader, who may
    retry it; the committed one is booked when the library reports it over,
    its latency being the time to the first message."""

    _m: Any
    #: Has the library report when an attempt is over (each stream class says how).
    _watch: Callable[[_Attempt], None]

    def _setup(self, m: Any, request: Any, requests: Any, timeout: float | None, metadata: Any, kw: dict[str, Any]) -> None:
        self._m = m
        self._request = request
        self._requests = requests
        self._metadata = metadata
        self._kw = kw
        self._finished = False
        self._committed = False
        self._cancelled = False
        self._first: Any = _NONE
        self._first_at = 0.0
        self._error: BaseException | None = None
        self._attempt: _Attempt | None = None
        cluster = m.owner.cluster
        self._call = cluster.start_call(hash_header(cluster, metadata), True, timeout)

    def _over(self) -> None:
        """The call is finished (a hook for done-callbacks)."""

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._finished = self._committed = True
        self._call.finish()
        self._over()

    def _launch(self, failure: BaseException | None) -> None:
        call = self._call
        host = call.pick(failure)
        started = time.perf_counter()
        m = self._m
        try:
            sub = m.owner.pool.acquire(host.endpoint)
        except BaseException:
            call.done(host, started, AttemptResult(Outcome.ERROR), decide=False)
            raise
        try:
            mc = sub.callable(m.key, m.make)
            request = self._requests.view() if self._requests is not None else self._request
            rpc = mc(request, timeout=call.remaining(), metadata=telemetry.inject(list(with_attempt(self._metadata, call.attempt) or ())), **self._kw)  # telemetry: trace metadata
        except BaseException:
            sub.release()
            call.done(host, started, AttemptResult(Outcome.ERROR), decide=False)
            raise
        self._attempt = attempt = _Attempt(host, sub, rpc, started)
        self._watch(attempt)

    def _book(self, attempt: _Attempt, verdict: AttemptResult, decide: bool = False) -> float | None:
        """Record a finished attempt; for an uncommitted failure, the retry delay."""
        attempt.booked = True
        attempt.sub.release()
        started = attempt.started
        if self._committed and verdict.outcome == Outcome.SUCCESS:
            started += time.perf_counter() - self._first_at  # latency: to the first message
        if self._requests is not None:
            verdict = self._requests.final(verdict)
        delay = self._call.done(attempt.host, started, verdict, decide=decide)
        if delay is None:
            self._finished = True
            self._call.finish()
            self._over()
        return delay

    def _commit_to(self, attempt: _Attempt, first: Any) -> bool:
        """The first message (or the end) arrived: commit. True if the attempt
        is already over and still to be booked."""
        self._first = first
        self._first_at = time.perf_counter()
        self._committed = True
        if self._requests is not None:
            self._requests.commit()
        return attempt.terminated and not attempt.booked

    def _retry_delay(self, attempt: _Attempt, err: grpc.RpcError) -> float | None:
        """An uncommitted attempt failed: book it and return the delay before
        the next one, or None (``err``, or the deadline, is the answer)."""
        if attempt.booked:
            self._error, self._committed = err, True
            return None
        if self._cancelled:
            self._book(attempt, AttemptResult(Outcome.CANCELLED))
            self._error, self._committed = err, True
            return None
        delay = self._book(attempt, judge_rpc(err), decide=True)
        if delay is not None and self._call.enter_pending():
            return delay
        if delay is not None:
            self._finished = True
            self._call.finish()
            self._over()
        self._error, self._committed = err, True
        if err.code() is SC.DEADLINE_EXCEEDED and self._call.is_expired():
            try:
                self._call.expired(err)
            except DeadlineExceededError as exc:
                self._error = rpc_error(exc)
        return None


class ResponseStream(PinnedStream, _StatusOf, grpc.Call):
    """A response stream (``unary_stream`` / ``stream_stream``) pinned to one
    endpoint. Its first attempt starts at once; reading the first message
    commits it, after retrying on another endpoint if an attempt failed
    before any message arrived."""

    def __init__(self, m: _Method, request: Any, streaming_request: bool, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: bool | None, compression: Any) -> None:
        self._lock = threading.RLock()
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}
        self._setup(m, request, Replay(request) if streaming_request else None, timeout, metadata, kw)
        call = self._call
        try:
            fault = call.begin()
        except MeshError as exc:
            self._error = rpc_error(exc)
            self._finished = self._committed = True
            return
        try:
            if fault is not None and sit_out_fault(call, fault):
                self._fail(_aborted(fault))
                return
            self._launch(None)
        except BaseException as exc:
            self._fail(rpc_error(exc))
            if not isinstance(exc, Exception):
                raise

    def _watch(self, attempt: _Attempt) -> None:
        if not attempt.rpc.add_callback(lambda: self._terminated(attempt)):
            self._terminated(attempt)

    def _terminated(self, attempt: _Attempt) -> None:
        """grpcio says an attempt is over (on its own thread). A committed one
        is booked now; an uncommitted one by the reader, who may retry it (or,
        if nobody ever reads the stream, when it is dropped)."""
        with self._lock:
            attempt.terminated = True
            if attempt is self._attempt and not attempt.booked and self._committed:
                self._book(attempt, judge_finished(attempt.rpc))

    def __del__(self) -> None:
        attempt = self._attempt
        if attempt is not None and not attempt.booked and not self._finished:
            if not attempt.terminated:
                attempt.rpc.cancel()
            with self._lock:
                if not attempt.booked:
                    self._book(attempt, AttemptResult(Outcome.CANCELLED))

    # -- commit ------------------------------------------------------------------

    def _commit(self) -> None:
        while not self._committed:
            attempt = self._attempt
            assert attempt is not None
            try:
                first = next(attempt.rpc)
            except StopIteration:
                first = _END
            except grpc.RpcError as err:
                with self._lock:
                    delay = self._retry_delay(attempt, err)
                if delay is None:
                    return
                try:
                    self._call.sleep(delay)
                    self._launch(err)
                except BaseException as exc:
                    with self._lock:
                        self._fail(rpc_error(exc))
                    if not isinstance(exc, Exception):
                        raise
                    return
                continue
            with self._lock:
                if self._commit_to(attempt, first):
                    self._book(attempt, judge_finished(attempt.rpc))

    # -- iteration ---------------------------------------------------------------

    def __iter__(self) -> "ResponseStream":
        return self

    def __next__(self) -> Any:
        if not self._committed:
            self._commit()
        if self._error is not None:
            raise self._error
        first = self._first
        if first is not _NONE:
            self._first = _NONE
            if first is not _END:
                return first
            raise StopIteration
        assert self._attempt is not None
        return next(self._attempt.rpc)

    def next(self) -> Any:
        return self.__next__()

    # -- grpc.Call ---------------------------------------------------------------

    def _status_source(self) -> Any:
        if not self._committed:
            self._commit()
        if self._error is not None:
            return self._error
        assert self._attempt is not None
        return self._attempt.rpc

    def is_active(self) -> bool:
        return not self._finished and (self._attempt is None or self._attempt.rpc.is_active())

    def time_remaining(self) -> float | None:
        return self._call.remaining()

    def cancel(self) -> bool:
        with self._lock:
            self._cancelled = True
            attempt = self._attempt
        return attempt is not None and attempt.rpc.cancel()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        attempt = self._attempt
        if attempt is None:
            return False
        return attempt.rpc.add_callback(callback)  # type: ignore[no-any-return]


class _ResponseStreaming(grpc.UnaryStreamMultiCallable, grpc.StreamStreamMultiCallable):
    """``unary_stream`` and ``stream_stream``: a :class:`ResponseStream` per call."""

    def __init__(self, m: _Method, streaming: bool) -> None:
        self._m = m
        self._streaming = streaming

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> ResponseStream:
        return ResponseStream(self._m, request, self._streaming, timeout, metadata, credentials, wait_for_ready, compression)


_STATE_RANK = {
    grpc.ChannelConnectivity.READY: 0,
    grpc.ChannelConnectivity.CONNECTING: 1,
    grpc.ChannelConnectivity.IDLE: 2,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: 3,
    grpc.ChannelConnectivity.SHUTDOWN: 4,
}


class MeshChannel(grpc.Channel):
    """A ``grpc.Channel`` balancing every call over a mesh service's endpoints.

    Made by ``mesh.grpc_channel(name)``. Its per-endpoint channels live in a
    pool the Mesh owns (shared by every MeshChannel of the same service and
    options); :meth:`close` lets go of it, and the last user closes them.
    """

    def __init__(self, mesh: "Services", service: str, *, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (), compression: grpc.Compression | None = None) -> None:
        self.cluster = cluster = mesh.cluster(service)
        self.service = cluster.name
        opts = channel_options(cluster.name, options, credentials is not None)

        def make(ep: Endpoint) -> grpc.Channel:
            if credentials is not None:
                return grpc.secure_channel(ep.address, credentials, options=opts, compression=compression)
            return grpc.insecure_channel(ep.address, options=opts, compression=compression)

        key = _pool_key("grpc", cluster.name, credentials, opts, compression)
        self.pool: ChannelPool = mesh.resource(key, lambda: ChannelPool(cluster, make, _close_sync))
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
                    best = min(states.values(), key=_STATE_RANK.__getitem__)
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


# -- interceptors -------------------------------------------------------------------


class ChannelCall(Call):
    """A Call whose every attempt goes to the caller's own channel: admission,
    deadline, retries, budget and breakers as usual, but no pick (the
    channel chooses its server), so one stand-in Host carries the statistics."""

    __slots__ = ("_host",)

    def __init__(self, cluster: Cluster, host: Host, timeout: float | None = None) -> None:
        super().__init__(cluster, None, True, timeout)
        self._host = host

    def pick(self, failure: BaseException | None = None) -> Host:
        cluster = self.cluster
        left = self.remaining()
        if left is not None and left <= 0:
            self.expired(failure)
        try:
            cluster.thresholds.acquire_attempt()
        except CircuitOpenError:
            cluster.count("overflow")
            self._release_retry()
            if failure is not None:
                raise failure from None
            raise
        self.attempt += 1
        host = self._host
        host.start()
        return host


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


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class InterceptorBase:
    """What the sync and aio interceptors share: the service's cluster and
    the stand-in Host whose counters :meth:`stats` reports."""

    def __init__(self, mesh: "Services", name: str, *, share: "InterceptorBase | None" = None) -> None:
        if share is not None:  # one of a set: the same cluster and statistics
            self.cluster, self.host = share.cluster, share.host
            return
        self.cluster = cluster = mesh.cluster(name)
        cfg = cluster.config
        self.host = Host(
            Endpoint(host=f"{cluster.name} (own channel)", port=0),
            decay=cfg.ewma_decay,
            default_rtt=cfg.ewma_default_rtt,
            failure_penalty=cfg.ewma_failure_penalty,
            clock=cluster.clock,
        )

    def start(self, timeout: float | None) -> ChannelCall:
        """A call with the caller's ``timeout`` (``ClientCallDetails.timeout``)."""
        return ChannelCall(self.cluster, self.host, timeout)

    def stats(self) -> dict[str, Any]:
        """Calls through this interceptor: attempts, outcomes and latency, plus
        the service's call counters (retries, budget, breaker)."""
        h = self.host
        return {
            "service": self.cluster.name,
            "attempts": h.requests,
            "active": h.active,
            "successes": h.successes,
            "failures": h.failures,
            "connect_failures": h.connect_failures,
            "mean_latency_ms": round(h.mean_latency * 1000, 3),
            **self.cluster.resilience_stats(),
        }


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
    the budget, hedging, and fault injection; response streams get admission,
    the deadline and bookkeeping. Metadata (``traceparent``, ``tracestate``,
    ``baggage``) passes through unchanged to every attempt; retries and hedges
    also carry ``x-envoy-attempt-count``. Balancing, outlier
    detection and per-endpoint breakers need ``mesh.grpc_channel``.
    """

    def _unary(self, continuation: Callable[..., Any], details: Any, request: Any, exchange: Exchange, view: Callable[[], Any]) -> Any:
        call = self.start(details.timeout)
        metadata = details.metadata

        def send(ep: Endpoint, limit: float | None) -> Any:
            outcome = continuation(_details(details, limit, telemetry.inject(list(with_attempt(metadata, call.attempt) or ()), ep)), view())  # telemetry: span, trace metadata
            exc = outcome.exception()
            if exc is None or isinstance(exc, grpc.RpcError):
                return outcome if exc is None else exc
            raise exc

        try:
            with telemetry.call(self.cluster, rpc=details.method, headers=metadata):  # telemetry: the call's scope
                result = run(call, send, exchange, _aborted)
            settle(call, result)
        except grpc.RpcError as err:
            return err
        except MeshError as exc:
            return rpc_error(exc)
        return result

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return self._unary(continuation, client_call_details, request, EXCHANGE, lambda: request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Iterable[Any]) -> Any:
        requests = Replay(request_iterator)
        return self._unary(continuation, client_call_details, request_iterator, ReplayExchange(requests), requests.view)

    def _stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        call = self.start(details.timeout)
        try:
            fault = call.begin()
        except MeshError as exc:
            return rpc_error(exc)
        try:
            if fault is not None and sit_out_fault(call, fault):
                call.finish()
                return _aborted(fault)
            host = call.pick(None)
        except BaseException as exc:
            call.finish()
            if isinstance(exc, MeshError):
                return rpc_error(exc)
            raise
        started = time.perf_counter()
        rpc = continuation(_details(details, call.remaining(), telemetry.inject(list(details.metadata or ()))), request)  # telemetry: trace metadata

        def over() -> None:
            call.done(host, started, judge_finished(rpc), decide=False)
            call.finish()

        if not rpc.add_callback(over):
            over()
        return rpc

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return self._stream(continuation, client_call_details, request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Iterable[Any]) -> Any:
        return self._stream(continuation, client_call_details, request_iterator)


def interceptors(mesh: "Services", name: str) -> list[MeshClientInterceptor]:
    return [MeshClientInterceptor(mesh, name)]


# -- health checks ------------------------------------------------------------------

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint at ``data[i:]`` and the index after it."""
    value = shift = 0
    while i < len(data):
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return value, i


def encode_health_request(service: str) -> bytes:
    """``grpc.health.v1.HealthCheckRequest{service}`` in protobuf wire format
    (field 1, length-delimited); empty for the whole server."""
    data = service.encode()
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_health_status(data: bytes) -> int:
    """The ``status`` (field 1, varint) of a ``HealthCheckResponse``; 0 (UNKNOWN) if absent."""
    i, status = 0, 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            if field == 1:
                status = value
        elif wire == 2:
            length, i = _read_varint(data, i)
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            break
    return status


class GrpcHealthProbe:
    """The ``grpc.health.v1.Health/Check`` probe (gRPC's health-checking
    protocol, as Envoy's gRPC health checker): passes when the endpoint
    answers SERVING for ``health_check_path`` (the service name asked about;
    empty means the whole server) within ``health_check_timeout``. A fresh
    channel per probe, so a probe never rides on a broken connection.

    The default probe is plaintext; for TLS endpoints pass
    ``Mesh(health_probe=GrpcHealthProbe(credentials=...))``."""

    def __init__(self, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.credentials = credentials
        self.options = tuple(options)

    def __call__(self, endpoint: Endpoint, cfg: HealthCheckConfig) -> bool:
        if self.credentials is not None:
            ch = grpc.secure_channel(endpoint.address, self.credentials, options=self.options)
        else:
            ch = grpc.insecure_channel(endpoint.address, options=self.options)
        try:
            check = ch.unary_unary(HEALTH_CHECK_METHOD)
            answer = check(encode_health_request(cfg.path), timeout=cfg.timeout, wait_for_ready=True)
            return decode_health_status(answer) == _SERVING
        except grpc.RpcError:
            return False
        finally:
            ch.close()


#: The probe a service with ``health_check_protocol=grpc`` uses by default.
grpc_health_probe = GrpcHealthProbe()
