"""Env ids, ``make`` and ``list_envs``; single-agent views are registered with Gymnasium."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pettingzoo import AECEnv

#: env id -> (module, env class name, single-agent Gymnasium id)
_ENVS: dict[str, tuple[str, str, str]] = {
    "research_v0": ("mgrpo_envs.tasks.research", "ResearchEnv", "mgrpo_envs/Research-v0"),
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
    module, _, _ = _ENVS[env_id]
    return importlib.import_module(module).env(**kwargs)


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
