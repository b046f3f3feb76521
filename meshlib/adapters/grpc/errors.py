"""Errors in the forms gRPC callers catch: meshlib's own status errors (a
fault-injection abort, an expired deadline, an open breaker, a rate limit,
no endpoint), for grpcio's sync API and for ``grpc.aio``."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import grpc
import grpc.aio

from ...core.call import Call
from ...errors import CircuitOpenError, DeadlineExceededError, MeshError, NoHealthyEndpointsError, RateLimitedError
from ...resilience.fault import FaultDecision
from .status import SC, code_of

__all__ = ["RpcStatusError", "rpc_error", "aio_rpc_error", "aborted", "aio_aborted", "settle"]


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

    # A response stream that failed before it started: reading it raises the error.
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        raise self

    def next(self) -> Any:
        raise self


#: The gRPC status each meshlib error stands for (Envoy answers an overflow, a
#: local rate limit and "no healthy upstream" with 503, which gRPC reads as UNAVAILABLE).
_MESH_CODES: tuple[tuple[type[MeshError], grpc.StatusCode], ...] = (
    (DeadlineExceededError, SC.DEADLINE_EXCEEDED),
    (CircuitOpenError, SC.UNAVAILABLE),
    (RateLimitedError, SC.UNAVAILABLE),
    (NoHealthyEndpointsError, SC.UNAVAILABLE),
)
_DUAL: dict[tuple[type, type], type] = {}


def _dual(exc: MeshError, base: type, prefix: str) -> Any:
    """An instance of a class deriving from both ``type(exc)`` and ``base``, with ``exc``'s state."""
    cls = type(exc)
    dual = _DUAL.get((cls, base))
    if dual is None:
        dual = _DUAL.setdefault((cls, base), type(f"{prefix}{cls.__name__}", (cls, base), {"__module__": __name__}))
    err = dual.__new__(dual, *exc.args)
    err.__dict__.update(exc.__dict__)
    return err


def _finish_dual(err: Any, exc: BaseException) -> Any:
    err.args = exc.args
    err.__cause__ = exc.__cause__
    err.__traceback__ = exc.__traceback__
    return err


def _mesh_code(exc: MeshError) -> grpc.StatusCode:
    return next((c for t, c in _MESH_CODES if isinstance(exc, t)), SC.UNAVAILABLE)


def rpc_error(exc: BaseException) -> BaseException:
    """``exc`` as gRPC callers see it: a meshlib error becomes an instance of a
    class deriving from both its own class and :class:`RpcStatusError`, so both
    ``except meshlib.DeadlineExceededError`` and ``except grpc.RpcError`` (with
    ``code()`` DEADLINE_EXCEEDED) catch it. Anything else is returned as is."""
    if not isinstance(exc, MeshError) or isinstance(exc, grpc.RpcError):
        return exc
    err = _dual(exc, RpcStatusError, "Rpc")
    err._set_status(_mesh_code(exc), str(exc))
    return _finish_dual(err, exc)  # type: ignore[no-any-return]


def aio_rpc_error(exc: BaseException) -> BaseException:
    """``exc`` as ``grpc.aio`` callers see it: a meshlib error becomes an
    instance of a class deriving from both its own class and
    ``grpc.aio.AioRpcError``; a status error meshlib made (a fault abort)
    an ``AioRpcError`` with its code and details. Anything else is returned as is."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc
    if isinstance(exc, MeshError):
        err = _dual(exc, grpc.aio.AioRpcError, "AioRpc")
        code, details = _mesh_code(exc), str(exc)
    elif isinstance(exc, RpcStatusError):
        err = grpc.aio.AioRpcError.__new__(grpc.aio.AioRpcError)
        code, details = exc.code(), exc.details()
    else:
        return exc
    grpc.aio.AioRpcError.__init__(err, code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, f"{code.name}: {details} (meshlib)")
    return _finish_dual(err, exc)  # type: ignore[no-any-return]


def aborted(fault: FaultDecision) -> RpcStatusError:
    """The error a call aborted by fault injection answers."""
    return RpcStatusError(code_of(fault.abort_grpc_status or "UNAVAILABLE"), "fault filter abort")


def aio_aborted(fault: FaultDecision) -> BaseException:
    """:func:`aborted`, as a ``grpc.aio.AioRpcError``."""
    return aio_rpc_error(aborted(fault))


def settle(call: Call, result: Any, convert: Callable[[BaseException], BaseException] = rpc_error) -> Any:
    """The value of a finished call, or raise its final error: an expired
    deadline as :class:`~meshlib.DeadlineExceededError`, made a gRPC error
    by ``convert`` (:func:`aio_rpc_error` for grpc.aio)."""
    if isinstance(result, grpc.RpcError):
        if result.code() is SC.DEADLINE_EXCEEDED and call.is_expired():  # type: ignore[attr-defined]
            try:
                call.expired(result)
            except DeadlineExceededError as exc:
                raise convert(exc) from result
        raise result
    return result
