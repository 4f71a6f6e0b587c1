"""Any policy directory the library writes, opened with the env it plays (``mgrpo eval``).

A run directory (its newest complete checkpoint) or a ``ckpt-*`` directory brings
its run's env, env arguments, algo (the multi-agent env, or the single-agent view
for GRPO) and tokens per turn. Another directory (what ``mgrpo sft`` or ``mgrpo
export`` writes, or one saved policy) records none of them: it is loaded as
``mgrpo train --model DIR`` loads it, on train's defaults, and a set of policies
for ``main`` alone plays the single-agent view, as GRPO trains it. The loaders are
the library's one loader (``algorithms.load_run``, ``training.checkpoints.load_policies``,
``load_saved_policies``); this module only chooses among them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import mgrpo_envs
from mgrpo_algos.algorithms import load_config, load_run
from mgrpo_algos.env_options import check_env, load_env_spec
from mgrpo_algos.training.checkpoints import (
    CKPT_PATTERN,
    is_complete_checkpoint,
    is_lora_policies,
    latest_checkpoint,
    load_policies,
    load_saved_policies,
    read_roles,
)
from mgrpo_algos.training.config import LearnerConfig
from mgrpo_algos.training.loop import env_fn_of, make_env_fn
from mgrpo_algos.training.scoring import reward_weights


class Playable(NamedTuple):
    """What an evaluation plays: where it came from, the env, a policy per role, the tokens."""

    source: Path
    env: str
    env_kwargs: dict[str, Any]
    env_fn: Callable[[], Any]
    policies: dict[str, Any]
    max_new_tokens: int
    weights: Any = None  # a run's reward weights (None: the paper's)
    format_reward: str = "fraction"


def open_policies(
    path: str | Path,
    *,
    env: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    max_new_tokens: int | None = None,
) -> Playable:
    """The policies saved in ``path`` and the env they play.

    Args:
        path: A run directory, a ``ckpt-*`` directory, an ``mgrpo sft`` or ``mgrpo
            export`` output, or a saved policy.
        env: The env spec (default: the run's, else train's default).
        env_kwargs: Env arguments over the run's (else over train's defaults).
        max_new_tokens: Tokens per agent turn (default: the run's, else train's).

    Raises:
        ValueError: ``path`` is no directory or holds no policy, a run holds no
            complete checkpoint, or the env or its arguments are wrong.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"--ckpt {str(path)!r}: no such directory")
    runs = [p for p in path.iterdir() if CKPT_PATTERN.match(p.name)]
    if not (CKPT_PATTERN.match(path.name) or runs or (path / "metrics.jsonl").is_file()):
        return _policy_directory(path, env, dict(env_kwargs or {}), max_new_tokens)
    ckpt = path if is_complete_checkpoint(path) else latest_checkpoint(path)
    if env is not None:
        load_env_spec(env)  # a spec that names no env: one line, before the config's check
    config = load_config(ckpt / "config.json", **({"env": env} if env else {}))
    kwargs = {**config.env_kwargs, **(env_kwargs or {})}
    check_env(config.env, kwargs)
    config = dataclasses.replace(config, env_kwargs=kwargs)
    policies = load_run(ckpt, env=env).policies
    tokens = config.max_new_tokens if max_new_tokens is None else max_new_tokens
    return Playable(
        ckpt,
        config.env,
        kwargs,
        env_fn_of(config),
        policies,
        tokens,
        reward_weights(config),
        config.format_reward,
    )


def _saved_roles(path: Path, roles: list[str]) -> list[str] | None:
    """The roles ``path`` holds a policy for (None: one policy for any role)."""
    for where in (path, path / "policies"):
        if (where / "roles.json").is_file():
            return list(read_roles(where))
    if (path / "config.json").is_file():
        return None
    saved = [role for role in roles if (path / role / "config.json").is_file()]
    if not saved:
        raise ValueError(
            f"--ckpt {str(path)!r} holds no policy: expected a run directory, a ckpt-* "
            "directory, an `mgrpo sft` or `mgrpo export` output (roles.json and a "
            f"directory per role: {', '.join(roles)}) or a saved policy (config.json)"
        )
    return saved


def _policy_directory(
    path: Path, env: str | None, env_kwargs: dict[str, Any], max_new_tokens: int | None
) -> Playable:
    """An ``mgrpo sft`` or ``mgrpo export`` output, or a saved policy: train's ``--model``."""
    defaults = LearnerConfig()  # train's defaults for what is not given
    spec = env or defaults.env
    kwargs = {**defaults.env_kwargs, **env_kwargs}
    roles = list(mgrpo_envs.make(check_env(spec, kwargs), **kwargs).possible_agents)
    saved = _saved_roles(path, roles)
    single = saved == ["main"] and roles != ["main"]  # main alone: the single-agent view
    env_fn = make_env_fn(spec, kwargs, single=single)
    adapters = next((p for p in (path, path / "policies") if is_lora_policies(p)), None)
    if adapters is not None:  # LoRA adapters on one base (`mgrpo sft --lora-rank R`)
        policies: dict[str, Any] = dict(load_saved_policies(adapters))
    else:
        policies = dict(
            load_policies(
                str(path), env_fn(), tiny_size=defaults.tiny_size, seed=0, shared=saved is None
            )
        )
    tokens = defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
    return Playable(path, spec, kwargs, env_fn, policies, tokens)
