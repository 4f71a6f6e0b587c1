"""GRPO: one policy, group-relative advantages, a clipped surrogate (Shao et al. 2024).

The paper's single-agent baseline (arXiv 2511.13288): one policy with every tool and
no delegation, on the task's single-agent Gymnasium view. (One model playing every
role of the multi-agent env is ``MGRPOConfig(algo="shared")``.) Once per step:

    collect     N queries x K rollouts with the batched engine
    score       ``R_M`` of each rollout from the env's outcome (``mgrpo_envs.core.rewards``
                with the config's weights and ``format_reward``); a rollout whose
                reward is not finite is counted and left out of its group
    advantages  z-scores within each query's group (``scale_rewards`` option)
    loss        ``policy_loss`` (grpo / dr_grpo / dapo / gspo), k3 KL when beta > 0
    step        AdamW, gradient clipping, LR schedule; ``num_iterations`` passes
                over the batch reuse the sampling log-probs as the old policy
    log         one JSON line of metrics per step; checkpoints every few steps

The shared parts (optimiser, chunked loss, checkpoints, loop) are in ``mgrpo_algos.training``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mgrpo_algos.buffer import MAIN, RolloutBuffer
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.training.config import LearnerConfig, validate_learner_config
from mgrpo_algos.training.loop import Learner
from mgrpo_algos.training.scoring import (
    nonfinite_rollouts,
    reward_weights,
    score_main,
    without_rollouts,
)


@dataclass
class GRPOConfig(LearnerConfig):
    """Settings of a GRPO run: those of :class:`~mgrpo_algos.training.config.LearnerConfig`.

    Attributes:
        algo: Always ``grpo`` (names the learner in a saved config).
    """

    algo: Literal["grpo"] = "grpo"

    def __post_init__(self) -> None:
        validate_learner_config(self, {"algo": ("grpo",)})

    @property
    def single_agent_view(self) -> bool:
        """GRPO trains one policy with every tool: the single-agent view."""
        return True


class GRPOTrainer(Learner):
    """Trains one policy with GRPO on the single-agent view.

    Args:
        config: The run's settings.
        out_dir: Where ``config.json``, ``metrics.jsonl`` and ``ckpt-*`` go (None:
            nothing written).
        policy: Start from this policy instead of ``config.model`` (e.g. after SFT).
        policies: The same as a role -> policy map (what a checkpoint holds).
        resume: Continue the run in ``out_dir`` (use :meth:`resume`).
    """

    config_class = GRPOConfig

    def __init__(
        self,
        config: GRPOConfig,
        out_dir: str | Path | None = None,
        policy: HFPolicy | None = None,
        *,
        policies: Mapping[str, HFPolicy] | None = None,
        resume: bool = False,
    ) -> None:
        if policy is not None:
            policies = {MAIN: policy}
        super().__init__(config, out_dir, policies, resume=resume)
        self.policy = self.policies[MAIN]

    def trained_groups(self) -> dict[str, list[str]]:
        return {MAIN: [MAIN]}

    def shared_model(self) -> bool:
        return True

    def train_step(self) -> dict[str, Any]:
        """collect -> score -> advantages -> loss -> step -> log, for one step."""
        cfg = self.config
        t0 = time.perf_counter()
        result = self.collect()  # collect
        scored, _ = score_main(result, reward_weights(cfg), cfg.format_reward)  # score
        kept = without_rollouts(scored, nonfinite_rollouts(scored))
        buffer = RolloutBuffer(kept).with_advantages(cfg.scale_rewards)  # advantages
        stats = self.update(buffer)  # loss, step
        self.step_idx += 1
        metrics = self.step_metrics(result, scored, stats, time.perf_counter() - t0)  # log
        metrics["groups/all_equal/main"] = buffer.all_equal_groups()
        return metrics
