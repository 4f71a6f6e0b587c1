"""One-way doors in mgrpo_algos: no import cycle, no lower module importing a higher one.

Every ``import`` statement of ``mgrpo_algos`` is read, at module level and inside
functions alike (those under ``if TYPE_CHECKING:`` are annotations, never run). Only
optional heavy dependencies (ray, vllm, peft) may be imported inside functions, and
those are outside the package, so they are not edges here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mgrpo_algos"

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS: list[tuple[str, ...]] = [
    (  # leaves: data, pure math, small utilities
        "mgrpo_algos.buffer",
        "mgrpo_algos.functional",  # the RL math package, every module of it
        "mgrpo_algos.provenance",
        "mgrpo_algos.metrics",
        "mgrpo_algos.store",
        "mgrpo_algos.watch",
        "mgrpo_algos.config_reader",
        "mgrpo_algos.env_options",
        "mgrpo_algos.experiments.cache",  # stamped caches: the demo's and the experiments'
    ),
    ("mgrpo_algos.policies",),  # the policies package, every module of it
    ("mgrpo_algos.rollout", "mgrpo_algos.lora"),
    ("mgrpo_algos.alignment",),
    ("mgrpo_algos.training.scoring",),  # every reward: the learners and evaluate() share it
    ("mgrpo_algos.evaluate",),
    ("mgrpo_algos.training",),
    ("mgrpo_algos.sft",),
    ("mgrpo_algos.algorithms",),
    ("mgrpo_algos.distributed", "mgrpo_algos.policy_dirs", "mgrpo_algos.demo"),
    ("mgrpo_algos.experiments",),  # spec files -> result cells -> summaries
    ("mgrpo_algos.cli",),
    ("mgrpo_algos",),  # the package's lazy top-level names
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            out |= {id(n) for child in node.body for n in ast.walk(child)}
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text())
    skip = type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(root + ([base] if base else []))
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def layer_of(name: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if best is None:
        raise AssertionError(f"{name} is in no layer of LAYERS: add it where it belongs")
    return best[0]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in graph().items()
        for b in sorted(targets)
        if layer_of(b) > layer_of(a)
    ]
    assert upward == []


def test_the_check_sees_function_level_imports(tmp_path) -> None:
    """An import hidden in a function counts; one under TYPE_CHECKING does not."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mgrpo_algos.cli import main\n"
        "def f():\n    from mgrpo_algos.algorithms import ALGORITHMS\n"
    )
    known = {"mgrpo_algos.cli", "mgrpo_algos.algorithms", "m"}
    assert imports_of("m", source, known) == {"mgrpo_algos.algorithms"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_has_a_layer(name: str) -> None:
    layer_of(name)
