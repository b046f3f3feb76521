"""Discovery schemes and registration backends are registered by name, once:
the MESHLIB_DISCOVERY parser, Mesh construction and mesh.register() read the
same registries, and a new scheme is one registration."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import meshlib
from meshlib import ConfigError
from meshlib.discovery import StaticResolver, schemes
from meshlib.endpoint import Endpoint
from meshlib.registration import backend_for, backends

ACCEPTED = "static, dns, file:///path/to/endpoints.yaml, consul://host:port, etcd://host:port or xds"


@pytest.mark.parametrize(
    "value, normalised",
    [
        ("static", "static"),
        (" STATIC ", "static"),
        ("dns", "dns"),
        ("file:///etc/e.yaml", "file:///etc/e.yaml"),
        ("FILE:///E.yaml", "file:///E.yaml"),
        ("consul://h", "consul://h:8500"),
        ("Consul://h:1/", "consul://h:1"),
        ("etcd://[::1]", "etcd://[::1]:2379"),
        ("etcd://10.0.0.1:2380", "etcd://10.0.0.1:2380"),
    ],
)
def test_parse_discovery_normalises_with_each_registry_default_port(value: str, normalised: str):
    assert schemes.parse_discovery(value, "MESHLIB_DISCOVERY") == normalised


@pytest.mark.parametrize(
    "value, detail",
    [
        ("zookeeper://x", ""),
        ("consul", ""),
        ("dns://x", ""),
        ("", ""),
        ("file://", "the file:// URL has no path"),
        ("etcd://h/x", "etcd:// is followed by host:port only"),
        ("etcd://h:0", "port 0 is out of range"),
        ("consul://h:x", ""),
    ],
)
def test_parse_discovery_names_the_variable_the_value_and_every_accepted_form(value: str, detail: str):
    with pytest.raises(ConfigError) as info:
        schemes.parse_discovery(value, "MESHLIB_DISCOVERY")
    assert str(info.value).startswith(f"MESHLIB_DISCOVERY={value!r} is invalid: {ACCEPTED}")
    assert detail in str(info.value)


def test_every_scheme_is_known_once_with_its_form_and_registry_port():
    known = schemes.schemes()
    assert list(known) == ["static", "dns", "file", "consul", "etcd", "xds"]
    assert {n: s.default_port for n, s in known.items() if s.default_port} == {"consul": 8500, "etcd": 2379}
    assert schemes.accepted() == ACCEPTED
    with pytest.raises(ValueError, match="already registered"):
        schemes.register_scheme(known["dns"])


def test_a_new_scheme_is_one_registration_and_mesh_builds_its_resolver(monkeypatch):
    """What adding xds will be: a resolver module and one register_scheme line."""

    def build(cfg, ctx):
        return StaticResolver({"planner": (Endpoint("127.0.0.1", 7000),)})

    new = schemes.Scheme("fixed", "fixed", build)
    monkeypatch.setitem(schemes._SCHEMES, "fixed", new)
    assert schemes.parse_discovery("FIXED", "MESHLIB_DISCOVERY") == "fixed"
    assert schemes.accepted().endswith("etcd://host:port, xds or fixed")
    cfg = dataclasses.replace(meshlib.MeshConfig(), discovery="fixed")
    with meshlib.Mesh(config=cfg) as mesh:
        assert [ep.address for ep in mesh.endpoints("planner")] == ["127.0.0.1:7000"]
    with pytest.raises(ConfigError, match=r"consul://host:port or etcd://host:port to register with \(static, dns, file://, xds and fixed have no registry\)"):
        backend_for("fixed")


def test_register_reads_the_backend_registry():
    assert list(backends()) == ["consul", "etcd"]
    assert backend_for("etcd://127.0.0.1:2379").scheme == "etcd"
    no_registry = r"consul://host:port or etcd://host:port to register with \(static, dns, file:// and xds have no registry\)"
    for value in ("static", "dns"):
        with meshlib.Mesh(config={"discovery": value}) as mesh:
            with pytest.raises(ConfigError, match=no_registry):
                mesh.register("x", port=1)
    with pytest.raises(ConfigError, match=no_registry):
        backend_for("file:///x.yaml")


def test_registry_target_splits_scheme_host_and_port():
    assert schemes.registry_target("etcd://[::1]:2379") == ("etcd", "::1", 2379)
    assert schemes.registry_target("consul://agent.local:8500") == ("consul", "agent.local", 8500)


def test_importing_meshlib_loads_no_registry_client():
    code = "import sys, meshlib, meshlib.discovery.schemes, meshlib.registration; print(sorted(m for m in ('consul', 'etcd3', 'grpc', 'requests') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
