"""A user function of the request as the hash key (``hash_key=`` on requests,
httpx and gRPC clients), real servers on 127.0.0.1; and each endpoint's
latest load report with its age in ``mesh.endpoints()`` and admin ``/clusters``."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

import meshlib
from meshlib import ManualClock
from meshlib.admin import clusters_json, clusters_text

from .grpc_agents import COUNT, ECHO, JOIN, grpc_agents  # noqa: F401 (a fixture)


class _Named(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("endpoint-load-metrics", "TEXT named_metrics.num_requests_waiting=2, named_metrics.kv_cache_usage_perc=0.25")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def backends():
    servers = []
    for name in ("b1", "b2", "b3"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        server.daemon_threads = True
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _config(servers, **keys):
    eps = ",".join(f"127.0.0.1:{s.server_address[1]}" for s in servers)
    return {"services": {"profile": {"endpoints": eps, "lb_policy": "ring_hash", "hash_header": "x-user", **keys}}}


def _user_of_requests(request) -> str | None:
    """The hash key of a requests PreparedRequest: its ``user`` query parameter."""
    query = (request.url or "").partition("?")[2]
    return dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("user")


def _check(get) -> None:
    """``get(user, header=None, block=None)`` -> the answering backend's name."""
    by_user = {f"u{i}": get(f"u{i}") for i in range(24)}
    assert all(get(user) == name for user, name in list(by_user.items())[:8])  # the same key, the same backend
    assert len(set(by_user.values())) == 3  # different keys spread
    for user, name in list(by_user.items())[:6]:
        with meshlib.hash_key(user):
            assert get(None) == name  # the function's key is the key meshlib.hash_key gives
        other = next(u for u, n in by_user.items() if n != name)
        assert get(user, header=other) == name  # the function wins over HASH_HEADER
        assert get(user, block=other) == by_user[other]  # a meshlib.hash_key block wins over the function
        assert get(None, header=user) == name  # the function gave no key: the header's


def test_requests_session_hash_key_function(backends):
    with meshlib.Mesh(config=_config(backends)) as mesh:
        s = mesh.requests_session(hash_key=_user_of_requests)

        def get(user, header=None, block=None):
            url = "http://profile/me" + (f"?user={user}" if user else "")
            headers = {"x-user": header} if header else {}
            if block:
                with meshlib.hash_key(block):
                    return s.get(url, headers=headers).text
            return s.get(url, headers=headers).text

        _check(get)
        bad = mesh.requests_session(hash_key=lambda request: 7)
        with pytest.raises(TypeError, match="must return str, bytes or None"):
            bad.get("http://profile/me")


def test_httpx_clients_hash_key_function(backends):
    key = lambda request: request.url.params.get("user")  # noqa: E731
    with meshlib.Mesh(config=_config(backends)) as mesh, mesh.httpx_client(hash_key=key) as c:

        def get(user, header=None, block=None):
            params = {"user": user} if user else {}
            headers = {"x-user": header} if header else {}
            if block:
                with meshlib.hash_key(block):
                    return c.get("http://profile/me", params=params, headers=headers).text
            return c.get("http://profile/me", params=params, headers=headers).text

        _check(get)
        with mesh.httpx_client() as plain:  # the same keys through meshlib.hash_key: the same backends
            with meshlib.hash_key("u3"):
                assert plain.get("http://profile/me").text == get("u3")

        async def answers() -> list[str]:
            async with mesh.httpx_async_client(hash_key=key) as ac:
                return [(await ac.get("http://profile/me", params={"user": f"u{i}"})).text for i in range(24)]

        assert asyncio.run(answers()) == [get(f"u{i}") for i in range(24)]


def test_grpc_channels_hash_key_function(grpc_agents):  # noqa: F811
    agents = grpc_agents(3)
    config = {"services": {"svc": {"endpoints": ",".join(a.address for a in agents), "lb_policy": "ring_hash", "hash_header": "x-user"}}}
    with meshlib.Mesh(config=config) as mesh:
        keyed = mesh.grpc_channel("svc", hash_key=lambda request: request.decode() or None)
        plain = mesh.grpc_channel("svc")
        echo, count = keyed.unary_unary(ECHO), keyed.unary_stream(COUNT)
        plain_echo = plain.unary_unary(ECHO)
        by_user = {}
        for i in range(24):
            with meshlib.hash_key(f"u{i}"):
                by_user[f"u{i}"] = plain_echo(b"")
        assert len(set(by_user.values())) == 3
        for user, name in by_user.items():
            assert echo(user.encode()) == name
            assert echo.future(user.encode()).result() == name
            other = next(u for u, n in by_user.items() if n != name)
            assert echo(user.encode(), metadata=(("x-user", other),)) == name  # the function wins over the header
        # unary-stream: the request is a count, the key its text
        for n in range(2, 9):
            answers = list(count(str(n).encode()))
            assert len(answers) == n
            with meshlib.hash_key(str(n)):
                assert answers[0].split(b":")[0] == plain_echo(b"")
        # client streaming has no single message: the header's key
        join = keyed.stream_unary(JOIN)
        user = next(iter(by_user))
        assert join(iter([b"a"]), metadata=(("x-user", user),)).split(b":")[0] == by_user[user]

        async def aio() -> list[bytes]:
            async with mesh.grpc_aio_channel("svc", hash_key=lambda request: request.decode()) as ch:
                aecho = ch.unary_unary(ECHO)
                return [await aecho(u.encode()) for u in by_user]

        assert asyncio.run(aio()) == list(by_user.values())


def test_endpoints_and_admin_clusters_show_each_latest_load_report_and_its_age(backends):
    clock = ManualClock()
    with meshlib.Mesh(config=_config(backends, lb_policy="least_loaded", load_reports="header"), clock=clock) as mesh:
        assert [ep.load for ep in mesh.endpoints("profile")] == [None, None, None]  # no report yet
        s = mesh.requests_session()
        answered = s.get("http://profile/").text
        clock.advance(0.25)
        eps = {ep.address: ep for ep in mesh.endpoints("profile")}
        port = {s.name: s.server_address[1] for s in backends}[answered]
        reported = eps[f"127.0.0.1:{port}"]
        assert dict(reported.load) == {"source": "header", "age_s": 0.25, "waiting": 2.0, "kv": 0.25,
                                       "named": {"num_requests_waiting": 2.0, "kv_cache_usage_perc": 0.25}}  # fmt: skip
        assert sum(ep.load is None for ep in eps.values()) == 2
        assert reported == next(ep for ep in mesh.cluster("profile").view if ep.address == reported.address)  # not part of identity
        clock.advance(1.0)
        assert mesh.endpoints("profile", tags=()).endpoints[[e.address for e in mesh.endpoints("profile")].index(reported.address)].load["age_s"] == 1.25
        hosts = {h["address"]: h for h in clusters_json(mesh)["cluster_statuses"][0]["hosts"]}
        assert hosts[reported.address]["load_report"]["age_s"] == 1.25
        assert hosts[reported.address]["load_report"]["waiting"] == 2.0
        text = clusters_text(mesh)
        assert f"profile::{reported.address}::load_report_age_s::1.25" in text
        assert f"profile::{reported.address}::load_report_waiting::2.0" in text
        assert f"profile::{reported.address}::load_report_source::header" in text
    with meshlib.Mesh(config=_config(backends)) as plain:  # a service that reads no reports: no load field
        assert [ep.load for ep in plain.endpoints("profile")] == [None, None, None]
        assert "load_report" not in json.dumps(clusters_json(plain))
