"""Every client originates mTLS for a TLS_MODE=mtls service while the
application keeps http://svc/... and mesh.grpc_channel("svc"): requests,
urllib3, httpx (sync and async), gRPC (sync and aio). Impostors are refused
with nothing sent in plaintext; rotation (files and the Workload API) mid-
traffic fails no call and new connections carry the new serial."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import grpc
import httpx
import pytest
import requests
import urllib3

import meshlib
from meshlib.testing.spiffe_ca import SpiffeCA

from .mtls_helpers import INVENTORY, PLANNER, ca, files, grpc_echo_server, RawRecorder, server_mesh, TlsAgent  # noqa: F401 (fixtures)
from .spiffe.double import WorkloadAPIDouble



@pytest.fixture
def agents(server_mesh):
    made = [TlsAgent(server_mesh.server_ssl_context(), name=f"a{i}") for i in range(2)]
    yield made
    for a in made:
        a.close()


def _client_mesh(ca, tmp_path, endpoints, ids=INVENTORY, **extra):
    cfg = {**files(ca.issue(PLANNER), tmp_path, "planner"), "tls_watch_interval": "50ms", **extra,
           "services": {"inventory": {"endpoints": ",".join(endpoints), "tls_mode": "mtls", "tls_spiffe_ids": ids}}}  # fmt: skip
    return meshlib.Mesh(config=cfg)


def _get_all(mesh):
    """GET http://inventory/who through every HTTP client; the server's JSON answers."""
    out = {}
    with mesh.requests_session() as s:
        out["requests"] = s.get("http://inventory/who", timeout=5).json()
    pool = mesh.urllib3_pool()
    out["urllib3"] = json.loads(pool.request("GET", "http://inventory/who").data)
    pool.clear()
    with mesh.httpx_client() as c:
        out["httpx"] = c.get("http://inventory/who").json()

    async def go():
        async with mesh.httpx_async_client() as c:
            return (await c.get("http://inventory/who")).json()

    out["httpx-async"] = asyncio.run(go())
    return out


def test_every_http_client_originates_mtls_for_http_urls(ca, tmp_path, agents) -> None:
    mesh = _client_mesh(ca, tmp_path, [a.address for a in agents])
    try:
        for client, answer in _get_all(mesh).items():
            assert answer["peer"] == PLANNER and answer["client_cert"], client
            assert answer["path"] == "/who"
        # pass-through URLs are never touched: a plain http server elsewhere still gets plaintext
        rec = RawRecorder(None)
        try:
            with mesh.requests_session() as s:
                with pytest.raises(requests.exceptions.RequestException):
                    s.get(f"http://{rec.address}/plain", timeout=0.5)
            assert rec.raw.startswith(b"GET /plain HTTP/1.1")
        finally:
            rec.close()
    finally:
        mesh.close()


def test_an_impostor_is_refused_by_every_client_with_nothing_in_plaintext(ca, tmp_path) -> None:
    import ssl

    impostor = ca.issue("spiffe://example.org/impostor", dns=["inventory"])
    paths = impostor.write(tmp_path / "impostor")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(paths[0], paths[1])
    rec = RawRecorder(sctx)
    mesh = _client_mesh(ca, tmp_path, [rec.address])
    try:
        errors = []
        with mesh.requests_session() as s:
            with pytest.raises(requests.exceptions.SSLError) as e:
                s.get("http://inventory/secret-path", timeout=5)
            errors.append(str(e.value))
        with pytest.raises(urllib3.exceptions.MaxRetryError) as e:
            mesh.urllib3_pool().request("GET", "http://inventory/secret-path")
        errors.append(str(e.value))
        with mesh.httpx_client() as c, pytest.raises(httpx.ConnectError) as e:
            c.get("http://inventory/secret-path")
        errors.append(str(e.value))

        async def go():
            async with mesh.httpx_async_client() as c:
                await c.get("http://inventory/secret-path")

        with pytest.raises(httpx.ConnectError) as e:
            asyncio.run(go())
        errors.append(str(e.value))
        for text in errors:
            assert "spiffe://example.org/impostor" in text and INVENTORY in text, text
        time.sleep(0.1)
        assert rec.plain == b"" and b"secret-path" not in rec.raw and rec.connections >= 4
        ep = mesh.stats()["services"]["inventory"]["endpoints"][0]
        assert ep["failures"] >= 4 and ep["successes"] == 0
    finally:
        mesh.close()
        rec.close()


