"""Env ids, ``make`` and ``list_envs``; each env's Gymnasium views are registered too.

Every id gets a single-agent view (``mgrpo_envs/Research-v0``) and a discrete view
for classic RL learners (``mgrpo_envs/ResearchDiscrete-v0``), both derived from
``_ENVS``. A user's own env joins them with :func:`register`, and
:func:`load_env` turns ``"path/to/file.py:my_env_v0"`` into a registered id.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from pettingzoo import AECEnv

from mgrpo_envs.core.task_env import wrap

#: env id -> (module, env class name, single-agent Gymnasium id)
_ENVS: dict[str, tuple[str, str, str]] = {
    "research_v0": ("mgrpo_envs.tasks.research", "ResearchEnv", "mgrpo_envs/Research-v0"),
    "ledger_v0": ("mgrpo_envs.tasks.ledger", "LedgerEnv", "mgrpo_envs/Ledger-v0"),
    "webwalk_v0": ("mgrpo_envs.tasks.webwalk", "WebWalkEnv", "mgrpo_envs/WebWalk-v0"),
}


def list_envs() -> list[str]:
    """Every registered env id, sorted."""
    return sorted(_ENVS)


def env_class(env_id: str) -> type:
    """The unwrapped env class of ``env_id``."""
    if not isinstance(env_id, str) or env_id not in _ENVS:
        raise ValueError(f"unknown env id {env_id!r}; expected one of {list_envs()}")
    module, cls, _ = _ENVS[env_id]
    return getattr(importlib.import_module(module), cls)


def validate_kwargs(env_id: str, kwargs: dict[str, Any]) -> None:
    """Raises ``TypeError`` naming the accepted arguments when ``kwargs`` has others."""
    params = inspect.signature(env_class(env_id).__init__).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown} for {env_id}; expected some of {allowed}")


def make(env_id: str, **kwargs: Any) -> AECEnv:
    """Builds the PettingZoo AEC env ``env_id`` (wrapped as PettingZoo's own envs are).

    Args:
        env_id: One of :func:`list_envs`, e.g. ``"research_v0"``.
        **kwargs: The env's arguments (see its module docstring, the env card).

    Raises:
        ValueError: Unknown env id or a bad argument value.
        TypeError: An argument the env does not take.
    """
    validate_kwargs(env_id, kwargs)
    module = importlib.import_module(_ENVS[env_id][0])
    if callable(getattr(module, "env", None)):  # PettingZoo's factory convention
        return module.env(**kwargs)
    return wrap(env_class(env_id)(**kwargs))  # the wrappers of every task env's env()


def gym_ids() -> dict[str, str]:
    """Single-agent Gymnasium id -> env id."""
    return {gym_id: env_id for env_id, (_, _, gym_id) in _ENVS.items()}


def register_gymnasium() -> None:
    """Registers every single-agent view with Gymnasium (idempotent)."""
    import gymnasium

    for gym_id, env_id in gym_ids().items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(
                id=gym_id,
                entry_point="mgrpo_envs.wrappers.single_agent:SingleAgentToolEnv",
                kwargs={"env_id": env_id},
            )
    register_discrete()


def discrete_gym_id(gym_id: str) -> str:
    """The discrete view's Gymnasium id: ``.../Research-v0`` -> ``.../ResearchDiscrete-v0``."""
    name, sep, version = gym_id.rpartition("-v")
    if not sep or not name:
        raise ValueError(f"a Gymnasium id ends with a version like '-v0', got {gym_id!r}")
    return f"{name}Discrete-v{version}"


def discrete_ids() -> dict[str, str]:
    """Discrete-view Gymnasium id -> env id, one per registered env."""
    return {discrete_gym_id(gym_id): env_id for gym_id, env_id in gym_ids().items()}


def register_discrete() -> None:
    """Registers every env's discrete view with Gymnasium (idempotent)."""
    import gymnasium

    for gym_id, env_id in discrete_ids().items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(
                id=gym_id,
                entry_point="mgrpo_envs.wrappers.discrete:DiscreteToolEnv",
                kwargs={"env_id": env_id},
            )


_ENV_ID = re.compile(r"[a-z][a-z0-9_]*_v\d+")


def register(env_id: str, entry_point: str | type, *, gym_id: str | None = None) -> None:
    """Adds a user's env to :func:`make` and :func:`list_envs`, with its Gymnasium views.

    Registering the same id with the same entry point again does nothing, so the
    module that defines an env may register it at import time.

    Args:
        env_id: A lower-case id with a version suffix, e.g. ``"units_v0"``.
        entry_point: The env class (built on ``TaskEnv``, or on ``HierarchicalToolEnv``
            directly; defined at module level), or ``"package.module:ClassName"``.
            When the module also defines PettingZoo's ``env(**kwargs)`` factory,
            :func:`make` calls it; otherwise :func:`make` wraps the class as every
            task env's ``env()`` does (``mgrpo_envs.core.task_env.wrap``).
        gym_id: Id of the single-agent view (default ``mgrpo_envs/Units-v0`` for
            ``units_v0``); the discrete view's id adds ``Discrete`` before the version.

    Raises:
        ValueError: A malformed id or entry point, or an id (or Gymnasium id) that
            is already registered to another env.
    """
    if not isinstance(env_id, str) or not _ENV_ID.fullmatch(env_id):
        raise ValueError(
            f"env_id must be lower-case with a version suffix like 'units_v0', got {env_id!r}"
        )
    module, cls = _entry(entry_point)
    if gym_id is None:
        base, version = env_id.rsplit("_v", 1)
        gym_id = f"mgrpo_envs/{base.title().replace('_', '')}-v{version}"
    discrete_gym_id(gym_id)  # checks the version suffix
    entry = (module, cls, gym_id)
    if env_id in _ENVS:
        if _ENVS[env_id] == entry:
            return
        raise ValueError(
            f"env id {env_id!r} is already registered to {_ENVS[env_id][:2]}; "
            f"got {entry[:2]}: choose another id"
        )
    owner = gym_ids().get(gym_id)
    if owner is not None:
        raise ValueError(f"Gymnasium id {gym_id!r} already belongs to {owner!r}; pass gym_id=")
    _ENVS[env_id] = entry
    register_gymnasium()


def _entry(entry_point: str | type) -> tuple[str, str]:
    """``(module, class name)`` of a class or a ``"module:ClassName"`` string."""
    if isinstance(entry_point, type):
        module, cls = entry_point.__module__, entry_point.__qualname__
        if not issubclass(entry_point, AECEnv) or "." in cls:
            raise ValueError(
                "entry_point must be a module-level env class (an AECEnv built on "
                f"HierarchicalToolEnv), got {entry_point!r}"
            )
        return module, cls
    if isinstance(entry_point, str):
        module, sep, cls = entry_point.partition(":")
        if sep and module and cls.isidentifier():
            return module, cls
    raise ValueError(
        f"entry_point must be an env class or 'package.module:ClassName', got {entry_point!r}"
    )


def load_env(spec: str) -> str:
    """The env id named by ``spec``, importing the module that registers it first.

    Args:
        spec: A registered id (``"research_v0"``), or ``"MODULE:ENV_ID"`` or
            ``"path/to/file.py:ENV_ID"``: the module (or file) is imported, and it
            must call :func:`register` for ``ENV_ID``. A file is imported as a
            module named after it (``my_env`` for ``examples/my_env.py``).

    Returns:
        The env id, now in :func:`list_envs`.

    Raises:
        ValueError: An unknown id, a missing file, or a module that does not
            register ``ENV_ID``.
    """
    if spec in _ENVS:
        return spec
    source, sep, env_id = spec.rpartition(":")
    if not sep or not source:
        raise ValueError(
            f"unknown env id {spec!r}; expected one of {list_envs()}, "
            "or MODULE:ENV_ID / FILE.py:ENV_ID for your own env"
        )
    if source.endswith(".py"):
        _import_file(Path(source))
    else:
        importlib.import_module(source)
    if env_id not in _ENVS:
        raise ValueError(
            f"{source} did not register {env_id!r} (it must call "
            f"mgrpo_envs.register({env_id!r}, ...)); registered: {list_envs()}"
        )
    return env_id


def _import_file(path: Path) -> None:
    """Imports a Python file as the module named after it (once)."""
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return
        raise ValueError(
            f"cannot import {str(path)!r} as module {name!r}: a module of that name "
            "is already loaded; rename the file"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
