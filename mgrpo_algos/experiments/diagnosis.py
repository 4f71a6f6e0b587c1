"""Held-out evaluation of an arm's policies, and the diagnosis of a regime's preconditions.

Every held-out episode goes through `mgrpo_algos.evaluate` (:func:`evaluate`, and
:func:`held_out_rollouts` for the learning-signal probe's groups), on the split the
caller names: a cell's figures on ``test``, a diagnosis that chooses a regime on
``val``. The calibration probe (``--calibrate``) plays queries outside the held-out
block altogether (`CALIBRATION_SEED0`), so choosing a regime on it looks at no
held-out episode.

The diagnosis answers "which role limits success, and can a sub-agent learn here":
success with every sub-agent scripted (``expert_subs``: how good main is), with main
scripted (``expert_main``: how good the sub-agents are on well-posed subtasks), and
what a training step's groups give each role to learn from (:func:`learning_signal`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from mgrpo_algos.algorithms.mgrpo import MGRPOConfig
from mgrpo_algos.buffer import subtask_key
from mgrpo_algos.evaluate import Split, evaluate, held_out_rollouts, is_eval_seed
from mgrpo_algos.experiments.spec import Plan
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine, RolloutResult
from mgrpo_algos.training.scoring import reward_weights, score_main, score_sub

SIGNAL_QUERIES = 16
"""Held-out queries of the learning-signal probe, ``plan.train.group`` rollouts each."""
SIGNAL_SAMPLING_SEED = 0
"""The learning-signal probe's generator seed (evaluate's default)."""
CALIBRATION_SEED0 = 3_000_000
"""The first env seed of ``--calibrate``'s queries: past the demonstrations (seeds from
0) and outside the held-out block (``mgrpo_algos.evaluate.EVAL_SEED0``), so choosing a
regime on them never looks at a held-out episode (training draws its queries at random
from 2**31 seeds, these among them)."""
CALIBRATION_QUERIES = 64


def held_out(
    env_fn: Callable[[], Any], policies: dict[str, HFPolicy], plan: Plan, split: Split
) -> dict:
    """The held-out evaluation of ``policies`` (``EvalResult.to_dict()``), plus the diagnosis.

    With ``plan.diagnose`` on a multi-role env, ``roles`` also gives the evaluation
    with every sub-agent scripted (``expert_subs``) and with main scripted
    (``expert_main``), and ``signal`` what a training step's groups give each role
    to learn from (:func:`learning_signal`, on held-out queries of ``split``).
    """
    options = {
        "max_new_tokens": plan.train.max_new_tokens,
        "role_temperature": plan.role_temperature(policies),
        "split": split,
    }
    n = plan.eval.episodes
    out = evaluate(env_fn, policies, n, **options).to_dict()
    subs = [r for r in policies if r != "main"]
    if plan.diagnose and subs:
        out["roles"] = {
            name: evaluate(env_fn, policies, n, scripted=roles, **options).to_dict()
            for name, roles in (("expert_subs", subs), ("expert_main", ["main"]))
        }
        rollouts = held_out_rollouts(
            env_fn,
            policies,
            SIGNAL_QUERIES,
            group_size=plan.train.group,
            sampling_seed=SIGNAL_SAMPLING_SEED,
            **options,
        )
        out["signal"] = learning_signal(rollouts, policies)
    return out


def calibration_rollouts(
    env_fn: Callable[[], Any], policies: dict[str, HFPolicy], plan: Plan
) -> tuple[list[int], RolloutResult]:
    """``CALIBRATION_QUERIES`` queries outside the held-out block, ``plan.train.group`` each."""
    seeds = list(range(CALIBRATION_SEED0, CALIBRATION_SEED0 + CALIBRATION_QUERIES))
    assert not any(map(is_eval_seed, seeds)), "calibration queries must not be held out"
    config = RolloutConfig(
        max_new_tokens=plan.train.max_new_tokens,
        role_temperature=plan.role_temperature(policies),
    )
    engine = RolloutEngine(env_fn, policies, config)
    with torch.no_grad():
        res = engine.collect(
            seeds, plan.train.group, generator=torch.Generator().manual_seed(SIGNAL_SAMPLING_SEED)
        )
    return seeds, res


def learning_signal(res: RolloutResult, roles: Iterable[str]) -> dict[str, dict[str, float]]:
    """What a training step's groups give each role to learn from.

    ``res`` holds some queries x a group of rollouts, collected as a training step
    would; every call is scored with M-GRPO's default ``R_S``. Per role:

    * ``between_subtask_share``: the share of ``R_S``'s variance within a query (the
      group M-GRPO z-scores over) that lies between the subtasks the calls served,
      not between calls on the same subtask;
    * ``subtask_groups_differing``: of the (query, subtask) pairs with two or more
      calls, the share whose calls differ in the expert score (the groups in which
      the role's own choices changed the outcome);
    * ``nll_per_token``: the mean negative log-probability of the tokens it sampled
      (how far it is from deterministic); ``main`` gets this one too;
    * ``calls_right``: the share of its calls whose result is the fact asked for;
      ``main`` gets ``success``, the share of the rollouts it answered right.
    """
    defaults = MGRPOConfig()
    weights = reward_weights(defaults)
    _, rows = score_main(res, weights, defaults.format_reward)
    scored = score_sub(res, rows, weights, defaults.format_reward)
    records = {(e.group_id, e.rollout_id): e.infos for e in res.episodes}
    out: dict[str, dict[str, float]] = {}
    for role in roles:
        mine = [t for t in res.trajectories if t.agent == role]
        stats: dict[str, float] = {"calls": float(len(mine))}
        if mine:
            stats["nll_per_token"] = -float(np.mean([t.old_logprobs.mean() for t in mine]))
        if role == "main":
            stats["success"] = float(np.mean([e.correct for e in res.episodes]))
        if role != "main" and mine:
            calls = []
            for t in scored:
                if t.agent == role:
                    record = records[(t.group_id, t.rollout_id)][role]["calls"][t.invocation]
                    calls.append((t.group_id, record["subtask"], record["expert"], t.reward))
            stats.update(subtask_signal(calls))
            stats["calls_right"] = float(np.mean([expert for _, _, expert, _ in calls]))
        out[role] = stats
    return out


def subtask_signal(calls: Iterable[tuple[int, str, float, float]]) -> dict[str, float]:
    """How much of a role's group-relative signal its own choices can explain.

    Args:
        calls: ``(query, subtask, expert score, R_S)`` of every call of the role;
            subtasks are compared case- and space-insensitively.

    Returns:
        ``between_subtask_share``: summed over queries, the variance of the calls'
        subtask means over the variance of ``R_S`` (population variances within each
        query); ``subtask_groups_differing``: the share of (query, subtask) groups of
        two or more calls whose expert scores are not all equal.
    """
    by_query: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for query, subtask, expert, reward in calls:
        by_query.setdefault(query, {}).setdefault(subtask_key(subtask), []).append((expert, reward))
    total = between = 0.0
    differing = []
    for groups in by_query.values():
        rewards = np.array([r for g in groups.values() for _, r in g])  # (n,)
        means = np.array([np.mean([r for _, r in g]) for g in groups.values() for _ in g])  # (n,)
        total += float(rewards.var())
        between += float(means.var())
        differing += [len({e for e, _ in g}) > 1 for g in groups.values() if len(g) >= 2]
    return {
        "between_subtask_share": between / total if total > 0 else 0.0,
        "subtask_groups_differing": float(np.mean(differing)) if differing else 0.0,
    }
