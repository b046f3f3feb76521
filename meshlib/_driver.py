"""The attempt loop, once for sync and once for async callers.

Both drivers are the same few lines around :class:`~meshlib.cluster.Call`,
which holds every decision; adapters supply ``send`` (perform one attempt
against an endpoint), ``classify`` (map their library's exception to an
:class:`~meshlib.host.Outcome`) and ``judge`` (the outcome of a result).
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, TypeVar

from .cluster import Call
from .endpoint import Endpoint

T = TypeVar("T")

Classify = Callable[[BaseException], str]
Judge = Callable[[Any], str]


def run(call: Call, send: Callable[[Endpoint], T], classify: Classify, judge: Judge) -> T:
    failure: BaseException | None = None
    while True:
        host = call.pick(failure)
        started = time.perf_counter()
        try:
            result = send(host.endpoint)
        except BaseException as exc:
            if call.done(host, started, classify(exc)):
                failure = exc
                continue
            raise
        call.done(host, started, judge(result))
        return result


async def run_async(call: Call, send: Callable[[Endpoint], Awaitable[T]], classify: Classify, judge: Judge) -> T:
    failure: BaseException | None = None
    while True:
        host = call.pick(failure)
        started = time.perf_counter()
        try:
            result = await send(host.endpoint)
        except BaseException as exc:
            if call.done(host, started, classify(exc)):
                failure = exc
                continue
            raise
        call.done(host, started, judge(result))
        return result
