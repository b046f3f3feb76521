"""meshlib.security on its own: SPIFFE IDs, identities, file rotation, TLS
contexts against real servers on 127.0.0.1, the allow-list, and no key
material anywhere it could leak."""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from meshlib.errors import ConfigError
from meshlib.security import (
    AllowList, FileIdentitySource, IdMatcher, PeerIdentityError, StaticIdentitySource, TlsProvider, TlsSettings,
    load_identity, parse_id_list, parse_spiffe_id, peer_identity, spiffe_id_of,
)  # fmt: skip
from meshlib.security.contexts import RotatingServerContext, client_context
from meshlib.security.identity import IdentityInvalid
from meshlib.testing.spiffe_ca import SpiffeCA, write_atomically

from .mtls_helpers import RawRecorder, TlsAgent

TD = "spiffe://example.org"


@pytest.fixture(scope="module")
def ca() -> SpiffeCA:
    return SpiffeCA("example.org")


def _ident(svid, source="files"):
    return load_identity(svid.chain_pem, svid.key_pem, svid.bundle_pem, source=source)


# --------------------------------------------------------------- SPIFFE IDs


@pytest.mark.parametrize("good", ["spiffe://example.org/ns/app", "spiffe://a-b_c.d/x", "spiffe://td/A.b-C_9"])
def test_valid_spiffe_ids(good: str) -> None:
    assert parse_spiffe_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "http://example.org/x", "SPIFFE://example.org/x", "spiffe://Example.org/x", "spiffe://example.org:8443/x",
     "spiffe://user@example.org/x", "spiffe://example.org/", "spiffe://example.org//x", "spiffe://example.org/a/../b",
     "spiffe://example.org/a/./b", "spiffe://example.org/x?q=1", "spiffe://example.org/x#f", "spiffe:///x", "spiffe://example.org"],
)  # fmt: skip
def test_invalid_spiffe_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_spiffe_id(bad)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_parsing_never_crashes_and_accepts_only_the_grammar(text: str) -> None:
    try:
        out = parse_spiffe_id(text, allow_trust_domain=True)
    except ValueError:
        return
    assert out.startswith("spiffe://") and "?" not in out and "#" not in out and "//" not in out[9:]


def test_matcher_exact_ids_and_trust_domains() -> None:
    m = IdMatcher.of(["spiffe://example.org/inventory", "spiffe://partner.org"])
    assert m.accepts("spiffe://example.org/inventory")
    assert not m.accepts("spiffe://example.org/inventory/x")
    assert not m.accepts("spiffe://example.org/other")
    assert m.accepts("spiffe://partner.org/anything/here")
    assert not m.accepts("spiffe://partner.org.evil/x")
    with pytest.raises(ConfigError) as e:
        parse_id_list("spiffe://example.org/ok, https://example.org/x", "MESHLIB_SERVICES__INV__TLS_SPIFFE_IDS")
    assert "TLS_SPIFFE_IDS" in str(e.value) and "https://example.org/x" in str(e.value)


def test_an_svid_has_exactly_one_uri_san(ca: SpiffeCA) -> None:
    assert spiffe_id_of(ca.issue("spiffe://example.org/a").leaf_der) == "spiffe://example.org/a"
    for uris in ([], ["spiffe://example.org/a", "spiffe://example.org/b"], ["https://example.org/a"]):
        with pytest.raises(ValueError):
            spiffe_id_of(ca.issue(uris=uris, dns=["x"]).leaf_der)
    m = IdMatcher.of([TD])
    with pytest.raises(PeerIdentityError) as e:
        m.check_der(ca.issue(uris=["spiffe://example.org/a", "spiffe://example.org/b"]).leaf_der)
    assert "exactly one URI SAN" in str(e.value)


# --------------------------------------------------------------- identities


