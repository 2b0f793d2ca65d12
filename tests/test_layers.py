"""The architecture, checked from the source: every import points down a layer, none goes in a cycle, and no module
imports another module's private name. The layers (README "Architecture"), lowest first; a module belongs to the
layer of the longest prefix that names it."""

from __future__ import annotations

import ast
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("floor: errors, atomic writes, progress events", ("config.errors", "config.atomic", "config.progress")),
    ("media I/O", ("media",)),
    ("masks", ("masks",)),
    ("model families", ("models",)),
    ("config schema, loading, CLI helpers", ("config",)),
    ("job data and prepare's pipeline", ("datasets",)),
    ("engine (package docs)", ("engine",)),
    ("encode once", ("engine.encode",)),
    ("inference", ("engine.infer",)),
    ("evaluation", ("engine.evaluate",)),
    ("training", ("engine.train",)),
    ("planning", ("engine.plan",)),
    ("entry points, tools, benchmarks, examples, tests",
     ("prepare", "train", "infer", "evaluate", "webui", "app", "tools", "benchmarks", "examples", "tests")),
]


def _modules() -> dict[str, Path]:
    """Module name -> file, for every Python file git tracks or would track."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for rel in listed:
        path = REPO / rel
        if not path.is_file():
            continue
        parts = list(Path(rel).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py and the README")
    return best


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _where(module: str) -> str:
    path = MODULES[module]
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported project module, name imported from it or None, line) for every import in the file, wherever it
    stands (module level, in functions, under TYPE_CHECKING)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = _package(module, path).split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    found.append((sub, None, node.lineno))
                elif base in MODULES:
                    found.append((base, alias.name, node.lineno))
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_every_import_points_down_or_within_its_layer():
    upward = []
    for module in MODULES:
        mine = layer_of(module)
        for target, _, line in imports(module):
            if layer_of(target) > mine:
                upward.append(f"{_where(module)}:{line} {module} ({LAYERS[mine][0]}) imports "
                              f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _, _ in imports(module):
            if target != module:
                graph[module].add(target)
    # Tarjan's strongly connected components: a component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_another_modules_private_name():
    private = [f"{_where(m)}:{line} imports {name} from {target}"
               for m in MODULES for target, name, line in imports(m)
               if name and name.startswith("_") and not name.startswith("__") and target != m]
    assert not private, "\n".join(private)


@pytest.mark.parametrize("bad", ["up", "cycle", "private"])
def test_the_checks_catch_what_they_are_for(bad, monkeypatch, tmp_path):
    """A planted upward import, cycle and private import each fail the check that looks for them."""
    planted = {
        "up": {"media.planted": "from engine.infer import job\n"},
        "cycle": {"masks.planted_a": "from masks import planted_b\n", "masks.planted_b": "import masks.planted_a\n"},
        "private": {"masks.planted_c": "from masks.io import _fit_mask\n"},
    }[bad]
    for name, text in planted.items():
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        monkeypatch.setitem(MODULES, name, path)
    check = {"up": test_every_import_points_down_or_within_its_layer, "cycle": test_no_import_cycles,
             "private": test_no_module_imports_another_modules_private_name}[bad]
    with pytest.raises(AssertionError):
        check()
