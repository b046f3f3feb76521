"""A user function of the request as the hash key (``hash_key=`` on a client).

``mesh.requests_session(hash_key=fn)``, ``mesh.httpx_client(hash_key=fn)``,
``mesh.httpx_async_client(hash_key=fn)``, ``mesh.grpc_channel(name,
hash_key=fn)`` and ``mesh.grpc_aio_channel(name, hash_key=fn)`` call ``fn``
with each request to a mesh service (requests' ``PreparedRequest``, httpx's
``Request``, gRPC's request message) and use what it returns (``str`` or
``bytes``; ``None``: no key) as the call's hash key for ``ring_hash``,
``maglev``, ``least_loaded`` and ``llm``. A ``meshlib.hash_key`` block
around the call still wins; the function's key wins over ``HASH_HEADER``.
gRPC calls whose requests are a stream (``stream_unary``, ``stream_stream``)
have no single message to give it: their key comes from the block or the
header. The key is set the way ``meshlib.hash_key`` sets it, for the call's
duration, so every attempt, retry and hedge of the call sees it.

A function cannot come from an environment variable, so this is an argument
of the client, not a configuration key.
"""

from __future__ import annotations

from typing import Any, Callable

from ..core.call import current_hash_key, hash_key

__all__ = ["KeyFn", "key_of", "keyed_session"]

#: ``fn(request) -> str | bytes | None``
KeyFn = Callable[[Any], "str | bytes | None"]


def key_of(fn: KeyFn, request: Any) -> str | bytes | None:
    """``fn``'s key for ``request`` when no ``meshlib.hash_key`` block is open (else None)."""
    if current_hash_key() is not None:
        return None
    key = fn(request)
    if key is None or isinstance(key, (str, bytes)):
        return key
    raise TypeError(f"hash_key function {fn!r} returned {type(key).__name__}; it must return str, bytes or None")


def keyed_session(mesh: Any, fn: KeyFn, **adapter_kwargs: Any) -> Any:
    """``mesh.requests_session(hash_key=fn)``: a session whose mesh calls get ``fn(request)`` as key."""
    import requests

    from .requests import MeshAdapter
    from ._common import split_url

    class KeyedAdapter(MeshAdapter):  # type: ignore[misc, valid-type]
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            _, _, host, rest = split_url(request.url or "")
            cluster = mesh.route(host, rest, request.headers)  # as MeshAdapter.send finds it
            if cluster is not None and cluster.hashing:
                key = key_of(fn, request)
                if key is not None:
                    with hash_key(key):
                        return super().send(request, *args, **kwargs)
            return super().send(request, *args, **kwargs)

    s = requests.Session()
    adapter = KeyedAdapter(mesh, **adapter_kwargs)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