def test_load_identity_checks_everything(ca: SpiffeCA) -> None:
    svid = ca.issue("spiffe://example.org/inventory")
    ident = _ident(svid)
    assert ident.spiffe_id == "spiffe://example.org/inventory" and ident.serial == svid.serial
    other = ca.issue("spiffe://example.org/other")
    with pytest.raises(IdentityInvalid) as e:
        load_identity(svid.chain_pem, other.key_pem, svid.bundle_pem)
    assert e.value.setting == "MESHLIB_TLS_KEY" and "does not match" in str(e.value)
    with pytest.raises(IdentityInvalid) as e:
        load_identity(svid.chain_pem[: len(svid.chain_pem) // 2], svid.key_pem, svid.bundle_pem)
    assert e.value.setting == "MESHLIB_TLS_CERT"
    with pytest.raises(IdentityInvalid) as e:
        load_identity(svid.chain_pem, svid.key_pem[:-40], svid.bundle_pem)
    assert e.value.setting == "MESHLIB_TLS_KEY"
    with pytest.raises(IdentityInvalid) as e:
        load_identity(svid.chain_pem, svid.key_pem, b"")
    assert e.value.setting == "MESHLIB_TLS_CA"
    expired = ca.issue("spiffe://example.org/old", lifetime=-60)
    with pytest.raises(IdentityInvalid) as e:
        load_identity(expired.chain_pem, expired.key_pem, expired.bundle_pem)
    assert "expired" in str(e.value)


def test_file_source_start_up_errors_name_the_setting(ca: SpiffeCA, tmp_path) -> None:
    svid = ca.issue("spiffe://example.org/a")
    cert, key, bundle = svid.write(tmp_path / "a")
    with pytest.raises(ConfigError) as e:
        FileIdentitySource(cert, str(tmp_path / "missing.key"), bundle, watch=False)
    assert e.value.name == "MESHLIB_TLS_KEY"
    wrong = ca.issue("spiffe://example.org/b").write(tmp_path / "b")
    with pytest.raises(ConfigError) as e:
        FileIdentitySource(cert, wrong[1], bundle, watch=False)
    assert e.value.name == "MESHLIB_TLS_KEY" and "does not match" in str(e.value)
    expired = ca.issue("spiffe://example.org/c", lifetime=-1).write(tmp_path / "c")
    with pytest.raises(ConfigError) as e:
        FileIdentitySource(*expired, watch=False)
    assert e.value.name == "MESHLIB_TLS_CERT" and "expired" in str(e.value)
    with pytest.raises(ConfigError):
        FileIdentitySource(cert, "", bundle, watch=False)


def test_rotation_by_files_and_half_written_files_never_win(ca: SpiffeCA, tmp_path, caplog) -> None:
    first = ca.issue("spiffe://example.org/a")
    cert, key, bundle = first.write(tmp_path / "id")
    src = FileIdentitySource(cert, key, bundle, watch=False)
    seen = []
    src.subscribe(seen.append)
    assert src.current().serial == first.serial and not src.poll()
    second = ca.issue("spiffe://example.org/a")
    # the certificate lands before its key: refused, the old identity stays
    write_atomically(cert, second.chain_pem)
    assert not src.poll()
    assert src.current().serial == first.serial and src.status()["state"] == "ok"  # first look: maybe half done
    assert not src.poll()
    assert src.current().serial == first.serial and src.status()["state"] == "stale"  # second look: reported
    # a half-written key (truncated in place): refused
    with open(key, "wb") as f:
        f.write(second.key_pem[: len(second.key_pem) // 2])
    assert not src.poll() and not src.poll() and src.current().serial == first.serial
    with open(key, "wb") as f:
        f.write(second.key_pem)
    assert src.poll()
    assert src.current().serial == second.serial and seen[-1].serial == second.serial
    st_ = src.status()
    assert st_["state"] == "ok" and st_["rotations"] == 1 and st_["serial"] == format(second.serial, "x")
    assert st_["spiffe_id"] == "spiffe://example.org/a"
    text = json.dumps(st_) + repr(src.current()) + caplog.text
    assert "PRIVATE KEY" not in text and second.key_pem.decode() not in text


def test_the_watcher_thread_picks_up_a_rotation(ca: SpiffeCA, tmp_path) -> None:
    cert, key, bundle = ca.issue("spiffe://example.org/a").write(tmp_path / "id")
    src = FileIdentitySource(cert, key, bundle, interval=0.02)
    try:
        nxt = ca.issue("spiffe://example.org/a")
        nxt.write(tmp_path / "id")
        deadline = time.monotonic() + 10
        while src.current().serial != nxt.serial and time.monotonic() < deadline:
            time.sleep(0.01)
        assert src.current().serial == nxt.serial
    finally:
        src.close()


# --------------------------------------------------------------- TLS against real servers


def _get(ctx: ssl.SSLContext, port: int, name: str = "inventory") -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(b"GET /who HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def test_mutual_tls_both_sides_see_each_others_spiffe_id(ca: SpiffeCA) -> None:
    server = StaticIdentitySource(_ident(ca.issue("spiffe://example.org/inventory")))
    agent = TlsAgent(RotatingServerContext(server.current).context)
    try:
        client = _ident(ca.issue("spiffe://example.org/planner"))
        ctx = client_context(client, present=True, matcher=IdMatcher.of(["spiffe://example.org/inventory"]))
        assert _get(ctx, agent.port)["peer"] == "spiffe://example.org/planner"
        # no client certificate: the server refuses the handshake
        plain = client_context(client, present=False, matcher=IdMatcher.of([TD]))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(plain, agent.port)
    finally:
        agent.close()


@pytest.mark.parametrize("case", ["wrong-id", "other-trust-domain", "expired", "two-uris", "no-uri"])
def test_a_bad_server_is_refused_and_nothing_is_sent_in_plaintext(ca: SpiffeCA, case: str) -> None:
    other = SpiffeCA("partner.org")
    svid = {
        "wrong-id": lambda: ca.issue("spiffe://example.org/impostor"),
        "other-trust-domain": lambda: other.issue("spiffe://partner.org/inventory"),
        "expired": lambda: ca.issue("spiffe://example.org/inventory", lifetime=-30),
        "two-uris": lambda: ca.issue(uris=["spiffe://example.org/inventory", "spiffe://example.org/x"]),
        "no-uri": lambda: ca.issue(uris=[], dns=["inventory"]),
    }[case]()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _pem_paths(svid) as (c, k):
        sctx.load_cert_chain(c, k)
    recorder = RawRecorder(sctx)
    try:
        client = _ident(ca.issue("spiffe://example.org/planner"))
        ctx = client_context(client, present=True, matcher=IdMatcher.of(["spiffe://example.org/inventory"]))
        with pytest.raises(ssl.SSLError) as e:
            _get(ctx, recorder.port)
        if case in ("wrong-id", "two-uris", "no-uri"):
            assert isinstance(e.value, PeerIdentityError)
            assert "spiffe://example.org/inventory" in str(e.value)
        if case == "wrong-id":
            assert "spiffe://example.org/impostor" in str(e.value)
        time.sleep(0.1)
        assert b"GET" not in recorder.raw and b"/who" not in recorder.raw and b"inventory\r\n" not in recorder.raw
        assert recorder.plain == b""
    finally:
        recorder.close()


def test_a_plaintext_server_gets_only_a_client_hello(ca: SpiffeCA) -> None:
    recorder = RawRecorder(None)
    try:
        ctx = client_context(_ident(ca.issue("spiffe://example.org/planner")), present=True, matcher=IdMatcher.of([TD]))
        with socket.create_connection(("127.0.0.1", recorder.port), timeout=5) as raw:
            raw.settimeout(0.3)
            with pytest.raises((ssl.SSLError, OSError)):
                ctx.wrap_socket(raw, server_hostname="inventory")
        assert recorder.raw[:1] == b"\x16" and b"GET" not in recorder.raw  # a TLS handshake record, nothing else
    finally:
        recorder.close()


def test_server_context_rotates_certificate_and_bundle_without_restart(ca: SpiffeCA) -> None:
    holder = {"id": _ident(ca.issue("spiffe://example.org/inventory"))}
    rot = RotatingServerContext(lambda: holder["id"])
    agent = TlsAgent(rot.context)
    try:
        client = _ident(ca.issue("spiffe://example.org/planner"))
        ctx = client_context(client, present=True, matcher=IdMatcher.of([TD]))

        def server_serial() -> int:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="x") as s:
                from cryptography import x509

                return x509.load_der_x509_certificate(s.getpeercert(True)).serial_number

        assert server_serial() == holder["id"].serial
        new = ca.issue("spiffe://example.org/inventory")
        holder["id"] = _ident(new)
        assert server_serial() == new.serial
        # a new CA: the server now trusts only clients from it
        ca2 = SpiffeCA("example.org")
        holder["id"] = _ident(ca2.issue("spiffe://example.org/inventory"))
        ctx2 = client_context(_ident(ca2.issue("spiffe://example.org/planner")), present=True, matcher=IdMatcher.of([TD]))
        assert _get(ctx2, agent.port)["peer"] == "spiffe://example.org/planner"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(ctx, agent.port)
    finally:
        agent.close()


def test_allow_list_answers_403_to_other_callers(ca: SpiffeCA) -> None:
    server = _ident(ca.issue("spiffe://example.org/inventory"))
    allow = AllowList(["spiffe://example.org/planner"])
    agent = TlsAgent(RotatingServerContext(lambda: server).context, allow=allow)
    try:
        ok = client_context(_ident(ca.issue("spiffe://example.org/planner")), present=True, matcher=IdMatcher.of([TD]))
        assert _get(ok, agent.port)["peer"] == "spiffe://example.org/planner"
        bad = client_context(_ident(ca.issue("spiffe://example.org/intruder")), present=True, matcher=IdMatcher.of([TD]))
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as raw, bad.wrap_socket(raw, server_hostname="x") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 403")
    finally:
        agent.close()


def test_wsgi_and_asgi_allow_list(ca: SpiffeCA) -> None:
    import asyncio

    good = ca.issue("spiffe://example.org/planner")
    bad = ca.issue("spiffe://example.org/intruder")
    allow = AllowList(["spiffe://example.org"])
    allow_one = AllowList(["spiffe://example.org/planner"])

    def app(environ, start_response):
        start_response("200 OK", [])
        return [peer_identity(environ).encode()]

    statuses = []
    out = allow_one.wsgi(app)({"SSL_CLIENT_CERT": good.chain_pem.decode()}, lambda s, h: statuses.append(s))
    assert out == [b"spiffe://example.org/planner"] and statuses == ["200 OK"]
    allow_one.wsgi(app)({"SSL_CLIENT_CERT": bad.chain_pem.decode()}, lambda s, h: statuses.append(s))
    allow.wsgi(app)({}, lambda s, h: statuses.append(s))
    assert statuses[1:] == ["403 Forbidden", "403 Forbidden"]

    async def asgi_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def run(pem):
        sent = []

        async def send(msg):
            sent.append(msg)

        scope = {"type": "http", "extensions": {"tls": {"client_cert_chain": [pem.decode()] if pem else []}}}
        await allow_one.asgi(asgi_app)(scope, None, send)
        return sent[0]["status"]

    assert asyncio.run(run(good.chain_pem)) == 200
    assert asyncio.run(run(bad.chain_pem)) == 403
    assert asyncio.run(run(None)) == 403
    with pytest.raises(TypeError):
        peer_identity(42)


def test_provider_contexts_follow_the_identity_and_never_leak_keys(ca: SpiffeCA, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="meshlib")
    first = ca.issue("spiffe://example.org/planner")
    cert, key, bundle = first.write(tmp_path / "id")
    provider = TlsProvider(TlsSettings(tls_cert=cert, tls_key=key, tls_ca=bundle))
    try:
        tls = provider.for_service("inventory", "mtls", ("spiffe://example.org/inventory",))
        assert provider.for_service("inventory", "off") is None
        ctx1 = tls.ssl_context()
        assert tls.ssl_context() is ctx1
        ca.issue("spiffe://example.org/planner").write(tmp_path / "id")
        assert provider.source.poll()
        ctx2 = tls.ssl_context()
        assert ctx2 is not ctx1 and ctx2.generation > ctx1.generation
        dump = json.dumps(provider.status()) + repr(tls) + repr(provider.source.current()) + caplog.text
        assert "PRIVATE KEY" not in dump and "BEGIN" not in dump
    finally:
        provider.close()
    with pytest.raises(ConfigError) as e:
        TlsProvider(TlsSettings()).for_service("inventory", "mtls")
    assert "TLS_MODE" in e.value.name


class _pem_paths:
    """Write an SVID's chain and key to a private temporary directory."""

    def __init__(self, svid) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.paths = svid.write(os.path.join(self._dir.name, "s"))[:2]

    def __enter__(self):
        return self.paths

    def __exit__(self, *exc):
        self._dir.cleanup()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["cert", "key", "ca"]), st.integers(min_value=0, max_value=2000))
def test_any_damaged_file_is_refused_with_the_setting_named_and_never_crashes(junk: bytes, which: str, cut: int) -> None:
    svid = _HYPO_SVID
    parts = {"cert": svid.chain_pem, "key": svid.key_pem, "ca": svid.bundle_pem}
    parts[which] = parts[which][:cut] + junk if cut < len(parts[which]) else junk
    try:
        ident = load_identity(parts["cert"], parts["key"], parts["ca"])
    except IdentityInvalid as exc:
        assert exc.setting in ("MESHLIB_TLS_CERT", "MESHLIB_TLS_KEY", "MESHLIB_TLS_CA")
        assert "PRIVATE KEY" not in str(exc) and svid.key_pem.decode()[40:80] not in str(exc)
        return
    assert ident.serial == svid.serial and ident.spiffe_id == svid.spiffe_id  # damage that left the material whole


_HYPO_CA = SpiffeCA("example.org")
_HYPO_SVID = _HYPO_CA.issue("spiffe://example.org/h")
