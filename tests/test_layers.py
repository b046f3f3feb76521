"""The package's shape: imports go one way, down the layers of DESIGN.md, with
no cycle; no module grows past about 500 lines.

Every module's imports are read with ``ast`` — those inside functions too (a
lazy import is still a dependency), not those under ``if TYPE_CHECKING:``
(types only, never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "meshlib"

#: Layer of each top-level part of the package (DESIGN.md, "Layers").
LAYERS = {
    "errors": 0, "endpoint": 0, "clock": 0, "outcome": 0, "names": 0,
    "_tally": 0, "_background": 0, "_documents": 0, "_table": 0,
    "balancing": 1, "resilience": 1, "routing": 1,
    "core": 2, "health": 2, "telemetry": 2, "security": 2,
    "discovery": 3, "registration": 3, "xds": 3,
    "config": 4,
    "adapters": 5, "mesh": 5, "mesh_routing": 5, "mesh_security": 5,
    "cli": 6, "demo": 6, "admin": 6, "__main__": 6, "__init__": 6,
    "testing": 6,
}  # fmt: skip
MAX_LINES = 520


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"{module}: its part {top!r} has no layer in tests/test_layers.py (add it, as DESIGN.md places it)")
    return LAYERS[top]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("meshlib"):
                    found.add(_known(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("meshlib"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in MODULES else _known(target))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _known(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    mine = _layer(module)
    upward = sorted(dep for dep in GRAPH[module] if dep != "meshlib" and _layer(dep) > mine and not dep.startswith(module + "."))
    assert not upward, f"{module} (layer {mine}) imports up the layers: " + ", ".join(f"{d} (layer {_layer(d)})" for d in upward)


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components over the module graph; a package
    # importing its own submodules is not a cycle unless they import it back.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in MODULES:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            strong(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_in_the_library_imports_the_test_seams() -> None:
    # The demo (top layer) runs its registries on the bundled test servers.
    offenders = sorted(
        m for m, deps in GRAPH.items()
        if not m.startswith(("meshlib.testing", "meshlib.demo")) and any(d.startswith("meshlib.testing") for d in deps)
    )  # fmt: skip
    assert not offenders, f"library modules importing meshlib.testing: {offenders}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by concern (about 500 at most)"
