"""Request bodies reach the server intact, once per attempt; retried responses
give their connection back; errors after the request was written are never
connect failures. Against a real server that records a hash of every body."""

from __future__ import annotations

import asyncio
import io
import os
import time
from typing import Any, Callable, Iterator

import pytest
import requests
import urllib3

from meshlib import Mesh

from .http_recorder import Recorder, sha

DATA = os.urandom(3000) + b"end"
CHUNKS = [DATA[i : i + 700] for i in range(0, len(DATA), 700)]


@pytest.fixture
def recorders() -> Iterator[Callable[[int], list[Recorder]]]:
    made: list[Recorder] = []

    def make(n: int = 1) -> list[Recorder]:
        new = [Recorder() for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for r in made:
        r.stop()


def mesh_for(endpoints: str, **keys: Any) -> Mesh:
    keys.setdefault("outlier_detection", False)
    return Mesh(config={"lb_policy": "round_robin", "services": {"inventory": {"endpoints": endpoints, **keys}}})


def svc(mesh: Mesh) -> dict[str, Any]:
    return mesh.stats()["services"]["inventory"]


# -- bodies of every kind, and how each client sends them -----------------------------


class ReadOnly:
    """A stream that can only be read (a socket file, a pipe, a decoder)."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def _file_at_offset(tmp: Any) -> Any:
    path = tmp / "body.bin"
    path.write_bytes(b"skip!" + DATA)
    f = open(path, "rb")
    f.seek(5)
    return f


#: kind -> (make the body, replayable)
BODIES: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "bytes": (lambda tmp: DATA, True),
    "bytesio": (lambda tmp: io.BytesIO(DATA), True),
    "bytesio-at-offset": (lambda tmp: _seeked(io.BytesIO(b"abc" + DATA), 3), True),
    "file-at-offset": (_file_at_offset, True),
    "generator": (lambda tmp: (c for c in CHUNKS), False),
    "iterator": (lambda tmp: iter(list(CHUNKS)), False),
    "read-only-stream": (lambda tmp: ReadOnly(DATA), False),
}


def _seeked(f: Any, pos: int) -> Any:
    f.seek(pos)
    return f


async def _agen() -> Any:
    for c in CHUNKS:
        yield c


#: The async client takes bytes or an async iterator.
ASYNC_BODIES: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "bytes": (lambda tmp: DATA, True),
    "async-generator": (lambda tmp: _agen(), False),
}


def put_requests(mesh: Mesh) -> Callable[[str, Any], int]:
    s = mesh.requests_session()
    return lambda url, body: s.put(url, data=body).status_code


def put_urllib3(mesh: Mesh) -> Callable[[str, Any], int]:
    p = mesh.urllib3_pool()
    return lambda url, body: p.request("PUT", url, body=body).status


def put_httpx(mesh: Mesh) -> Callable[[str, Any], int]:
    c = mesh.httpx_client()

    def put(url: str, body: Any) -> int:
        if isinstance(body, ReadOnly):  # httpx reads file-likes only through iteration
            stream = body
            body = iter(lambda: stream.read(700), b"")
        return c.put(url, content=body).status_code

    return put


def put_httpx_async(mesh: Mesh) -> Callable[[str, Any], int]:
    async def put(url: str, body: Any) -> int:
        async with mesh.httpx_async_client() as c:
            return (await c.put(url, content=body)).status_code

    return lambda url, body: asyncio.run(put(url, body))


SYNC = {"requests": put_requests, "urllib3": put_urllib3, "httpx": put_httpx}
# httpx itself declares a file's whole size as Content-Length, wherever the file
# stands (its peek_filelike_length), so a file at an offset fails raw: not tried.
CASES = [(c, k) for c in SYNC for k in BODIES if not (c == "httpx" and k.endswith("-at-offset"))]
CASES += [("httpx-async", k) for k in ASYNC_BODIES]


def _client(name: str, mesh: Mesh) -> Callable[[str, Any], int]:
    return put_httpx_async(mesh) if name == "httpx-async" else SYNC[name](mesh)


def _body(client: str, kind: str, tmp: Any) -> tuple[Any, bool]:
    make, replayable = (ASYNC_BODIES if client == "httpx-async" else BODIES)[kind]
    return make(tmp), replayable


@pytest.mark.parametrize("client, kind", CASES)
def test_a_retried_body_is_resent_whole_or_not_at_all(recorders, tmp_path, client, kind):
    (rec,) = recorders(1)
    rec.script.statuses = [503]
    body, replayable = _body(client, kind, tmp_path)
    with mesh_for(rec.address, retry_on="5xx", num_retries=2) as mesh:
        status = _client(client, mesh)("http://inventory/put", body)
        stats = svc(mesh)
    if replayable:
        # rewound to where it stood when the call began, for each attempt
        assert status == 200 and rec.hashes() == [sha(DATA)] * 2
        assert stats["retries"] == 1 and stats["retries_skipped_body"] == 0
    else:
        # sent once, whole; the caller gets the answer in hand
        assert status == 503 and rec.hashes() == [sha(DATA)]
        # granted by the policy, then not made: counted in both
        assert stats["retries"] == 1 and stats["retries_skipped_body"] == 1


@pytest.mark.parametrize("client, kind", CASES)
def test_a_body_not_yet_sent_follows_a_connect_failure(recorders, refused_port, tmp_path, client, kind):
    (rec,) = recorders(1)
    with mesh_for(f"127.0.0.1:{refused_port},{rec.address}") as mesh:
        put = _client(client, mesh)
        for _ in range(2):  # round robin: one of the two starts on the refused port
            body, _ = _body(client, kind, tmp_path)
            assert put("http://inventory/put", body) == 200
        stats = svc(mesh)
    assert rec.hashes() == [sha(DATA)] * 2
    refused = next(e for e in stats["endpoints"] if e["address"].endswith(f":{refused_port}"))
    assert stats["retries"] == refused["connect_failures"] >= 1 and stats["retries_skipped_body"] == 0


@pytest.mark.parametrize("client, kind", [c for c in CASES if c[1] in ("bytes", "generator", "read-only-stream", "async-generator")])
def test_a_one_shot_body_is_not_resent_after_a_reset(recorders, client, kind, tmp_path):
    bad, good = recorders(2)
    bad.script.hang_up = True
    with mesh_for(f"{bad.address},{good.address}", retry_on="reset") as mesh:
        put = _client(client, mesh)
        outcomes = []
        for _ in range(2):  # round robin: one of the two starts on the server that hangs up
            body, replayable = _body(client, kind, tmp_path)
            try:
                outcomes.append(put("http://inventory/put", body))
            except Exception as e:  # the client's own error, as the raw client raises it
                outcomes.append(type(e).__name__)
        stats = svc(mesh)
    if replayable:
        assert outcomes == [200, 200] and good.hashes() == [sha(DATA)] * 2
        assert set(bad.hashes()) == {sha(DATA)}
        assert stats["retries"] == len(bad.hashes()) >= 1 and stats["retries_skipped_body"] == 0
    else:
        assert bad.hashes() == [sha(DATA)]
        assert 200 in outcomes and any(isinstance(o, str) for o in outcomes), outcomes
        assert good.hashes() == [sha(DATA)]
        # granted by the policy, then not made: counted in both
        assert stats["retries"] == 1 and stats["retries_skipped_body"] == 1


@pytest.mark.parametrize("client", list(SYNC) + ["httpx-async"])
def test_hedges_each_send_the_whole_body_and_never_share_an_iterator(recorders, tmp_path, client):
    slow, fast = recorders(2)
    slow.script.delay = 0.3
    kinds = ["bytes", "async-generator"] if client == "httpx-async" else ["bytes", "bytesio", "generator"]
    with mesh_for(f"{slow.address},{fast.address}", hedge_max_attempts=2, hedge_delay="20ms") as mesh:
        put = _client(client, mesh)
        for kind in kinds:
            hedges = svc(mesh)["hedges"]
            for _ in range(2):  # round robin: one of the two starts on the slow server
                body, replayable = _body(client, kind, tmp_path)
                assert put("http://inventory/put", body) == 200
            # a replayable body is hedged (a file's bytes are read once for it);
            # a one-shot body is not, since the hedges would share it
            assert (svc(mesh)["hedges"] > hedges) == replayable, kind
    # every request either server saw carried the whole body
    assert set(slow.hashes() + fast.hashes()) == {sha(DATA)}


@pytest.mark.parametrize("client", list(SYNC))
def test_one_shot_bodies_disable_hedging(recorders, tmp_path, client):
    (rec,) = recorders(1)
    with mesh_for(rec.address, hedge_max_attempts=3, hedge_delay="0ms") as mesh:
        put = SYNC[client](mesh)
        for _ in range(3):
            assert put("http://inventory/put", (c for c in CHUNKS)) == 200
        assert svc(mesh)["hedges"] == 0
    assert rec.hashes() == [sha(DATA)] * 3


# -- a retried response gives its connection back ------------------------------------------------


def _get(client: str, mesh: Mesh) -> Callable[[], int]:
    if client == "requests":
        s = mesh.requests_session()
        return lambda: s.get("http://inventory/").status_code
    if client == "requests-stream":
        s = mesh.requests_session()

        def get() -> int:
            with s.get("http://inventory/", stream=True) as r:
                r.content
                return r.status_code

        return get
    if client == "urllib3":
        p = mesh.urllib3_pool()
        return lambda: p.request("GET", "http://inventory/").status
    if client == "urllib3-stream":
        p = mesh.urllib3_pool()

        def get3() -> int:
            r = p.request("GET", "http://inventory/", preload_content=False)
            r.read()
            r.release_conn()
            return r.status

        return get3
    if client == "httpx":
        c = mesh.httpx_client()
        return lambda: c.get("http://inventory/").status_code
    if client == "httpx-stream":
        c = mesh.httpx_client()

        def getx() -> int:
            with c.stream("GET", "http://inventory/") as r:
                r.read()
                return r.status_code

        return getx

    async def twice() -> list[int]:
        async with mesh.httpx_async_client() as c:
            return [(await c.get("http://inventory/")).status_code for _ in range(2)]

    return lambda: asyncio.run(twice())[-1]


@pytest.mark.parametrize("client", ["requests", "requests-stream", "urllib3", "urllib3-stream", "httpx", "httpx-stream", "httpx-async"])
def test_a_retry_reuses_the_connection_of_the_response_it_discards(recorders, client):
    (rec,) = recorders(1)
    rec.script.statuses = [503, 503]
    rec.script.body_size = 20_000  # read and released, not a reason to hang up
    with mesh_for(rec.address, retry_on="5xx", num_retries=2) as mesh:
        get = _get(client, mesh)
        assert get() == 200
        assert svc(mesh)["retries"] == 2
    assert len(rec.seen) >= 3
    assert rec.connections == 1 and {s.connection for s in rec.seen} == {1}


# -- errors after the request was written are never connect failures ----------------------------


@pytest.mark.parametrize("client", ["requests", "urllib3", "httpx", "httpx-async"])
def test_a_hang_up_after_the_request_was_written_is_not_a_connect_failure(recorders, client):
    (rec,) = recorders(1)
    rec.script.hang_up = True
    with mesh_for(rec.address, num_retries=3) as mesh:
        with pytest.raises(Exception) as err:
            _client(client, mesh)("http://inventory/put", DATA)
        assert not isinstance(err.value, AssertionError)
        stats = svc(mesh)
        # the default policy retries connect failures (even for a POST); this is none
        assert stats["retries"] == 0 and stats["endpoints"][0]["connect_failures"] == 0
    assert rec.hashes() == [sha(DATA)]


def test_classification_follows_only_the_chain_that_raised():
    from meshlib.adapters._common import classify_exception
    from meshlib.outcome import Outcome

    try:
        try:
            raise ConnectionRefusedError("an earlier attempt, handled")
        except ConnectionRefusedError:
            raise ValueError("bad response after the request was written") from None
    except ValueError as e:
        assert classify_exception(e) == Outcome.ERROR
    try:
        try:
            raise urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
        except Exception as inner:
            raise requests.ConnectionError(inner)
    except requests.ConnectionError as e:
        assert classify_exception(e) == Outcome.CONNECT_FAILURE


def test_a_discarded_response_too_long_to_drain_closes_its_connection(recorders):
    """A discarded response longer than the drain limit closes its connection
    rather than being read to the end."""
    (rec,) = recorders(1)
    rec.script.statuses = [503]
    rec.script.body_size = 1_000_000
    with mesh_for(rec.address, retry_on="5xx", num_retries=1) as mesh:
        s = mesh.requests_session()
        started = time.monotonic()
        with s.get("http://inventory/", stream=True) as r:
            assert r.status_code == 200
            r.content
        assert time.monotonic() - started < 5
    assert rec.connections == 2


# -- the invariant, over any chunking and any run of answers -----------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6),
    failures=st.integers(0, 3),
    one_shot=st.booleans(),
    client=st.sampled_from(list(SYNC)),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_server_gets_each_attempt_whole_and_one_shot_bodies_once(recorders, chunks, failures, one_shot, client):
    (rec,) = recorders(1)
    rec.script.statuses = [503] * failures
    data = b"".join(chunks)
    body = (c for c in chunks) if one_shot else io.BytesIO(data)
    with mesh_for(rec.address, retry_on="5xx", num_retries=2, retry_backoff_base="1ms") as mesh:
        status = SYNC[client](mesh)("http://inventory/put", body)
        stats = svc(mesh)
    seen = rec.hashes()
    assert set(seen) == {sha(data)}  # never a partial or an empty resend
    attempts = 1 if one_shot else 1 + min(failures, 2)
    assert len(seen) == attempts
    assert status == (503 if failures >= attempts else 200)
    skipped = 1 if one_shot and failures else 0
    assert stats["retries_skipped_body"] == skipped
    assert stats["retries"] == attempts - 1 + skipped  # a skipped retry was granted first
