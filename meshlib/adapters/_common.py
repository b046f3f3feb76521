"""What every adapter shares: URL splitting, outcome classification, TLS names."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import socket
import time
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.response import HTTPResponse

from ..core.call import Call
from ..core.exchange import End, Exchange
from ..outcome import Outcome
from ..resilience.backoff import parse_retry_after
from ..resilience.deadline import ENVOY_TIMEOUT_HEADER, encode_envoy_timeout
from ..outcome import AttemptResult

#: The service name a TLS connection to an endpoint must present and verify
#: (SNI and hostname check), set while a mesh call is being sent.
TLS_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar("meshlib_tls_name", default=None)


@functools.lru_cache(maxsize=2048)
def split_url(url: str) -> tuple[str, str, str, str]:
    """``(scheme, authority, host, rest)`` of an absolute URL.

    ``rest`` is the path, query and fragment (``/`` when empty). The host of
    ``http://user@inventory:8080/x`` is ``inventory``. Memoised: services are
    called with the same URLs again and again.
    """
    sep = url.find("://")
    if sep < 0:
        return "", "", "", url
    start = sep + 3
    end = len(url)
    for ch in "/?#":
        j = url.find(ch, start, end)
        if j >= 0:
            end = j
    authority = url[start:end]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host = hostport[1 : hostport.find("]")]
    else:
        host = hostport.partition(":")[0]
    rest = url[end:] or "/"
    if rest[0] != "/":
        rest = "/" + rest
    return url[:sep], authority, host, rest


def endpoint_url(scheme: str, address: str, rest: str) -> str:
    return f"{scheme}://{address}{rest}"


def classify_exception(exc: BaseException) -> str:
    """Map an exception (and its causes) to an :class:`Outcome`.

    A refused or timed-out *connect* is a connect failure: the request never
    reached the server, so it is safe to retry anywhere. Only the error's own
    chain is read (its ``reason``, explicit cause, or implicit context unless
    suppressed), and the first recognised error wins, so a failure raised after
    the request was written (a reset, a timeout reading the answer) is never
    taken for a connect failure.
    """
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        if isinstance(e, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError, socket.gaierror)):
            return Outcome.CONNECT_FAILURE
        if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ProtocolError)):
            return Outcome.RESET
        if isinstance(e, (ReadTimeoutError, TimeoutError, socket.timeout, asyncio.TimeoutError)):  # distinct before 3.11
            return Outcome.TIMEOUT
        reason = getattr(e, "reason", None)  # urllib3 MaxRetryError
        if isinstance(reason, BaseException):
            e = reason
        elif e.__cause__ is not None or e.__suppress_context__:
            e = e.__cause__  # ``raise ... from None`` cut the chain: what it hid is not this error
        else:
            e = e.__context__
        seen += 1
    return Outcome.ERROR


_BY_STATUS: dict[int, AttemptResult] = {}


def judge_status(status: int, retry_after: str | None = None) -> AttemptResult:
    """An HTTP response as the policies see it: 5xx is a server failure,
    anything else a success; ``Retry-After`` (seconds or an HTTP date) is
    honoured as the server's pushback."""
    if retry_after is None:
        result = _BY_STATUS.get(status)
        if result is None:
            result = _BY_STATUS.setdefault(status, AttemptResult(Outcome.FAILURE if status >= 500 else Outcome.SUCCESS, status))
        return result
    outcome = Outcome.FAILURE if status >= 500 else Outcome.SUCCESS
    return AttemptResult(outcome, status, retry_after=parse_retry_after(retry_after, time.time()))


def judge_response(status: int, headers: Any) -> AttemptResult:
    """:func:`judge_status` of a response, reading ``Retry-After`` from
    ``headers`` (anything with ``get``) only for a status of 400 or more."""
    return judge_status(status, headers.get("retry-after") if status >= 400 else None)


class HttpExchange(Exchange):
    """What the HTTP adapters' exchanges share: exceptions classified by
    :func:`classify_exception`."""

    def classify(self, exc: BaseException) -> str:
        return classify_exception(exc)


