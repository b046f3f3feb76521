"""The HTTP adapters against real servers on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import requests
import urllib3

from meshlib import Mesh, NoHealthyEndpointsError

from .conftest import endpoints_of


def mesh_for(endpoints: str, **keys) -> Mesh:
    return Mesh(config={"services": {"inventory": {"endpoints": endpoints, **keys}}})


def get_requests(mesh: Mesh):
    s = mesh.requests_session()
    return lambda url: s.get(url).json()


def get_urllib3(mesh: Mesh):
    p = mesh.urllib3_pool()
    return lambda url: p.request("GET", url).json()


def get_httpx(mesh: Mesh):
    c = mesh.httpx_client()
    return lambda url: c.get(url).json()


CLIENTS = {"requests": get_requests, "urllib3": get_urllib3, "httpx": get_httpx}


@pytest.mark.parametrize("client", CLIENTS)
def test_mesh_urls_are_balanced_and_keep_the_host_header(agents, client):
    ags = agents(3)
    with mesh_for(endpoints_of(ags), lb_policy="round_robin") as mesh:
        get = CLIENTS[client](mesh)
        bodies = [get("http://inventory/items?sku=1") for _ in range(30)]
    assert Counter(b["agent"] for b in bodies) == {a.name: 10 for a in ags}
    assert {b["host"] for b in bodies} == {"inventory"}
    assert {b["path"] for b in bodies} == {"/items?sku=1"}


@pytest.mark.parametrize("client", CLIENTS)
def test_other_urls_pass_through_untouched(agents, client):
    mesh_agent, outside = agents(2)
    with mesh_for(mesh_agent.address) as mesh:
        get = CLIENTS[client](mesh)
        body = get(f"http://127.0.0.1:{outside.port}/direct")
        assert body["agent"] == outside.name and body["host"] == f"127.0.0.1:{outside.port}"
        assert mesh.stats()["services"]["inventory"]["endpoints"][0]["requests"] == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_failure_is_retried_on_another_endpoint(agents, refused_port, client):
    (alive,) = agents(1)
    endpoints = f"127.0.0.1:{refused_port},{alive.address}"
    with mesh_for(endpoints, lb_policy="round_robin") as mesh:
        get = CLIENTS[client](mesh)
        bodies = [get("http://inventory/") for _ in range(10)]
        assert {b["agent"] for b in bodies} == {alive.name}
        stats = mesh.stats()["services"]["inventory"]
    dead = next(e for e in stats["endpoints"] if e["address"].endswith(f":{refused_port}"))
    assert dead["connect_failures"] == stats["retries"] >= 5


def test_connect_retries_are_bounded_and_the_error_surfaces(refused_port):
    with mesh_for(f"127.0.0.1:{refused_port}", num_retries=2) as mesh:
        with pytest.raises(requests.ConnectionError):
            mesh.requests_session().get("http://inventory/")
        assert mesh.stats()["services"]["inventory"]["endpoints"][0]["requests"] == 3
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            mesh.urllib3_pool().request("GET", "http://inventory/")
        with pytest.raises(httpx.ConnectError):
            mesh.httpx_client().get("http://inventory/")


def test_post_body_reaches_the_server_after_a_connect_retry(agents, refused_port):
    (alive,) = agents(1)
    with mesh_for(f"127.0.0.1:{refused_port},{alive.address}", lb_policy="round_robin") as mesh:
        s = mesh.requests_session()
        bodies = [s.post("http://inventory/orders", json={"n": i}).json() for i in range(4)]
    assert [b["body"] for b in bodies] == ['{"n": 0}', '{"n": 1}', '{"n": 2}', '{"n": 3}']


def test_5xx_is_returned_to_the_caller_and_counted(agents):
    (bad,) = agents(1)
    bad.behaviour.status = 503
    with mesh_for(bad.address) as mesh:
        r = mesh.requests_session().get("http://inventory/")
        assert r.status_code == 503
        assert r.url == "http://inventory/"  # the service URL, not the endpoint's
        assert mesh.stats()["services"]["inventory"]["endpoints"][0]["failures"] == 1


def test_service_without_endpoints_raises_a_clear_error(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("services:\n  inventory: []\n")
    with Mesh(config={"discovery": f"file://{f}"}) as mesh:
        with pytest.raises(NoHealthyEndpointsError, match="inventory"):
            mesh.requests_session().get("http://inventory/")


def test_peak_ewma_sends_little_to_a_ten_times_slower_endpoint(agents):
    ags = agents(4)
    # 5 ms against 50 ms: a loaded machine's scheduling delays (a few ms) do not blur the difference
    for a in ags[:3]:
        a.behaviour.delay = 0.005
    ags[3].behaviour.delay = 0.050
    with mesh_for(endpoints_of(ags)) as mesh:  # peak_ewma is the default
        s = mesh.requests_session()

        def work(_: int) -> str:
            return s.get("http://inventory/").json()["agent"]

        with ThreadPoolExecutor(4) as pool:
            counts = Counter(pool.map(work, range(600)))
    assert counts[ags[3].name] / 600 < 0.10, counts
    assert all(counts[a.name] > 100 for a in ags[:3]), counts


def test_hash_header_pins_a_user_to_one_endpoint(agents):
    ags = agents(4)
    with mesh_for(endpoints_of(ags), lb_policy="maglev", hash_header="x-user") as mesh:
        s = mesh.requests_session()
        for user in ("alice", "bob", "carol"):
            seen = {s.get("http://inventory/", headers={"X-User": user}).json()["agent"] for _ in range(10)}
            assert len(seen) == 1


def test_connection_pools_are_per_endpoint_and_reused(agents):
    ags = agents(2)
    with mesh_for(endpoints_of(ags), lb_policy="round_robin") as mesh:
        pool = mesh.urllib3_pool()
        for _ in range(20):
            pool.request("GET", "http://inventory/")
        assert len(pool.pools) == 2
        for key in pool.pools.keys():
            conn_pool = pool.pools[key]
            assert conn_pool.num_connections == 1  # reused: one connection for 10 calls


async def test_httpx_async_client(agents, refused_port):
    ags = agents(2)
    with mesh_for(f"127.0.0.1:{refused_port}," + endpoints_of(ags), lb_policy="round_robin") as mesh:
        async with mesh.httpx_async_client() as client:
            bodies = [(await client.get("http://inventory/a")).json() for _ in range(12)]
            outside = (await client.get(f"http://127.0.0.1:{ags[0].port}/x")).json()
    assert Counter(b["agent"] for b in bodies) == {ags[0].name: 6, ags[1].name: 6} or len({b["agent"] for b in bodies}) == 2
    assert {b["host"] for b in bodies} == {"inventory"}
    assert outside["host"] == f"127.0.0.1:{ags[0].port}"


def test_service_names_are_case_and_separator_insensitive(agents):
    (a,) = agents(1)
    with Mesh.from_env({"MESHLIB_SERVICES__ORDER_API__ENDPOINTS": a.address}) as mesh:
        s = mesh.requests_session()
        for host in ("order-api", "order_api", "ORDER-API"):
            assert s.get(f"http://{host}/").json()["agent"] == a.name


def test_mixed_spellings_of_a_service_name_are_routed(agents):
    (a,) = agents(1)
    with Mesh(config={"services": {"a-b-c": {"endpoints": a.address}}}) as mesh:
        s = mesh.requests_session()
        for host in ("a_b-c", "A_B-C", "a-b_c"):
            assert s.get(f"http://{host}/").json()["agent"] == a.name


def test_urllib3_pool_level_timeout_is_respected_for_mesh_calls(agents):
    (slow,) = agents(1)
    slow.behaviour.delay = 1.0
    with mesh_for(slow.address) as mesh:
        pool = mesh.urllib3_pool(timeout=urllib3.Timeout(read=0.1), retries=False)
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            pool.request("GET", "http://inventory/")


def test_httpx_uses_the_service_connect_timeout(hanging_port):
    import time

    port = hanging_port
    with mesh_for(f"127.0.0.1:{port}", connect_timeout="200ms", num_retries=0) as mesh:
        with mesh.httpx_client(timeout=5.0) as client:
            started = time.monotonic()
            with pytest.raises((httpx.ConnectTimeout, httpx.ConnectError, httpx.ReadTimeout)):
                client.get("http://inventory/")
            assert time.monotonic() - started < 2.0
    # A client's own shorter connect timeout is kept, not raised to the service's.
    with mesh_for(f"127.0.0.1:{port}", connect_timeout="10s", num_retries=0) as mesh:
        with mesh.httpx_client(timeout=httpx.Timeout(5.0, connect=0.2)) as client:
            started = time.monotonic()
            with pytest.raises((httpx.ConnectTimeout, httpx.ConnectError, httpx.ReadTimeout)):
                client.get("http://inventory/")
            assert time.monotonic() - started < 2.0


# -- attempts go straight to the endpoint's pool; redirects follow through the mesh --


def test_urllib3_relative_redirect_is_followed_through_the_mesh(agents):
    a, b = agents(2)
    for ag in (a, b):
        ag.behaviour.script = [302]
        ag.behaviour.headers = {"Location": "/landed"}
    with mesh_for(endpoints_of([a, b]), lb_policy="round_robin") as mesh:
        r = mesh.urllib3_pool().request("GET", "http://inventory/start")
        body = r.json()
        assert r.status == 200
        assert (body["path"], body["host"]) == ("/landed", "inventory")
    # Each redirect went back through the mesh rather than being pinned to the
    # endpoint that sent it: round_robin alternated (302, 302, then 200).
    assert sorted([a.hits, b.hits]) == [1, 2]
    assert {h["host"] for h in a.behaviour.seen + b.behaviour.seen} == {"inventory"}


def test_urllib3_303_after_post_becomes_a_get_without_body(agents):
    (a,) = agents(1)
    a.behaviour.script = [303]
    a.behaviour.headers = {"Location": "/see-other"}
    with mesh_for(a.address) as mesh:
        r = mesh.urllib3_pool().request("POST", "http://inventory/form", body=b"secret", headers={"Content-Type": "text/plain"})
        body = r.json()
    assert (r.status, body["method"], body["path"], body["body"]) == (200, "GET", "/see-other", "")
    assert "content-type" not in a.behaviour.seen[1]  # body headers dropped with the body


def test_urllib3_redirect_false_returns_the_redirect(agents):
    (a,) = agents(1)
    a.behaviour.status = 302
    a.behaviour.headers = {"Location": "/elsewhere"}
    with mesh_for(a.address) as mesh:
        r = mesh.urllib3_pool().request("GET", "http://inventory/", redirect=False)
    assert (r.status, r.headers["Location"], a.hits) == (302, "/elsewhere", 1)


def test_urllib3_redirects_are_limited_by_retry(agents):
    (a,) = agents(1)
    a.behaviour.status = 302
    a.behaviour.headers = {"Location": "/again"}
    with mesh_for(a.address) as mesh:
        pool = mesh.urllib3_pool()
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            pool.request("GET", "http://inventory/", retries=urllib3.Retry(redirect=2))
        assert a.hits == 3  # the request and two redirects
        r = pool.request("GET", "http://inventory/", retries=urllib3.Retry(redirect=1, raise_on_redirect=False))
        assert r.status == 302


def test_urllib3_cross_origin_redirect_drops_authorization(agents):
    a, outside = agents(2)
    a.behaviour.script = [302, 302]
    a.behaviour.headers = {"Location": f"http://127.0.0.1:{outside.port}/out"}
    with mesh_for(a.address) as mesh:
        r = mesh.urllib3_pool().request("GET", "http://inventory/", headers={"Authorization": "Bearer t"})
        assert r.json()["agent"] == outside.name
    assert a.behaviour.seen[0]["authorization"] == "Bearer t"
    assert "authorization" not in outside.behaviour.seen[0]


def test_urllib3_request_target_is_normalised_as_urllib3_does(agents):
    (a,) = agents(1)
    with mesh_for(a.address) as mesh:
        body = mesh.urllib3_pool().request("GET", "http://inventory/a b?x=1 2#frag").json()
    assert body["path"] == "/a%20b?x=1%202"  # encoded, fragment not sent


def test_urllib3_pools_survive_clear_and_eviction(agents):
    ags = agents(3)
    with mesh_for(endpoints_of(ags), lb_policy="round_robin") as mesh:
        pool = mesh.urllib3_pool(num_pools=2)  # fewer pools than endpoints: urllib3 evicts
        names = [pool.request("GET", "http://inventory/").json()["agent"] for _ in range(9)]
        assert sorted(set(names)) == sorted(a.name for a in ags)
        assert len(pool.pools) == 2
        pool.clear()
        assert pool.request("GET", "http://inventory/").status == 200
        assert len(pool.pools) == 1


def test_requests_attempts_carry_session_cookies_and_return_the_callers_request(agents):
    (a,) = agents(1)
    with mesh_for(a.address) as mesh:
        s = mesh.requests_session()
        s.cookies.set("session", "abc")
        r = s.get("http://inventory/p", headers={"X-Trace": "1"})
    seen = a.behaviour.seen[0]
    assert seen["cookie"] == "session=abc" and seen["x-trace"] == "1" and seen["host"] == "inventory"
    assert r.url == "http://inventory/p" and r.request.url == "http://inventory/p"
    assert "Host" not in r.request.headers  # the attempt's copy was changed, not the caller's


def test_calls_are_counted_exactly_from_many_threads(agents):
    (a,) = agents(1)
    with mesh_for(a.address) as mesh:

        @mesh.call("inventory")
        def ping(endpoint):
            return endpoint.address

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: ping(), range(400)))
        assert mesh.stats()["services"]["inventory"]["calls"] == 400
