"""The layout's rules: no import cycle among the project's modules, and stage modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deploy", "models", "runtimes")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in: the longest module prefix of it."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `module` imports anywhere in its file (function bodies too), except for type checking."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(filter(None, (_owner(alias.name, modules) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from mod import name` imports mod.
                found.add(_owner(f"{base}.{alias.name}", modules) or "")
    found.discard("")
    found.discard(module)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_import_cycle_among_the_packages():
    cycles = import_cycles(import_graph(ROOT, PACKAGES))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_lazy_import_cycle(tmp_path):
    """The check above can fail: a cycle closed by an import inside a function is still a cycle."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from pkg import a\n    return a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b"]]


def package_of(module: str) -> str:
    """The stage a module belongs to: its sub-package (`deploy.export.stage` -> `deploy.export`), or itself for a
    module directly in a top package (`deploy.errors`, `runtimes.base`)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        owner = package_of(module)
        packages.setdefault(owner, set()).update(p for p in map(package_of, imported) if p != owner)
    return packages


def test_no_package_imports_one_that_imports_it_back():
    """Between stages too: `deploy.export` and `deploy.diagnose` each importing the other is a cycle even where no
    single module imports one that imports it back."""
    cycles = import_cycles(package_graph(import_graph(ROOT, PACKAGES)))
    assert not cycles, "package import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_package_check_finds_a_cycle_between_two_packages(tmp_path):
    top = tmp_path / "top"
    for sub in ("a", "b"):
        (top / sub).mkdir(parents=True)
        (top / sub / "__init__.py").write_text("")
    (top / "__init__.py").write_text("")
    (top / "a" / "one.py").write_text("from top.b import two\n")
    (top / "b" / "two.py").write_text("")
    (top / "b" / "three.py").write_text("def f():\n    from top.a import four\n")
    (top / "a" / "four.py").write_text("")
    graph = import_graph(tmp_path, ("top",))
    assert import_cycles(graph) == [], "no module cycle"
    assert import_cycles(package_graph(graph)) == [["top.a", "top.b"]]


@pytest.mark.parametrize("package", ["deploy", "runtimes", "models"])
def test_every_package_says_what_it_takes_and_hands_on(package):
    for init in (ROOT / package).rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 8, f"{init.relative_to(ROOT)} has no docstring saying what it does"


def test_no_module_outgrows_one_concern():
    """Modules stay under 400 lines, runtime adapters and scripts included; rule modules (deploy/passes) may be
    longer, being declarative."""
    files = [path for folder in (*PACKAGES, "scripts") for path in (ROOT / folder).rglob("*.py")
             if path.relative_to(ROOT).parts[:2] != ("deploy", "passes")]
    assert ROOT / "runtimes" / "tensorrt" / "plan.py" in files  # subpackages are walked too
    long = [f"{path.relative_to(ROOT)} ({n} lines)" for path in files
            if (n := len(path.read_text().splitlines())) > 400]
    assert not long, "split these: " + ", ".join(long)