def test_file_rotation_mid_traffic_fails_no_call_and_new_connections_use_the_new_serial(ca, tmp_path, agents) -> None:
    mesh = _client_mesh(ca, tmp_path, [a.address for a in agents])
    failures: list[BaseException] = []
    done = threading.Event()
    calls = [0]

    def traffic(make):
        client = make()
        try:
            while not done.is_set():
                try:
                    r = client.get("http://inventory/who", timeout=5)
                    assert r.status_code == 200
                    calls[0] += 1
                except BaseException as exc:  # noqa: BLE001 - counted, then asserted
                    failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=traffic, args=(f,)) for f in (mesh.requests_session, mesh.httpx_client)]
    try:
        for t in threads:
            t.start()
        while calls[0] < 20:
            time.sleep(0.01)
        new = ca.issue(PLANNER)
        new.write(tmp_path / "planner")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(s == new.serial for a in agents for s in a.serials[-4:]):
            time.sleep(0.02)
        seen = calls[0]
        while calls[0] < seen + 20:
            time.sleep(0.01)
        marks = [len(a.serials) for a in agents]
        seen = calls[0]
        while calls[0] < seen + 20:
            time.sleep(0.01)
        tls = mesh.stats()["tls"]
        assert tls["serial"] == format(new.serial, "x") and tls["rotations"] == 1 and tls["state"] == "ok"
    finally:
        done.set()
        for t in threads:
            t.join(10)
        mesh.close()
    assert failures == []
    serials = [s for a in agents for s in a.serials]
    assert new.serial in serials
    # connections made under the old certificate are not reused after the rotation
    after = [s for a, mark in zip(agents, marks) for s in a.serials[mark:]]
    assert len(after) >= 20 and set(after) == {new.serial}


def test_grpc_channels_sync_and_aio_originate_mtls_and_follow_rotation(ca, tmp_path, server_mesh) -> None:
    server, port, seen = grpc_echo_server(server_mesh.grpc_server_credentials())
    mesh = _client_mesh(ca, tmp_path, [f"127.0.0.1:{port}"])
    try:
        ch = mesh.grpc_channel("inventory")
        who = ch.unary_unary("/mtls.Echo/Who")
        assert who(b"x", timeout=5) == PLANNER.encode() + b"|x"

        async def aio_call():
            ach = mesh.grpc_aio_channel("inventory")
            try:
                return await ach.unary_unary("/mtls.Echo/Who")(b"y", timeout=5)
            finally:
                await ach.close()

        assert asyncio.run(aio_call()) == PLANNER.encode() + b"|y"
        first = seen[-1][1]
        new = ca.issue(PLANNER)
        new.write(tmp_path / "planner")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert who(b"z", timeout=5).startswith(PLANNER.encode())
            if seen[-1][1] == new.serial:
                break
            time.sleep(0.02)
        assert seen[-1][1] == new.serial != first
        ch.close()
    finally:
        mesh.close()
        server.stop(0)


