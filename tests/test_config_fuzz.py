"""Every key, every source, any value: the configuration either loads or raises
ConfigError -- never another exception, never a hang.

Three sources, at least 5,000 generated cases each: the environment (text,
and numbers / booleans written as text), the MESHLIB_CONFIG file (YAML, JSON
and TOML documents, plus arbitrary bytes), and the mapping given to
``Mesh(config=...)`` (any Python value: huge, inf, nan and negative numbers,
booleans, None, lists, nested mappings). Configs are built with
``load_config`` only -- no Mesh is started, so a case costs well under a
millisecond. The outcome counts are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import Counter

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.config import KEYS, MeshConfig, load_config
from meshlib.errors import ConfigError

CASES = int(os.environ.get("MESHLIB_FUZZ_CASES", "5000"))
SLOWEST_CASE = 5.0  # seconds; a case this slow is a hang in the making

SERVICE_KEYS = sorted(k.name for k in KEYS.values() if k.scope != "global")
GLOBAL_KEYS = sorted(k.name for k in KEYS.values() if k.scope != "service")

_EXTREMES = (10**400, -(10**400), 2**63, 2**64 + 1, 10**4301, -1, 0, 1e308, 1e-320, -0.0)


def _extreme(i: int) -> int | float:
    return _EXTREMES[i]  # by index: hypothesis cannot repr an int of 4,302 digits


huge = st.integers(0, len(_EXTREMES) - 1).map(_extreme)
numbers = st.one_of(st.integers(), huge, st.floats(allow_nan=True, allow_infinity=True))
texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="0123456789²³¹٣.,;:=-_ msh", max_size=12),
    st.integers(4000, 6000).map(lambda n: "1" * n),  # more digits than int() converts
    st.sampled_from(["", " ", "none", "off", "true", "inf", "nan", "-1", "1e999", "5000ms", "²", "٣٣٣",
                     "127.0.0.1:80;weight=inf", "consul://h?token=x", "etcd://u:p@h:1", "file://", "a=1,b", "200-", "-"]),
    st.tuples(st.integers(0, 10**6), st.sampled_from(["", "ms", "s", "m", "h"])).map(lambda t: f"{t[0]}{t[1]}"),
)
scalars = st.one_of(texts, numbers, st.booleans(), st.none())
nested = st.one_of(scalars, st.lists(scalars, max_size=2))
values = st.one_of(  # scalars, lists and mappings two levels deep (deeper nesting: test_config_errors)
    scalars,
    st.lists(nested, max_size=3),
    st.dictionaries(st.text(max_size=4), nested, max_size=3),
)
endpoint_items = st.dictionaries(
    st.sampled_from(["address", "host", "port", "weight", "zone", "priority", "tags", "metadata", "healthy", "other"]),
    st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=6), scalars, max_size=2)),
    max_size=4,
)
service_values = st.one_of(values, st.lists(st.one_of(endpoint_items, scalars), max_size=3))



def _pick(items: list[tuple[str, bool, object]]) -> dict[str, object]:
    return {key: KEYS[key].example if documented else value for key, documented, value in items}


def _entries(names: list[str], fuzz: st.SearchStrategy) -> st.SearchStrategy:
    """Up to 3 keys, each with its documented example (so valid combinations
    are reached too) or a fuzzed value."""
    return st.lists(st.tuples(st.sampled_from(names), st.booleans(), fuzz), max_size=3).map(_pick)


OUTCOMES: dict[str, Counter[str]] = {}


def _run(source: str, build) -> None:
    counts = OUTCOMES.setdefault(source, Counter())
    start = time.perf_counter()
    try:
        cfg = build()
    except ConfigError as exc:
        str(exc), repr(exc)  # rendering the message must not fail either
        counts["ConfigError"] += 1
    else:
        assert isinstance(cfg, MeshConfig)
        counts["ok"] += 1
    elapsed = time.perf_counter() - start
    assert elapsed < SLOWEST_CASE, f"{source}: one case took {elapsed:.1f}s"


def _mapping(glob: dict, svc: dict) -> dict:
    data = dict(glob)
    if svc:
        data["services"] = {"svc": svc}
    return data


FUZZ = settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(glob=_entries(GLOBAL_KEYS, values), svc=_entries(SERVICE_KEYS, service_values))
def test_mapping_source(glob, svc):
    _run("mapping", lambda: load_config(environ={}, overrides=_mapping(glob, svc)))


def _env_text(value: object) -> str:
    """A value as an environment variable could hold it (text, without NUL)."""
    try:
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    except ValueError:  # an int of more digits than str() converts
        text = "9" * 5000
    return text.replace("\0", "")


@FUZZ
@given(
    glob=_entries(GLOBAL_KEYS, st.one_of(texts, numbers, st.booleans()).map(_env_text)),
    svc=_entries(SERVICE_KEYS, st.one_of(texts, numbers, values).map(_env_text)),
    extra=st.sampled_from([{}, {"CONSUL_HTTP_TOKEN": "t"}, {"MESHLIB_SERVICE__SVC__ENDPOINTS": "x"}, {"meshlib_lb_policy": "random"}]),
)
def test_environment_source(glob, svc, extra):
    environ = {f"MESHLIB_{k.upper()}": v for k, v in glob.items()}
    environ.update({f"MESHLIB_SERVICES__SVC__{k.upper()}": v for k, v in svc.items()})
    environ.update(extra)
    _run("environment", lambda: load_config(environ=environ))


def _toml_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 2**63 else None
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        items = [_toml_value(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    if isinstance(value, dict):
        items = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()]
        return None if any(i.endswith("None") for i in items) else "{" + ", ".join(items) + "}"
    return None


def _toml(data: dict) -> str:
    lines, tables = [], []
    for k, v in data.items():
        if k == "services":
            for key, val in v["svc"].items():
                t = _toml_value(val)
                if t is not None:
                    tables.append(f"{json.dumps(key)} = {t}")
        else:
            t = _toml_value(v)
            if t is not None:
                lines.append(f"{json.dumps(k)} = {t}")
    return "\n".join(lines + (["[services.svc]"] + tables if tables else [])) + "\n"


def _dumpable(value: object) -> object:
    """``value`` with ints too long for ``str()`` cut down, so a dumper can write them
    (a file with 5,000 digits is checked on its own in test_config_errors)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 14_000:
        return 10**4000
    if isinstance(value, dict):
        return {k: _dumpable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dumpable(v) for v in value]
    return value


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield d


