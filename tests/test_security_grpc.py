"""gRPC with the mesh's identity: a grpcio server with require_client_auth
(rotating credentials), channel credentials, the SPIFFE ID check done before a
channel is used (grpcio checks only host names), and the allow-list
interceptor answering PERMISSION_DENIED."""

from __future__ import annotations

import grpc
import pytest

from meshlib.security import AllowList, PeerIdentityError, StaticIdentitySource, TlsProvider, TlsSettings, load_identity
from meshlib.security.grpc_tls import grpc_name_of
from meshlib.testing.spiffe_ca import SpiffeCA

from .mtls_helpers import RawRecorder, grpc_echo_server


@pytest.fixture(scope="module")
def ca() -> SpiffeCA:
    return SpiffeCA("example.org")


def _src(svid):
    return StaticIdentitySource(load_identity(svid.chain_pem, svid.key_pem, svid.bundle_pem))


def _provider(ca, spiffe_id="spiffe://example.org/planner"):
    return TlsProvider(TlsSettings(), source=_src(ca.issue(spiffe_id)))


def _who(tls, port, name="inventory"):
    g = tls.grpc()
    target = g.target_name(f"127.0.0.1:{port}", 5)
    ch = grpc.secure_channel(f"127.0.0.1:{port}", g.credentials(), options=[("grpc.ssl_target_name_override", target)])
    try:
        return ch.unary_unary("/mtls.Echo/Who")(b"hi", timeout=5)
    finally:
        ch.close()


def test_grpc_mutual_tls_with_spiffe_ids(ca) -> None:
    server_src = _src(ca.issue("spiffe://example.org/inventory", dns=["inventory"]))
    creds = TlsProvider(TlsSettings(), source=server_src).grpc_server_credentials()
    server, port, seen = grpc_echo_server(creds)
    try:
        tls = _provider(ca).for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        assert _who(tls, port) == b"spiffe://example.org/planner|hi"
        # a client without a certificate is refused by require_client_auth
        anon = _provider(ca).for_service("inventory", "tls", ("spiffe://example.org/inventory",))
        with pytest.raises(grpc.RpcError) as e:
            _who(anon, port)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_grpc_refuses_a_server_with_the_wrong_spiffe_id_before_any_rpc(ca) -> None:
    impostor = _src(ca.issue("spiffe://example.org/impostor", dns=["inventory"]))
    server, port, seen = grpc_echo_server(TlsProvider(TlsSettings(), source=impostor).grpc_server_credentials())
    try:
        tls = _provider(ca).for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        with pytest.raises(PeerIdentityError) as e:
            _who(tls, port)
        assert "spiffe://example.org/impostor" in str(e.value) and "spiffe://example.org/inventory" in str(e.value)
        assert seen == []
    finally:
        server.stop(0)


def test_an_svid_without_any_host_name_fails_closed_for_grpc(ca) -> None:
    bare = ca.issue("spiffe://example.org/inventory")  # only the URI SAN, no CN
    assert grpc_name_of(bare.leaf_der) == ""
    assert grpc_name_of(ca.issue("spiffe://example.org/x", common_name="inv").leaf_der) == "inv"
    server, port, seen = grpc_echo_server(TlsProvider(TlsSettings(), source=_src(bare)).grpc_server_credentials())
    try:
        tls = _provider(ca).for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        with pytest.raises(PeerIdentityError) as e:
            _who(tls, port)
        assert "grpcio" in str(e.value) and seen == []
    finally:
        server.stop(0)


def test_grpc_server_credentials_rotate_without_restart(ca) -> None:
    from meshlib.security.sources import IdentitySource

    first = ca.issue("spiffe://example.org/inventory", dns=["inventory"])
    src = IdentitySource(load_identity(first.chain_pem, first.key_pem, first.bundle_pem))
    server, port, seen = grpc_echo_server(TlsProvider(TlsSettings(), source=src).grpc_server_credentials())
    try:
        client = _provider(ca).for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        assert _who(client, port).startswith(b"spiffe://example.org/planner")
        # the server moves to a new CA; clients of the new CA get in, old ones no longer
        ca2 = SpiffeCA("example.org")
        new = ca2.issue("spiffe://example.org/inventory", dns=["inventory"])
        src._rotate(load_identity(new.chain_pem, new.key_pem, new.bundle_pem))
        client2 = _provider(ca2).for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        assert _who(client2, port).startswith(b"spiffe://example.org/planner")
        with pytest.raises((grpc.RpcError, OSError)):
            _who(client, port)
    finally:
        server.stop(0)


def test_allow_list_interceptor_answers_permission_denied(ca) -> None:
    server_src = _src(ca.issue("spiffe://example.org/inventory", dns=["inventory"]))
    creds = TlsProvider(TlsSettings(), source=server_src).grpc_server_credentials()
    allow = AllowList(["spiffe://example.org/planner"])
    server, port, seen = grpc_echo_server(creds, interceptors=(allow.grpc_interceptor(),))
    try:
        ok = _provider(ca).for_service("inventory", "mtls", ("spiffe://example.org",))
        assert _who(ok, port).startswith(b"spiffe://example.org/planner")
        intruder = _provider(ca, "spiffe://example.org/intruder").for_service("inventory", "mtls", ("spiffe://example.org",))
        with pytest.raises(grpc.RpcError) as e:
            _who(intruder, port)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [p for p, _ in seen] == ["spiffe://example.org/planner"]
    finally:
        server.stop(0)


def test_grpc_preflight_sends_nothing_in_plaintext_to_an_impostor(ca, tmp_path) -> None:
    import ssl

    bad = ca.issue("spiffe://example.org/impostor", dns=["inventory"])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    paths = bad.write(tmp_path / "bad")
    sctx.load_cert_chain(paths[0], paths[1])
    rec = RawRecorder(sctx)
    try:
        tls = _provider(ca).for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        with pytest.raises(PeerIdentityError):
            _who(tls, rec.port)
        assert rec.plain == b"" and b"mtls.Echo" not in rec.raw and b"PRI * HTTP/2" not in rec.raw
    finally:
        rec.close()


def test_a_pool_that_is_gone_stops_following_rotations(ca) -> None:
    import gc

    from meshlib.security.sources import IdentitySource

    first = ca.issue("spiffe://example.org/planner")
    src = IdentitySource(load_identity(first.chain_pem, first.key_pem, first.bundle_pem))
    tls = TlsProvider(TlsSettings(), source=src).for_service("inventory", "mtls", ())

    class Pool:
        retired = 0

        def retire_all(self) -> None:
            Pool.retired += 1

    kept, dropped = Pool(), Pool()
    tls.grpc().follow(kept)
    tls.grpc().follow(dropped)
    del dropped
    gc.collect()
    new = ca.issue("spiffe://example.org/planner")
    src._rotate(load_identity(new.chain_pem, new.key_pem, new.bundle_pem))
    assert Pool.retired == 1 and len(src._listeners) == 1
