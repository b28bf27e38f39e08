"""The package's own import graph, read from the source (no module is imported).

`dlworkflow dvc-yaml` derives each stage's code deps from it (the modules its scripts and
rules import, transitively), so a stage reruns when any code it runs changes; tests use it to
keep the graph free of cycles and of forbidden directions.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "dlworkflow"

#: `from dlworkflow.x import y` / `import dlworkflow.x` lines in Snakemake files (not Python)
_SMK_IMPORT = re.compile(rf"^\s*(?:from\s+({PACKAGE}(?:\.\w+)*)\s+import\s+"
                         rf"(\([\w\s,]+\)|[\w ,]+)|import\s+({PACKAGE}(?:\.\w+)*))",
                         re.MULTILINE)


def module_path(name: str, src: Path) -> Path | None:
    """The file of module `name` under `src` (a module file or a package's __init__.py)."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolve(name: str, src: Path) -> str | None:
    """`name` if it is a module of the package, else its longest prefix that is (an attribute
    imported from a module: `from dlworkflow.data import load_arrays` -> dlworkflow.data)."""
    parts = name.split(".")
    while parts and parts[0] == PACKAGE:
        candidate = ".".join(parts)
        if module_path(candidate, src) is not None:
            return candidate
        parts.pop()
    return None


def _names_in_python(text: str, current: str | None) -> set[str]:
    """Dotted names a Python file imports (functions' own imports included), with each
    `from x import y` also giving x.y (y may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and current:  # relative (the package uses none; kept correct)
                package = current.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _names_in_smk(text: str) -> set[str]:
    found: set[str] = set()
    for match in _SMK_IMPORT.finditer(text):
        if match[1]:
            found.add(match[1])
            names = match[2].strip("()").split(",")
            found.update(f"{match[1]}.{n.strip()}" for n in names if n.strip())
        else:
            found.add(match[3])
    return found


def direct_imports(path: Path, src: Path, module: str | None = None) -> set[str]:
    """The package modules a file (Python or Snakemake) imports itself."""
    text = path.read_text(encoding="utf-8")
    names = _names_in_smk(text) if path.suffix == ".smk" else _names_in_python(text, module)
    resolved = {_resolve(n, src) for n in names if n.split(".")[0] == PACKAGE}
    return {r for r in resolved if r and r != module}


def package_modules(src: Path) -> list[str]:
    """Every module of the package under `src`, by dotted name."""
    root = src / PACKAGE
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_graph(src: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (a package imports its __init__'s imports;
    importing `a.b` also runs `a`'s __init__)."""
    graph = {}
    for name in package_modules(src):
        path = module_path(name, src)
        edges = direct_imports(path, src, name)
        graph[name] = {e for e in edges}
    for name, edges in graph.items():  # importing a.b.c runs a.b's __init__ first
        for edge in list(edges):
            parent = edge.rsplit(".", 1)[0]
            if parent != PACKAGE and parent in graph and parent != name \
                    and not name.startswith(parent + "."):
                edges.add(parent)
    return graph


def closure(start: Iterable[str], graph: dict[str, set[str]]) -> set[str]:
    """Every module reachable from `start`, `start` included."""
    seen: set[str] = set()
    todo = [s for s in start if s in graph]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name] - seen)
    return seen


def files_needed(files: Iterable[str], root: Path, src: Path,
                 shallow: Iterable[str] = ()) -> list[str]:
    """The package module files (relative to `root`) that `files` (scripts, rules) run,
    transitively, sorted; of the `shallow` files only the modules they import themselves
    count. The package's own __init__ is left out (it holds no code)."""
    graph = import_graph(src)
    start: set[str] = set()
    for file in files:
        path = root / file
        if path.is_file() and path.suffix in (".py", ".smk"):
            start |= direct_imports(path, src)
    modules = closure(start, graph)
    for file in shallow:
        modules |= direct_imports(root / file, src)
    for name in list(modules):  # importing a.b.c runs the __init__ of a.b first
        parts = name.split(".")
        modules.update(".".join(parts[:n]) for n in range(2, len(parts)))
    modules.discard(PACKAGE)
    return sorted(str(module_path(m, src).relative_to(root)) for m in modules)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (import cycles), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for edge in sorted(graph.get(node, ())):
            if edge not in index:
                visit(edge)
                low[node] = min(low[node], low[edge])
            elif edge in on_stack:
                low[node] = min(low[node], index[edge])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
