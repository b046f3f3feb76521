"""Configuration from environment, file and mapping; errors that name the culprit."""

from __future__ import annotations

from pathlib import Path

import pytest

import meshlib
from meshlib import ConfigError, Mesh
from meshlib.config import KEYS, MeshConfig, load_config, parse_duration, render_markdown


def test_env_global_and_per_service_keys():
    cfg = MeshConfig.from_env(
        {
            "MESHLIB_LB_POLICY": "least_request",
            "MESHLIB_SERVICES__INVENTORY_API__ENDPOINTS": "127.0.0.1:8001;weight=3;zone=a;priority=1, [::1]:8002",
            "MESHLIB_SERVICES__INVENTORY_API__LB_POLICY": "ring_hash",
            "MESHLIB_CONNECT_TIMEOUT": "250ms",
            "PATH": "/usr/bin",  # not ours: ignored
        }
    )
    svc = cfg.service("inventory-api")
    assert svc.lb_policy == "ring_hash"
    assert svc.connect_timeout == 0.25
    first, second = svc.endpoints
    assert (first.host, first.port, first.weight, first.zone, first.priority) == ("127.0.0.1", 8001, 3, "a", 1)
    assert (second.host, second.port) == ("::1", 8002)
    # Undeclared services get the global settings.
    assert cfg.service("other").lb_policy == "least_request"
    # Spellings are interchangeable.
    assert cfg.service("INVENTORY_API") == svc


def test_defaults_match_documented_sources():
    d = MeshConfig().defaults
    assert d.lb_policy == "peak_ewma"
    assert d.ring_hash_min_size == 1024 and d.ring_hash_max_size == 8388608
    assert d.maglev_table_size == 65537
    assert d.panic_threshold == 50.0 and d.overprovisioning_factor == 1.4
    assert d.ewma_decay == 10.0 and d.ewma_default_rtt == 0.030
    assert d.choice_count == 2 and d.active_request_bias == 1.0


def test_yaml_file_then_env_then_kwargs(tmp_path: Path):
    f = tmp_path / "mesh.yaml"
    f.write_text(
        "lb_policy: random\nnum_retries: 1\nservices:\n  billing:\n    endpoints: ['127.0.0.1:9001', {address: '127.0.0.1:9002', weight: 2, tags: [gpu]}]\n"
    )
    env = {"MESHLIB_CONFIG": str(f), "MESHLIB_NUM_RETRIES": "3"}
    cfg = MeshConfig.from_env(env)
    assert cfg.defaults.lb_policy == "random"  # from the file
    assert cfg.defaults.retry.num_retries == 3  # env beats file
    assert [e.weight for e in cfg.service("billing").endpoints] == [1, 2]
    assert cfg.service("billing").endpoints[1].tags == ("gpu",)
    cfg2 = MeshConfig.from_env(env, num_retries=0)
    assert cfg2.defaults.retry.num_retries == 0  # kwargs beat env


def test_toml_file(tmp_path: Path):
    f = tmp_path / "mesh.toml"
    f.write_text('lb_policy = "maglev"\n[services.search]\nendpoints = "127.0.0.1:7000,127.0.0.1:7001"\nhash_header = "X-User"\n')
    cfg = MeshConfig.from_env({"MESHLIB_CONFIG": str(f)})
    svc = cfg.service("search")
    assert svc.lb_policy == "maglev" and svc.hash_header == "x-user" and len(svc.endpoints) == 2


@pytest.mark.parametrize(
    "env, names, accepted",
    [
        ({"MESHLIB_LB_POLICY": "fastest"}, ["MESHLIB_LB_POLICY", "'fastest'"], "round_robin"),
        ({"MESHLIB_LB_POLCY": "random"}, ["MESHLIB_LB_POLCY", "unknown"], "did you mean LB_POLICY?"),
        ({"MESHLIB_SERVICES__X__ENDPOINTS": "127.0.0.1:70000"}, ["MESHLIB_SERVICES__X__ENDPOINTS", "70000"], "1 to 65535"),
        ({"MESHLIB_SERVICES__X__ENDPOINTS": "localhost"}, ["MESHLIB_SERVICES__X__ENDPOINTS"], "host:port"),
        ({"MESHLIB_SERVICES__X__ENDPOINTS": "127.0.0.1:80;wieght=2"}, ["wieght"], "weight, zone, priority"),
        ({"MESHLIB_SERVICES__X__ENDPOINTS": "127.0.0.1:80;weight=0"}, ["weight"], "1 to 1000000"),
        ({"MESHLIB_SERVICES__X__ENDPOINTS": "127.0.0.1:80;priority=-1"}, ["priority"], "0 to 127"),
        ({"MESHLIB_CONNECT_TIMEOUT": "soon"}, ["MESHLIB_CONNECT_TIMEOUT", "'soon'"], "250ms"),
        ({"MESHLIB_PANIC_THRESHOLD": "150"}, ["MESHLIB_PANIC_THRESHOLD"], "0.0 to 100.0"),
        ({"MESHLIB_MAGLEV_TABLE_SIZE": "65536"}, ["MESHLIB_MAGLEV_TABLE_SIZE"], "prime"),
        ({"MESHLIB_DISCOVERY": "zookeeper://x"}, ["MESHLIB_DISCOVERY"], "file:///"),
        ({"MESHLIB_SERVICES__X": "1"}, ["MESHLIB_SERVICES__X"], "MESHLIB_SERVICES__<SERVICE>__<KEY>"),
        ({"MESHLIB_SERVICES__X__FILE_POLL_INTERVAL": "1s"}, ["MESHLIB_SERVICES__X__FILE_POLL_INTERVAL"], "per-service"),
        ({"MESHLIB_LOCALITY_WEIGHTS": "a=1,b"}, ["MESHLIB_LOCALITY_WEIGHTS"], "zone=weight"),
        (
            {"MESHLIB_RING_HASH_MIN_SIZE": "5000", "MESHLIB_RING_HASH_MAX_SIZE": "4000"},
            ["ring_hash_min_size", "5000"],
            "ring_hash_max_size",
        ),
    ],
)
def test_bad_values_name_variable_value_and_accepted(env, names, accepted):
    with pytest.raises(ConfigError) as info:
        Mesh.from_env(env)
    msg = str(info.value)
    for n in names:
        assert n in msg
    assert accepted in msg