# -- request bodies ------------------------------------------------------------------
#
# A plain body (None, bytes, str, a buffer) goes out as many times as asked with
# no per-call state: the adapter's module-level exchange serves the call. Any
# other body gets an exchange of its own for the call, which knows how to send
# it again: a file that can seek is rewound to where it started; a one-shot body
# (a generator, an iterator, a stream that cannot seek) is sent through a wrapper
# that notes when an attempt began to read it, after which it is never resent.


class BodyExchange(HttpExchange):
    """One call's exchange when its body is not plain bytes: the adapter's
    exchange (``base``) reads results, this one rewinds the body and gives
    each attempt what to send (:meth:`attempt_body`)."""

    def __init__(self, base: HttpExchange, body: Any) -> None:
        self.base = base
        self.body = body

    def classify(self, exc: BaseException) -> str:
        return self.base.classify(exc)

    def judge(self, result: Any) -> AttemptResult:
        return self.base.judge(result)

    def discard(self, result: Any) -> None:
        self.base.discard(result)

    def defer(self, result: Any, end: End) -> bool:
        return self.base.defer(result, end)

    def attempt_body(self) -> Any:
        return self.body


class SeekingExchange(BodyExchange):
    """A file body that can seek: every attempt after the first starts where
    the caller's file stood when the call began."""

    def __init__(self, base: HttpExchange, body: Any, position: int) -> None:
        super().__init__(base, body)
        self.position = position

    def rewind(self) -> bool:
        try:
            self.body.seek(self.position)
        except (OSError, ValueError):  # closed, or it cannot seek after all
            return False
        return True


class OneShotExchange(BodyExchange):
    """A body that can be read once. Each attempt sends it through a wrapper
    that notes when sending began; from then on it is never resent. The call
    does not hedge (see :func:`body_exchange`)."""

    def __init__(self, base: HttpExchange, body: Any) -> None:
        super().__init__(base, body)
        self.started = False

    def rewind(self) -> bool:
        return not self.started

    def attempt_body(self) -> Iterator[Any]:
        return self._chunks(self.body)

    def _chunks(self, source: Iterable[Any]) -> Iterator[Any]:
        self.started = True  # runs when the first chunk is asked for, not before
        yield from source

    def attempt_body_async(self) -> AsyncIterator[Any]:
        return self._achunks(self.body)

    async def _achunks(self, source: Any) -> AsyncIterator[Any]:
        self.started = True
        async for chunk in source:
            yield chunk


def start_position(body: Any) -> int | None:
    """Where a file-like body stands now, if it can seek back there; else None."""
    try:
        if not body.seekable():
            return None
    except AttributeError:
        if not hasattr(body, "seek"):
            return None
    except (OSError, ValueError):
        return None
    try:
        return int(body.tell())
    except (AttributeError, OSError, ValueError, TypeError):
        return None


def read_blocks(body: Any, size: int = 65536) -> Iterator[bytes]:
    """A readable body as byte chunks (text files encoded as UTF-8, as urllib3 does)."""
    while True:
        block = body.read(size)
        if not block:
            return
        yield block.encode("utf-8") if isinstance(block, str) else block


def one_shot(base: HttpExchange, body: Any, call: Call) -> OneShotExchange:
    """The exchange for a body that can be sent once; the call does not hedge,
    since its hedges would share the body (and a hedge may start before the
    first attempt has begun to read it)."""
    call.hedging = False
    return OneShotExchange(base, body)


def file_body(base: HttpExchange, body: Any, call: Call) -> tuple[HttpExchange, Any]:
    """The exchange and the body to send for a file-like body: rewound for each
    attempt if it can seek (read into memory once if the call hedges, as its
    attempts run at once), else sent once, in blocks."""
    position = start_position(body)
    if position is None:
        return one_shot(base, read_blocks(body), call), None
    if call.hedging:
        return base, b"".join(read_blocks(body))
    return SeekingExchange(base, body, position), body


#: Bodies sent as they are, however many times (no per-call state).
PLAIN_BODIES = (bytes, str, bytearray, memoryview)


def body_exchange(base: HttpExchange, body: Any, call: Call) -> tuple[HttpExchange, Any]:
    """The exchange and the body to send for a body that is not plain bytes
    (for those, ``base`` serves the call as it is: nothing is made)."""
    if hasattr(body, "read"):
        return file_body(base, body, call)
    return one_shot(base, body, call), None