@FUZZ
@given(
    glob=_entries(GLOBAL_KEYS, values),
    svc=_entries(SERVICE_KEYS, service_values),
    form=st.sampled_from(["yaml", "json", "toml", "bytes"]),
    junk=st.binary(max_size=64),
)
def test_file_source(scratch, glob, svc, form, junk):
    data = _dumpable(_mapping(glob, svc))
    if form == "yaml":
        body = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True).encode("utf-8", "surrogatepass")
    elif form == "json":
        body = json.dumps(data, default=str).encode("utf-8", "surrogatepass")
    elif form == "toml":
        body = _toml(data).encode("utf-8", "surrogatepass")
    else:
        body = junk
    path = os.path.join(scratch, f"mesh.{'yaml' if form == 'bytes' else form}")
    with open(path, "wb") as f:
        f.write(body)
    _run("file", lambda: load_config(environ={"MESHLIB_CONFIG": path}))


def test_zz_fuzz_outcomes_are_recorded():
    """Runs after the fuzz tests in this module (same file, later name): each
    source saw its cases, and the counts are printed for the closing note."""
    for source in ("mapping", "environment", "file"):
        counts = OUTCOMES.get(source)
        if counts is None:
            pytest.skip("run with the fuzz tests of this module")
        total = sum(counts.values())
        print(f"config fuzz, {source}: {total} cases, {counts['ok']} loaded, {counts['ConfigError']} ConfigError, 0 other")
        assert total >= CASES, f"{source}: only {total} cases ran"
        assert counts["ok"] > 0 and counts["ConfigError"] > 0, f"{source}: {dict(counts)} -- the generator is too narrow"


NASTY = [
    "", " ", "²", "٣", "1" * 5000, "-1", "1e999", "nan", "inf", "0x10", "1_000", "true", "none", "\u202e", "a" * 300,
    "consul://h?token=x", 10**400, -(10**400), 2**63, float("inf"), float("-inf"), float("nan"), -1, 0, 1.5, True, False, None,
    [], ["x"], [1, 2], [["nested"]], {}, {"a": 1}, {"a": {"b": [1, {"c": None}]}},
]


@pytest.mark.parametrize("source", ["mapping", "environment", "file"])
def test_every_key_with_every_nasty_value(source, tmp_path):
    """The same guarantee, exhaustively: each key, each of the values above."""
    counts: Counter[str] = Counter()
    for key in KEYS.values():
        for value in NASTY:
            data = {key.name: value} if key.scope != "service" else {"services": {"svc": {key.name: value}}}
            if source == "mapping":
                build = lambda: load_config(environ={}, overrides=data)  # noqa: E731
            elif source == "environment":
                var = key.env if key.scope != "service" else f"MESHLIB_SERVICES__SVC__{key.name.upper()}"
                build = lambda: load_config(environ={var: _env_text(value)})  # noqa: E731
            else:
                path = tmp_path / "mesh.yaml"
                path.write_text(yaml.dump(_dumpable(data), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
                build = lambda: load_config(environ={"MESHLIB_CONFIG": str(path)})  # noqa: E731
            try:
                build()
                counts["ok"] += 1
            except ConfigError as exc:
                str(exc), repr(exc)
                counts["ConfigError"] += 1
    print(f"config sweep, {source}: {sum(counts.values())} cases ({len(KEYS)} keys x {len(NASTY)} values), {dict(counts)}")
