"""Health probes registered by name (``http``, ``grpc``): the checker reads the
registry, the gRPC probe lives in ``meshlib.health`` (not the adapters), and
a probe registered under a new name is accepted as ``health_check_protocol``."""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from meshlib.endpoint import Endpoint
from meshlib.errors import ConfigError
from meshlib.health import HealthCheckConfig, HealthChecker, make_probe, probe_names, register_probe
from meshlib.health import probes as registry
from meshlib.health.grpc_probe import GrpcHealthProbe, grpc_health_probe

from .grpc_agents import GrpcAgent


@pytest.fixture
def agent() -> Iterator[GrpcAgent]:
    a = GrpcAgent("probed")
    yield a
    a.stop()


def test_http_and_grpc_are_registered() -> None:
    assert probe_names()[:2] == ("http", "grpc")
    assert make_probe("grpc", "svc") is grpc_health_probe


def test_the_checker_uses_the_grpc_probe_from_the_registry(agent: GrpcAgent) -> None:
    cfg = HealthCheckConfig(protocol="grpc", healthy_threshold=1, unhealthy_threshold=1)
    checker = HealthChecker("svc", cfg)
    ep = Endpoint(host="127.0.0.1", port=agent.port)
    checker.set_hosts([ep])
    checker.check_all()
    assert checker.is_healthy(ep.key)
    agent.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert checker.check_all() and not checker.is_healthy(ep.key)


def test_a_tls_probe_against_a_plaintext_server_fails() -> None:
    probe = GrpcHealthProbe(credentials=grpc.ssl_channel_credentials())
    a = GrpcAgent("plain")
    try:
        assert probe(Endpoint(host="127.0.0.1", port=a.port), HealthCheckConfig(protocol="grpc", timeout=0.5)) is False
    finally:
        a.stop()


def test_an_unknown_protocol_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as err:
        HealthCheckConfig(protocol="smtp")
    assert "http or grpc" in str(err.value)


def test_a_probe_registered_by_name_is_accepted_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))  # this test's registrations only
    seen: list[tuple[str, str]] = []

    def factory(service: str):  # type: ignore[no-untyped-def]
        return lambda endpoint, cfg: seen.append((service, endpoint.address)) is None

    register_probe("custom", factory)
    cfg = HealthCheckConfig(protocol="custom", path="/x", healthy_threshold=1, unhealthy_threshold=1)
    checker = HealthChecker("svc", cfg)
    checker.set_hosts([Endpoint(host="127.0.0.1", port=9)])
    checker.check_all()
    assert seen == [("svc", "127.0.0.1:9")]
