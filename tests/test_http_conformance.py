"""Conformance: each HTTP client through meshlib behaves as its raw self.

Three PyPI ``httpbin`` instances served by gunicorn on 127.0.0.1 are one
mesh service, behind a recording wrapper (tests/httpbin_app.py). For every
check and every client (requests, urllib3, httpx, httpx async), the same
requests are made through the raw client straight at one instance and
through meshlib at ``http://httpbin``; what the servers observed (method,
target, headers, body hash) and what the caller saw (status, headers, body,
redirect history, cookies) must be equal once the raw authority
``127.0.0.1:<port>`` is read as ``httpbin``. The differences docs/ states
(retries, the timeout header) do not arise under the default configuration
used here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import requests
import urllib3
from urllib3._collections import HTTPHeaderDict

from meshlib import Mesh

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = 3
DATA = bytes(range(256)) * 40  # 10 KiB, every byte value


@dataclass
class Httpbin:
    ports: list[int]
    log: Path

    @property
    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def mark(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def since(self, mark: int) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()[mark:]]


@pytest.fixture(scope="session")
def httpbin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Httpbin]:
    work = tmp_path_factory.mktemp("httpbin")
    log = work / "seen.jsonl"
    # One hash seed for all: Flask lists a resource's methods (Allow) in set order.
    env = {**os.environ, "MESHLIB_HTTPBIN_LOG": str(log), "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    procs, outs = [], []
    for i in range(INSTANCES):
        out = work / f"gunicorn-{i}.log"
        cmd = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "-w", "1", "-k", "gthread", "--threads", "8",
               "--no-control-socket", "tests.httpbin_app:app"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(out, "w"), start_new_session=True))
        outs.append(out)
    try:
        ports = []
        for proc, out in zip(procs, outs):
            deadline = time.monotonic() + 30
            while not (m := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", out.read_text())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn with httpbin did not start:\n{out.read_text()}")
                time.sleep(0.05)
            ports.append(int(m.group(1)))
        for port in ports:  # the worker is up once it answers
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/status/204", timeout=1).status_code == 204:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("httpbin did not answer")
                time.sleep(0.05)
        yield Httpbin(ports, log)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(10)


# -- the clients: each makes requests and reports what the caller saw ---------------------------

Headers = list[tuple[str, str]]


def _parsed(body: bytes) -> Any:
    """A JSON body (or JSON lines) as objects: httpbin echoes request headers
    as a JSON object, in the order they came (see :func:`_observed`)."""
    try:
        return ("json", json.loads(body))
    except ValueError:
        pass
    try:
        return ("json-lines", [json.loads(line) for line in body.splitlines()])
    except ValueError:
        return body


def _view(status: int, headers: Headers, body: bytes, history: list[int] | None = None, cookies: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "status": status,
        # Date varies; Content-Length follows the body, which names the authority
        # (compared, normalised, as the body itself).
        "headers": [(k.lower(), v) for k, v in headers if k.lower() not in ("date", "content-length")],
        "body": _parsed(body),
        "history": history,
        "cookies": cookies,
    }


class RequestsCaller:
    def __init__(self, mesh: Mesh | None) -> None:
        self.s = mesh.requests_session() if mesh else requests.Session()

    def fetch(self, method: str, url: str, headers: Headers = (), body: Any = None, stream: bool = False, redirects: bool = True, auth: Any = None) -> dict[str, Any]:
        h = {}
        for k, v in headers:
            h[k] = f"{h[k]}, {v}" if k in h else v  # requests' headers are a dict
        r = self.s.request(method, url, headers=h, data=body, stream=stream, allow_redirects=redirects, auth=auth)
        content = b"".join(r.iter_content(1000)) if stream else r.content
        r.close()
        return _view(r.status_code, list(r.headers.items()), content, [x.status_code for x in r.history], dict(self.s.cookies))

    def close(self) -> None:
        self.s.close()


class Urllib3Caller:
    def __init__(self, mesh: Mesh | None) -> None:
        self.p = mesh.urllib3_pool() if mesh else urllib3.PoolManager(maxsize=10)

    def fetch(self, method: str, url: str, headers: Headers = (), body: Any = None, stream: bool = False, redirects: bool = True, auth: Any = None) -> dict[str, Any]:
        h = HTTPHeaderDict()
        for k, v in headers:
            h.add(k, v)
        r = self.p.request(method, url, headers=h, body=body, preload_content=not stream, redirect=redirects)
        content = b"".join(r.stream(1000)) if stream else r.data
        r.release_conn()
        return _view(r.status, list(r.headers.items()), content)

    def close(self) -> None:
        self.p.clear()


class HttpxCaller:
    def __init__(self, mesh: Mesh | None) -> None:
        self.c = mesh.httpx_client() if mesh else httpx.Client()

    def fetch(self, method: str, url: str, headers: Headers = (), body: Any = None, stream: bool = False, redirects: bool = True, auth: Any = None) -> dict[str, Any]:
        kw = {"headers": list(headers), "content": body, "follow_redirects": redirects, "auth": auth}
        if stream:
            with self.c.stream(method, url, **kw) as r:
                content = b"".join(r.iter_bytes(1000))
        else:
            r = self.c.request(method, url, **kw)
            content = r.content
        return _view(r.status_code, r.headers.multi_items(), content, [x.status_code for x in r.history], dict(self.c.cookies))

    def close(self) -> None:
        self.c.close()


class AsyncHttpxCaller:
    def __init__(self, mesh: Mesh | None) -> None:
        self.loop = asyncio.new_event_loop()
        self.c = mesh.httpx_async_client() if mesh else httpx.AsyncClient()

    def fetch(self, method: str, url: str, headers: Headers = (), body: Any = None, stream: bool = False, redirects: bool = True, auth: Any = None) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            kw = {"headers": list(headers), "content": body, "follow_redirects": redirects, "auth": auth}
            if stream:
                async with self.c.stream(method, url, **kw) as r:
                    content = b"".join([chunk async for chunk in r.aiter_bytes(1000)])
            else:
                r = await self.c.request(method, url, **kw)
                content = r.content
            return _view(r.status_code, r.headers.multi_items(), content, [x.status_code for x in r.history], dict(self.c.cookies))

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.c.aclose())
        self.loop.close()


CALLERS = {"requests": RequestsCaller, "urllib3": Urllib3Caller, "httpx": HttpxCaller, "httpx-async": AsyncHttpxCaller}


def body_of(kind: str, client: str) -> Any:
    """A fresh body of ``kind`` as ``client`` takes it."""
    if kind == "bytes":
        return DATA
    if kind == "file":
        return io.BytesIO(DATA)
    if client == "httpx-async":

        async def agen() -> Any:
            for i in range(0, len(DATA), 1000):
                yield DATA[i : i + 1000]

        return agen()
    return (DATA[i : i + 1000] for i in range(0, len(DATA), 1000))


# -- the checks: each makes its requests through one caller ------------------------------------

Check = Callable[[Any, str, str], list[dict[str, Any]]]
CHECKS: dict[str, Check] = {}


def check(name: str, clients: tuple[str, ...] = tuple(CALLERS)) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        fn.clients = clients  # type: ignore[attr-defined]
        return fn

    return register


for _code in (200, 204, 404, 418, 500, 503):
    check(f"status-{_code}")(lambda c, base, client, code=_code: [c.fetch("GET", f"{base}/status/{code}")])

check("query-string")(lambda c, base, client: [c.fetch("GET", f"{base}/get?a=1&a=2&b=x%20y&c=%2F&d")])
check("request-headers")(
    lambda c, base, client: [c.fetch("GET", f"{base}/headers", [("X-Custom", "v"), ("Accept", "application/json"), ("X-Spaces", "a  b")])]
)
check("repeated-request-headers", ("urllib3", "httpx", "httpx-async"))(
    lambda c, base, client: [c.fetch("GET", f"{base}/anything", [("X-Tag", "a"), ("X-Tag", "b")])]
)
check("repeated-response-headers")(lambda c, base, client: [c.fetch("GET", f"{base}/response-headers?X-A=1&X-A=2&X-B=3")])
check("explicit-host")(lambda c, base, client: [c.fetch("GET", f"{base}/headers", [("Host", "api.example:8443")])])
check("lower-case-host")(lambda c, base, client: [c.fetch("GET", f"{base}/headers", [("host", "api.example")])])
check("redirect-relative")(lambda c, base, client: [c.fetch("GET", f"{base}/redirect/3")])
check("redirect-absolute")(lambda c, base, client: [c.fetch("GET", f"{base}/absolute-redirect/2")])
check("redirect-not-followed")(lambda c, base, client: [c.fetch("GET", f"{base}/redirect/1", redirects=False)])
check("redirect-307-keeps-post-body")(
    lambda c, base, client: [c.fetch("POST", f"{base}/redirect-to?url=/anything&status_code=307", body=DATA)]
)
check("redirect-303-turns-into-get")(
    lambda c, base, client: [c.fetch("POST", f"{base}/redirect-to?url=/anything&status_code=303", body=DATA)]
)
check("cookies")(lambda c, base, client: [c.fetch("GET", f"{base}/cookies/set?k=v&n=1"), c.fetch("GET", f"{base}/cookies")])
for _enc in ("gzip", "deflate", "brotli"):
    check(f"compressed-{_enc}")(lambda c, base, client, enc=_enc: [c.fetch("GET", f"{base}/{enc}")])
check("streamed-lines")(lambda c, base, client: [c.fetch("GET", f"{base}/stream/5", stream=True)])
check("streamed-bytes")(lambda c, base, client: [c.fetch("GET", f"{base}/stream-bytes/30000?seed=7&chunk_size=999", stream=True)])
check("large-response")(lambda c, base, client: [c.fetch("GET", f"{base}/bytes/200000?seed=3")])
for _kind in ("bytes", "file", "generator"):
    check(f"body-{_kind}", tuple(CALLERS) if _kind != "file" else ("requests", "urllib3", "httpx"))(
        lambda c, base, client, kind=_kind: [
            c.fetch("POST", f"{base}/anything", body=body_of(kind, client)),
            c.fetch("PUT", f"{base}/anything", body=body_of(kind, client)),
        ]
    )
check("methods")(
    lambda c, base, client: [c.fetch(m, f"{base}/anything") for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")]
)
_BASIC = ("Authorization", "Basic " + base64.b64encode(b"user:pass").decode())
check("basic-auth")(lambda c, base, client: [c.fetch("GET", f"{base}/basic-auth/user/pass", [_BASIC]), c.fetch("GET", f"{base}/basic-auth/user/wrong")])


def _digest(client: str) -> Any:
    return requests.auth.HTTPDigestAuth("user", "pass") if client == "requests" else httpx.DigestAuth("user", "pass")


# httpbin's digest nonces are not kept per instance, so the challenge and the
# answer may reach different endpoints (docs/http-clients.md says when that breaks).
check("digest-auth", ("requests", "httpx", "httpx-async"))(
    lambda c, base, client: [c.fetch("GET", f"{base}/digest-auth/auth/user/pass/MD5", auth=_digest(client))]
)


# -- the comparison ------------------------------------------------------------------------------


#: Digest challenge and answer values, random per challenge.
_DIGEST_VALUES = re.compile(r'\b(nonce|response|opaque|cnonce)="?[0-9a-f]+"?')


def _normalised(value: Any, authority: str) -> Any:
    """``value`` with the raw authority read as the service's (and digest
    auth's random values blanked, in both)."""
    if isinstance(value, str):
        return _DIGEST_VALUES.sub(r"\1=*", value.replace(authority, "httpbin"))
    if isinstance(value, bytes):
        return value.replace(authority.encode(), b"httpbin")
    if isinstance(value, dict):
        return {k: _normalised(v, authority) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_normalised(v, authority) for v in value)
    return value


