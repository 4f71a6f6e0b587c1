"""The algorithm table: one entry per ``--algo``; adding one is a module and an entry."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import pytest
import torch

from mgrpo_algos.algorithms import (
    ALGORITHMS,
    Algorithm,
    algorithm,
    load_run,
    make_trainer,
    resume_trainer,
    trainer_class,
)
from mgrpo_algos.buffer import MAIN, RolloutBuffer
from mgrpo_algos.training.config import LearnerConfig, validate_learner_config
from mgrpo_algos.training.loop import Learner
from mgrpo_algos.training.scoring import reward_weights, score_main

ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}


# ---- the new algorithm: what a user writes in one module
@dataclasses.dataclass
class SoloConfig(LearnerConfig):
    """Main alone trained with GRPO on the multi-agent env; every sub-agent frozen."""

    algo: Literal["main-solo"] = "main-solo"  # type: ignore[assignment]

    def __post_init__(self) -> None:
        validate_learner_config(self, {"algo": ("main-solo",)})


class SoloTrainer(Learner):
    config_class = SoloConfig

    def trained_groups(self) -> dict[str, list[str]]:
        return {MAIN: [MAIN]}

    def shared_model(self) -> bool:
        return False

    def train_step(self) -> dict[str, Any]:
        result = self.collect()
        scored, _ = score_main(result, reward_weights(self.config), self.config.format_reward)
        stats = self.update(RolloutBuffer(scored).with_advantages(self.config.scale_rewards))
        self.step_idx += 1
        return self.step_metrics(result, scored, stats, 0.0)


SOLO = Algorithm("main-solo", SoloConfig, SoloTrainer, "main alone, the sub-agents frozen")


@pytest.fixture
def solo(monkeypatch):
    monkeypatch.setitem(ALGORITHMS, SOLO.name, SOLO)  # the one table entry


def config(**kw) -> SoloConfig:
    base = dict(steps=2, queries_per_step=2, group_size=2, max_new_tokens=6, env_kwargs=ENV)
    return SoloConfig(**{**base, **kw})


def test_a_new_algorithm_trains_saves_loads_and_resumes(solo, tmp_path) -> None:
    out = tmp_path / "run"
    trainer = make_trainer(config(steps=1, checkpoint_every=1), out)
    assert type(trainer) is SoloTrainer and trainer.roles[0] == MAIN
    frozen = [p.detach().clone() for p in trainer.policies[trainer.roles[1]].parameters()]
    history = trainer.train(progress=False)
    assert len(history) == 1 and history[0]["loss/main"] is not None
    run = load_run(out)
    assert isinstance(run.config, SoloConfig) and set(run.policies) == set(trainer.roles)
    sub = run.policies[trainer.roles[1]]
    assert all(torch.equal(a, b) for a, b in zip(frozen, sub.parameters(), strict=True))
    resumed = resume_trainer(out, steps=2)
    assert type(resumed) is SoloTrainer and resumed.step_idx == 1
    resumed.train(progress=False)
    assert resumed.step_idx == 2


def test_every_entry_is_consistent() -> None:
    for name, algo in ALGORITHMS.items():
        assert algo.name == name and issubclass(algo.trainer, Learner)
        assert algo.config().algo == name or name in ("main-only", "shared")  # one config, 3 algos
        assert algo.trainer.config_class is algo.config
        assert algo.backend_names[0] == "embedded"


def test_unknown_names_and_backends_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"algo must be one of \['mgrpo', .*'tf-grpo'\], got 'ppo'"
    ):
        algorithm("ppo")
    with pytest.raises(ValueError, match=r"--algo tf-grpo runs on the backends \['embedded'\]"):
        trainer_class("tf-grpo", "ray")
