"""``@mesh.call("svc")``: any protocol, an Endpoint per attempt.

The decorated function (sync or async) receives the picked Endpoint as its
first argument. Each attempt picks again; the attempt's outcome and latency
feed the balancer. An exception whose cause is a refused connection (or a
urllib3 / requests / httpx connect error or connect timeout) is retried on
another endpoint (``connect_retries``): the request never left. Any other
exception, including a plain ``TimeoutError``, and every return value go back
to the caller.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .._driver import run, run_async
from ..host import Outcome
from ._common import classify_exception

if TYPE_CHECKING:
    from ..mesh import Mesh

F = TypeVar("F", bound=Callable[..., Any])


def _success(result: object) -> str:
    return Outcome.SUCCESS


def mesh_call(mesh: "Mesh | Callable[[], Mesh]", service: str) -> Callable[[F], F]:
    """``mesh`` may be a Mesh or a zero-argument function returning one
    (the module-level ``meshlib.call`` binds the default mesh lazily)."""
    get_mesh = mesh if callable(mesh) and not hasattr(mesh, "cluster") else (lambda: mesh)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = get_mesh().cluster(service).start_call()  # type: ignore[union-attr]
                return await run_async(call, lambda ep: fn(ep, *args, **kwargs), classify_exception, _success)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call = get_mesh().cluster(service).start_call()  # type: ignore[union-attr]
            return run(call, lambda ep: fn(ep, *args, **kwargs), classify_exception, _success)

        return wrapper  # type: ignore[return-value]

    return decorate