#: How much of a discarded (retried) response's body is read so that its
#: connection can go back to the pool; a longer body closes the connection.
DRAIN_LIMIT = 64 * 1024


def release_unread(response: Any, limit: int = DRAIN_LIMIT) -> None:
    """Let go of an unread urllib3 response that will not be returned: read
    what is left of its body (up to ``limit`` bytes, undecoded) and give its
    connection back to its pool, or close the connection if there is more."""
    try:
        left = limit
        while True:
            chunk = response.read(min(left + 1, 16384), decode_content=False)
            if not chunk:
                break
            left -= len(chunk)
            if left < 0:
                response.close()  # too long to drain
                break
    except Exception:  # a broken connection: closed rather than reused
        response.close()
    response.release_conn()


# -- responses still being read (the attempt ends when the body does) ----------------


class Ending:
    """Calls the driver's ``end(outcome)`` once, however many endings are
    reported (a body read to its end, then closed, then garbage-collected)."""

    __slots__ = ("end",)

    def __init__(self, end: End) -> None:
        self.end: End | None = end

    def __call__(self, outcome: str | None) -> None:
        end = self.end
        if end is not None:
            self.end = None
            end(outcome)


def mid_body(outcome: str) -> str:
    """How an attempt ends whose body broke off: a timeout stays one, any
    other failure is a reset (the answer had begun)."""
    return outcome if outcome == Outcome.TIMEOUT else Outcome.RESET


def _watched(cls: type) -> type:
    """``cls`` (a urllib3 response class) reporting the end of its body to
    the instance's ``_meshlib_end``: read to the end (``None``), broken off
    mid-body (a reset), or closed / released by its reader or, once
    collected, by ``io.IOBase``'s finaliser (``None``).
    A close or release inside a read (urllib3 releases the connection when
    the body ends or breaks) is left for the read to report."""

    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._meshlib_depth += 1
        try:
            data = cls.read(self, *args, **kwargs)
        except Exception as exc:
            self._meshlib_end(mid_body(classify_exception(exc)))
            raise
        finally:
            self._meshlib_depth -= 1
        if self.isclosed():
            self._meshlib_end(None)
        return data

    def read_chunked(self: Any, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        chunks = cls.read_chunked(self, *args, **kwargs)
        while True:
            self._meshlib_depth += 1
            try:
                chunk = next(chunks)
            except StopIteration:
                if self.isclosed():
                    self._meshlib_end(None)
                return
            except Exception as exc:
                self._meshlib_end(mid_body(classify_exception(exc)))
                raise
            finally:
                self._meshlib_depth -= 1
            yield chunk

    def release_conn(self: Any) -> None:
        cls.release_conn(self)
        if not self._meshlib_depth:
            self._meshlib_end(None)

    def close(self: Any) -> None:
        cls.close(self)
        if not self._meshlib_depth:
            self._meshlib_end(None)

    methods = {"read": read, "read_chunked": read_chunked, "release_conn": release_conn, "close": close}
    return type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


_WATCHED: dict[type, type] = {}


def watch_urllib3(response: Any, end: End) -> bool:
    """Have ``end(outcome)`` called once when the unread body of a
    urllib3 response ends (read to the end, closed, released, broken off, or
    the response garbage-collected); False, and nothing done, if the body
    was read already (``preload_content``) or the response is not urllib3's."""
    if not isinstance(response, HTTPResponse) or response.closed:
        return False
    cls = type(response)
    watched = _WATCHED.get(cls)
    if watched is None:
        watched = _WATCHED.setdefault(cls, _watched(cls))
    ending = Ending(end)
    response._meshlib_end = ending
    response._meshlib_depth = 0
    response.__class__ = watched
    # Collected unread: io.IOBase's finaliser closes it, which reports the end.
    return True


#: Header telling the server how long the caller will wait (Envoy's name), and its value.
TIMEOUT_HEADER = ENVOY_TIMEOUT_HEADER
timeout_header = encode_envoy_timeout
FAULT_BODY = b"fault filter abort"
FAULT_HEADERS = {"content-type": "text/plain", "x-meshlib-fault": "abort"}