def test_grpc_channel_refuses_an_impostor(ca, tmp_path) -> None:
    impostor = meshlib.Mesh(config=files(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"))
    server, port, seen = grpc_echo_server(impostor.grpc_server_credentials())
    mesh = _client_mesh(ca, tmp_path, [f"127.0.0.1:{port}"])
    try:
        ch = mesh.grpc_channel("inventory")
        with pytest.raises(Exception) as e:
            ch.unary_unary("/mtls.Echo/Who")(b"x", timeout=5)
        assert "spiffe://example.org/impostor" in str(e.value)
        assert seen == []
        ch.close()
    finally:
        mesh.close()
        impostor.close()
        server.stop(0)


def test_workload_api_rotation_through_the_mesh(ca, tmp_path, agents) -> None:
    api = WorkloadAPIDouble(str(tmp_path / "agent.sock"), ca.issue(PLANNER)).start()
    mesh = meshlib.Mesh.from_env({
        "SPIFFE_ENDPOINT_SOCKET": api.address,
        "MESHLIB_SERVICES__INVENTORY__ENDPOINTS": ",".join(a.address for a in agents),
        "MESHLIB_SERVICES__INVENTORY__TLS_MODE": "mtls",
        "MESHLIB_SERVICES__INVENTORY__TLS_SPIFFE_IDS": "spiffe://example.org",
    })  # fmt: skip
    try:
        s = mesh.requests_session()
        assert s.get("http://inventory/who", timeout=5).json()["peer"] == PLANNER
        new = ca.issue(PLANNER)
        api.rotate(new)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert s.get("http://inventory/who", timeout=5).status_code == 200
            if any(x == new.serial for a in agents for x in a.serials[-2:]):
                break
            time.sleep(0.02)
        assert any(x == new.serial for a in agents for x in a.serials)
        st = mesh.stats()["tls"]
        assert st["source"] == "spiffe" and st["serial"] == format(new.serial, "x")
    finally:
        mesh.close()
        api.stop()


def test_start_up_errors_and_secrets(ca, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    svid = ca.issue(PLANNER)
    cert, key, bundle = svid.write(tmp_path / "p")
    with pytest.raises(meshlib.ConfigError) as e:
        meshlib.Mesh.from_env({"MESHLIB_TLS_CERT": cert, "MESHLIB_TLS_CA": bundle})
    assert "MESHLIB_TLS_KEY" in str(e.value)
    with pytest.raises(meshlib.ConfigError) as e:
        meshlib.Mesh.from_env({"MESHLIB_SERVICES__INVENTORY__TLS_MODE": "mtls", "MESHLIB_SERVICES__INVENTORY__ENDPOINTS": "127.0.0.1:1"})
    assert "MESHLIB_SERVICES__INVENTORY__TLS_MODE" in str(e.value)
    with pytest.raises(meshlib.ConfigError) as e:
        meshlib.Mesh.from_env({"MESHLIB_SERVICES__INVENTORY__TLS_SPIFFE_IDS": "spiffe://Bad/x"})
    with pytest.raises(meshlib.ConfigError) as e:
        meshlib.Mesh.from_env({"MESHLIB_SPIFFE_ENDPOINT_SOCKET": f"unix://{tmp_path}/none.sock", "MESHLIB_SPIFFE_TIMEOUT": "1s"})
    assert "MESHLIB_SPIFFE_ENDPOINT_SOCKET" in str(e.value)
    mesh = meshlib.Mesh.from_env({"MESHLIB_TLS_CERT": cert, "MESHLIB_TLS_KEY": key, "MESHLIB_TLS_CA": bundle})
    try:
        dump = json.dumps(mesh.stats()) + repr(mesh.config) + repr(mesh) + caplog.text
        assert svid.key_pem.decode() not in dump and "PRIVATE KEY" not in dump
        assert mesh.stats()["tls"]["spiffe_id"] == PLANNER
    finally:
        mesh.close()


def test_allowed_callers_from_the_configuration(ca, tmp_path) -> None:
    server = meshlib.Mesh(config={**files(ca.issue(INVENTORY), tmp_path, "inv"), "allowed_callers": PLANNER})
    agent = TlsAgent(server.server_ssl_context(), allow=server.allowed_callers())
    try:
        ok = _client_mesh(ca, tmp_path, [agent.address])
        intruder = meshlib.Mesh(config={**files(ca.issue("spiffe://example.org/intruder"), tmp_path, "intr"),
                                        "services": {"inventory": {"endpoints": agent.address, "tls_mode": "mtls", "tls_spiffe_ids": INVENTORY}}})  # fmt: skip
        try:
            assert ok.requests_session().get("http://inventory/x", timeout=5).status_code == 200
            assert intruder.requests_session().get("http://inventory/x", timeout=5).status_code == 403
        finally:
            ok.close()
            intruder.close()
    finally:
        agent.close()
        server.close()


def test_credentials_for_a_channel_of_your_own_with_interceptors(ca, tmp_path, server_mesh) -> None:
    server, port, seen = grpc_echo_server(server_mesh.grpc_server_credentials())
    cfg = {**files(ca.issue(PLANNER), tmp_path, "planner"),
           "services": {"inventory": {"endpoints": f"127.0.0.1:{port}", "tls_mode": "mtls"},
                        "checked": {"endpoints": f"127.0.0.1:{port}", "tls_mode": "mtls", "tls_spiffe_ids": INVENTORY},
                        "plain": {"endpoints": f"127.0.0.1:{port}"}}}  # fmt: skip
    mesh = meshlib.Mesh(config=cfg)
    try:
        assert mesh.grpc_credentials("plain") is None
        with pytest.raises(meshlib.MeshError, match="TLS_SPIFFE_IDS"):
            mesh.grpc_credentials("checked")
        own = grpc.secure_channel(f"127.0.0.1:{port}", mesh.grpc_credentials("inventory"), options=[("grpc.ssl_target_name_override", "inventory")])
        ch = grpc.intercept_channel(own, *mesh.grpc_interceptors("inventory"))
        assert ch.unary_unary("/mtls.Echo/Who")(b"o", timeout=5) == PLANNER.encode() + b"|o"
        own.close()
    finally:
        mesh.close()
        server.stop(0)


def test_tls_mode_with_only_a_trust_bundle_checks_the_service_dns_name(ca, tmp_path) -> None:
    from meshlib.security import StaticIdentitySource, TlsProvider, TlsSettings, load_identity
    from meshlib.security.contexts import RotatingServerContext

    def agent_for(svid):
        src = StaticIdentitySource(load_identity(svid.chain_pem, svid.key_pem, svid.bundle_pem))
        return TlsAgent(RotatingServerContext(src.current, require_client_cert=False).context)

    good = agent_for(ca.issue(INVENTORY, dns=["inventory"]))
    wrong_name = agent_for(ca.issue(INVENTORY, dns=["billing"]))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.bundle_pem)
    mesh = meshlib.Mesh(config={"tls_ca": str(bundle), "services": {
        "inventory": {"endpoints": good.address, "tls_mode": "tls"},
        "billing": {"endpoints": wrong_name.address, "tls_mode": "tls"}}})  # fmt: skip
    try:
        s = mesh.requests_session()
        answer = s.get("http://inventory/who", timeout=5).json()
        assert answer["peer"] is None and answer["client_cert"] is False  # tls: no client certificate
        # the endpoint of "billing" presents a certificate for another name: refused
        wrong_name_svc = meshlib.Mesh(config={"tls_ca": str(bundle), "services": {"inventory": {"endpoints": wrong_name.address, "tls_mode": "tls"}}})
        try:
            with pytest.raises(requests.exceptions.SSLError):
                wrong_name_svc.requests_session().get("http://inventory/who", timeout=5)
        finally:
            wrong_name_svc.close()
        assert TlsProvider(TlsSettings()).for_service("x", "tls").ssl_context().verify_mode == 2  # system roots, verified
    finally:
        mesh.close()
        good.close()
        wrong_name.close()


def test_active_health_checks_go_over_the_same_mtls(ca, tmp_path, server_mesh) -> None:
    from meshlib.health.grpc_probe import GrpcHealthProbe  # noqa: F401 - the gRPC probe's module is importable

    good = TlsAgent(server_mesh.server_ssl_context())
    impostor_mesh = meshlib.Mesh(config=files(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"))
    bad = TlsAgent(impostor_mesh.server_ssl_context())
    mesh = _client_mesh(ca, tmp_path, [good.address, bad.address], health_check_path="/healthz", health_check_interval="50ms")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            health = {ep.address: ep.healthy for ep in mesh.endpoints("inventory")}
            if health == {good.address: True, bad.address: False}:
                break
            time.sleep(0.05)
        assert health == {good.address: True, bad.address: False}
        assert PLANNER in good.peers  # the probe presented the workload identity
        assert bad.peers == []  # the impostor never got a request
    finally:
        mesh.close()
        good.close()
        bad.close()
        impostor_mesh.close()


def test_grpc_health_checks_go_over_mtls_with_the_spiffe_pre_check(ca, tmp_path, server_mesh) -> None:
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    def serve(mesh):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_secure_port("127.0.0.1:0", mesh.grpc_server_credentials())
        server.start()
        return server, f"127.0.0.1:{port}"

    impostor_mesh = meshlib.Mesh(config=files(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"))
    good, good_addr = serve(server_mesh)
    bad, bad_addr = serve(impostor_mesh)
    mesh = _client_mesh(ca, tmp_path, [good_addr, bad_addr], health_check_path="", health_check_protocol="grpc", health_check_interval="50ms")
    try:
        want = {good_addr: True, bad_addr: False}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and {ep.address: ep.healthy for ep in mesh.endpoints("inventory")} != want:
            time.sleep(0.05)
        assert {ep.address: ep.healthy for ep in mesh.endpoints("inventory")} == want
    finally:
        mesh.close()
        good.stop(0)
        bad.stop(0)
        impostor_mesh.close()
