"""CSDS: a real grpcio client asks a Mesh's ClientStatusDiscoveryService what
its xDS client holds (what grpcdebug's ``xds status`` does), while the test
control plane changes, breaks and fixes the configuration."""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Callable, Iterator

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

import meshlib
from meshlib.errors import ConfigError
from meshlib.xds.resources import CDS, EDS, LDS, RDS

from .xds_control_plane import ControlPlane, bootstrap, merge, route, service
from .xds_control_plane import route_config as rc_proto


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return got


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    yield plane
    plane.stop()


SNAP = service("inventory", {"inv": ["127.0.0.1:10001", "127.0.0.1:10002"]})


def _mesh(cp: ControlPlane, **extra: Any) -> meshlib.Mesh:
    doc = json.dumps(bootstrap(cp.address, node="csds-node"))
    return meshlib.Mesh(config={"discovery": "xds", "xds_bootstrap_config": doc, "xds_listeners": "inventory", **extra})


def _fetch(address: str) -> csds_pb2.ClientStatusResponse:
    with grpc.insecure_channel(address) as ch:
        return csds_pb2_grpc.ClientStatusDiscoveryServiceStub(ch).FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)


def _by_name(resp: csds_pb2.ClientStatusResponse) -> dict[tuple[str, str], Any]:
    (config,) = resp.config
    return {(g.type_url, g.name): g for g in config.generic_xds_configs}


def test_fetch_client_status_shows_every_resource_acked_then_nacked_then_fixed(cp) -> None:
    version = cp.set(SNAP)
    address = f"127.0.0.1:{_free_port()}"
    before = time.time()
    with _mesh(cp, xds_csds=address):
        resp = _fetch(address)
        assert resp.config[0].node.id == "csds-node" and resp.config[0].node.user_agent_name == "meshlib"
        got = _by_name(resp)
        assert set(got) == {(LDS, "inventory"), (RDS, "inventory-routes"), (CDS, "inv"), (EDS, "inv")}
        for g in got.values():
            assert g.client_status == dump.ACKED and g.version_info == version and not g.HasField("error_state")
            assert before - 1 <= g.last_updated.ToNanoseconds() / 1e9 <= time.time() + 1

        bad = merge(SNAP, {RDS: {"inventory-routes": rc_proto("inventory-routes", ["*"], [route(regex="(", cluster="inv")])}})
        cp.set(bad)
        g = wait_until(lambda: (r := _by_name(_fetch(address)).get((RDS, "inventory-routes"))) is not None and r.client_status == dump.NACKED and r,
                       what="a NACK in CSDS")  # fmt: skip
        assert "regular expression" in g.error_state.details and g.version_info == version  # the cached version is still the one in use
        assert _by_name(_fetch(address))[(LDS, "inventory")].client_status == dump.ACKED

        fixed = cp.set(merge(SNAP, {RDS: {"inventory-routes": rc_proto("inventory-routes", ["*"], [route("/", "inv")])}}))
        g = wait_until(lambda: (r := _by_name(_fetch(address))[(RDS, "inventory-routes")]).version_info == fixed and r, what="the fix in CSDS")
        assert g.client_status == dump.ACKED and not g.HasField("error_state")
    with pytest.raises(grpc.RpcError) as err:  # closed with the mesh
        _fetch(address)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_stream_client_status_answers_each_request_and_shows_a_missing_resource(cp) -> None:
    cp.set({LDS: SNAP[LDS], RDS: SNAP[RDS], CDS: SNAP[CDS]})  # no endpoints yet
    address = f"127.0.0.1:{_free_port()}"
    with _mesh(cp, xds_csds=address, xds_wait="0s", xds_does_not_exist_timeout="300ms"):
        with grpc.insecure_channel(address) as ch:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(ch)
            answers = list(stub.StreamClientStatus(iter([csds_pb2.ClientStatusRequest()] * 3), timeout=5))
            assert len(answers) == 3
            missing = lambda: _by_name(stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)).get((EDS, "inv"))  # noqa: E731
            wait_until(lambda: (g := missing()) is not None and g.client_status == dump.DOES_NOT_EXIST, what="EDS inv does not exist")


def test_csds_is_off_by_default_and_loopback_only_unless_allowed(cp) -> None:
    from meshlib.config import load_config

    cp.set(SNAP)
    with _mesh(cp) as mesh:
        assert not [a for a in mesh._attached if type(a).__name__ == "CsdsServer"]
    with pytest.raises(ConfigError) as err:
        load_config(environ={"MESHLIB_XDS_CSDS": "0.0.0.0:18001"})
    assert "MESHLIB_XDS_CSDS" in str(err.value) and "MESHLIB_ADMIN_ALLOW_REMOTE" in str(err.value)
    assert load_config(environ={"MESHLIB_XDS_CSDS": "0.0.0.0:18001", "MESHLIB_ADMIN_ALLOW_REMOTE": "true"}).xds.xds_csds == "0.0.0.0:18001"


def test_csds_without_xds_answers_with_no_client() -> None:
    address = f"127.0.0.1:{_free_port()}"
    with meshlib.Mesh(config={"xds_csds": address}):
        assert list(_fetch(address).config) == []
