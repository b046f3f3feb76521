"""What every adapter shares: URL splitting, outcome classification, TLS names."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import socket
import time
from typing import Any

from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError

from ..core.driver import Exchange
from ..health.load import LOAD_HEADER, with_load_report
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
    reached the server, so it is safe to retry anywhere.
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
        e = reason if isinstance(reason, BaseException) else (e.__cause__ or e.__context__)
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
    ``headers`` (anything with ``get``) only for a status of 400 or more,
    and the server's load report (``endpoint-load-metrics``) if it sent one."""
    return with_load_report(judge_status(status, headers.get("retry-after") if status >= 400 else None), headers.get(LOAD_HEADER))


class HttpExchange(Exchange):
    """What the HTTP adapters' exchanges share: exceptions classified by
    :func:`classify_exception`."""

    def classify(self, exc: BaseException) -> str:
        return classify_exception(exc)


#: Header telling the server how long the caller will wait (Envoy's name), and its value.
TIMEOUT_HEADER = ENVOY_TIMEOUT_HEADER
timeout_header = encode_envoy_timeout
FAULT_BODY = b"fault filter abort"
FAULT_HEADERS = {"content-type": "text/plain", "x-meshlib-fault": "abort"}
