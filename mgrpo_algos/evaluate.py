"""The one held-out evaluation: fixed env seeds, fixed sampling, intervals.

Every figure of held-out success in the package (the ``mgrpo`` command, the demo,
the benchmarks) comes from :func:`evaluate`, so that two numbers measured in two
places are measured the same way: the same env seeds, the same sampling generator,
the same interval maths.

Held-out env seeds are the block ``EVAL_SEED0 .. EVAL_SEED0 + EVAL_SEED_SPAN - 1``,
cut in two disjoint splits (`SPLITS`): ``test``, its first half (the figures a
result reports), and ``val``, its second half (where settings are chosen: learning
rates, regimes, a demo's defaults, early stopping). Demonstrations use seeds from 0
and training draws its own; :func:`training_seed` maps any seed out of the held-out
block, so that training queries and both splits are disjoint by construction
rather than by a large enough gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mgrpo_algos.buffer import MAIN
from mgrpo_algos.metrics import format_rate, wilson_interval
from mgrpo_algos.policies.base import Policy
from mgrpo_algos.rollout import (
    EpisodeRecord,
    RolloutConfig,
    RolloutEngine,
    RolloutResult,
    expert_script,
)
from mgrpo_algos.training.scoring import episode_reward
from mgrpo_envs.core.rewards import FormatReward, RewardWeights

EVAL_SEED0: int = 1_000_000
"""The first held-out env seed."""

EVAL_SEED_SPAN: int = 1_000_000
"""Held-out env seeds are ``EVAL_SEED0 .. EVAL_SEED0 + EVAL_SEED_SPAN - 1``."""

Split = Literal["val", "test"]

SPLIT_SPAN: int = EVAL_SEED_SPAN // 2
"""Env seeds in each split."""

SPLITS: dict[str, int] = {"test": EVAL_SEED0, "val": EVAL_SEED0 + SPLIT_SPAN}
"""Split -> its first env seed: ``test`` is the held-out block's first half, ``val`` its second."""

_Z95 = 1.96  # normal quantile of a two-sided 95% interval


