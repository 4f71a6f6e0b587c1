"""Every reward of every role: main's ``R_M``, each sub-agent call's ``R_S`` and the expert judge.

arXiv 2511.13288, sec. 3. The learners score their rollouts here and `evaluate()` reads
its ``reward_mean`` through the same functions, so training and evaluation agree for
any reward weights (the config's ``main_weights`` and ``sub_weights``, not the env's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mgrpo_algos.buffer import MAIN, Trajectory
from mgrpo_algos.rollout import (
    RolloutResult,
)
from mgrpo_algos.store import RolloutReward
from mgrpo_envs.core.rewards import (
    FormatReward,
    RewardWeights,
    format_score,
    main_reward,
    sub_reward,
)


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


def episode_reward(outcome: Mapping[str, Any], weights: RewardWeights, mode: FormatReward) -> float:
    """``R_M`` of one episode from main's ``outcome`` info, under ``weights`` and ``mode``."""
    valid = bool(outcome["format_ok"])
    return main_reward(valid, format_of(outcome, mode), float(outcome["correct"]), weights)


def score_main(
    result: RolloutResult, weights: RewardWeights, mode: FormatReward
) -> tuple[list[Trajectory], list[RolloutReward]]:
    """Main's trajectories with ``R_M`` (arXiv 2511.13288, sec. 3), and each rollout's row.

    A row carries what the sub-agent side needs: ``R_M``, main's correctness and ``d_k``.
    """
    rows, reward_of = [], {}
    for ep in result.episodes:
        outcome = ep.infos[MAIN]["outcome"]
        correct = float(outcome["correct"])
        reward = episode_reward(outcome, weights, mode)
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


Judge = Callable[[str, str, dict[str, Any]], float]
"""An expert judge of one sub-agent call: ``(subtask, result, context) -> r_expert``.

``context`` holds ``role``, ``query``, ``rollout``, ``invocation``, ``seed`` (the
episode's env seed) and ``record`` (the call's record from the env's ``infos``).
"""


def judge_expert(judge: Judge, record: Mapping[str, Any], context: dict[str, Any]) -> float:
    """``r_expert`` from a user's judge; NaN passes (the rollout is then left out)."""
    value = judge(record["subtask"], record["result"], context)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        name = getattr(judge, "__qualname__", None) or type(judge).__name__
        raise TypeError(
            f"the judge {name} returned {value!r} for {context['role']!r} call "
            f"{context['invocation']} (subtask {record['subtask']!r}); it must return a "
            "number, r_expert in [0, 1]"
        )
    return float(value)


def score_sub(
    result: RolloutResult,
    rows: Sequence[RolloutReward],
    weights: RewardWeights,
    format_reward: str = "fraction",
    judge: Judge | None = None,
) -> list[Trajectory]:
    """Every sub-agent call's trajectory with ``R_S``, main's correctness read from ``rows``.

    ``r_expert`` is the env's verifiable ``expert`` score of the call, or
    ``judge(subtask, result, context)`` when a judge is given (the paper uses an LLM
    judge; *ours*: every task knows the facts its subtasks ask for, so the default is
    a verifiable check, and any callable may stand in for a judge).
    """
    correct = {(r.query, r.rollout): r.correct for r in rows}
    episodes = {(e.group_id, e.rollout_id): e for e in result.episodes}
    out = []
    for t in result.trajectories:
        key = (t.group_id, t.rollout_id)
        if t.agent == MAIN or key not in correct:
            continue
        record = episodes[key].infos[t.agent]["calls"][t.invocation]
        expert = float(record.get("expert", 0.0))
        if judge is not None and record["format_ok"]:
            context = {
                "role": t.agent,
                "query": t.group_id,
                "rollout": t.rollout_id,
                "invocation": t.invocation,
                "seed": episodes[key].seed,
                "record": record,
            }
            expert = judge_expert(judge, record, context)
        valid = bool(record["format_ok"])
        r_format = format_of(record, format_reward)
        out.append(t.replace(reward=sub_reward(valid, r_format, correct[key], expert, weights)))
    return out
