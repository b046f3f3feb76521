"""requests and the proxy variables of the environment.

A mesh service's attempts go straight to the picked endpoint, never through
an HTTP proxy (docs/http-clients.md, "Proxies"); the mesh session does not
even look the proxy variables up for them. Any other URL is proxied exactly
as a plain ``requests.Session`` proxies it, and the other settings requests
takes from the environment (the CA bundle variables) are the same as plain
requests' for mesh URLs too.
"""

from __future__ import annotations

import pytest
import requests

import meshlib
from tests.http_recorder import Recorder


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch):
    proxy = Recorder()  # answers 200 to anything: as a proxy it sees absolute-form targets
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.address}")
    monkeypatch.setenv("http_proxy", f"http://{proxy.address}")
    yield proxy
    proxy.stop()


def test_mesh_service_is_called_directly_while_other_urls_go_through_the_proxy(proxy_env: Recorder) -> None:
    upstream = Recorder()
    mesh = meshlib.Mesh(config={"services": {"inventory": {"endpoints": upstream.address}}})
    try:
        session = mesh.requests_session()
        assert session.get("http://inventory/stock?x=1").status_code == 200
        assert [s.target for s in upstream.seen] == ["/stock?x=1"]
        assert proxy_env.seen == []

        # A URL that is not a mesh service: proxied as plain requests proxies it.
        assert session.get("http://elsewhere.invalid/a").status_code == 200
        assert requests.Session().get("http://elsewhere.invalid/a").status_code == 200
        assert [s.target for s in proxy_env.seen] == ["http://elsewhere.invalid/a"] * 2
        assert len(upstream.seen) == 1
    finally:
        mesh.close()
        upstream.stop()


@pytest.mark.parametrize(
    "env, verify",
    [
        ({}, None),
        ({"REQUESTS_CA_BUNDLE": "/etc/bundle.pem"}, None),
        ({"CURL_CA_BUNDLE": "/etc/curl.pem"}, True),
        ({"REQUESTS_CA_BUNDLE": "/etc/bundle.pem"}, False),
        ({"REQUESTS_CA_BUNDLE": "/etc/bundle.pem"}, "/mine.pem"),
    ],
)
def test_mesh_urls_take_requests_settings_from_the_environment_but_proxies(proxy_env: Recorder, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], verify: object) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mesh = meshlib.Mesh(config={"services": {"inventory": {"endpoints": "127.0.0.1:1"}}})
    try:
        mine, plain = mesh.requests_session(), requests.Session()
        for s in (mine, plain):
            s.cert = ("c.pem", "k.pem")
            s.headers["X-Team"] = "a"
        got = mine.merge_environment_settings("http://inventory/", {}, True, verify, None)
        want = plain.merge_environment_settings("http://inventory/", {}, True, verify, None)
        assert want.pop("proxies") == {"http": f"http://{proxy_env.address}"}
        assert got.pop("proxies") == {}
        assert got == want
        # Not a mesh service: exactly plain requests' answer, proxies included.
        assert mine.merge_environment_settings("http://elsewhere.invalid/", {}, None, verify, None) == plain.merge_environment_settings("http://elsewhere.invalid/", {}, None, verify, None)
    finally:
        mesh.close()
