"""The SPIFFE Workload API as an identity source: py-spiffe talking to a
double of the standard API on a Unix socket (tests/spiffe/double.py)."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from meshlib.errors import ConfigError
from meshlib.security.workload import SpiffeIdentitySource, socket_address
from meshlib.testing.spiffe_ca import SpiffeCA

from .spiffe.double import WorkloadAPIDouble, messages


@pytest.fixture(scope="module")
def ca() -> SpiffeCA:
    return SpiffeCA("example.org")


@pytest.fixture
def api(ca, tmp_path):
    d = WorkloadAPIDouble(str(tmp_path / "agent.sock"), ca.issue("spiffe://example.org/planner")).start()
    yield d
    d.stop()


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def test_the_double_requires_the_security_header(api) -> None:
    m = messages()
    ch = grpc.insecure_channel(api.address)
    try:
        call = ch.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID", request_serializer=lambda x: x.SerializeToString(),
                               response_deserializer=m["X509SVIDResponse"].FromString)  # fmt: skip
        with pytest.raises(grpc.RpcError) as e:
            next(iter(call(m["X509SVIDRequest"](), timeout=5)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        first = next(iter(call(m["X509SVIDRequest"](), timeout=5, metadata=[("workload.spiffe.io", "true")])))
        assert first.svids[0].spiffe_id == "spiffe://example.org/planner"
    finally:
        ch.close()


def test_identity_and_rotation_from_the_workload_api(ca, api) -> None:
    src = SpiffeIdentitySource(api.path, timeout=5)
    try:
        ident = src.current()
        assert ident.spiffe_id == "spiffe://example.org/planner" and ident.source == "spiffe"
        assert all(md.get("workload.spiffe.io") == "true" for md in api.calls)
        nxt = ca.issue("spiffe://example.org/planner")
        api.rotate(nxt)
        assert _wait(lambda: src.current().serial == nxt.serial)
        st = src.status()
        assert st["state"] == "ok" and st["rotations"] >= 1 and st["socket"] == "unix://" + api.path
        assert "PRIVATE" not in json.dumps(st)
        # an expired SVID pushed by the agent is refused; the last good identity stays
        api.rotate(ca.issue("spiffe://example.org/planner", lifetime=-10))
        assert _wait(lambda: src.status()["state"] == "stale")
        assert src.current().serial == nxt.serial
    finally:
        src.close()


def test_an_unreachable_workload_api_at_start_up_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as e:
        SpiffeIdentitySource(str(tmp_path / "nothing.sock"), timeout=1)
    assert e.value.name == "MESHLIB_SPIFFE_ENDPOINT_SOCKET"
    assert socket_address("/run/agent.sock") == "unix:///run/agent.sock"


def test_an_agent_restart_keeps_the_identity_and_reconnects(ca, tmp_path) -> None:
    path = str(tmp_path / "agent.sock")
    api = WorkloadAPIDouble(path, ca.issue("spiffe://example.org/planner")).start()
    src = SpiffeIdentitySource(path, timeout=5, retry_interval=0.05)
    try:
        before = src.current().serial
        api.stop()
        time.sleep(0.3)
        assert src.current().serial == before
        nxt = ca.issue("spiffe://example.org/planner")
        api = WorkloadAPIDouble(path, nxt).start()
        assert _wait(lambda: src.current().serial == nxt.serial, timeout=20)
    finally:
        src.close()
        api.stop()
