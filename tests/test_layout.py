"""The repository's layout and its front door, checked (issue 34): what is at the top is what a user
runs (plus the design card's two shared modules), the library is the package `mop/` and imports
nothing from the top but the policy module, no import circles, no file over ~1,000 lines, and the
hand-kept lists (README's file map, pyproject's first-party list) name every runnable and module.
The README's commands are walked in tests/test_readme.py."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mop"
SHARED = {"mixture_of_experts", "plotting_utils"}  # the design card's shared modules, kept at the top
MAX_LINES = 1000


def top_modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ROOT.glob("*.py"))}


def package_modules() -> dict[str, Path]:
    return {f"{PACKAGE}.{p.stem}": p for p in sorted((ROOT / PACKAGE).glob("*.py")) if p.stem != "__init__"}


def bench_scripts() -> list[Path]:
    return sorted((ROOT / "bench").glob("*.py"))


def is_runnable(path: Path) -> bool:
    """A stage (`if __name__ == "__main__":`), a marimo notebook (`marimo.App`), or the Modal app."""
    text = path.read_text()
    return '__name__ == "__main__"' in text or "marimo.App(" in text or path.stem == "modal_app"


def project_imports(path: Path) -> set[str]:
    """Project modules a file imports anywhere (lazy imports inside functions included), as
    'name' for a top-level module and 'mop.name' for a package module."""
    tops, pkg = set(top_modules()), set(package_modules())
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == PACKAGE:
                names = [f"{PACKAGE}.{a.name}" for a in node.names]
            else:
                names = [node.module]
        for name in names:
            if name in pkg:
                found.add(name)
            elif name.startswith(PACKAGE + ".") and ".".join(name.split(".")[:2]) in pkg:
                found.add(".".join(name.split(".")[:2]))
            elif name.split(".")[0] in tops:
                found.add(name.split(".")[0])
    return found


def import_graph() -> dict[str, set[str]]:
    files = {**top_modules(), **package_modules()}
    return {name: project_imports(path) - {name} for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_top_holds_what_a_user_runs_and_the_two_shared_modules():
    not_runnable = {name for name, path in top_modules().items() if not is_runnable(path)}
    assert not_runnable == SHARED, f"only imported, so it belongs in {PACKAGE}/: {not_runnable - SHARED}"
    assert all(is_runnable(p) for p in bench_scripts())
    assert not any(is_runnable(p) for p in package_modules().values()), "a runnable belongs at the top"


def test_the_package_imports_nothing_from_the_top_but_the_policy_module():
    for name, path in package_modules().items():
        upward = {m for m in project_imports(path) if not m.startswith(PACKAGE + ".")}
        assert upward <= {"mixture_of_experts"}, f"{name} imports {upward} from the top"


def test_the_import_graph_has_no_circles():
    assert circles(import_graph()) == []


def test_circle_finder_finds_a_circle():  # the check above can fail
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_file_is_over_a_thousand_lines():
    files = [*top_modules().values(), *package_modules().values(), *bench_scripts()]
    long = {
        p.relative_to(ROOT).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def readme_file_map() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Files\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert match, "README.md has no '## Files' section"
    return match.group(1)


def test_the_readme_file_map_names_every_runnable_and_module():
    listed = set(re.findall(r"`([\w/]+\.py)`", readme_file_map()))
    expected = {p.name for p in top_modules().values()}
    expected |= {f"{PACKAGE}/{p.name}" for p in package_modules().values()} | {f"{PACKAGE}/__init__.py"}
    expected |= {f"bench/{p.name}" for p in bench_scripts()}
    assert expected - listed == set(), "missing from README's file map"
    assert listed - expected == set(), "README's file map names files that do not exist"


def test_the_first_party_list_names_the_package_and_every_top_level_module():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["ruff"]["lint"]["isort"]["known-first-party"])
    assert listed == {PACKAGE, "conftest"} | set(top_modules())