def _observed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the servers saw, minus which instance it was. Header lines are
    compared in order within a name, not across names (whose order carries
    no meaning in HTTP): urllib3 writes its framing and User-Agent lines
    before the headers it is given, so a Host line given by meshlib comes
    after them (docs/http-clients.md)."""
    return [{**{k: v for k, v in r.items() if k != "port"}, "headers": sorted(r["headers"], key=lambda kv: kv[0])} for r in records]


def _run(httpbin: Httpbin, client: str, fn: Check, mesh: Mesh | None, base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    caller = CALLERS[client](mesh)
    mark = httpbin.mark()
    try:
        views = fn(caller, base, client)
    finally:
        caller.close()
    return views, _observed(httpbin.since(mark))


@pytest.mark.parametrize("client", list(CALLERS))
@pytest.mark.parametrize("name", list(CHECKS))
def test_meshlib_is_the_raw_client(httpbin, client, name):
    fn = CHECKS[name]
    if client not in fn.clients:  # type: ignore[attr-defined]
        pytest.skip(f"{client} has no such feature")
    authority = f"127.0.0.1:{httpbin.ports[0]}"
    raw_views, raw_seen = _run(httpbin, client, fn, None, f"http://{authority}")
    with Mesh(config={"services": {"httpbin": {"endpoints": httpbin.endpoints}}}) as mesh:
        mesh_views, mesh_seen = _run(httpbin, client, fn, mesh, "http://httpbin")
        stats = mesh.stats()["services"]["httpbin"]
    assert mesh_seen and stats["retries"] == 0
    raw_seen, raw_views = _normalised(raw_seen, authority), _normalised(raw_views, authority)
    mesh_seen, mesh_views = _normalised(mesh_seen, "httpbin"), _normalised(mesh_views, "httpbin")
    assert mesh_seen == raw_seen, "the server observed: " + _first_difference(mesh_seen, raw_seen)
    assert mesh_views == raw_views, "the caller saw: " + _first_difference(mesh_views, raw_views)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)} items: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} != {b!r}"
