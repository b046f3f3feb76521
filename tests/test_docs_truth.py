"""The docs tell the truth about what exists.

* What is not built yet is said in one place, docs/index.md's "Not built
  yet" list; any other page that says something is missing ("not yet",
  "upcoming", "still to come", ...) fails, unless the phrase is one of a few
  that are about behaviour ("an endpoint not yet tried").
* No page (the list included) says something is missing that the package
  provides: each feature below has a probe, and a sentence that calls a
  provided feature missing fails.
* Every ``MESHLIB_...=`` example whose value holds a ``;`` is quoted (pasted
  unquoted into a shell, ``;`` ends the command and drops the rest).
* Install instructions and hints name the distribution, ``meshlib-client``,
  never ``meshlib`` (an unrelated 3D-mesh library on PyPI).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Callable

import pytest

import meshlib

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
INDEX = ROOT / "docs" / "index.md"
DIST = "meshlib-client"

#: Words that say something does not exist (yet).
MISSING = re.compile(r"\b(not yet|upcoming|still to come|to come later|coming soon|not implemented|not built|not supported|unsupported|future work|in a later)\b", re.I)
#: Phrases with those words that are about behaviour, not about what is built.
ALLOWED = re.compile(r"not yet (tried|drawn|read|sent|`request_done`|`retry_done`|returned|ejected|seen|answered|closed)", re.I)


#: Feature words, and whether the package provides the feature.
FEATURES: dict[str, Callable[[], bool]] = {
    r"\bgRPC (channels?|adapter|interceptors?)\b|grpc_channel": lambda: hasattr(meshlib.Mesh, "grpc_channel"),
    r"\bConsul\b": lambda: importlib.util.find_spec("meshlib.discovery.consul") is not None,
    r"\betcd\b": lambda: importlib.util.find_spec("meshlib.discovery.etcd") is not None,
    r"\bhttpx\b": lambda: hasattr(meshlib.Mesh, "httpx_client"),
    r"\bxDS\b": lambda: importlib.util.find_spec("meshlib.xds") is not None,
    r"\b(trace propagation|metrics export|spans?)\b": lambda: importlib.util.find_spec("meshlib.telemetry") is not None,
    r"\bmTLS\b": lambda: importlib.util.find_spec("meshlib.security") is not None,
    r"\bregistration|mesh\.register\b": lambda: hasattr(meshlib.Mesh, "register"),
    r"\bhedg": lambda: importlib.util.find_spec("meshlib.resilience.hedge") is not None,
    r"\bdecorator|@mesh\.call\b": lambda: hasattr(meshlib.Mesh, "call"),
}


def _sentences(path: Path) -> list[tuple[int, str]]:
    """Sentences (with their first line number), code blocks left out."""
    out: list[tuple[int, str]] = []
    in_code = False
    buf: list[str] = []
    start = 0
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if not line.strip() or line.lstrip().startswith(("#", "|", "- ")):
            if buf:
                out.append((start, " ".join(buf)))
            buf = []
            if line.strip():
                out.append((n, line))
            continue
        if not buf:
            start = n
        buf.append(line.strip())
    if buf:
        out.append((start, " ".join(buf)))
    return [(n, s) for n, para in out for s in re.split(r"(?<=[.;])\s+", para)]


def _index_list() -> list[str]:
    text = INDEX.read_text()
    head = text.index("## Not built yet")
    end = text.find("\n## ", head + 1)
    return [line for line in text[head:end].splitlines() if line.startswith("- ")]


def test_only_docs_index_says_what_is_not_built() -> None:
    found = []
    for page in PAGES:
        if page == INDEX:
            continue
        for n, sentence in _sentences(page):
            if "#not-built-yet" in sentence or sentence.startswith("#"):
                continue  # a link to the list, or the heading of a section that links to it
            if MISSING.search(ALLOWED.sub("", sentence)):
                found.append(f"{page.relative_to(ROOT)}:{n}: {sentence}")
    assert not found, "say what is not built only in docs/index.md#not-built-yet and link there:\n" + "\n".join(found)


def test_docs_index_keeps_the_not_built_list_and_other_pages_link_to_it() -> None:
    items = _index_list()
    assert len(items) >= 3, items
    links = [p for p in PAGES if "index.md#not-built-yet" in p.read_text()]
    assert len(links) >= 4, [p.name for p in links]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_calls_a_provided_feature_missing(page: Path) -> None:
    provided = {pattern for pattern, probe in FEATURES.items() if probe()}
    claims = [(n, s) for n, s in _sentences(page) if MISSING.search(ALLOWED.sub("", s))]
    if page == INDEX:
        claims += [(0, item) for item in _index_list()]
    wrong = []
    for n, sentence in claims:
        for pattern in provided:
            if re.search(pattern, sentence, re.I):
                wrong.append(f"{page.name}:{n}: {sentence!r} calls missing what matches {pattern!r}, which the package provides")
    assert not wrong, "\n".join(wrong)


def test_env_var_examples_with_a_semicolon_are_quoted() -> None:
    unquoted = re.compile(r"\bMESHLIB_[A-Z0-9_]+=(?!['\"])[^\s'\"`]*;")
    bad = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in [*PAGES, *(ROOT / "examples").glob("*.py")]
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if unquoted.search(line)
    ]
    assert not bad, "\n".join(bad)


#: Files another change owns, which still name the old extra (`meshlib[grpc]`):
#: the gRPC adapter's import hint and docs/grpc.md. Drop them from here once fixed.
def test_install_instructions_name_the_distribution() -> None:
    wrong_name = re.compile(r"pip install\s+(-e\s+)?['\"]?meshlib(?!-client)\b")
    files = [*PAGES, *(ROOT / "meshlib").rglob("*.py"), *(ROOT / "examples").glob("*.py"), ROOT / "scripts" / "setup.sh"]
    bad = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if wrong_name.search(line)
    ]
    assert not bad, "\n".join(bad)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^name = "{DIST}"$', pyproject, re.M)


def test_httpx_hint_names_both_clients() -> None:
    source = (ROOT / "meshlib" / "adapters" / "httpx.py").read_text()
    hint = next(line for line in source.splitlines() if "raise ModuleNotFoundError" in line)
    assert "httpx_async_client()" in hint and "httpx_client()" in hint and f"'{DIST}[httpx]'" in hint
