"""A server that presents the wrong identity (a SPIFFE ID not in
TLS_SPIFFE_IDS, a certificate from another trust domain, a host name not
in its certificate) is a local-origin failure for outlier detection, as a
connect failure is (Envoy's split_external_local_origin_errors): every
client's attempts count towards consecutive_local_origin_failure, the
endpoint is ejected for it, and the calls that hit it are not retried on it.
Real TLS servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import ssl

import grpc
import pytest

import meshlib
from meshlib.testing.spiffe_ca import SpiffeCA

from .mtls_helpers import INVENTORY, PLANNER, ca, files, grpc_echo_server, TlsAgent  # noqa: F401 (fixtures)

OUTLIER = {"split_external_local_origin_errors": "true", "consecutive_local_origin_failure": "3", "max_ejection_percent": "50",
           "base_ejection_time": "60s", "interval": "60s"}  # fmt: skip


def _server_context(svid, tmp_path, stem) -> ssl.SSLContext:
    cert, key, _ = svid.write(tmp_path / stem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def _mesh(ca, tmp_path, endpoints, *, ids=INVENTORY, split=True, **svc):
    outlier = {("outlier_" + k): v for k, v in OUTLIER.items() if split or k != "split_external_local_origin_errors"}
    service = {"endpoints": ",".join(endpoints), "tls_mode": "mtls", "lb_policy": "round_robin", **svc}
    if ids:
        service["tls_spiffe_ids"] = ids
    return meshlib.Mesh(config={**files(ca.issue(PLANNER), tmp_path, "planner"), **outlier, "services": {"inventory": service}})


def _endpoint(mesh, address):
    return next(e for e in mesh.stats()["services"]["inventory"]["endpoints"] if e["address"] == address)


def _caller(kind, mesh):
    """One GET http://inventory/who through ``kind``: True if it answered 200,
    False if it raised (the raised errors are kept on the function)."""
    if kind == "requests":
        s = mesh.requests_session()

        def call():
            return s.get("http://inventory/who", timeout=5).status_code == 200

        return call, s.close
    if kind == "urllib3":
        pool = mesh.urllib3_pool()
        return (lambda: pool.request("GET", "http://inventory/who").status == 200), pool.clear
    if kind == "httpx":
        c = mesh.httpx_client()
        return (lambda: c.get("http://inventory/who").status_code == 200), c.close
    loop = asyncio.new_event_loop()
    ac = mesh.httpx_async_client()

    def call():
        return loop.run_until_complete(ac.get("http://inventory/who")).status_code == 200

    def close():
        loop.run_until_complete(ac.aclose())
        loop.close()

    return call, close


def _run(call, n):
    results = []
    for _ in range(n):
        try:
            results.append(call())
        except Exception as exc:  # noqa: BLE001 - the refused handshake, asserted below
            results.append(exc)
    return results


@pytest.mark.parametrize("kind", ["requests", "urllib3", "httpx", "httpx-async"])
def test_a_spiffe_id_mismatch_is_a_local_origin_failure_that_ejects_the_endpoint(ca, tmp_path, kind) -> None:
    good_mesh = meshlib.Mesh(config=files(ca.issue(INVENTORY, dns=["inventory"]), tmp_path, "inventory"))
    good = TlsAgent(good_mesh.server_ssl_context(), name="good")
    impostor = TlsAgent(_server_context(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"), name="impostor")
    mesh = _mesh(ca, tmp_path, [good.address, impostor.address])
    call, close = _caller(kind, mesh)
    try:
        first = _run(call, 4)  # round robin: two attempts on each endpoint
        failed = [r for r in first if r is not True]
        assert len(failed) == 2 and all("spiffe://example.org/impostor" in str(r) for r in failed), first
        ep = _endpoint(mesh, impostor.address)
        # counted as local origin, not as a server's 5xx (nor an unclassified error)
        assert ep["consecutive_local_origin_failure"] == 2 and ep["consecutive_5xx"] == 0 and not ep["outlier_ejected"]
        assert ep["failures"] == 2 and ep["requests"] == 2  # not retried on the impostor
        rest = _run(call, 10)
        ep = _endpoint(mesh, impostor.address)
        assert ep["outlier_ejected"] and ep["last_ejection_reason"] == "consecutive_local_origin_failure"
        assert ep["failures"] == 3 and ep["requests"] == 3  # ejected on its third refusal: nothing more sent its way
        od = mesh.stats()["services"]["inventory"]["outlier_detection"]
        assert od["ejections_enforced_consecutive_local_origin_failure"] == 1 and od.get("ejections_enforced_consecutive_5xx", 0) == 0
        assert rest.count(True) == 9 and rest[-5:] == [True] * 5
        assert impostor.peers == []  # no request ever reached it
        assert _endpoint(mesh, good.address)["failures"] == 0
    finally:
        close()
        mesh.close()
        good.close()
        impostor.close()
        good_mesh.close()


def test_without_split_a_refused_certificate_counts_as_a_gateway_failure(ca, tmp_path) -> None:
    """Envoy's unsplit mode maps a local-origin failure to 503: a refused
    certificate (here from another trust domain, so it fails verification
    itself) counts towards consecutive_gateway_failure like a connect failure."""
    stranger = TlsAgent(_server_context(SpiffeCA("other.org").issue("spiffe://other.org/inventory", dns=["inventory"]), tmp_path, "o"))
    mesh = _mesh(ca, tmp_path, [stranger.address], split=False)
    try:
        with mesh.httpx_client() as c:
            for _ in range(2):
                with pytest.raises(Exception, match="certificate verify failed"):
                    c.get("http://inventory/who")
        ep = _endpoint(mesh, stranger.address)
        assert ep["consecutive_gateway_failure"] == 2 and ep["consecutive_5xx"] == 2 and ep["requests"] == 2
        assert stranger.peers == []
    finally:
        mesh.close()
        stranger.close()


def test_grpc_channel_counts_a_spiffe_id_mismatch_as_local_origin(ca, tmp_path) -> None:
    good_mesh = meshlib.Mesh(config=files(ca.issue(INVENTORY, dns=["inventory"]), tmp_path, "inventory"))
    bad_mesh = meshlib.Mesh(config=files(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"))
    good, gport, _ = grpc_echo_server(good_mesh.grpc_server_credentials())
    bad, bport, bad_seen = grpc_echo_server(bad_mesh.grpc_server_credentials())
    mesh = _mesh(ca, tmp_path, [f"127.0.0.1:{gport}", f"127.0.0.1:{bport}"])
    ch = mesh.grpc_channel("inventory")
    try:
        who = ch.unary_unary("/mtls.Echo/Who")
        results = _run(lambda: who(b"x", timeout=5) == PLANNER.encode() + b"|x", 12)
        failed = [r for r in results if r is not True]
        assert len(failed) == 3 and all("spiffe://example.org/impostor" in str(r) for r in failed)
        assert results[-5:] == [True] * 5
        ep = _endpoint(mesh, f"127.0.0.1:{bport}")
        assert ep["outlier_ejected"] and ep["last_ejection_reason"] == "consecutive_local_origin_failure"
        assert ep["requests"] == 3 and ep["consecutive_5xx"] == 0
        assert bad_seen == []
    finally:
        ch.close()
        mesh.close()
        good.stop(0)
        bad.stop(0)
        good_mesh.close()
        bad_mesh.close()


def test_grpc_aio_channel_counts_a_spiffe_id_mismatch_as_local_origin(ca, tmp_path) -> None:
    bad_mesh = meshlib.Mesh(config=files(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"))
    bad, bport, bad_seen = grpc_echo_server(bad_mesh.grpc_server_credentials())
    good_mesh = meshlib.Mesh(config=files(ca.issue(INVENTORY, dns=["inventory"]), tmp_path, "inventory"))
    good, gport, _ = grpc_echo_server(good_mesh.grpc_server_credentials())
    mesh = _mesh(ca, tmp_path, [f"127.0.0.1:{gport}", f"127.0.0.1:{bport}"])

    async def calls():
        ch = mesh.grpc_aio_channel("inventory")
        out = []
        try:
            for _ in range(10):
                try:
                    out.append(await ch.unary_unary("/mtls.Echo/Who")(b"x", timeout=5) == PLANNER.encode() + b"|x")
                except Exception as exc:  # noqa: BLE001 - the refused endpoint, asserted below
                    out.append(exc)
        finally:
            await ch.close()
        return out

    try:
        results = asyncio.run(calls())
        assert len([r for r in results if r is not True]) == 3 and results[-4:] == [True] * 4
        ep = _endpoint(mesh, f"127.0.0.1:{bport}")
        assert ep["outlier_ejected"] and ep["last_ejection_reason"] == "consecutive_local_origin_failure" and ep["requests"] == 3
        assert bad_seen == []
    finally:
        mesh.close()
        good.stop(0)
        bad.stop(0)
        good_mesh.close()
        bad_mesh.close()


def test_grpc_interceptors_never_retry_a_refused_certificate(ca, tmp_path) -> None:
    """On a channel of your own, grpcio refuses a certificate from another
    trust domain; the interceptors read its status as a TLS failure, not as
    the connect failure the default retry_on would retry twice."""
    stranger = meshlib.Mesh(config=files(SpiffeCA("other.org").issue("spiffe://other.org/inventory", dns=["inventory"]), tmp_path, "o"))
    server, port, seen = grpc_echo_server(stranger.grpc_server_credentials(require_client_auth=False))
    mesh = _mesh(ca, tmp_path, [f"127.0.0.1:{port}"], ids="")
    own = grpc.secure_channel(f"127.0.0.1:{port}", mesh.grpc_credentials("inventory"), options=[("grpc.ssl_target_name_override", "inventory")])
    interceptors = mesh.grpc_interceptors("inventory")
    ch = grpc.intercept_channel(own, *interceptors)
    try:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/mtls.Echo/Who")(b"x", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "CERTIFICATE_VERIFY_FAILED" in e.value.details()
        stats = interceptors[0].stats()
        assert stats["attempts"] == 2 and stats["failures"] == 2 and stats.get("retries", 0) == 0
        assert seen == []
    finally:
        own.close()
        mesh.close()
        server.stop(0)
        stranger.close()


def test_grpc_host_name_refused_by_grpcio_is_local_origin_and_not_retried(ca, tmp_path) -> None:
    """Without TLS_SPIFFE_IDS grpcio checks the certificate's host name
    itself; its refusal ("failed to connect ... Hostname Verification Check
    failed") is a TLS failure: local origin, and not retried even though the
    default retry_on retries connect failures."""
    wrong = meshlib.Mesh(config=files(ca.issue(INVENTORY, dns=["elsewhere"]), tmp_path, "wrong"))
    server, port, seen = grpc_echo_server(wrong.grpc_server_credentials())
    mesh = _mesh(ca, tmp_path, [f"127.0.0.1:{port}"], ids="")
    ch = mesh.grpc_channel("inventory")
    try:
        who = ch.unary_unary("/mtls.Echo/Who")
        for n in (1, 2):
            with pytest.raises(grpc.RpcError) as e:
                who(b"x", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            ep = _endpoint(mesh, f"127.0.0.1:{port}")
            assert ep["consecutive_local_origin_failure"] == n and ep["requests"] == n  # one attempt per call
        assert seen == []
    finally:
        ch.close()
        mesh.close()
        server.stop(0)
        wrong.close()


def test_a_retried_call_never_goes_back_to_the_refused_endpoint_in_plaintext(ca, tmp_path) -> None:
    """With retries on every condition, a refused handshake is still not
    retried, and nothing reaches the impostor, in TLS or in plaintext."""
    from .mtls_helpers import RawRecorder

    rec = RawRecorder(_server_context(ca.issue("spiffe://example.org/impostor", dns=["inventory"]), tmp_path, "imp"))
    mesh = _mesh(ca, tmp_path, [rec.address], retry_on="5xx,reset,connect-failure,gateway-error", num_retries="3")
    try:
        with mesh.httpx_client() as c, pytest.raises(Exception, match="impostor"):
            c.get("http://inventory/secret")
        stats = mesh.stats()["services"]["inventory"]
        assert stats["endpoints"][0]["requests"] == 1 and stats.get("retries", 0) == 0
        assert rec.connections == 1 and rec.plain == b"" and b"secret" not in rec.raw
    finally:
        mesh.close()
        rec.close()
    assert json.dumps(stats)  # the stats stay serialisable


def test_grpc_spiffe_pre_check_to_a_dead_endpoint_is_a_connect_failure_retried_elsewhere(ca, tmp_path) -> None:
    """With TLS_SPIFFE_IDS, meshlib's own verifying handshake opens the first
    connection to a gRPC endpoint: an endpoint that refuses it is a connect
    failure, retried on another endpoint (the default retry_on), as
    grpc-core's own connect failures are; the calls succeed."""
    import socket

    good_mesh = meshlib.Mesh(config=files(ca.issue(INVENTORY, dns=["inventory"]), tmp_path, "inventory"))
    server, port, _ = grpc_echo_server(good_mesh.grpc_server_credentials())
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    mesh = _mesh(ca, tmp_path, [f"127.0.0.1:{dead}", f"127.0.0.1:{port}"])
    ch = mesh.grpc_channel("inventory")
    try:
        who = ch.unary_unary("/mtls.Echo/Who")
        assert all(who(b"x", timeout=5) == PLANNER.encode() + b"|x" for _ in range(6))
        ep = _endpoint(mesh, f"127.0.0.1:{dead}")
        assert ep["connect_failures"] == ep["requests"] == 3
        assert ep["outlier_ejected"] and ep["last_ejection_reason"] == "consecutive_local_origin_failure"
    finally:
        ch.close()
        mesh.close()
        server.stop(0)
        good_mesh.close()
