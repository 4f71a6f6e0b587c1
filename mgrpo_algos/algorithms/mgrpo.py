"""M-GRPO: one policy per agent, group-relative advantages per agent, aligned sub-agent groups.

"Multi-Agent Deep Research: Training Multi-Agent Systems with M-GRPO" (arXiv
2511.13288, sec. 3: rewards, groups, trajectory alignment, decoupled training).
Choices of ours are marked *ours*. Once per step:

    collect     N queries x K rollouts with the batched engine, one policy per role
    score       main: ``R_M = a1*r_format + a2*r_correct`` (0 if the answer is
                invalid); the main side writes R_M, r_correct and d_k of every rollout
                to the shared store
    sub side    reads them back, scores each sub-agent call
                ``R_S = b1*r_format + b2*r_correct_main + b3*r_expert`` (0 if invalid),
                and aligns each query's calls to ``d * K`` samples (duplicate / drop)
    advantages  main: z-score of R_M over the K rollouts of a query; sub-agent: z-score
                of R_S over the query's aligned samples, per role
    loss, step  ``policy_loss`` per role, one optimiser per trained policy: no
                gradient crosses agents
    log         one JSON line of metrics per step; checkpoints every few steps

The reward formulas are those of ``mgrpo_envs.core.rewards``; the weights and
``format_reward`` are config. A rollout whose reward is not finite (a user's judge
returning NaN) is counted in ``reward/nonfinite`` and left out of the groups of the
side that scored it; the rest of the batch trains.

Baselines are options of the same learner (``algo``): ``main-only`` freezes the
sub-agent policies (no optimiser: their parameters never change), ``shared`` lets
one model play every role and updates it from every role's samples. ``align="none"``
is the unsynchronised ablation: each step trains the sub-agents on the previous
step's calls (a one-step-stale queue), unaligned.

The shared parts (optimisers, chunked loss, checkpoints, loop) are in ``mgrpo_algos.training``;
which models train, and when (``algo``, ``schedule``), in ``schedule.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch

from mgrpo_algos.algorithms.schedule import (
    ALGOS,
    Algo,
    alternation,
    scheduled_groups,
    trained_groups,
)
from mgrpo_algos.alignment import align_generator, align_samples
from mgrpo_algos.buffer import GROUP_BY, MAIN, GroupBy, RolloutBuffer, Trajectory
from mgrpo_algos.functional import estimate_alignment_width
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import RolloutResult
from mgrpo_algos.store import MemoryStore, RolloutReward, SQLiteStore, StatsStore
from mgrpo_algos.training.config import LearnerConfig, check_weights, validate_learner_config
from mgrpo_algos.training.loop import Learner
from mgrpo_algos.training.scoring import (
    Judge,
    nonfinite_rollouts,
    reward_weights,
    score_main,
    score_sub,
    without_rollouts,
)

Align = Literal["duplicate_drop", "truncate", "fill", "ragged", "none"]
ALIGNS: tuple[str, ...] = get_args(Align)


@dataclass
class MGRPOConfig(LearnerConfig):
    """Settings of an M-GRPO run: those of :class:`~mgrpo_algos.training.config.LearnerConfig`, and

    Attributes:
        algo: ``mgrpo`` (every agent trained, one policy each), ``main-only`` (the
            sub-agent policies frozen) or ``shared`` (one policy plays every role).
        sub_weights: ``(b1, b2, b3)`` of ``R_S`` (the paper's: 0.1, 0.4, 0.5).
        align: ``duplicate_drop`` (the paper's), ``truncate``, ``fill``, ``ragged``
            (no alignment) or ``none`` (unsynchronised: ragged, one step stale).
        align_d: ``d``, samples per rollout; None: estimated per role, as the
            ``align_quantile`` quantile of ``d_k``, from the warm-up batch: the
            first step's batch in which the role was called at all.
        align_quantile: The target ``P(d_k <= d)``.
        sub_groups: What a sub-agent sample's advantage is relative to: ``query``
            (the paper's: all aligned samples of the query, per role) or ``subtask``
            (*ours*: the query's aligned samples whose subtask text is the same).
        store_path: None: the rewards pass through memory; else this SQLite file
            (shared with a sub-agent learner in another process).
        store_timeout: Seconds the sub-agent side waits for the main side's rewards.
        schedule: Which models step when: ``joint`` (the paper's: every trained model,
            every step) or ``alternate:N`` (N steps training main with the sub-agents
            frozen, then N steps training the sub-agents with main frozen, and so on;
            ``algo="mgrpo"`` only). Every step still collects and scores every role.

    The shared settings apply to every agent, each with its own optimiser. ``model``
    is ``tiny`` (fresh tiny models, one per role), a saved policy directory (every
    role starts from a copy of it), a directory with one policy per role (``main/``,
    ``searcher/`` ...: what ``mgrpo sft`` saves) or a run / checkpoint directory;
    ``shared`` takes main's policy. The env is always the AEC env.
    """

    algo: Algo = "mgrpo"
    sub_weights: tuple[float, float, float] = (0.1, 0.4, 0.5)
    align: Align = "duplicate_drop"
    align_d: int | None = None
    align_quantile: float = 0.99
    sub_groups: GroupBy = "query"
    store_path: str | None = None
    store_timeout: float = 60.0
    schedule: str = "joint"

    def __post_init__(self) -> None:
        validate_learner_config(self, {"algo": ALGOS, "align": ALIGNS, "sub_groups": GROUP_BY})
        if alternation(self.schedule) and self.algo != "mgrpo":
            raise ValueError(
                f"schedule {self.schedule!r} alternates main and the sub-agents, which needs "
                f"separate trained models (algo='mgrpo'); algo is {self.algo!r}"
            )
        self.sub_weights = check_weights("sub_weights", self.sub_weights, 3, "(b1, b2, b3)")
        d = self.align_d
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise ValueError(f"align_d must be None (estimate it) or an int >= 1, got {d!r}")
        if not 0 < self.align_quantile <= 1:
            raise ValueError(f"align_quantile must be in (0, 1], got {self.align_quantile!r}")
        if not (self.store_timeout >= 0 and math.isfinite(self.store_timeout)):
            raise ValueError(
                f"store_timeout must be a finite number >= 0, got {self.store_timeout}"
            )


# --------------------------------------------------------------------------- score


class SubSide(NamedTuple):
    """The sub-agent side's work of one step.

    Attributes:
        samples: What the sub-agents train on now, with advantages.
        scored: Every call of this step with its ``R_S`` (before alignment).
        rows: Main's rows of this step, as read from the store.
        metrics: Alignment statistics, namespaced per role.
    """

    samples: list[Trajectory]
    scored: list[Trajectory]
    rows: list[RolloutReward]
    metrics: dict[str, Any]


def open_store(config: MGRPOConfig) -> StatsStore:
    return MemoryStore() if config.store_path is None else SQLiteStore(config.store_path)


# --------------------------------------------------------------------------- learner
class MGRPOTrainer(Learner):
    """Trains a main agent and its sub-agents with M-GRPO (or a baseline, see ``algo``).

    Args:
        config: The run's settings.
        out_dir: Where ``config.json``, ``metrics.jsonl`` and ``ckpt-*`` go (None:
            nothing written).
        policies: Role -> policy to start from instead of ``config.model``; separate
            objects per role, or one object for every role under ``algo="shared"``.
        store: The statistics store the two sides exchange rewards through (default:
            ``config.store_path``'s SQLite file, or memory).
        judge: The expert judge of sub-agent calls (default: the env's verifiable score).
        resume: Continue the run in ``out_dir`` (use :meth:`resume`).
    """

    config_class = MGRPOConfig

    def __init__(
        self,
        config: MGRPOConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, HFPolicy] | None = None,
        store: StatsStore | None = None,
        judge: Judge | None = None,
        *,
        resume: bool = False,
    ) -> None:
        super().__init__(config, out_dir, policies, resume=resume)
        if MAIN not in self.roles:
            raise ValueError(f"the env's agents must include {MAIN!r}, got {self.roles}")
        self.sub_roles = [r for r in self.roles if r != MAIN]
        self.store = store if store is not None else open_store(config)
        self.judge = judge
        self.align_width: dict[str, int] = {}
        if config.align_d is not None:
            self.align_width = {role: config.align_d for role in self.sub_roles}
        self.stale: list[Trajectory] = []  # align="none": last step's sub-agent samples

    def trained_groups(self) -> dict[str, list[str]]:
        return trained_groups(self.config.algo, self.roles)

    def shared_model(self) -> bool:
        return self.config.algo == "shared"

    def active_groups(self) -> list[str]:
        return self.active_groups_at(self.step_idx)

    def active_groups_at(self, step: int) -> list[str]:
        """The optimisers that step at ``step`` under ``config.schedule``."""
        return scheduled_groups(self.config.schedule, step, self.groups)

    # -------------------------------------------------------------- one step
    def train_step(self) -> dict[str, Any]:
        """collect -> score -> store -> align -> advantages -> loss -> step -> log."""
        t0 = time.perf_counter()
        result = self.collect()  # collect
        main, scored_main = self.main_side(result)  # score, write to the store, advantages
        sub = self.sub_side(result)  # read, score, align, advantages
        stats = self.update(RolloutBuffer([*main, *sub.samples]))  # loss, step
        self.step_idx += 1
        seconds = time.perf_counter() - t0
        m = self.step_metrics(result, [*scored_main, *sub.scored], stats, seconds)  # log
        dk = np.array([r.num_invocations for r in sub.rows], dtype=np.float64)
        m.update({"dk/mean": float(dk.mean()), "dk/max": int(dk.max())})
        m["dk/zero_rollouts"] = int((dk == 0).sum())
        m["groups/all_equal/main"] = RolloutBuffer(main).all_equal_groups()
        active = set(self.active_groups_at(self.step_idx - 1))
        m.update({f"optim/active/{name}": float(name in active) for name in self.groups})
        m.update(sub.metrics)
        return m

    def main_side(self, result: RolloutResult) -> tuple[list[Trajectory], list[Trajectory]]:
        """Scores main's rollouts, publishes them to the store, z-scores them per query.

        Returns:
            The samples (with advantages) and every scored trajectory.
        """
        cfg = self.config
        scored, rows = score_main(result, reward_weights(cfg), cfg.format_reward)
        bad = nonfinite_rollouts(scored)
        rows = [r for r in rows if (r.query, r.rollout) not in bad]
        # decoupled training (arXiv 2511.13288, sec. 3): main writes its rewards (and
        # the correctness and d_k the sub-agent side needs) to the shared store
        self.store.put_rewards(self.step_idx, rows)
        # group advantage (sec. 3): z-score of R_M over the K rollouts of a query
        # (population std; zero std gives zero advantage)
        kept = RolloutBuffer(without_rollouts(scored, bad))
        return kept.with_advantages(cfg.scale_rewards).get(), scored

    def sub_side(self, result: RolloutResult) -> SubSide:
        """Reads main's rewards, scores and aligns the sub-agent calls, z-scores them.

        Under ``align="none"`` the samples to train on are the previous step's.
        """
        cfg = self.config
        rows = self.store.get_rewards(self.step_idx, timeout=cfg.store_timeout)
        self.store.prune(before=self.step_idx)
        scored = score_sub(result, rows, reward_weights(cfg), cfg.format_reward, self.judge)
        bad = nonfinite_rollouts(scored)
        rollouts = [(r.query, r.rollout) for r in rows if (r.query, r.rollout) not in bad]
        gen = align_generator(cfg.seed, self.step_idx)
        samples: list[Trajectory] = []
        metrics: dict[str, Any] = {}
        for role in self.sub_roles:
            mine = without_rollouts([t for t in scored if t.agent == role], bad)
            aligned, role_metrics = self.align_role(role, mine, rollouts, gen)
            # group advantage (sec. 3): z-score of R_S over the query's aligned samples,
            # duplicates included, pooled across its rollouts, per role (*ours*, with
            # sub_groups="subtask": over those of them on the same subtask)
            buffer = RolloutBuffer(aligned).with_advantages(cfg.scale_rewards, cfg.sub_groups)
            samples += buffer.get()
            metrics.update(role_metrics)
        if cfg.align == "none":  # unsynchronised: train on last step's samples
            samples, self.stale = self.stale, samples
        return SubSide(samples, scored, rows, metrics)

    def align_role(
        self,
        role: str,
        calls: list[Trajectory],
        rollouts: list[tuple[int, int]],
        gen: torch.Generator,
    ) -> tuple[list[Trajectory], dict[str, Any]]:
        """Trajectory alignment (sec. 3.3) of one role's calls: d samples per rollout."""
        cfg = self.config
        if role not in self.align_width and calls:
            # the warm-up batch: the first step in which the role was called at all
            counts = _counts(calls, rollouts)
            self.align_width[role] = estimate_alignment_width(counts, cfg.align_quantile)
        d = self.align_width.get(role, 1)  # with no call yet, d aligns nothing
        mode = "ragged" if cfg.align == "none" else cfg.align
        aligned, st = align_samples(calls, rollouts, d, mode, gen)
        metrics: dict[str, Any] = {f"align/{k}/{role}": v for k, v in st.items()}
        metrics[f"align/d/{role}"] = self.align_width.get(role)
        metrics[f"align/samples/{role}"] = len(aligned)
        metrics[f"groups/all_equal/{role}"] = RolloutBuffer(aligned).all_equal_groups()
        return aligned, metrics

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"align_width": dict(self.align_width), "stale": list(self.stale)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.align_width = dict(state["align_width"])
        self.stale = list(state["stale"])


def _counts(trajs: Sequence[Trajectory], rollouts: Sequence[tuple[int, int]]) -> list[int]:
    """``d_k`` of one role in every rollout."""
    per = {key: 0 for key in rollouts}
    for t in trajs:
        per[(t.group_id, t.rollout_id)] += 1
    return list(per.values())
