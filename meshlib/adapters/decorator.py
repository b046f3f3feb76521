"""``@mesh.call("svc")``: any protocol, an Endpoint per attempt.

The decorated function (sync or async) receives the picked Endpoint as its
first argument. Each attempt picks again and runs under the service's
policies like any HTTP call: admission (rate limit, breakers, thresholds),
outlier detection, the retry policy and budget, hedging and deadlines.

An exception is classified as an HTTP client's would be: a refused connection
(or a urllib3 / requests / httpx connect error or connect timeout) is a
connect failure, retried on another endpoint by default; a reset or a
timeout counts as such for ``retry_on``; anything else is an error that goes
back to the caller unretried. A returned HTTP response (requests, httpx,
urllib3) is judged by its status like the adapters' (so ``retry_on=5xx``
retries it); any other return value is a success. Each attempt
runs inside a :func:`meshlib.deadline` of its time limit, so mesh calls made
by the function never outlive it; async attempts are also cancelled when it
runs out. ``idempotent=False`` (like a POST) retries only failures to connect.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable, TypeVar

from ..core.driver import run, run_async
from ..endpoint import Endpoint
from ..resilience.deadline import deadline
from ..outcome import AttemptResult, Outcome
from ..core.services import Services
from .. import telemetry
from ..telemetry import NULL_SCOPE
from ._common import HttpExchange, judge_response


F = TypeVar("F", bound=Callable[..., Any])


class DecoratorExchange(HttpExchange):
    def judge(self, result: Any) -> AttemptResult:
        """A returned HTTP response (anything with an int ``status_code`` or
        ``status``, as requests, httpx and urllib3 responses have) is judged by
        its status, so ``retry_on=5xx`` and outlier detection see it; any other
        value is a success."""
        if type(result) in _PLAIN:
            return _OK
        status = getattr(result, "status_code", None)
        if not isinstance(status, int):
            status = getattr(result, "status", None)
        if isinstance(status, int) and 100 <= status <= 599:
            headers = getattr(result, "headers", None)
            return judge_response(status, headers if hasattr(headers, "get") else {})
        return super().judge(result)


EXCHANGE = DecoratorExchange()
#: Return types that are never an HTTP response: judged a success at once.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple})
_OK = AttemptResult(Outcome.SUCCESS)


def mesh_call(mesh: "Services | Callable[[], Services]", service: str, *, idempotent: bool = True) -> Callable[[F], F]:
    """``mesh`` may be a Mesh or a zero-argument function returning one
    (the module-level ``meshlib.call`` binds the default mesh lazily)."""
    if callable(mesh) and not hasattr(mesh, "cluster"):
        get_mesh = mesh

        def cluster_of() -> Any:
            return get_mesh().cluster(service)  # type: ignore[operator, union-attr]

    else:
        cluster_of = functools.partial(mesh.cluster, service)  # type: ignore[union-attr]

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                cluster = cluster_of()
                scope = telemetry.call(cluster)

                async def send(ep: Endpoint, limit: float | None) -> Any:
                    if limit is None:
                        return await fn(ep, *args, **kwargs)
                    with deadline(limit, cluster.clock):
                        return await asyncio.wait_for(fn(ep, *args, **kwargs), limit)

                if scope is NULL_SCOPE:  # no telemetry for this cluster: nothing to open per call or attempt
                    return await run_async(cluster.start_call(None, idempotent), send, EXCHANGE)

                async def traced(ep: Endpoint, limit: float | None) -> Any:
                    with telemetry.attempt(ep):  # telemetry: the attempt's span, current while fn runs
                        return await send(ep, limit)

                with scope:  # telemetry: the call's scope (a silent one needs nothing per attempt)
                    return await run_async(cluster.start_call(None, idempotent), send if scope.silent else traced, EXCHANGE)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cluster = cluster_of()
            scope = telemetry.call(cluster)

            def send(ep: Endpoint, limit: float | None) -> Any:
                if limit is None:
                    return fn(ep, *args, **kwargs)
                with deadline(limit, cluster.clock):
                    return fn(ep, *args, **kwargs)

            if scope is NULL_SCOPE:  # no telemetry for this cluster: nothing to open per call or attempt
                return run(cluster.start_call(None, idempotent), send, EXCHANGE)

            def traced(ep: Endpoint, limit: float | None) -> Any:
                with telemetry.attempt(ep):  # telemetry: the attempt's span, current while fn runs
                    return send(ep, limit)

            with scope:  # telemetry: the call's scope (a silent one needs nothing per attempt)
                return run(cluster.start_call(None, idempotent), send if scope.silent else traced, EXCHANGE)

        return wrapper  # type: ignore[return-value]

    return decorate
