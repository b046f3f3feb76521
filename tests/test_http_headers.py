"""Headers reach the server as the raw client sends them (one Host rule for
every adapter, repeated fields kept apart), and a closed Mesh's clients
refuse mesh services while other URLs keep working."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterator

import httpx
import pytest
import requests
import urllib3
from urllib3._collections import HTTPHeaderDict

import meshlib
from meshlib import Mesh, MeshError

from .http_recorder import Recorder, Seen


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.stop()


def mesh_for(rec: Recorder) -> Mesh:
    return Mesh(config={"services": {"inventory": {"endpoints": rec.address}}})


Get = Callable[[str, Any], int]


def via_requests(mesh: Mesh | None) -> Get:
    s = mesh.requests_session() if mesh else requests.Session()
    return lambda url, headers: s.get(url, headers=headers).status_code


def via_urllib3(mesh: Mesh | None) -> Get:
    p = mesh.urllib3_pool() if mesh else urllib3.PoolManager()
    return lambda url, headers: p.request("GET", url, headers=headers).status


def via_httpx(mesh: Mesh | None) -> Get:
    c = mesh.httpx_client() if mesh else httpx.Client()
    return lambda url, headers: c.get(url, headers=headers).status_code


def via_httpx_async(mesh: Mesh | None) -> Get:
    async def get(url: str, headers: Any) -> int:
        async with (mesh.httpx_async_client() if mesh else httpx.AsyncClient()) as c:
            return (await c.get(url, headers=headers)).status_code

    return lambda url, headers: asyncio.run(get(url, headers))


CLIENTS = {"requests": via_requests, "urllib3": via_urllib3, "httpx": via_httpx, "httpx-async": via_httpx_async}


def seen_through_both(rec: Recorder, client: str, headers: Any) -> tuple[Seen, Seen]:
    """What the server saw of one request sent through the mesh and of the
    same request sent by the raw client straight to it."""
    with mesh_for(rec) as mesh:
        assert CLIENTS[client](mesh)("http://inventory/h", headers) == 200
    assert CLIENTS[client](None)(f"http://{rec.address}/h", headers) == 200
    meshed, raw = rec.seen[-2:]
    return meshed, raw


def _lines(seen: Seen, *names: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in seen.headers if k.lower() in names]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("spelling", ["Host", "host", "HOST"])
def test_a_callers_own_host_header_stands(rec, client, spelling):
    meshed, raw = seen_through_both(rec, client, {spelling: "api.example:8443"})
    assert meshed.header("host") == raw.header("host") == ["api.example:8443"]


@pytest.mark.parametrize("client", CLIENTS)
def test_without_a_host_header_the_urls_authority_is_sent(rec, client):
    with mesh_for(rec) as mesh:
        get = CLIENTS[client](mesh)
        assert get("http://inventory/h", {}) == 200
        assert get("http://user:pw@inventory:8080/h", {}) == 200
    assert [s.header("host") for s in rec.seen] == [["inventory"], ["inventory:8080"]]


def test_urllib3_keeps_repeated_header_fields_apart(rec):
    headers = HTTPHeaderDict()
    headers.add("X-Tag", "a")
    headers.add("x-tag", "b, c")
    headers.add("Accept", "text/plain")
    meshed, raw = seen_through_both(rec, "urllib3", headers)
    assert _lines(meshed, "x-tag") == _lines(raw, "x-tag") == [("X-Tag", "a"), ("X-Tag", "b, c")]
    assert meshed.header("accept") == raw.header("accept") == ["text/plain"]


def test_urllib3_pool_level_headers_keep_their_repeats(rec):
    headers = HTTPHeaderDict()
    headers.add("X-Tag", "a")
    headers.add("X-Tag", "b")
    with Mesh(config={"services": {"inventory": {"endpoints": rec.address}}}) as mesh:
        assert mesh.urllib3_pool(headers=headers).request("GET", "http://inventory/h").status == 200
    assert rec.seen[-1].header("x-tag") == ["a", "b"]


@pytest.mark.parametrize("client", ["httpx", "httpx-async"])
def test_httpx_keeps_repeated_header_fields_apart(rec, client):
    meshed, raw = seen_through_both(rec, client, [("X-Tag", "a"), ("X-Tag", "b")])
    assert _lines(meshed, "x-tag") == _lines(raw, "x-tag") == [("X-Tag", "a"), ("X-Tag", "b")]


# -- a closed mesh -----------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_of_a_closed_mesh_refuse_mesh_services_and_pass_other_urls(rec, client):
    mesh = mesh_for(rec)
    if client == "httpx-async":

        async def main() -> None:
            async with mesh.httpx_async_client() as c:
                assert (await c.get("http://inventory/h")).status_code == 200
                mesh.close()
                with pytest.raises(MeshError, match="this Mesh is closed"):
                    await c.get("http://inventory/h")
                assert (await c.get(f"http://{rec.address}/direct")).status_code == 200

        asyncio.run(main())
    else:
        get = CLIENTS[client](mesh)
        assert get("http://inventory/h", {}) == 200
        mesh.close()
        with pytest.raises(MeshError, match="this Mesh is closed"):
            get("http://inventory/h", {})
        assert get(f"http://{rec.address}/direct", {}) == 200
    assert [s.target for s in rec.seen] == ["/h", "/direct"]


def test_a_decorated_function_of_a_closed_mesh_raises(rec):
    mesh = mesh_for(rec)

    @mesh.call("inventory")
    def ping(ep: meshlib.Endpoint) -> int:
        return requests.get(f"http://{ep.address}/h").status_code

    assert ping() == 200
    mesh.close()
    with pytest.raises(MeshError, match="this Mesh is closed"):
        ping()
    assert len(rec.seen) == 1


# -- invariants of the urllib3 header container ------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from meshlib.adapters.urllib3 import _with_host  # noqa: E402

_names = st.sampled_from(["Host", "host", "HOST", "X-Tag", "x-tag", "Accept", "Content-Type", "X-Trace"])
_values = st.text(alphabet="abc ,;=/", min_size=0, max_size=6)


@given(st.lists(st.tuples(_names, _values), max_size=8), st.booleans())
@settings(max_examples=200, deadline=None)
def test_one_host_and_every_other_field_kept_in_order(fields, as_header_dict):
    if as_header_dict:
        given_headers: Any = HTTPHeaderDict()
        for k, v in fields:
            given_headers.add(k, v)
    else:
        given_headers = dict(fields)
    out = _with_host(given_headers, "user@inventory:8080")
    lines = list(out.items()) if not isinstance(out, HTTPHeaderDict) else list(out.iteritems())
    hosts = [v for k, v in lines if k.lower() == "host"]
    theirs = [v for k, v in (fields if as_header_dict else given_headers.items()) if k.lower() == "host"]
    # the caller's Host lines stand as given; without any, exactly one: the URL's authority, first
    assert hosts == (theirs or ["inventory:8080"])
    if not theirs:
        assert lines[0] == ("Host", "inventory:8080")
    def by_name(pairs: Any) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in pairs:
            if k.lower() != "host":
                out.setdefault(k.lower(), []).append(v)
        return out

    # repeated fields apart, each name's values in order and untouched (an
    # HTTPHeaderDict groups a name's values, as urllib3 sends them)
    assert by_name(lines) == by_name(fields if as_header_dict else given_headers.items())
    assert isinstance(out, HTTPHeaderDict) == as_header_dict
