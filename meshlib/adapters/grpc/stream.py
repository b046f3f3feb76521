"""The sync response stream: ``unary_stream`` and ``stream_stream`` on a MeshChannel."""

from __future__ import annotations

import threading
from typing import Any, Callable

import grpc

from ...core.driver import sit_out_fault
from ...health.load.queue import first_pick
from ...errors import MeshError
from .errors import aborted, rpc_error
from .future import StatusOf
from .pinned import END, NONE, Attempt, PinnedStream
from .replay import Replay
from .status import judge_finished

__all__ = ["ResponseStream"]


class ResponseStream(PinnedStream, StatusOf, grpc.Call):
    """A response stream (``unary_stream`` / ``stream_stream``) pinned to one
    endpoint. Its first attempt starts at once; reading the first message
    commits it, after retrying on another endpoint if an attempt failed
    before any message arrived."""

    def __init__(self, m: Any, request: Any, streaming_request: bool, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: bool | None, compression: Any) -> None:
        self._lock = threading.RLock()
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}
        self._setup(m, request, Replay(request) if streaming_request else None, timeout, metadata, kw)
        with self._scope.current():  # telemetry: the stream's scope, current while it starts (closed when its call ends)
            self._start()

    def _start(self) -> None:
        call = self._call
        try:
            fault = call.begin()
        except MeshError as exc:
            self._error = rpc_error(exc)
            self._finished = self._committed = True
            self._scope.close(exc)
            return
        try:
            if fault is not None and sit_out_fault(call, fault):
                self._fail(aborted(fault))
                return
            self._launch(first_pick(call))
        except BaseException as exc:
            self._fail(rpc_error(exc))
            if not isinstance(exc, Exception):
                raise

    def _watch(self, attempt: Attempt) -> None:
        if not attempt.rpc.add_callback(lambda: self._terminated(attempt)):
            self._terminated(attempt)

    def _terminated(self, attempt: Attempt) -> None:
        """grpcio says an attempt is over (on its own thread). A committed one
        ends now; an uncommitted one is judged by the reader, who may retry it
        (or, if nobody ever reads the stream, when it is dropped)."""
        with self._lock:
            attempt.terminated = True
            if attempt is self._attempt and not attempt.booked and self._committed:
                self._ended(attempt, judge_finished(attempt.rpc))

    def __del__(self) -> None:
        attempt = getattr(self, "_attempt", None)
        if attempt is not None and not attempt.booked and not self._finished:
            if not attempt.terminated:
                attempt.rpc.cancel()
            with self._lock:
                if not attempt.booked:
                    self._dropped(attempt)

    # -- commit ------------------------------------------------------------------

    def _commit(self) -> None:
        while not self._committed:
            attempt = self._attempt
            assert attempt is not None
            try:
                first = next(attempt.rpc)
            except StopIteration:
                first = END
            except grpc.RpcError as err:
                with self._lock:
                    delay = self._failed_early(attempt, err)
                if delay is None:
                    return
                try:
                    self._call.sleep(delay)
                    with self._lock:  # a cancel() now either sees the new attempt or stops it
                        self._next_attempt()
                except BaseException as exc:
                    with self._lock:
                        self._fail(rpc_error(exc))
                    if not isinstance(exc, Exception):
                        raise
                    return
                continue
            with self._lock:
                if self._commit_to(attempt, first):
                    self._ended(attempt, judge_finished(attempt.rpc))

    # -- iteration ---------------------------------------------------------------

    def __iter__(self) -> "ResponseStream":
        return self

    def __next__(self) -> Any:
        if not self._committed:
            self._commit()
        if self._error is not None:
            raise self._error
        first = self._first
        if first is not NONE:
            self._first = NONE
            if first is not END:
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
        if attempt is not None and attempt.rpc.cancel():
            return True
        return self._cancel_pending()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        attempt = self._attempt
        if attempt is None:
            return False
        return attempt.rpc.add_callback(callback)  # type: ignore[no-any-return]


