"""The package's layout rules, read from the source (docs/explanation/architecture.md).

Arrows run one way: faces -> coordinator -> {core, pool, stores}; pool -> core; stores -> core;
scheduler -> {core, stores}.  Imports under ``if TYPE_CHECKING:`` count too: a type-only
import of the coordinator from the pool would still tie the pool to it.  Only the module cycle
check leaves type-only imports out, because they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "taskengine"

#: Each part, and the parts it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "pool": {"core"},
    "stores": {"core"},
    "scheduler": {"core", "stores"},
    "coordinator": {"core", "pool", "stores"},
    "testing": {"core", "coordinator", "pool", "stores", "scheduler"},
    # The faces: the package front (__init__), the asyncio face, the CLI and the demo handlers.
    "faces": {"core", "coordinator", "pool", "stores", "scheduler", "testing", "faces"},
}

#: The largest module allowed without a reason written at its top (a "Size:" paragraph).
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    bits = module.split(".")
    if len(bits) > 1 and bits[1] in ALLOWED and bits[1] != "faces":
        return bits[1]
    return "faces"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(child) for child in ast.walk(node))
    return hidden


def _imports(module: str, path: Path, *, runtime_only: bool) -> Iterator[tuple[int, str]]:
    """(line, imported taskengine module) for each import in ``path``."""
    known = _modules()
    tree = ast.parse(path.read_text())
    hidden = _type_checking_nodes(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if path.name != "__init__.py":
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("taskengine"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in known else base
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("taskengine"):
                    yield node.lineno, alias.name


def test_every_import_follows_the_arrows_between_parts() -> None:
    broken = []
    for module, path in _modules().items():
        part = _part(module)
        for line, target in _imports(module, path, runtime_only=False):
            if target == "taskengine" and part != "faces":
                broken.append(f"{module}:{line} imports the package front 'taskengine'")
                continue
            target_part = _part(target)
            if target_part != part and target_part not in ALLOWED[part]:
                broken.append(f"{module}:{line} ({part}) imports {target} ({target_part})")
    assert broken == []


def test_the_core_imports_nothing_else_of_the_package() -> None:
    for module, path in _modules().items():
        if _part(module) == "core":
            targets = {t for _, t in _imports(module, path, runtime_only=False)}
            assert {t for t in targets if not t.startswith("taskengine.core")} == set(), module


def test_no_import_cycles_between_modules() -> None:
    graph = {
        module: {t for _, t in _imports(module, path, runtime_only=True) if t != module}
        for module, path in _modules().items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle of design: leave out
    # the edge from a module up to the package that contains it.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_a_long_module_says_why_at_its_top(module: str) -> None:
    path = _modules()[module]
    lines = path.read_text().splitlines()
    if len(lines) > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Size:" in docstring, f"{module} has {len(lines)} lines and no 'Size:' reason"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rules are not vacuous: a pool module importing a store is reported."""
    assert _part("taskengine.pool.pool") == "pool"
    assert _part("taskengine.stores.sqlite.store") == "stores"
    assert "stores" not in ALLOWED["pool"]
    assert "coordinator" not in ALLOWED["stores"]
    assert _part("taskengine.aio") == "faces"
