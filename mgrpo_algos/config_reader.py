"""The config dataclasses read from their source, so that ``mgrpo`` parses options without torch.

The configs live beside their learners (``training/config.py``,
``algorithms/mgrpo.py``, ``sft/config.py`` ...),
in modules that import torch and transformers: seconds to load, tens of seconds on
a loaded machine. To parse and check its options the command needs only the
configs' fields (names, types, defaults, documentation), so it reads them here from
the source files with ``ast``, without executing them, and imports the learners
once the options are known to be good (issue 33).

What is read: a ``@dataclass`` class's docstring, bases and annotated fields, and
module-level constants. Their expressions may use literals, names bound at module
level (assigned, or imported from another module), attributes of an imported
module, subscripts (``Literal[...]``, ``dict[str, Any]``), ``X | None``,
``field(default_factory=...)`` with a type or a ``lambda:`` as the factory, and
calls of another config read here (``RECIPE = SFTConfig(...)``). Names from
modules outside ``mgrpo_algos`` and ``mgrpo_envs`` (``typing``, ``dataclasses``
...) are imported as usual. Any other form raises :class:`SourceReadError`, and
:func:`read_or_import` falls back to importing the module: slower, the same fields.

A class read here has the fields, defaults and docstring of the real one but
neither its methods nor its checks (``__post_init__``): it describes options, and
the real config validates them. ``tests/test_cli.py`` checks that each class the
command reads equals the imported one.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import importlib
import importlib.util
from pathlib import Path
from typing import Any

PACKAGES = ("mgrpo_algos", "mgrpo_envs")  # read; any other module is imported
_BUILTINS = ("int", "float", "str", "bool", "bytes", "dict", "list", "tuple", "set", "frozenset")


class SourceReadError(Exception):
    """A definition uses a form this reader does not evaluate (the module is imported instead)."""


@dataclasses.dataclass(frozen=True)
class _ModuleRef:
    """A module of the package bound to a name (``from mgrpo_algos import lora``), read, not run."""

    name: str


@dataclasses.dataclass(frozen=True)
class _Imported:
    """``from MODULE import NAME`` (``NAME`` may be a sub-module)."""

    module: str
    name: str


def _in_package(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PACKAGES)


@functools.cache
def _source(module: str) -> Path | None:
    """The source file of ``module`` (``__init__.py`` for a package), found without
    importing it or its parents (``importlib.util.find_spec`` would run them)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_package(module: str) -> bool:
    source = _source(module)
    return source is not None and source.name == "__init__.py"


