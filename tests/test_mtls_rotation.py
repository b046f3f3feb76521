"""Rotation reaches what the mesh does not own outright: gRPC channels of
your own made with ``mesh.grpc_credentials()`` (each new channel presents
the certificate current when it is made), and httpx transports made under a
previous identity (drained, then closed, instead of lingering). Real TLS
servers on 127.0.0.1, certificates renamed over the watched files."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

import meshlib
from meshlib.testing.spiffe_ca import SpiffeCA

from .mtls_helpers import INVENTORY, PLANNER, ca, files, grpc_echo_server, server_mesh, TlsAgent  # noqa: F401 (fixtures)



def _client(ca, tmp_path, endpoints, **svc):
    cfg = {**files(ca.issue(PLANNER), tmp_path, "planner"), "tls_watch_interval": "50ms",
           "services": {"inventory": {"endpoints": ",".join(endpoints), "tls_mode": "mtls", **svc}}}  # fmt: skip
    return meshlib.Mesh(config=cfg)


def _rotate(mesh, ca, tmp_path):
    """A new client SVID renamed over the files; returns it once the mesh uses it."""
    new = ca.issue(PLANNER)
    new.write(tmp_path / "planner")
    deadline = time.monotonic() + 10
    while mesh.stats()["tls"]["serial"] != format(new.serial, "x"):
        assert time.monotonic() < deadline, "the rotation was never picked up"
        time.sleep(0.02)
    return new


def test_grpc_credentials_of_your_own_channel_follow_rotation(ca, tmp_path, server_mesh) -> None:
    server, port, seen = grpc_echo_server(server_mesh.grpc_server_credentials())
    mesh = _client(ca, tmp_path, [f"127.0.0.1:{port}"])
    opts = [("grpc.ssl_target_name_override", "inventory")]
    try:
        creds = mesh.grpc_credentials("inventory")
        assert isinstance(creds, grpc.ChannelCredentials)
        rotations: list[int] = []
        stop = creds.on_rotation(rotations.append)
        first_gen = creds.generation
        before = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=opts)
        who = before.unary_unary("/mtls.Echo/Who")
        assert who(b"a", timeout=5) == PLANNER.encode() + b"|a"
        old_serial = seen[-1][1]

        new = _rotate(mesh, ca, tmp_path)
        assert rotations == [creds.generation] and creds.generation == first_gen + 1
        # The same credentials object, a new channel: the new certificate.
        after = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=opts)
        assert after.unary_unary("/mtls.Echo/Who")(b"b", timeout=5) == PLANNER.encode() + b"|b"
        assert seen[-1][1] == new.serial != old_serial

        async def aio_call():
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=opts) as ch:
                return await ch.unary_unary("/mtls.Echo/Who")(b"c", timeout=5)

        assert asyncio.run(aio_call()) == PLANNER.encode() + b"|c"
        assert seen[-1][1] == new.serial
        # A channel made before keeps its certificate for its whole life (grpcio's
        # client channels cannot change theirs): what the docs tell you to re-make.
        assert who(b"d", timeout=5) == PLANNER.encode() + b"|d" and seen[-1][1] == old_serial
        stop()
        _rotate(mesh, ca, tmp_path)
        assert len(rotations) == 1  # stopped
        before.close()
        after.close()
    finally:
        mesh.close()
        server.stop(0)


def test_interceptors_on_a_channel_made_again_on_rotation(ca, tmp_path, server_mesh) -> None:
    """The documented pattern: re-make the channel in ``on_rotation``; the
    interceptors' calls then carry the new certificate, with no failed call."""
    server, port, seen = grpc_echo_server(server_mesh.grpc_server_credentials())
    mesh = _client(ca, tmp_path, [f"127.0.0.1:{port}"])
    creds = mesh.grpc_credentials("inventory")
    opts = [("grpc.ssl_target_name_override", "inventory")]
    lock = threading.Lock()

    def make():
        return grpc.intercept_channel(grpc.secure_channel(f"127.0.0.1:{port}", creds, options=opts), *mesh.grpc_interceptors("inventory"))

    holder = [make()]

    def renew(_generation: int) -> None:
        fresh = make()
        with lock:
            old, holder[0] = holder[0], fresh
        old.close()  # grpcio lets calls already started on it finish

    stop = creds.on_rotation(renew)
    try:
        for i in range(3):
            with lock:
                ch = holder[0]
            assert ch.unary_unary("/mtls.Echo/Who")(b"x", timeout=5) == PLANNER.encode() + b"|x"
            new = _rotate(mesh, ca, tmp_path)
            with lock:
                ch = holder[0]
            assert ch.unary_unary("/mtls.Echo/Who")(b"y", timeout=5) == PLANNER.encode() + b"|y"
            assert seen[-1][1] == new.serial
    finally:
        stop()
        holder[0].close()
        mesh.close()
        server.stop(0)


def _open_connections(transport) -> int:
    return sum(1 for c in transport._pool.connections if not c.is_closed())


def test_httpx_transports_of_a_previous_identity_are_drained_then_closed(ca, tmp_path, server_mesh) -> None:
    agent = TlsAgent(server_mesh.server_ssl_context())
    mesh = _client(ca, tmp_path, [agent.address], tls_spiffe_ids=INVENTORY)
    try:
        with mesh.httpx_client() as client:
            pools = client._transport._pools
            assert client.get("http://inventory/a").json()["peer"] == PLANNER
            old = pools._mesh["inventory"].transport
            # A response still being read when the rotation comes: its transport must wait.
            with client.stream("GET", "http://inventory/streaming") as streaming:
                svid = _rotate(mesh, ca, tmp_path)
                assert client.get("http://inventory/b").status_code == 200  # a new connection, the new certificate
                new = pools._mesh["inventory"].transport
                assert new is not old and agent.serials[-1] == svid.serial
                assert [p.transport for p in pools.retired] == [old]  # retired, not closed: a body is still open
                assert _open_connections(old) == 1
                streaming.read()
            assert client.get("http://inventory/c").status_code == 200
            assert pools.retired == [] and _open_connections(old) == 0  # drained, then closed
            assert _open_connections(new) >= 1
            assert agent.serials[-1] == svid.serial
    finally:
        mesh.close()
        agent.close()


def test_async_httpx_transports_of_a_previous_identity_are_closed(ca, tmp_path, server_mesh) -> None:
    agent = TlsAgent(server_mesh.server_ssl_context())
    mesh = _client(ca, tmp_path, [agent.address], tls_spiffe_ids=INVENTORY)

    async def go():
        async with mesh.httpx_async_client() as client:
            pools = client._transport._pools
            assert (await client.get("http://inventory/a")).status_code == 200
            old = pools._mesh["inventory"].transport
            assert _open_connections(old) == 1
            svid = await asyncio.get_running_loop().run_in_executor(None, _rotate, mesh, ca, tmp_path)
            assert (await client.get("http://inventory/b")).status_code == 200
            assert pools.retired == [] and _open_connections(old) == 0
            return svid, agent.serials

    try:
        svid, serials = asyncio.run(go())
        assert serials[-1] == svid.serial != serials[0]
    finally:
        mesh.close()
        agent.close()
