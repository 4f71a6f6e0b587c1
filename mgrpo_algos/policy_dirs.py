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
    adapters_dir,
    holds_a_run,
    is_complete_checkpoint,
    latest_checkpoint,
    load_policies,
    load_saved_policies,
    saved_roles,
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
    if not holds_a_run(path):
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


def _policy_directory(
    path: Path, env: str | None, env_kwargs: dict[str, Any], max_new_tokens: int | None
) -> Playable:
    """An ``mgrpo sft`` or ``mgrpo export`` output, or a saved policy: train's ``--model``."""
    defaults = LearnerConfig()  # train's defaults for what is not given
    spec = env or defaults.env
    kwargs = {**defaults.env_kwargs, **env_kwargs}
    roles = list(mgrpo_envs.make(check_env(spec, kwargs), **kwargs).possible_agents)
    saved = saved_roles(path, roles)
    single = saved == ["main"] and roles != ["main"]  # main alone: the single-agent view
    env_fn = make_env_fn(spec, kwargs, single=single)
    adapters = adapters_dir(path)
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