@functools.cache
def _bindings(module: str) -> dict[str, Any]:
    """Top-level name -> what binds it in ``module``'s source (the last binding wins)."""
    source = _source(module)
    if source is None:
        raise SourceReadError(f"no Python source for module {module!r}")
    tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    names: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node.value for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            names[node.target.id] = node.value
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = _Imported(node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = _ModuleRef(alias.name)
                else:  # ``import a.b`` binds ``a``
                    names[alias.name.partition(".")[0]] = _ModuleRef(alias.name.partition(".")[0])
    return names


@functools.cache
def read_value(module: str, name: str) -> Any:
    """The value ``module`` binds to ``name`` at top level, from its source (cached).

    Raises:
        SourceReadError: ``name`` is not bound at top level, or by a form not read here.
    """
    bound = _bindings(module).get(name)
    if bound is None:
        raise SourceReadError(f"{module} binds no {name!r} at top level")
    if isinstance(bound, ast.ClassDef):
        return _read_class(module, bound)
    if isinstance(bound, _Imported):
        if not _in_package(bound.module):
            return getattr(importlib.import_module(bound.module), bound.name)
        sub = f"{bound.module}.{bound.name}"
        if _is_package(bound.module) and _source(sub) is not None:
            return _ModuleRef(sub)  # ``from mgrpo_algos import lora``
        return read_value(bound.module, bound.name)
    if isinstance(bound, _ModuleRef):
        return bound
    if isinstance(bound, ast.expr):
        return _eval(bound, module)
    raise SourceReadError(f"{module}.{name} is a {type(bound).__name__}, not a value read here")


def _attribute(base: Any, attr: str) -> Any:
    if isinstance(base, _ModuleRef):
        if _in_package(base.name):
            return read_value(base.name, attr)
        return getattr(importlib.import_module(base.name), attr)
    return getattr(base, attr)


def _eval(node: ast.expr, module: str) -> Any:  # noqa: C901 (one case per expression form)
    """The value of a constant expression of ``module``'s source."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_eval(e, module) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        pairs = zip(node.keys, node.values, strict=True)
        return {_eval(k, module): _eval(v, module) for k, v in pairs}  # type: ignore[arg-type]
    if isinstance(node, ast.Name):
        if node.id in _bindings(module):
            return read_value(module, node.id)
        if node.id in _BUILTINS:
            return getattr(builtins, node.id)
        raise SourceReadError(f"{module}: the name {node.id!r} is not bound at top level")
    if isinstance(node, ast.Attribute):
        return _attribute(_eval(node.value, module), node.attr)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, module)[_eval(node.slice, module)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _eval(node.left, module) | _eval(node.right, module)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand, module)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.Lambda) and not node.args.args and not node.args.kwonlyargs:
        return functools.partial(_eval, node.body, module)  # a fresh value on every call
    if isinstance(node, ast.Call):
        return _call(node, module)
    raise SourceReadError(f"{module}: cannot read {ast.unparse(node)!r} without running it")


def _call(node: ast.Call, module: str) -> Any:
    """``field(...)``, or a config read here called with constant arguments."""
    func = _eval(node.func, module)
    if func is not dataclasses.field and not _is_read_class(func):
        raise SourceReadError(
            f"{module}: cannot call {ast.unparse(node.func)!r} without running it"
        )
    starred = any(isinstance(a, ast.Starred) for a in node.args)
    if starred or any(k.arg is None for k in node.keywords):
        raise SourceReadError(f"{module}: cannot read {ast.unparse(node)!r} (* or ** arguments)")
    args = [_eval(a, module) for a in node.args]
    return func(*args, **{k.arg: _eval(k.value, module) for k in node.keywords if k.arg})


def _is_read_class(value: Any) -> bool:
    return isinstance(value, type) and getattr(value, "__module__", None) == __name__


def _read_class(module: str, node: ast.ClassDef) -> type:
    """The ``@dataclass`` ``node`` as a dataclass with its fields and docstring, no methods."""
    options: dict[str, Any] = {}
    if len(node.decorator_list) != 1:
        raise SourceReadError(f"{module}.{node.name}: expected one decorator, @dataclass")
    decorator = node.decorator_list[0]
    if isinstance(decorator, ast.Call):
        options = {k.arg: _eval(k.value, module) for k in decorator.keywords if k.arg}
        decorator = decorator.func
    if _eval(decorator, module) is not dataclasses.dataclass or node.keywords:
        raise SourceReadError(f"{module}.{node.name} is not a plain @dataclass")
    bases = tuple(_eval(b, module) for b in node.bases)
    if not all(_is_read_class(b) for b in bases):
        raise SourceReadError(f"{module}.{node.name}: a base that is not a config read here")
    fields: list[tuple[str, Any, dataclasses.Field]] = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        default = dataclasses.MISSING if stmt.value is None else _eval(stmt.value, module)
        if not isinstance(default, dataclasses.Field):
            default = dataclasses.field(default=default)
        fields.append((stmt.target.id, _eval(stmt.annotation, module), default))
    namespace = {"__doc__": ast.get_docstring(node, clean=False), "__module__": __name__}
    return dataclasses.make_dataclass(
        node.name, fields, bases=bases, namespace=namespace, **options
    )


def read_or_import(module: str, name: str) -> Any:
    """``module.name`` read from the source (a config class, a constant), else imported."""
    try:
        return read_value(module, name)
    except SourceReadError:
        return getattr(importlib.import_module(module), name)
