"""The xDS client against the test control plane: the subscription graph,
ACK/NACK and recovery, deletion, does-not-exist timing, fallback, a
control-plane outage with no failed call, complete configurations only
(gRFC A74), a 10,000-endpoint update, and routing from plain configuration."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator

import pytest
import requests

import meshlib
from meshlib.xds import XdsResolver, parse_bootstrap
from meshlib.xds.resources import CDS, EDS, LDS, RDS

from .grpc_agents import ECHO, GrpcAgent
from .xds_control_plane import ControlPlane, bootstrap, cluster, endpoints, header, merge, route, service
from .xds_control_plane import route_config as rc_proto

OUTAGE = float(os.environ.get("XDS_TEST_OUTAGE_SECONDS", "30"))


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, GrpcAgent]]:
    made = {name: GrpcAgent(name) for name in ("v1a", "v1b", "v2", "v3")}
    yield made
    for a in made.values():
        a.stop()


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    yield plane
    plane.stop()


def mesh_for(cp: ControlPlane, *servers: str, features=(), listeners="inventory", **extra: Any) -> meshlib.Mesh:
    doc = bootstrap(*(servers or (cp.address,)), features=features)
    return meshlib.Mesh(config={"discovery": "xds", "xds_bootstrap_config": json.dumps(doc), "xds_listeners": listeners,
                                "xds_backoff_base": "50ms", "xds_backoff_max": "200ms", **extra})  # fmt: skip


def inventory(up: dict[str, GrpcAgent], routes=None, clusters=None) -> dict:
    clusters = clusters or {"inv-v1": [up["v1a"].address, up["v1b"].address], "inv-v2": [up["v2"].address]}
    return service("inventory", clusters, routes=routes)


def calls(mesh: meshlib.Mesh, n: int, **kw: Any) -> Counter:
    echo = mesh.grpc_channel("inventory").unary_unary(ECHO)
    return Counter(echo(b"x", timeout=5, **kw).decode() for _ in range(n))


def status_of(mesh: meshlib.Mesh, type_: str, name: str) -> dict:
    return next((r for r in mesh.xds_status()["resources"] if r["type"] == type_ and r["name"] == name), {})


# -- the graph -------------------------------------------------------------------------


def test_routes_weighted_split_and_graph_follow_changes(cp, upstreams) -> None:
    cp.set(inventory(upstreams, routes=[route("/", cluster="inv-v2", headers=[header("x-model-version", "v2")]),
                                        route("/", weighted=[("inv-v1", 80), ("inv-v2", 20)])]))  # fmt: skip
    with mesh_for(cp) as mesh:
        got = calls(mesh, 1000)
        assert set(got) == {"v1a", "v1b", "v2"} and abs(got["v2"] / 1000 - 0.2) < 0.05, got
        assert calls(mesh, 20, metadata=[("x-model-version", "v2")]) == Counter({"v2": 20})
        # The route now names a new cluster: subscriptions follow, the old one is dropped once the new is in use.
        snap = inventory(upstreams, routes=[route("/", "inv-v3")], clusters={"inv-v3": [upstreams["v3"].address]})
        cp.set(snap)
        wait_until(lambda: calls(mesh, 1) == Counter({"v3": 1}), what="the route to inv-v3")
        last = wait_until(lambda: [r for r in cp.requests if r.type_url == CDS and r.names == ("inv-v3",)], what="CDS unsubscribe")
        assert last and [r for r in cp.requests if r.type_url == EDS and r.names == ("inv-v3",)]
        assert status_of(mesh, "cluster", "inv-v1") == {}


def test_new_cluster_never_fails_calls_while_it_arrives(cp, upstreams) -> None:
    cp.set(inventory(upstreams, routes=[route("/", "inv-v1")]))
    with mesh_for(cp) as mesh:
        assert set(calls(mesh, 10)) <= {"v1a", "v1b"}
        snap = inventory(upstreams, routes=[route("/", "inv-new")])
        snap[CDS]["inv-new"] = cluster("inv-new")  # its endpoints are not sent yet
        cp.set(snap)
        wait_until(lambda: status_of(mesh, "cluster", "inv-new").get("status") == "acked", what="CDS inv-new")
        # Listener, routes and cluster are there, endpoints are not: the old route stays in use.
        assert set(calls(mesh, 50)) <= {"v1a", "v1b"}
        snap[EDS]["inv-new"] = endpoints("inv-new", [upstreams["v3"].address])
        cp.set(snap)
        wait_until(lambda: calls(mesh, 1) == Counter({"v3": 1}), what="the complete new config")


# -- ACK / NACK -----------------------------------------------------------------------


def test_nack_keeps_last_good_and_recovers(cp, upstreams) -> None:
    good = inventory(upstreams, routes=[route("/", "inv-v1")])
    cp.set(good)
    with mesh_for(cp) as mesh:
        assert set(calls(mesh, 5)) <= {"v1a", "v1b"}
        bad_route = route(regex="(", cluster="inv-v2")
        bad = merge(good, {RDS: {"inventory-routes": rc_proto("inventory-routes", ["*"], [bad_route])}})
        version = cp.set(bad)
        nack = wait_until(lambda: [r for r in cp.nacks("meshlib") if r.type_url == RDS], what="a NACK")[-1]
        assert "inventory-routes" in nack.error and "regular expression" in nack.error
        assert nack.version != version  # a NACK carries the previous accepted version
        st = status_of(mesh, "route_config", "inventory-routes")
        assert st["status"] == "nacked-but-cached" and "regular expression" in st["error"]
        assert set(calls(mesh, 20)) <= {"v1a", "v1b"}  # still the last good routes
        fixed = merge(good, {RDS: {"inventory-routes": rc_proto("inventory-routes", ["*"], [route("/", "inv-v2")])}})
        cp.set(fixed)
        wait_until(lambda: calls(mesh, 1) == Counter({"v2": 1}), what="recovery")
        assert status_of(mesh, "route_config", "inventory-routes")["status"] == "acked"


def test_partly_invalid_response_uses_the_valid_resources(cp, upstreams) -> None:
    snap = inventory(upstreams, routes=[route("/", "inv-v1")])
    cp.set(snap)
    with mesh_for(cp) as mesh:
        bad = cluster("inv-v2", lb=cluster_pb2_Cluster().LOAD_BALANCING_POLICY_CONFIG)  # names no policy: invalid
        good = cluster("inv-v1", lb=cluster_pb2_Cluster().LEAST_REQUEST)
        cp.set(merge(snap, {CDS: {"inv-v1": good, "inv-v2": bad}}, {RDS: {"inventory-routes": rc_proto("inventory-routes", ["*"], [route("/", weighted=[("inv-v1", 1), ("inv-v2", 1)])])}}))
        wait_until(lambda: mesh.stats()["services"].get("inv-v1", {}).get("policy") == "least_request", what="the valid cluster applied")
        assert status_of(mesh, "cluster", "inv-v2")["status"] == "nacked"  # never cached: its calls fail, inv-v1's go on
        assert any(r.type_url == CDS and "inv-v2" in r.error for r in cp.nacks())


def cluster_pb2_Cluster():
    from envoy.config.cluster.v3 import cluster_pb2

    return cluster_pb2.Cluster


@pytest.mark.parametrize("what", ["garbage", "wrong type", "no name"])
def test_bad_protos_on_the_wire_are_nacked_and_serving_goes_on(cp, upstreams, what) -> None:
    from google.protobuf import any_pb2

    snap = inventory(upstreams, routes=[route("/", "inv-v1")])
    cp.set(snap)
    with mesh_for(cp) as mesh:
        junk = {
            "garbage": any_pb2.Any(type_url=LDS, value=b"\xff\xff\xff\x07garbage"),
            "wrong type": any_pb2.Any(type_url=CDS, value=b""),
            "no name": any_pb2.Any(type_url=LDS, value=b""),
        }[what]
        cp.set(merge(snap, {LDS: {"junk": junk}}))
        wait_until(lambda: cp.nacks("meshlib"), what="a NACK")
        assert set(calls(mesh, 10)) <= {"v1a", "v1b"}
        cp.set(inventory(upstreams, routes=[route("/", "inv-v2")]))
        wait_until(lambda: calls(mesh, 1) == Counter({"v2": 1}), what="the next good update")


# -- deletion and does-not-exist ---------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True])
def test_listener_deletion(cp, upstreams, strict) -> None:
    snap = inventory(upstreams, routes=[route("/", "inv-v1")])
    cp.set(snap)
    with mesh_for(cp, features=["fail_on_data_errors"] if strict else []) as mesh:
        assert set(calls(mesh, 5)) <= {"v1a", "v1b"}
        cp.set({t: v for t, v in snap.items() if t != LDS})
        if strict:
            wait_until(lambda: not mesh.routed("inventory"), what="the listener dropped")
            assert status_of(mesh, "listener", "inventory")["status"] == "does-not-exist"
        else:
            wait_until(lambda: status_of(mesh, "listener", "inventory").get("deleted_by_server"), what="the deletion seen")
            assert set(calls(mesh, 10)) <= {"v1a", "v1b"}  # cached copy kept (gRFC A88)
            assert status_of(mesh, "listener", "inventory")["status"] == "acked"


def test_does_not_exist_timer_runs_only_while_connected(cp) -> None:
    cp.set({})
    r = XdsResolver(parse_bootstrap(bootstrap(cp.address)), ["missing"], does_not_exist_timeout=0.5)
    r.start(lambda snap: None)
    try:
        t0 = time.monotonic()
        wait_until(lambda: r.status()["connected"], what="connected")
        time.sleep(0.3)
        assert r.status()["resources"][0]["status"] == "requested"
        wait_until(lambda: r.status()["resources"][0]["status"] == "does-not-exist", timeout=3, what="does-not-exist")
        assert time.monotonic() - t0 >= 0.5
        assert r.wait("missing", 1)  # a listener known not to exist is resolved
    finally:
        r.close()
    dead = ControlPlane()
    dead.stop()  # nothing listens there
    r = XdsResolver(parse_bootstrap(bootstrap(dead.address)), ["missing"], does_not_exist_timeout=0.2, backoff_base=0.05, backoff_max=0.1)
    r.start(lambda snap: None)
    try:
        time.sleep(0.6)
        assert r.status()["resources"][0]["status"] == "requested"  # no timer while not connected
    finally:
        r.close()


# -- servers ---------------------------------------------------------------------------


def test_fallback_to_the_second_server_and_back(upstreams) -> None:
    primary, secondary = ControlPlane(), ControlPlane()
    port = primary.port
    primary.stop()
    secondary.set(inventory(upstreams, routes=[route("/", "inv-v2")]))
    try:
        with mesh_for(secondary, primary.address, secondary.address) as mesh:
            assert calls(mesh, 3) == Counter({"v2": 3})
            assert mesh.xds_status()["server"] == secondary.address
            primary = ControlPlane(port)
            primary.set(inventory(upstreams, routes=[route("/", "inv-v1")]))
            wait_until(lambda: mesh.xds_status()["server"] == primary.address and mesh.xds_status()["connected"], timeout=10, what="back on the primary")
            wait_until(lambda: set(calls(mesh, 3)) <= {"v1a", "v1b"}, what="the primary's config")
    finally:
        primary.stop()
        secondary.stop()


def test_control_plane_outage_and_restart_with_no_failed_call(cp, upstreams) -> None:
    cp.set(inventory(upstreams, routes=[route("/", weighted=[("inv-v1", 1), ("inv-v2", 1)])]))
    with mesh_for(cp) as mesh:
        echo = mesh.grpc_channel("inventory").unary_unary(ECHO)
        failures: list[BaseException] = []
        done = threading.Event()
        count = [0]

        def traffic() -> None:
            while not done.is_set():
                try:
                    echo(b"x", timeout=5)
                    count[0] += 1
                except BaseException as exc:  # noqa: BLE001 - every failure counts
                    failures.append(exc)
                time.sleep(0.005)

        threads = [threading.Thread(target=traffic) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            versions_before = mesh.xds_status()["versions"]
            cp.stop()
            seen = len(cp.requests)
            time.sleep(OUTAGE)
            assert not mesh.xds_status()["connected"]
            cp.start()
            wait_until(lambda: mesh.xds_status()["connected"], timeout=10, what="reconnected")
            # Re-subscribed with the versions it had: the first request on the new stream carries them.
            first = wait_until(lambda: [r for r in cp.requests[seen:] if r.type_url == LDS and not r.nonce], what="re-subscription")[0]
            assert first.version == versions_before["listener"] and first.names == ("inventory",)
            cp.set(inventory(upstreams, routes=[route("/", "inv-v2")]))
            wait_until(lambda: calls(mesh, 1) == Counter({"v2": 1}), what="updates after the restart")
        finally:
            done.set()
            for t in threads:
                t.join()
        assert not failures, failures[:3]
        assert count[0] > 100


# -- scale --------------------------------------------------------------------------------


def test_ten_thousand_endpoint_update(cp, upstreams) -> None:
    cp.set(inventory(upstreams, routes=[route("/", "inv-v1")]))
    with mesh_for(cp) as mesh:
        big = [f"127.0.0.{1 + i // 60000}:{1024 + i % 60000}" for i in range(9_999)] + [upstreams["v1a"].address]
        snap = inventory(upstreams, routes=[route("/", "inv-v1")], clusters={"inv-v1": big, "inv-v2": [upstreams["v2"].address]})
        t0 = time.monotonic()
        cp.set(snap)
        wait_until(lambda: len(mesh.endpoints("inv-v1")) == 10_000, timeout=20, what="10,000 endpoints")
        assert time.monotonic() - t0 < 10


# -- routes from configuration, without xDS ------------------------------------------------


def test_routes_from_plain_configuration(agents) -> None:
    v1, v2 = agents(1, "v1")[0], agents(1, "v2")[0]
    env = {
        "MESHLIB_SERVICES__SUMMARIZER_V1__ENDPOINTS": v1.address,
        "MESHLIB_SERVICES__SUMMARIZER_V2__ENDPOINTS": v2.address,
        "MESHLIB_SERVICES__SUMMARIZER__ROUTES": "header:x-model-version=v2 -> summarizer-v2; prefix:/v2/ -> summarizer-v2; -> summarizer-v1=90,summarizer-v2=10",
        "MESHLIB_LB_POLICY": "round_robin",
    }
    with meshlib.Mesh.from_env(env) as mesh:
        s = mesh.requests_session()
        got = Counter(s.get("http://summarizer/x").json()["agent"] for _ in range(400))
        assert abs(got[v2.name] / 400 - 0.10) < 0.05, got
        assert s.get("http://summarizer/x", headers={"X-Model-Version": "v2"}).json()["agent"] == v2.name
        assert s.get("http://summarizer/v2/items").json()["agent"] == v2.name
        assert mesh.urllib3_pool().request("GET", "http://summarizer/v2/x").json()["agent"] == v2.name
        import httpx  # noqa: F401 - the httpx extra is part of the test extra

        with mesh.httpx_client() as client:
            assert client.get("http://summarizer/v2/x").json()["agent"] == v2.name

        @mesh.call("summarizer")
        def who(ep: meshlib.Endpoint) -> str:
            return requests.get(f"http://{ep.address}/").json()["agent"]

        assert {who() for _ in range(60)} == {v1.name, v2.name}
        assert "summarizer" in mesh.services()


# -- status ---------------------------------------------------------------------------


def test_xds_status_and_cli(cp, upstreams, capsys, monkeypatch) -> None:
    from meshlib.cli import main

    cp.set(inventory(upstreams, routes=[route("/", "inv-v1")]))
    doc = json.dumps(bootstrap(cp.address))
    with mesh_for(cp) as mesh:
        st = mesh.xds_status()
        assert st["enabled"] and st["connected"] and st["server"] == cp.address
        kinds = {(r["type"], r["name"]): r["status"] for r in st["resources"]}
        assert kinds == {("listener", "inventory"): "acked", ("route_config", "inventory-routes"): "acked",
                         ("cluster", "inv-v1"): "acked", ("endpoints", "inv-v1"): "acked"}  # fmt: skip
    monkeypatch.setenv("MESHLIB_DISCOVERY", "xds")
    monkeypatch.setenv("MESHLIB_XDS_BOOTSTRAP_CONFIG", doc)
    monkeypatch.setenv("MESHLIB_XDS_LISTENERS", "inventory")
    assert main(["xds", "status"]) == 0
    out = capsys.readouterr().out
    assert f"xds server {cp.address} (connected)" in out and "route_config" in out and "acked" in out
    assert main(["xds", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resources"]
    with meshlib.Mesh() as plain:
        assert plain.xds_status() == {"enabled": False}


def test_route_retry_timeout_and_fault_apply_on_grpc_channels(cp, upstreams) -> None:
    import grpc as grpc_mod
    from envoy.extensions.filters.http.fault.v3 import fault_pb2

    from .xds_control_plane import pack

    flaky = GrpcAgent("flaky")
    try:
        flaky.fail(grpc_mod.StatusCode.UNAVAILABLE, times=1)
        retried = route("/meshtest.Agent/Echo", "inv-flaky", headers=[header("x-retry", present=True)])
        retried.route.retry_policy.retry_on = "unavailable"
        retried.route.retry_policy.num_retries.value = 2
        aborted = route("/", "inv-v1", headers=[header("x-abort", present=True)])
        fault = fault_pb2.HTTPFault()
        fault.abort.grpc_status = 8  # RESOURCE_EXHAUSTED
        fault.abort.percentage.numerator = 100
        aborted.typed_per_filter_config["envoy.filters.http.fault"].CopyFrom(pack(fault))
        snap = inventory(upstreams, routes=[retried, aborted, route("/", "inv-flaky")],
                         clusters={"inv-flaky": [flaky.address], "inv-v1": [upstreams["v1a"].address]})  # fmt: skip
        fault_filter = __import__("envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2", fromlist=["x"])
        lst = snap[LDS]["inventory"]("meshlib")
        hcm = fault_filter.HttpConnectionManager()
        lst.api_listener.api_listener.Unpack(hcm)
        hcm.http_filters.insert(0, fault_filter.HttpFilter(name="envoy.filters.http.fault", typed_config=pack(fault_pb2.HTTPFault())))
        lst.api_listener.api_listener.Pack(hcm)
        snap[LDS]["inventory"] = lst
        cp.set(snap)
        with mesh_for(cp) as mesh:
            echo = mesh.grpc_channel("inventory").unary_unary(ECHO)
            assert echo(b"x", timeout=5, metadata=[("x-retry", "1")]) == b"flaky"  # the route's retry policy retried UNAVAILABLE
            with pytest.raises(grpc_mod.RpcError) as info:
                echo(b"x", timeout=5, metadata=[("x-abort", "1")])
            assert info.value.code() == grpc_mod.StatusCode.RESOURCE_EXHAUSTED  # the route's fault
            flaky.fail(grpc_mod.StatusCode.UNAVAILABLE, times=1)
            with pytest.raises(grpc_mod.RpcError):
                echo(b"x", timeout=5)  # the default route has no retry policy for UNAVAILABLE
            seen = flaky.behaviour.seen[-1]
            assert seen.authority == "inventory"  # the routed name stays the :authority
    finally:
        flaky.stop()


def test_cluster_names_in_any_spelling_get_their_settings(cp, upstreams) -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    name = "outbound|8080||Inventory_V1.default"
    snap = inventory(upstreams, routes=[route("/", name)], clusters={name: [upstreams["v1a"].address, upstreams["v1b"].address]})
    snap[CDS][name] = cluster(name, lb=cluster_pb2.Cluster.LEAST_REQUEST)
    cp.set(snap)
    with mesh_for(cp) as mesh:
        assert set(calls(mesh, 20)) == {"v1a", "v1b"}
        services = mesh.stats()["services"]
        assert [s["policy"] for n, s in services.items() if "inventory-v1" in n] == ["least_request"]


def test_request_mirroring_is_fire_and_forget(cp, agents, refused_port) -> None:
    main, shadow = agents(1, "main")[0], agents(1, "shadow")[0]
    r = route("/", "web-main")
    m = r.route.request_mirror_policies.add()
    m.cluster = "web-shadow"
    dead = r.route.request_mirror_policies.add()
    dead.cluster = "web-dead"  # a mirror that refuses connections never fails the real call
    snap = service("web", {"web-main": [main.address], "web-shadow": [shadow.address], "web-dead": [f"127.0.0.1:{refused_port}"]}, routes=[r])
    cp.set(snap)
    with mesh_for(cp, listeners="web") as mesh:
        s = mesh.requests_session()
        for i in range(5):
            assert s.post("http://web/items", data=b"payload").json()["agent"] == main.name
        wait_until(lambda: shadow.hits == 5, what="5 shadow copies")
        seen = shadow.behaviour.seen[-1]
        assert seen["host"] == "web-shadow"
        assert main.hits == 5
        assert mesh.urllib3_pool().request("POST", "http://web/items", body=b"p").json()["agent"] == main.name
        wait_until(lambda: shadow.hits == 6, what="a shadow copy from urllib3")


@pytest.mark.parametrize("transient", [False, True])
def test_resource_timer_on_a_manual_clock(cp, transient) -> None:
    from meshlib.clock import ManualClock

    cp.set({})
    clock = ManualClock()
    features = ["resource_timer_is_transient_error"] if transient else []
    r = XdsResolver(parse_bootstrap(bootstrap(cp.address, features=features)), ["missing"], clock=clock, does_not_exist_timeout=15)
    r.start(lambda snap: None)
    try:
        wait_until(lambda: r.status()["connected"], what="connected")
        clock.advance(14.9)
        r.client.check_timers()
        assert r.status()["resources"][0]["status"] == "requested"
        clock.advance(0.2)
        r.client.check_timers()
        assert r.status()["resources"][0]["status"] == ("requested" if transient else "does-not-exist")
        clock.advance(15)
        r.client.check_timers()
        assert r.status()["resources"][0]["status"] == ("timeout" if transient else "does-not-exist")
    finally:
        r.close()


async def test_routed_grpc_aio_channel(cp, upstreams) -> None:
    cp.set(inventory(upstreams, routes=[route("/", cluster="inv-v2", headers=[header("x-model-version", "v2")]),
                                        route("/", weighted=[("inv-v1", 50), ("inv-v2", 50)])]))  # fmt: skip
    with mesh_for(cp) as mesh:
        async with mesh.grpc_aio_channel("inventory") as ch:
            echo = ch.unary_unary(ECHO)
            got = Counter([(await echo(b"x", timeout=5)).decode() for _ in range(200)])
            assert set(got) == {"v1a", "v1b", "v2"} and 60 < got["v2"] < 140, got
            assert {(await echo(b"x", metadata=(("x-model-version", "v2"),))).decode() for _ in range(10)} == {"v2"}


def test_one_service_from_xds_beside_static_ones(cp, upstreams, tmp_path, agents) -> None:
    cp.set(inventory(upstreams, routes=[route("/", "inv-v2")]))
    f = tmp_path / "bootstrap.json"
    f.write_text(json.dumps(bootstrap(cp.address)))
    other = agents(1, "static")[0]
    env = {
        "GRPC_XDS_BOOTSTRAP": str(f),  # gRPC's own variable is honoured
        "MESHLIB_SERVICES__INV__XDS_LISTENER": "inventory",
        "MESHLIB_SERVICES__PLAIN__ENDPOINTS": other.address,
    }
    with meshlib.Mesh.from_env(env) as mesh:
        assert mesh.config.discovery == "static"
        assert mesh.grpc_channel("inv").unary_unary(ECHO)(b"x", timeout=5) == b"v2"
        assert mesh.requests_session().get("http://plain/").json()["agent"] == other.name
        assert mesh.xds_status()["listeners"] == ["inventory"]
