"""Bad input never crashes a resolver, and good input beside it is kept.

Property tests over what a registry or a file can hand a resolver: etcd values
(bytes, any JSON), Consul health entries, endpoints-file documents, DNS
answers and endpoint attributes. The resolvers' own apply functions run here
without a server (the end-to-end runs with a real etcd, the Consul double and
files rewritten under traffic are in test_discovery_faults.py).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib import ConfigError
from meshlib.config import RegistryConfig
from meshlib.discovery.consul import ConsulResolver, _ServiceWatch, endpoint_from_entry
from meshlib.discovery.dns import DnsResolver, usable_addresses
from meshlib.discovery.etcd import EtcdResolver, endpoint_from_value
from meshlib.discovery.file import FileResolver, Incomplete, parse_endpoints_file
from meshlib.endpoint import Endpoint, endpoint_from_mapping

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Anything JSON can say, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

FIELDS = ("address", "host", "port", "weight", "zone", "priority", "tags", "metadata", "healthy")
#: Values that are wrong for every attribute, the ones seen in the field first.
NASTY = [5, True, False, 1e999, -1e999, float("nan"), 1.5, -1, 10**30, "", "²", "1e999", [], {}, [[[]]], {"a": {"b": {}}}, None, "x" * 500]

#: Endpoint mappings that are right, and the endpoint each must become.
good_mappings = st.builds(
    lambda port, weight, zone, priority, tags, meta, healthy: (
        {"address": f"10.0.0.1:{port}", "weight": weight, "zone": zone, "priority": priority, "tags": tags, "metadata": meta, "healthy": healthy},
        Endpoint("10.0.0.1", port, weight, zone, priority, tuple(tags), meta, healthy),
    ),
    st.integers(1, 65535),
    st.integers(1, 1_000_000),
    st.text(alphabet="abc-", max_size=5),
    st.integers(0, 127),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.booleans(),
)


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


# -- endpoint attributes --------------------------------------------------------------------


#: Of NASTY, what each attribute accepts (it means something unambiguous); everything else is refused.
ACCEPTED = [("weight", 5), ("priority", 5), ("tags", []), ("tags", None), ("metadata", {}), ("metadata", None), ("zone", ""),
            ("zone", None), ("zone", 5), ("zone", -1), ("zone", 10**30), ("healthy", True), ("healthy", False),
            ("zone", "²"), ("zone", "1e999"), ("zone", "x" * 500), ("host", "²"), ("host", "1e999"), ("host", "x" * 500),
            ("port", 5)]  # fmt: skip


@pytest.mark.parametrize("field", ["weight", "priority", "tags", "metadata", "zone", "healthy", "address", "host", "port"])
@pytest.mark.parametrize("bad", NASTY, ids=repr)
def test_endpoint_attributes_of_the_wrong_type_are_config_errors(field: str, bad: Any):
    data: dict[str, Any] = {"host": "10.0.0.1", "port": 80} if field in ("host", "port") else {"address": "10.0.0.1:80"}
    data[field] = bad
    accepted = any(f == field and type(v) is type(bad) and v == bad for f, v in ACCEPTED)
    if accepted:
        assert isinstance(endpoint_from_mapping(data, name="services.a.endpoints[0]"), Endpoint)
    else:
        with pytest.raises(ConfigError, match=rf"services\.a\.endpoints\[0\]\.{field}="):
            endpoint_from_mapping(data, name="services.a.endpoints[0]")


def test_the_values_of_the_issue_are_refused_with_a_clear_message():
    for data, words in [
        ({"address": "a:1", "tags": 5}, "tags=5 is invalid: a list of strings"),
        ({"address": "a:1", "tags": True}, "tags=True is invalid: a list of strings"),
        ({"address": "a:1", "weight": math.inf}, "weight=inf is invalid: weight must be a whole number"),
        ({"address": "a:1", "weight": True}, "weight=True is invalid"),
        ({"address": "a:1", "priority": 1e999}, "priority=inf is invalid: priority must be a whole number from 0 to 127"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("[", r"\[")):
            endpoint_from_mapping(data, name="e")


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS + ("other",)), json_values, max_size=6) | json_values)
def test_endpoint_from_mapping_answers_an_endpoint_or_a_config_error(data: Any):
    try:
        assert isinstance(endpoint_from_mapping(data, name="e"), Endpoint)
    except ConfigError as exc:
        assert len(str(exc)) < 2000  # a huge or deep value is shown shortened


@FAST
@given(good_mappings)
def test_good_mappings_become_their_endpoint(case):
    data, expected = case
    assert endpoint_from_mapping(data, name="e") == expected


# -- etcd -----------------------------------------------------------------------------------


def etcd_resolver() -> tuple[EtcdResolver, list]:
    published: list = []
    r = EtcdResolver("127.0.0.1", 1, RegistryConfig(etcd_prefix="/p"))
    r._start_table("etcd://test/p", published.append)
    return r, published


etcd_values = (
    st.binary(max_size=40)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(NASTY[:16]), max_size=6).map(
        lambda d: json.dumps({"address": "10.9.9.9:1", **d}).encode()
    )
    | st.sampled_from([deep(100_000), deep(500), b'{"weight": 1e999, "address": "10.9.9.9:1"}', b"\xff\xfe", b'{"Op": 1, "Addr": 5}'])
)


@FAST
@given(st.lists(etcd_values, max_size=6), st.lists(good_mappings, min_size=1, max_size=4))
def test_etcd_bad_values_are_skipped_and_good_ones_kept(bad: list[bytes], good: list):
    r, published = etcd_resolver()
    kvs = [(f"/p/svc/bad{i}", value, 10 + i) for i, value in enumerate(bad)]
    kvs += [(f"/p/svc/good{i}", json.dumps(data).encode(), 100 + i) for i, (data, _) in enumerate(good)]
    r._apply_listing(kvs)
    kept = {ep.key for ep in published[-1].endpoints}
    assert {ep.key for _, ep in good} <= kept
    assert kept <= {ep.key for _, ep in good} | {("10.9.9.9", 1)}  # a bad-looking value may still be a valid endpoint


def test_etcd_a_bad_value_is_logged_once_per_revision(caplog):
    caplog.set_level(logging.DEBUG, logger="meshlib")
    r, published = etcd_resolver()
    listing = [("/p/svc/a", b'{"address": "10.0.0.1:80", "tags": 5}', 7), ("/p/svc/b", b'{"address": "10.0.0.2:80"}', 8)]
    for _ in range(3):  # a reload (reconnect, compaction) reads the same revision again
        r._apply_listing(listing)
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING and "/p/svc/a" in rec.getMessage()]
    assert len(warnings) == 1 and "tags" in warnings[0].getMessage()
    r._apply_listing([("/p/svc/a", b'{"address": "10.0.0.1:80", "tags": 5}', 9), listing[1]])  # written again: a new revision
    assert len([rec for rec in caplog.records if rec.levelno == logging.WARNING and "/p/svc/a" in rec.getMessage()]) == 2
    assert [ep.address for ep in published[-1].endpoints] == ["10.0.0.2:80"]
    assert r.bad.skipped == 4


def test_etcd_values_only_raise_value_errors():
    for raw in [deep(100_000), b"\xff", b"1e999", b'"x"', b"[]", b"null", b'{"Addr": [1]}', b'{"address": 5}']:
        with pytest.raises(ValueError):
            endpoint_from_value(raw, "/p/s/i")


# -- Consul ---------------------------------------------------------------------------------


def consul_entry(i: int, **service: Any) -> dict[str, Any]:
    return {"Node": {"Node": f"n{i}", "Address": f"10.1.0.{i}"}, "Service": {"ID": f"s{i}", "Port": 80, **service}, "Checks": []}


consul_junk = (
    json_values
    | st.dictionaries(
        st.sampled_from(["Address", "Port", "Tags", "Meta", "Weights", "Locality", "ID"]), json_values | st.sampled_from(NASTY[:16]), max_size=5
    ).map(lambda svc: consul_entry(200, **svc))
    | st.builds(lambda checks: {**consul_entry(201), "Checks": checks}, json_values)
)


@FAST
@given(st.lists(consul_junk, max_size=6), st.integers(1, 5))
def test_consul_malformed_entries_are_skipped_and_good_ones_kept(junk: list, n_good: int):
    published: list = []
    r = ConsulResolver("127.0.0.1", 1, RegistryConfig(registry_watch="declared"), declared=frozenset({"api"}))
    r._start_table("consul://test", published.append)
    watch = _ServiceWatch(r, "api")
    try:
        good = [consul_entry(i) for i in range(1, n_good + 1)]
        watch._apply(junk + good)
        kept = {ep.host for ep in published[-1].endpoints}
        assert {f"10.1.0.{i}" for i in range(1, n_good + 1)} <= kept <= {f"10.1.0.{i}" for i in range(1, n_good + 1)} | {"10.1.0.200", "10.1.0.201"} | {
            str(e.get("Service", {}).get("Address")).strip().strip("[]") for e in junk if isinstance(e, dict) and isinstance(e.get("Service"), dict)
        }
    finally:
        watch.adapter.interrupt()
        watch.client.http.session.close()


def test_consul_entries_of_the_wrong_type_say_why():
    for service, words in [
        ({"Tags": 5}, "Tags"),
        ({"Meta": {"a": {"nested": 1}}}, "Meta"),
        ({"Meta": {"priority": "1e999"}}, "priority"),
        ({"Weights": {"Passing": 1e999}}, "weight"),
        ({"Port": "80"}, "Port"),
        ({"Locality": {"Zone": ["a"]}}, "Zone"),
    ]:
        with pytest.raises(ValueError, match=words):
            endpoint_from_entry(consul_entry(1, **service), "api n1/s1")


# -- DNS ------------------------------------------------------------------------------------


dns_answers = st.lists(
    st.sampled_from(["10.0.0.1", "::1", "fe80::1%lo", "not-an-ip", "", "10.0.0.256", "1.2.3"]) | json_values, max_size=6
) | json_values


@FAST
@given(dns_answers)
def test_dns_answers_keep_only_ip_addresses(answers: Any):
    good, bad = usable_addresses(answers)
    assert all(isinstance(a, str) for a in good) and len(good) == len(set(good))
    if isinstance(answers, list):
        assert len(good) <= len(answers)


def test_dns_resolver_survives_any_lookup_and_keeps_the_last_good_addresses():
    answers: list[Any] = [["10.0.0.1", "10.0.0.2"]]

    def lookup(name: str, port: int) -> Any:
        answer = answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    published: list = []
    r = DnsResolver({"api": ("api.internal", 80, 1.0)}, lookup=lookup)
    r._publish = published.append
    r.refresh(force=True)
    assert [ep.address for ep in published[-1].endpoints] == ["10.0.0.1:80", "10.0.0.2:80"]
    for bad in [["garbage", None, 5], None, 5, "10.0.0.9", RuntimeError("a resolver bug"), KeyError("x"), [["10.0.0.1"]], [b"10.0.0.1"]]:
        answers[0] = bad
        r.refresh(force=True)
        assert [ep.address for ep in published[-1].endpoints] == ["10.0.0.1:80", "10.0.0.2:80"], bad
    assert r.status()["errors"] == 8
    answers[0] = ["10.0.0.3", "junk"]  # the malformed answer is skipped, the good one used
    r.refresh(force=True)
    assert [ep.address for ep in published[-1].endpoints] == ["10.0.0.3:80"]
    assert r.status()["skipped_answers"] >= 5


# -- endpoints file ---------------------------------------------------------------------------

file_docs = st.one_of(
    json_values.map(lambda v: json.dumps({"services": v})),
    json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(lambda s: json.dumps({"services": {"a": s}})),
    st.lists(json_values | st.sampled_from(NASTY[:16]), max_size=3).map(lambda eps: json.dumps({"services": {"a": eps}})),
    st.sampled_from(["", "{", "[]", '{"services": null}', '{"services": {"a": null}}', "1e999", json.dumps({"services": {"a": [{"address": "a:1", "weight": 1e999}]}})]),
)


@FAST
@given(file_docs)
def test_an_endpoints_file_is_endpoints_incomplete_or_a_config_error(text: str):
    try:
        out = parse_endpoints_file(text.encode(), "e.json")
    except (ConfigError, Incomplete):
        return
    assert all(isinstance(ep, Endpoint) for eps in out.values() for ep in eps)


@pytest.mark.parametrize(
    "text",
    [
        '{"services": {"a": [{"address": "127.0.0.1:1", "tags": 5}]}}',
        '{"services": {"a": [{"address": "127.0.0.1:1", "weight": 1e999}]}}',
        '{"services": {"a": [{"address": "127.0.0.1:1", "priority": 1e999}]}}',
        '{"services": {"a": [{"address": "127.0.0.1:1", "metadata": {"m": [1]}}]}}',
        '{"services": {"a b": ["127.0.0.1:1"]}}',
        '{"services": [1, 2]}',
        '{"services": {}, "1": 2, "x": 3}',
        "[" * 100_000,
    ],
)
def test_a_bad_file_at_start_up_is_a_config_error(tmp_path, text: str):
    f = tmp_path / "e.json"
    f.write_text(text)
    with pytest.raises(ConfigError):
        FileResolver(str(f), 3600)