def eval_seeds(episodes: int, split: Split = "test") -> list[int]:
    """The first ``episodes`` env seeds of ``split``, in order.

    Raises:
        ValueError: If ``episodes`` is not an int in ``1 .. SPLIT_SPAN`` or ``split``
            is not ``val`` or ``test``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, int):
        raise ValueError(f"episodes must be an int in 1..{SPLIT_SPAN}, got {episodes!r}")
    if not 1 <= episodes <= SPLIT_SPAN:
        raise ValueError(f"episodes must be in 1..{SPLIT_SPAN}, got {episodes}")
    return list(range(SPLITS[split], SPLITS[split] + episodes))


def is_eval_seed(seed: int) -> bool:
    """Whether ``seed`` lies in the held-out block."""
    return EVAL_SEED0 <= seed < EVAL_SEED0 + EVAL_SEED_SPAN


def training_seed(seed: int) -> int:
    """``seed`` moved out of the held-out block (``seed + EVAL_SEED_SPAN`` inside it).

    Seeds outside the block are returned unchanged, so training seeds never meet an
    evaluation seed whatever they are drawn from.
    """
    return seed + EVAL_SEED_SPAN if is_eval_seed(seed) else seed


@dataclass(frozen=True)
class EvalResult:
    """What a held-out evaluation measured.

    Two results compare equal when everything but ``seconds`` is equal.

    Attributes:
        successes: Episodes main answered correctly.
        n: Episodes played.
        reward_mean: Mean of main's reward.
        reward_ci95: Normal 95% interval of ``reward_mean`` (a point when ``n == 1``).
        sub_calls: Per sub-agent role, ``calls`` (over all episodes) and ``accuracy``
            (the share of calls whose result was the fact asked for, the env's
            per-call expert score; 0.0 when the role made no call). Empty for a
            single-agent env.
        scripted: Roles played by the env's scripted expert, in the env's order.
        seconds: Wall time of the evaluation.
        outputs: Texts the agents wrote (main's turns and every sub-agent call's),
            scripted roles' included.
        parsed: How many of them the env's codec read as a tool call (its
            ``valid_outputs``), whatever the tool then made of it.
        split: The held-out split played (``test`` or ``val``).
    """

    successes: int
    n: int
    reward_mean: float
    reward_ci95: tuple[float, float]
    sub_calls: dict[str, dict[str, float]]
    scripted: tuple[str, ...]
    seconds: float = field(compare=False)
    outputs: int = 0
    parsed: int = 0
    split: str = "test"

    @property
    def success_rate(self) -> float:
        return self.successes / self.n

    @property
    def parse_rate(self) -> float | None:
        """Share of the agents' outputs that parsed as a tool call (None: no output)."""
        return self.parsed / self.outputs if self.outputs else None

    @property
    def ci95(self) -> tuple[float, float]:
        """Wilson 95% interval of ``success_rate``."""
        return wilson_interval(self.successes, self.n)

    @property
    def text(self) -> str:
        """``"0.420 [0.352, 0.491] (n=200)"``."""
        return format_rate(self.successes, self.n)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready plain types."""
        return {
            "success_rate": self.success_rate,
            "ci95": list(self.ci95),
            "successes": self.successes,
            "n": self.n,
            "reward_mean": self.reward_mean,
            "reward_ci95": list(self.reward_ci95),
            "sub_calls": {role: dict(stats) for role, stats in self.sub_calls.items()},
            "scripted": list(self.scripted),
            "seconds": self.seconds,
            "outputs": self.outputs,
            "parsed": self.parsed,
            "parse_rate": self.parse_rate,
            "split": self.split,
        }


def _normal_interval(values: Sequence[float], z: float = _Z95) -> tuple[float, float]:
    """``mean -/+ z * sd / sqrt(n)`` (sample sd); the mean itself when there is one value.

    Raises:
        ValueError: If ``values`` is empty.
    """
    if len(values) == 0:
        raise ValueError("values must hold at least one number, got none")
    x = np.asarray(values, dtype=np.float64)  # (n,)
    mean = float(x.mean())
    half = z * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return mean - half, mean + half


def sub_call_stats(episodes: Iterable[EpisodeRecord]) -> dict[str, dict[str, float]]:
    """Per sub-agent role: its ``calls`` over the episodes and their ``accuracy``.

    A sub-agent role is one whose final info carries per-call records (``calls``);
    ``accuracy`` is the mean of their ``expert`` score (0.0 when there is no call).
    """
    calls: dict[str, list[dict]] = {}
    for episode in episodes:
        for role, info in episode.infos.items():
            if "calls" in info:
                calls.setdefault(role, []).extend(info["calls"])
    return {
        role: {
            "calls": len(records),
            "accuracy": float(np.mean([r["expert"] for r in records])) if records else 0.0,
        }
        for role, records in calls.items()
    }


def output_counts(episodes: Iterable[EpisodeRecord]) -> tuple[int, int]:
    """Agent outputs over the episodes, and how many parsed as a tool call.

    Read from the documented final infos: main's ``outcome`` and each sub-agent
    call's record carry ``outputs`` and ``valid_outputs``.
    """
    outputs = parsed = 0
    for episode in episodes:
        for info in episode.infos.values():
            records = [info["outcome"]] if "outcome" in info else []
            for record in records + list(info.get("calls", [])):
                outputs += int(record.get("outputs", 0))
                parsed += int(record.get("valid_outputs", 0))
    return outputs, parsed


class _ScriptedRole:
    """Stands in for the model of a scripted role.

    The rollout engine records every call as tokens; evaluation never reads a
    scripted role's tokens, so it needs no tokenizer (or model) for it.
    """

    eos_id = 0
    max_positions = 2**62

    def encode(self, text: str) -> list[int]:
        return []

    def encode_chat(self, messages: Any, add_generation_prompt: bool = False) -> list[int]:
        return []

    def encode_message(self, message: Any) -> list[int]:
        return []


def _check_roles(
    roles: list[str], policies: Mapping[str, Policy], scripted: Sequence[str]
) -> tuple[str, ...]:
    """The scripted roles in the env's order, after checking both role arguments."""
    if isinstance(scripted, str):
        raise ValueError(f"scripted must be a sequence of roles, got the string {scripted!r}")
    unknown = [r for r in scripted if r not in roles]
    if unknown:
        raise ValueError(
            f"scripted roles must be agents of the env {roles}, got {list(scripted)} "
            f"({unknown} not among them)"
        )
    missing = [r for r in roles if r not in scripted and r not in policies]
    if missing:
        raise ValueError(
            f"no policy for role(s) {missing}: expected a policy for every role not "
            f"scripted ({[r for r in roles if r not in scripted]}), got {sorted(policies)}"
        )
    return tuple(r for r in roles if r in scripted)


