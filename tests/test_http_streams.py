"""A response whose body is still to be read ends its attempt when the body
ends: the adapters' ``defer(response, end)`` calls ``end(outcome)``
exactly once — read to the end or closed (``None``), broken off mid-body
(``"reset"``), or the response garbage-collected. Against a real server."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Callable, Iterator

import httpx
import pytest
import requests
import urllib3

from meshlib import Mesh
from meshlib.adapters import httpx as httpx_adapter
from meshlib.adapters import requests as requests_adapter
from meshlib.adapters import urllib3 as urllib3_adapter

from .http_recorder import Recorder

URL = "http://inventory/stream"


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    r.script.body_size = 50_000
    yield r
    r.stop()


@pytest.fixture
def mesh(rec: Recorder) -> Iterator[Mesh]:
    with Mesh(config={"services": {"inventory": {"endpoints": rec.address}}}) as m:
        yield m


class Ends(list):
    """An ``end`` as the driver hands one out: ``end(outcome=None, nbytes=None)``."""

    def __call__(self, outcome: str | None = None, nbytes: int | None = None) -> None:
        self.append(outcome)


# -- how each client opens a response whose body is unread, and reads it -----------------


def open_requests(mesh: Mesh, ends: Ends) -> Any:
    r = mesh.requests_session().get(URL, stream=True)
    assert requests_adapter.STREAMING.defer(r, ends)
    return r


def open_urllib3(mesh: Mesh, ends: Ends) -> Any:
    r = mesh.urllib3_pool().request("GET", URL, preload_content=False)
    assert urllib3_adapter.STREAMING.defer(r, ends)
    return r


def open_httpx(mesh: Mesh, ends: Ends) -> Any:
    # as the driver sees it: the transport's response, before the client reads it
    client = mesh.httpx_client()
    r = client._transport.handle_request(client.build_request("GET", URL))
    assert httpx_adapter.EXCHANGE.defer(r, ends)
    return r


READ: dict[str, Callable[[Any], Any]] = {
    "requests": lambda r: r.content,
    "urllib3": lambda r: r.read(),
    "httpx": lambda r: r.read(),
}
READ_SOME: dict[str, Callable[[Any], Any]] = {
    "requests": lambda r: next(r.iter_content(100)),
    "urllib3": lambda r: r.read(100),
    "httpx": lambda r: next(r.iter_raw(100)),
}
CLOSE: dict[str, Callable[[Any], Any]] = {
    "requests": lambda r: r.close(),
    "urllib3": lambda r: r.release_conn(),
    "httpx": lambda r: r.close(),
}
OPEN = {"requests": open_requests, "urllib3": open_urllib3, "httpx": open_httpx}
clients = pytest.mark.parametrize("client", list(OPEN))


@clients
@pytest.mark.parametrize("chunked", [False, True])
def test_the_attempt_ends_when_the_body_is_read_to_its_end(rec, mesh, client, chunked):
    rec.script.chunked = chunked
    ends = Ends()
    r = OPEN[client](mesh, ends)
    assert ends == []  # headers are in, the body is not
    if client == "urllib3" and chunked:
        assert b"".join(r.stream(1000)) == b"r" * 50_000  # urllib3's read_chunked
    else:
        assert READ[client](r) == b"r" * 50_000
    assert ends == [None]
    CLOSE[client](r)
    del r
    gc.collect()
    assert ends == [None]  # once


@clients
def test_the_attempt_ends_when_the_reader_closes_the_body_early(rec, mesh, client):
    ends = Ends()
    r = OPEN[client](mesh, ends)
    READ_SOME[client](r)
    assert ends == []
    CLOSE[client](r)
    assert ends == [None]


@clients
def test_a_body_broken_off_midway_ends_the_attempt_as_a_reset(rec, mesh, client):
    rec.script.truncate = 1000
    ends = Ends()
    r = OPEN[client](mesh, ends)
    with pytest.raises((requests.RequestException, urllib3.exceptions.HTTPError, httpx.HTTPError)):
        READ[client](r)
    assert ends == ["reset"]
    CLOSE[client](r)
    assert ends == ["reset"]


@clients
def test_a_response_dropped_unread_ends_the_attempt_when_collected(rec, mesh, client):
    ends = Ends()
    r = OPEN[client](mesh, ends)
    assert ends == []
    del r
    gc.collect()
    assert ends == [None]


def test_bodies_read_before_the_adapter_returns_are_not_deferred(rec, mesh):
    ends = Ends()
    r = mesh.urllib3_pool().request("GET", URL)  # preload_content=True
    assert not urllib3_adapter.STREAMING.defer(r, ends)
    s = mesh.requests_session()
    r2 = s.get(URL)
    assert not requests_adapter.STREAMING.defer(r2, ends)
    assert not httpx_adapter.EXCHANGE.defer(httpx.Response(200, content=b"made here"), ends)
    assert ends == []


def test_httpx_async_streams_end_their_attempt(rec, mesh):
    async def main() -> list[Ends]:
        out = []
        async with mesh.httpx_async_client() as client:
            for how in ("read", "close", "broken"):
                rec.script.truncate = 1000 if how == "broken" else None
                ends = Ends()
                r = await client._transport.handle_async_request(client.build_request("GET", URL))
                assert httpx_adapter.ASYNC_EXCHANGE.defer(r, ends)
                assert ends == []
                if how == "read":
                    assert await r.aread() == b"r" * 50_000
                elif how == "close":
                    await r.aclose()
                else:
                    with pytest.raises(httpx.HTTPError):
                        await r.aread()
                await r.aclose()
                out.append(ends)
        return out

    assert asyncio.run(main()) == [[None], [None], ["reset"]]


# -- end to end: through the driver, a streamed attempt is in flight until its body ends ---------


def _endpoint(mesh: Mesh) -> dict[str, Any]:
    return mesh.stats()["services"]["inventory"]["endpoints"][0]


STREAM_OPEN: dict[str, Callable[[Mesh], Any]] = {
    "requests": lambda mesh: mesh.requests_session().get(URL, stream=True),
    "urllib3": lambda mesh: mesh.urllib3_pool().request("GET", URL, preload_content=False),
    "httpx": lambda mesh: mesh.httpx_client().send(mesh.httpx_client().build_request("GET", URL), stream=True),
}


@clients
def test_a_streamed_answer_holds_its_endpoint_until_the_body_is_read(rec, mesh, client):
    r = STREAM_OPEN[client](mesh)
    assert _endpoint(mesh)["active"] == 1  # headers are in; the body is still coming
    chunks = r.stream(100) if client == "urllib3" else r.iter_content(100) if client == "requests" else r.iter_bytes(100)
    next(chunks)
    assert _endpoint(mesh)["active"] == 1
    for _ in chunks:
        pass
    CLOSE[client](r)
    ep = _endpoint(mesh)
    assert ep["active"] == 0 and ep["successes"] == 1 and ep["failures"] == 0


@clients
def test_a_stream_broken_mid_body_is_a_failure_of_its_endpoint(rec, mesh, client):
    rec.script.truncate = 1000
    r = STREAM_OPEN[client](mesh)
    assert _endpoint(mesh)["active"] == 1
    with pytest.raises((requests.RequestException, urllib3.exceptions.HTTPError, httpx.HTTPError)):
        READ[client](r)
    ep = _endpoint(mesh)
    assert ep["active"] == 0 and ep["failures"] == 1


def test_plain_calls_end_their_attempt_before_returning(rec, mesh):
    assert mesh.requests_session().get(URL).content == b"r" * 50_000
    assert mesh.urllib3_pool().request("GET", URL).data == b"r" * 50_000
    assert mesh.httpx_client().get(URL).content == b"r" * 50_000
    ep = _endpoint(mesh)
    assert ep["active"] == 0 and ep["successes"] == 3


def test_an_async_stream_holds_its_endpoint_until_closed(rec, mesh):
    async def main() -> list[int]:
        seen = []
        async with mesh.httpx_async_client() as client:
            async with client.stream("GET", URL) as r:
                seen.append(_endpoint(mesh)["active"])
                await r.aread()
            seen.append(_endpoint(mesh)["active"])
        return seen

    assert asyncio.run(main()) == [1, 0]


@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_a_body_read_within_the_attempt_that_breaks_off_is_a_reset_to_retry(client):
    broken, good = Recorder(), Recorder()
    try:
        broken.script.body_size = good.script.body_size = 50_000
        broken.script.truncate = 1000
        config = {"lb_policy": "round_robin", "services": {"inventory": {"endpoints": f"{broken.address},{good.address}", "retry_on": "reset"}}}
        with Mesh(config=config) as mesh:
            get = (lambda: mesh.requests_session().get(URL).content) if client == "requests" else (lambda: mesh.urllib3_pool().request("GET", URL).data)
            assert [get() for _ in range(2)] == [b"r" * 50_000] * 2  # one of the two started on the broken server
            stats = mesh.stats()["services"]["inventory"]
        assert len(broken.seen) >= 1 and stats["retries"] == len(broken.seen)
        assert next(e for e in stats["endpoints"] if e["address"] == broken.address)["failures"] == len(broken.seen)
    finally:
        broken.stop()
        good.stop()