def test_bad_file_is_named(tmp_path: Path):
    f = tmp_path / "mesh.yaml"
    f.write_text("services:\n  billing:\n    endpoints: ['127.0.0.1:0']\n")
    with pytest.raises(ConfigError, match=r"services\.billing\.endpoints\[0\].*mesh\.yaml"):
        Mesh.from_env({"MESHLIB_CONFIG": str(f)})
    f.write_text("lb_policy: [unclosed\n")
    with pytest.raises(ConfigError, match="well-formed"):
        Mesh.from_env({"MESHLIB_CONFIG": str(f)})
    with pytest.raises(ConfigError, match="MESHLIB_CONFIG"):
        Mesh.from_env({"MESHLIB_CONFIG": str(tmp_path / "missing.yaml")})


def test_programmatic_mapping_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"services\.a\.lb_policy"):
        Mesh(config={"services": {"a": {"endpoints": "127.0.0.1:1", "lb_policy": "nope"}}})
    with pytest.raises(ConfigError, match="unknown_key"):
        Mesh(config={"unknown_key": 1})


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("1.5s", 1.5), ("2m", 120), ("1h", 3600), ("3", 3.0), (0.5, 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text, "X") == seconds


def test_configuration_doc_lists_every_key_and_is_current():
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    assert doc == render_markdown(), "docs/configuration.md is stale: run `make docs-config`"
    for key in KEYS.values():
        assert key.name.upper() in doc


def test_config_is_immutable():
    cfg = load_config(environ={"MESHLIB_SERVICES__A__ENDPOINTS": "127.0.0.1:1"})
    with pytest.raises(Exception):
        cfg.defaults.lb_policy = "random"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.services["b"] = cfg.services["a"]  # type: ignore[index]


def test_public_surface_is_pinned():
    assert sorted(meshlib.__all__) == sorted(
        [
            "Mesh", "MeshConfig", "ServiceConfig", "Endpoint", "EndpointSnapshot", "MeshError", "ConfigError",
            "UnknownServiceError", "NoHealthyEndpointsError", "EndpointsSaturatedError", "CircuitOpenError", "DeadlineExceededError", "RateLimitedError", "FaultInjectedError",
            "ManualClock", "deadline", "deadline_headers", "incoming_deadline", "remaining", "call", "default_mesh", "hash_key", "peer_identity", "__version__",
            "inject", "extract", "incoming",  # trace propagation (issue 14)
        ]
    )
    for name in meshlib.__all__:
        assert hasattr(meshlib, name)


@pytest.mark.parametrize("bad", ["a..b", "-x.internal", "x" * 64 + ".internal", "under_score.internal"])
def test_bad_dns_names_are_config_errors(bad):
    with pytest.raises(ConfigError, match="DNS_NAME"):
        Mesh.from_env({"MESHLIB_DISCOVERY": "dns", "MESHLIB_SERVICES__A__DNS_NAME": bad})


def test_every_key_default_is_the_configuration_default():
    # The defaults in docs/configuration.md come from KEYS; what a mesh runs
    # with comes from the dataclasses. They must not drift apart.
    config = MeshConfig()
    objects = (config.defaults, config.registry, config.tls, config.xds, config.telemetry, config)
    checked = 0
    for key in KEYS.values():
        if key.target is not None:
            group, path = key.target
            value = getattr(config.defaults, group)
            for part in path.split("."):
                value = getattr(value, part)
        else:
            owner = next(o for o in objects if hasattr(o, key.name))
            value = getattr(owner, key.name)
        assert value == key.default, f"{key.name}: configuration default {value!r}, documented default {key.default!r}"
        checked += 1
    assert checked == len(KEYS)


def test_balancers_get_their_own_settings_and_the_policy_names_from_their_registry():
    import ast

    from meshlib.balancing import DEFAULT_LB, POLICIES, LbSettings
    from meshlib.config import LB_POLICIES

    assert LB_POLICIES == tuple(POLICIES)
    svc = load_config(
        environ={"MESHLIB_CHOICE_COUNT": "3", "MESHLIB_SERVICES__A__LOCALITY_WEIGHTS": "z1=2", "MESHLIB_SERVICES__A__ENDPOINTS": "127.0.0.1:1"}
    ).service("a")
    assert svc.lb == LbSettings(choice_count=3, locality_weights={"z1": 2})
    assert MeshConfig().defaults.lb == DEFAULT_LB
    # The balancers never import config (layer rule: balancing/ is below config/).
    for path in (Path(__file__).parent.parent / "meshlib" / "balancing").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "config" not in (node.module or ""), f"{path.name} imports {node.module}"