def held_out_rollouts(
    env_fn: Callable[[], Any],
    policies: Mapping[str, Policy],
    queries: int,
    *,
    group_size: int = 1,
    max_new_tokens: int = 40,
    temperature: float = 1.0,
    role_temperature: Mapping[str, float] | None = None,
    sampling_seed: int = 0,
    scripted: Sequence[str] = (),
    split: Split = "test",
) -> RolloutResult:
    """Plays the first ``queries`` env seeds of ``split``, ``group_size`` rollouts each.

    The one place held-out episodes are played: :func:`evaluate` plays one rollout
    per query through it, and a probe that needs a training step's groups on
    held-out queries (the experiments' learning-signal diagnosis) plays several.
    Arguments as :func:`evaluate`'s; sampling is seeded by ``sampling_seed``.

    Returns:
        The rollouts: trajectories, episode records and timings.
    """
    seeds = eval_seeds(queries, split)
    roles = list(env_fn().possible_agents)
    scripted_roles = _check_roles(roles, policies, scripted)
    engine = RolloutEngine(
        env_fn,
        {r: _ScriptedRole() if r in scripted_roles else policies[r] for r in roles},
        RolloutConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            role_temperature=dict(role_temperature or {}),
        ),
        scripts={r: expert_script for r in scripted_roles},
    )
    with torch.no_grad():
        return engine.collect(
            seeds, group_size=group_size, generator=torch.Generator().manual_seed(sampling_seed)
        )


def evaluate(
    env_fn: Callable[[], Any],
    policies: Mapping[str, Policy],
    episodes: int,
    *,
    max_new_tokens: int = 40,
    temperature: float = 1.0,
    role_temperature: Mapping[str, float] | None = None,
    sampling_seed: int = 0,
    scripted: Sequence[str] = (),
    weights: RewardWeights | None = None,
    format_reward: FormatReward = "fraction",
    split: Split = "test",
) -> EvalResult:
    """Plays the first ``episodes`` episodes of ``split`` once each and reports success.

    Sampling is seeded by ``torch.Generator().manual_seed(sampling_seed)``, so the
    same call gives the same result.

    Args:
        env_fn: Builds a fresh env (AEC, or a single-agent view wrapped for the engine).
        policies: Role -> policy for every role not in ``scripted`` (roles may share one).
        episodes: Held-out episodes to play (``1 .. SPLIT_SPAN``).
        max_new_tokens: Tokens one agent turn may generate.
        temperature: Sampling temperature (> 0).
        role_temperature: Sampling temperature per role, overriding ``temperature``.
        sampling_seed: Seeds the sampling generator.
        scripted: Roles played by the env's scripted expert instead of a policy.
        weights: The reward weights of ``reward_mean`` (None: the paper's), scored
            by the learners' own `episode_reward`, so that a run's evaluation and its
            training agree for any weights.
        format_reward: ``r_format``'s form, as the run's config says.
        split: ``test`` (reported figures) or ``val`` (choosing settings): disjoint
            blocks of held-out env seeds (`SPLITS`).

    Returns:
        The successes, main's reward with its interval and the sub-agents' calls.

    Raises:
        ValueError: If ``episodes`` is out of range, a scripted role is not an agent
            of the env, or a role that is not scripted has no policy.
    """
    t0 = time.perf_counter()
    res = held_out_rollouts(
        env_fn,
        policies,
        episodes,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        role_temperature=role_temperature,
        sampling_seed=sampling_seed,
        scripted=scripted,
        split=split,
    )
    scripted_roles = tuple(r for r in env_fn().possible_agents if r in scripted)
    weights = RewardWeights() if weights is None else weights
    rewards = [
        episode_reward(e.infos[MAIN]["outcome"], weights, format_reward) for e in res.episodes
    ]
    outputs, parsed = output_counts(res.episodes)
    return EvalResult(
        successes=sum(e.correct for e in res.episodes),
        n=len(res.episodes),
        reward_mean=float(np.mean(rewards)),
        reward_ci95=_normal_interval(rewards),
        sub_calls=sub_call_stats(res.episodes),
        scripted=scripted_roles,
        seconds=time.perf_counter() - t0,
        outputs=outputs,
        parsed=parsed,
        split=split,
    )
