"""Bad configuration from any source: a ConfigError naming what the user wrote,
never another exception, never a secret; messages that say what to do."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

import pytest
import yaml

from meshlib import ConfigError, Mesh, cli
from meshlib.config import KEYS, MeshConfig, load_config
from meshlib.config.check import check

DURATION_KEYS = sorted(k.name for k in KEYS.values() if k.type == "duration")
STATUS_KEYS = ["health_check_expected_statuses", "hedge_non_fatal", "retriable_status_codes"]


def _error(*, env: dict | None = None, mapping: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(environ=env or {}, overrides=mapping)
    return info.value


def _file_error(tmp_path: Path, data: object, suffix: str = ".yaml", text: str | None = None) -> ConfigError:
    f = tmp_path / f"mesh{suffix}"
    f.write_text(text if text is not None else yaml.safe_dump(data) if suffix == ".yaml" else json.dumps(data))
    return _error(env={"MESHLIB_CONFIG": str(f)})


# ----------------------------------------------------------------- issue 12: the five raw exceptions


@pytest.mark.parametrize("key", DURATION_KEYS)
def test_huge_integer_durations_are_config_errors(key, tmp_path):
    exc = _error(mapping={key: 10**400})
    assert key in exc.name and "duration" in str(exc)
    exc = _file_error(tmp_path, {key: 10**400})
    assert key in exc.name and "mesh.yaml" in exc.name
    exc = _error(env={KEYS[key].env: "9" * 400})
    assert exc.name == KEYS[key].env


@pytest.mark.parametrize("key", STATUS_KEYS)
@pytest.mark.parametrize("bad", ["²", "٣٠٠", "1" * 5000, "200,²", ["²"], [10**400], ["1" * 5000]])
def test_status_lists_reject_non_ascii_digits_and_huge_numbers(key, bad):
    if isinstance(bad, str):
        exc = _error(env={KEYS[key].env: bad})
        assert exc.name == KEYS[key].env
    exc = _error(mapping={key: bad})
    assert exc.name.startswith(key) and "100" in str(exc) and len(str(exc)) < 1000


def test_registry_backoff_max_alone_names_itself():
    exc = _error(env={"MESHLIB_REGISTRY_BACKOFF_MAX": "10ms"})
    assert exc.name == "MESHLIB_REGISTRY_BACKOFF_MAX" and "'10ms'" in str(exc)
    assert "registry_backoff_base (0.1s)" in str(exc)
    exc = _error(env={"MESHLIB_REGISTRY_BACKOFF_BASE": "1m"})
    assert exc.name == "MESHLIB_REGISTRY_BACKOFF_BASE"


@pytest.mark.parametrize(
    "attrs, field",
    [
        ({"tags": 5}, "tags"),
        ({"tags": True}, "tags"),
        ({"tags": "gpu"}, "tags"),
        ({"weight": float("inf")}, "weight"),
        ({"weight": True}, "weight"),
        ({"weight": 2.5}, "weight"),
        ({"weight": "²"}, "weight"),
        ({"priority": 1e999}, "priority"),
        ({"priority": float("nan")}, "priority"),
        ({"priority": 10**400}, "priority"),
        ({"metadata": {"a": {"b": 1}}}, "metadata"),
        ({"zone": ["a"]}, "zone"),
        ({"address": 8080}, "address"),
    ],
)
def test_endpoint_attributes_of_the_wrong_type(attrs, field, tmp_path):
    item = {"address": "127.0.0.1:8001", **attrs}
    exc = _error(mapping={"services": {"inv": {"endpoints": [item]}}})
    assert exc.name.startswith(f"services.inv.endpoints[0].{field}")
    if all(isinstance(v, (str, int, bool, list, dict)) for v in attrs.values()) and not any(
        isinstance(v, int) and abs(v) > 2**63 for v in attrs.values()
    ):
        exc = _file_error(tmp_path, {"services": {"inv": {"endpoints": [item]}}})
        assert exc.name == f"services.inv.endpoints[0].{field} ({tmp_path / 'mesh.yaml'})"


def test_yaml_file_of_odd_values(tmp_path):
    exc = _file_error(tmp_path, None, text="services:\n  inv:\n    endpoints:\n      - {address: '127.0.0.1:1', weight: .inf}\n")
    assert "weight" in exc.name and "1 to 1000000" in str(exc)
    exc = _file_error(tmp_path, None, text="connect_timeout: " + "9" * 5000 + "\n")
    assert exc.name in ("MESHLIB_CONFIG", f"connect_timeout ({tmp_path / 'mesh.yaml'})")
    deep = "[" * 5000 + "]" * 5000
    exc = _file_error(tmp_path, None, suffix=".json", text=json.dumps({"retry_on": "x"})[:-1] + ', "filter_tags": ' + deep + "}")
    assert exc.name in ("MESHLIB_CONFIG", f"filter_tags ({tmp_path / 'mesh.json'})")
    nested: list = []
    for _ in range(3000):
        nested = [nested]
    exc = _error(mapping={"filter_tags": nested})
    assert exc.name.startswith("filter_tags")
    str(exc), repr(exc)


@pytest.mark.parametrize("bad", [[("lb_policy", "random")], "lb_policy=random", 5])
def test_a_config_that_is_not_a_mapping(bad):
    with pytest.raises(ConfigError, match=r"Mesh\(config=\.\.\.\).*a mapping of keys"):
        Mesh(config=bad)


def test_messages_name_the_variable_the_user_set():
    exc = _error(env={"MESHLIB_RING_HASH_MAX_SIZE": "8"})
    assert exc.name == "MESHLIB_RING_HASH_MAX_SIZE" and "ring_hash_min_size (1024, from its default)" in str(exc)
    exc = _error(env={"MESHLIB_SERVICES__A__RING_HASH_MAX_SIZE": "8"})
    assert exc.name == "MESHLIB_SERVICES__A__RING_HASH_MAX_SIZE"
    exc = _error(env={"MESHLIB_ETCD_USER": "root"})
    assert exc.name == "MESHLIB_ETCD_USER" and "set MESHLIB_ETCD_PASSWORD too" in str(exc)
    assert "not shown" not in str(exc)
    exc = _error(env={"MESHLIB_ETCD_PASSWORD": "pw-only"})
    assert exc.name == "MESHLIB_ETCD_PASSWORD" and "pw-only" not in str(exc) and "set MESHLIB_ETCD_USER too" in str(exc)


# ----------------------------------------------------------------- issue 13: messages that say what to do


@pytest.mark.parametrize(
    "var, suggestion",
    [
        ("MESHLIB_SERVICES__INVENTORY__ENDPIONTS", "did you mean ENDPOINTS?"),
        ("MESHLIB_SERVICE__INVENTORY__ENDPOINTS", "did you mean MESHLIB_SERVICES__INVENTORY__ENDPOINTS?"),
        ("MESHLIB_SERVICES_INVENTORY_ENDPOINTS", "did you mean MESHLIB_SERVICES__INVENTORY__ENDPOINTS?"),
        ("MESHLIB_SERVICES__INVENTORY_ENDPOINTS", "did you mean MESHLIB_SERVICES__INVENTORY__ENDPOINTS?"),
        ("MESHLIB_SERVICES__INVENTORY_API_LB_POLICY", "did you mean MESHLIB_SERVICES__INVENTORY_API__LB_POLICY?"),
        ("meshlib_services__inventory__endpoints", "did you mean MESHLIB_SERVICES__INVENTORY__ENDPOINTS?"),
        ("meshlib_lb_policy", "did you mean MESHLIB_LB_POLICY?"),
        ("Meshlib_Timeout", "did you mean MESHLIB_TIMEOUT?"),
        ("MESHLIB_LB_POLCY", "did you mean LB_POLICY?"),
        ("MESHLIB_WHATEVER_THIS_IS", "`meshlib config-docs` lists every key"),
        ("MESHLIB_SERVICES__X__NOTHING_LIKE_IT", "`meshlib config-docs` lists every key"),
    ],
)
def test_unknown_keys_get_a_suggestion_and_never_the_value(var, suggestion):
    exc = _error(env={var: "127.0.0.1:8001 the-value"})
    msg = str(exc)
    assert exc.name == var and var in msg and suggestion in msg
    assert "unknown" in msg or "case-sensitive" in msg
    assert "the-value" not in msg and "is invalid" not in msg
    assert "docs/configuration.md" not in msg


def test_unknown_file_and_mapping_keys(tmp_path):
    exc = _file_error(tmp_path, {"services": {"inv": {"endpionts": ["127.0.0.1:1"]}}})
    assert "services.inv.endpionts" in str(exc) and "did you mean endpoints?" in str(exc)
    exc = _error(mapping={"lb_polcy": "secret-ish"})
    assert "did you mean lb_policy?" in str(exc) and "secret-ish" not in str(exc)
    exc = _error(mapping={"endpoints": "127.0.0.1:1"})
    assert "per-service key; set services.<service>.endpoints" in str(exc)


@pytest.mark.parametrize("empty", ["", " ", ",", " , "])
def test_empty_endpoints_for_a_static_service(empty, tmp_path):
    exc = _error(env={"MESHLIB_SERVICES__INV__ENDPOINTS": empty})
    assert exc.name == "MESHLIB_SERVICES__INV__ENDPOINTS" and "at least one host:port" in str(exc)
    exc = _error(mapping={"services": {"inv": {"endpoints": []}}})
    assert exc.name.startswith("services.inv.endpoints")
    # With a discovery source the service is still declared by other keys; no error.
    load_config(environ={"MESHLIB_DISCOVERY": "dns", "MESHLIB_SERVICES__INV__DNS_NAME": "inv.internal"})


# ----------------------------------------------------------------- meshlib config check


def test_config_check_prints_the_effective_configuration(tmp_path, monkeypatch, capsys):
    f = tmp_path / "mesh.yaml"
    f.write_text("lb_policy: random\nservices:\n  billing:\n    endpoints: ['127.0.0.1:9001;weight=2;zone=b']\n    timeout: 3s\n")
    for var in [v for v in __import__("os").environ if v.upper().startswith("MESHLIB")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("MESHLIB_CONFIG", str(f))
    monkeypatch.setenv("MESHLIB_NUM_RETRIES", "4")
    monkeypatch.setenv("MESHLIB_CONSUL_TOKEN", "tok-VERY-SECRET")
    monkeypatch.setenv("MESHLIB_SERVICES__INVENTORY__ENDPOINTS", "127.0.0.1:8001,127.0.0.1:8002")
    threads = set(threading.enumerate())
    assert cli.main(["config", "check"]) == 0
    assert set(threading.enumerate()) == threads  # nothing was started
    out = capsys.readouterr().out
    assert f"sources: {f} < environment" in out
    assert "service billing:" in out and "service inventory:" in out
    billing = out.split("service billing:")[1].split("service inventory:")[0]
    assert "127.0.0.1:9001;weight=2;zone=b" in billing and "3s" in billing and f"services.billing.timeout ({f})" in billing
    assert "lb_policy = random" in billing.replace("  ", " ") or "random" in billing
    assert "num_retries" in billing and "MESHLIB_NUM_RETRIES (global)" in billing
    assert "consul_token" in out and "<hidden>" in out and "tok-VERY-SECRET" not in out
    assert cli.main(["config", "check", "--all"]) == 0
    assert "outlier_interval" in capsys.readouterr().out


def test_config_check_reports_errors_with_exit_status_2():
    out, err = io.StringIO(), io.StringIO()
    assert check({"MESHLIB_SERVICES__INVENTORY__ENDPIONTS": "127.0.0.1:1"}, out, err) == 2
    assert out.getvalue() == ""
    assert "did you mean ENDPOINTS?" in err.getvalue() and "127.0.0.1:1" not in err.getvalue()


# ----------------------------------------------------------------- secrets never shown

SECRET = "zq-S3CRET-7731"


def _secret_cases(tmp_path: Path) -> list[tuple[str, dict, dict | None]]:
    f = tmp_path / "secret.yaml"
    f.write_text(f"consul_tokn: {SECRET}\n")
    g = tmp_path / "secret2.yaml"
    g.write_text(f"services:\n  inv:\n    endpoints: [{{address: '127.0.0.1:1', token: {SECRET}}}]\n")
    h = tmp_path / "secret3.yaml"
    h.write_text(f"discovery: 'consul://127.0.0.1:8500?token={SECRET}'\n")
    return [
        ("unknown variable", {"MESHLIB_CONSUL_TOKN": SECRET}, None),
        ("unknown variable", {"MESHLIB_ETCD_PASSWD": SECRET}, None),
        ("global key per service", {"MESHLIB_SERVICES__SVC__CONSUL_TOKEN": SECRET}, None),
        ("lower-case variable", {"meshlib_consul_token": SECRET}, None),
        ("prefix near miss", {"MESHLIB_SERVICE__SVC__CONSUL_TOKEN": SECRET}, None),
        ("query of a registry URL", {"MESHLIB_DISCOVERY": f"consul://127.0.0.1:8500?token={SECRET}"}, None),
        ("query of a URL, path", {"MESHLIB_DISCOVERY": f"etcd://127.0.0.1:2379/v3?password={SECRET}"}, None),
        ("userinfo of a registry URL", {"MESHLIB_DISCOVERY": f"etcd://root:{SECRET}@127.0.0.1:2379"}, None),
        ("userinfo of an unknown scheme", {"MESHLIB_DISCOVERY": f"zk://root:{SECRET}@h"}, None),
        ("password without user", {"MESHLIB_ETCD_PASSWORD": SECRET}, None),
        ("token of a wrong type", {}, {"consul_token": [SECRET]}),
        ("password of a wrong type", {}, {"etcd_password": {"x": SECRET}}),
        ("key file path", {"MESHLIB_CONSUL_TLS_KEY": f"/nonexistent/{SECRET}.pem", "MESHLIB_CONSUL_TLS_CERT": "/etc/hostname"}, None),
        ("unknown mapping key", {}, {"consul_tokn": SECRET}),
        ("unknown service key", {}, {"services": {"a": {"auth_token": SECRET}}}),
        ("endpoint attribute", {}, {"services": {"a": {"endpoints": [{"address": "127.0.0.1:1", "token": SECRET}]}}}),
        ("endpoint metadata", {}, {"services": {"a": {"endpoints": [{"address": "127.0.0.1:1", "metadata": {"token": [SECRET]}}]}}}),
        ("unknown file key", {"MESHLIB_CONFIG": str(f)}, None),
        ("file endpoint", {"MESHLIB_CONFIG": str(g)}, None),
        ("file discovery URL", {"MESHLIB_CONFIG": str(h)}, None),
        ("CONSUL_HTTP_TOKEN with a bad config", {"CONSUL_HTTP_TOKEN": SECRET, "MESHLIB_LB_POLICY": "nope"}, None),
    ]


def test_no_secret_in_any_config_error(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    for label, env, mapping in _secret_cases(tmp_path):
        with pytest.raises(ConfigError) as info:
            load_config(environ=env, overrides=mapping)
        exc = info.value
        for text in (str(exc), repr(exc), repr(exc.args), repr(exc.value), exc.name, exc.accepted):
            assert SECRET not in text, f"{label}: {text}"
        if mapping is None:  # the same environment through `meshlib config check`
            out, err = io.StringIO(), io.StringIO()
            assert check(env, out, err) == 2, label
            assert SECRET not in out.getvalue() + err.getvalue(), label
    assert SECRET not in caplog.text


def test_no_secret_in_a_valid_config(tmp_path):
    env = {"MESHLIB_CONSUL_TOKEN": SECRET, "MESHLIB_ETCD_USER": "u", "MESHLIB_ETCD_PASSWORD": SECRET}
    cfg = MeshConfig.from_env(env)
    assert cfg.registry.consul_token == SECRET and cfg.registry.etcd_password == SECRET
    assert SECRET not in repr(cfg)
    out, err = io.StringIO(), io.StringIO()
    assert check(env, out, err, show_all=True) == 0
    assert SECRET not in out.getvalue() and "<hidden>" in out.getvalue()
    with Mesh(config={"consul_token": SECRET, "services": {"a": {"endpoints": "127.0.0.1:1"}}}) as mesh:
        assert SECRET not in repr(mesh.config) and SECRET not in str(mesh.stats()) and SECRET not in repr(mesh.endpoints("a"))


def test_no_secret_in_cli_output(monkeypatch, capsys):
    for var in [v for v in __import__("os").environ if v.upper().startswith("MESHLIB")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("MESHLIB_CONSUL_TOKEN", SECRET)
    monkeypatch.setenv("MESHLIB_SERVICES__A__ENDPOINTS", "127.0.0.1:1")
    for argv in (["config", "check", "--all"], ["stats"], ["endpoints", "a"]):
        assert cli.main(argv) == 0, argv
        captured = capsys.readouterr()
        assert SECRET not in captured.out + captured.err, argv
    monkeypatch.setenv("MESHLIB_CONSUL_TOKN", SECRET)  # a typo: unknown variable
    for argv in (["config", "check"], ["stats"], ["endpoints", "a"]):
        assert cli.main(argv) == 2, argv
        captured = capsys.readouterr()
        assert "MESHLIB_CONSUL_TOKN" in captured.err and SECRET not in captured.out + captured.err, argv
