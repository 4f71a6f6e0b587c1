"""The GRPO learner: config validation, a smoke step, skipped non-finite steps, resume."""

from __future__ import annotations

import json

import pytest
import torch

from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
from mgrpo_algos.buffer import RolloutBuffer
from mgrpo_algos.training.loop import step_seeds
from mgrpo_algos.training.update import lr_lambda
from tests.test_buffer import traj

# short budgets keep random-policy episodes (and their contexts) small
ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}


def small(**kw) -> GRPOConfig:
    base = dict(
        steps=2,
        queries_per_step=2,
        group_size=2,
        max_new_tokens=8,
        env_kwargs=ENV,
        lr=1e-3,
        checkpoint_every=1,
    )
    return GRPOConfig(**{**base, **kw})


def params(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"loss_type": "ppo"}, r"loss_type must be one of \['grpo', 'dr_grpo', 'dapo', 'gspo'\]"),
        ({"scale_rewards": "rank"}, "scale_rewards must be one of"),
        ({"group_size": 1}, "group_size must be >= 2"),
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"env": "chess_v6"}, "unknown env id 'chess_v6'"),
        ({"algo": "mgrpo"}, r"algo must be one of \['grpo'\]"),
        ({"format_reward": "strict"}, r"format_reward must be one of \['binary', 'fraction'\]"),
        ({"main_weights": (1.0,)}, "main_weights must be 2 finite numbers"),
    ],
)
def test_config_is_validated(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        GRPOConfig(**kw)


def test_advantages_are_grouped_by_query_and_role() -> None:
    ts = [
        traj("main", 0, 0, reward=1.0),
        traj("main", 0, 1, reward=0.0),
        traj("searcher", 0, 0, reward=0.5),
        traj("searcher", 0, 1, reward=0.5),
        traj("main", 1, 0, reward=0.2),
        traj("main", 1, 1, reward=0.2),
    ]
    adv = [t.advantage for t in RolloutBuffer(ts).with_advantages("group")]
    # main/q0: z-scores of (1, 0) are (1, -1); searcher/q0 and main/q1 have zero std -> 0
    assert adv == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])


def test_schedule_and_seeds_are_pure_functions() -> None:
    assert lr_lambda(0, 10, 2, "constant") == 0.5 and lr_lambda(5, 10, 2, "constant") == 1.0
    assert lr_lambda(10, 10, 0, "cosine") == pytest.approx(0.1)
    assert step_seeds(0, 3, 4) == step_seeds(0, 3, 4) != step_seeds(0, 4, 4)


@pytest.mark.parametrize(
    "loss_type,beta,iters",
    [("grpo", 0.0, 1), ("dapo", 0.04, 2), ("dr_grpo", 0.0, 1), ("gspo", 0.0, 1)],
)
def test_a_step_leaves_an_unrewarded_policy_and_logs_finite_numbers(loss_type, beta, iters) -> None:
    trainer = GRPOTrainer(small(loss_type=loss_type, beta=beta, num_iterations=iters))
    before = params(trainer.policy)
    m = trainer.train_step()
    assert m["step"] == 1 and m["optim/skipped"] == 0
    for key in (
        "success_rate",
        "reward/main/mean",
        "loss/main",
        "optim/grad_norm/main",
        "entropy/main",
        "kl/main",
        "clip_ratio/main",
        "perf/tokens_per_s",
    ):
        assert m[key] is not None and torch.isfinite(torch.tensor(float(m[key]))), key
    assert m["reward/sub/mean"] is None and m["loss/sub"] is None  # no sub-agent here
    assert "tokens_per_s" not in m  # one name per metric: perf/tokens_per_s
    # an untrained model earns 0 everywhere: zero advantages, and the KL term has zero
    # gradient while the policy equals its reference, so nothing may move
    moved = any(not torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))
    assert not moved


def reward_outcomes(trainer, monkeypatch, correct) -> None:
    """Makes every episode's outcome valid, with ``correct(episode)`` as its correctness."""
    real = trainer.engine.collect

    def collect(*a, **kw):
        res = real(*a, **kw)
        for ep in res.episodes:
            outcome = ep.infos["main"]["outcome"]
            outcome.update(format_ok=True, correct=correct(ep), r_format=1.0)
            outcome.pop("outputs", None)
        return res

    monkeypatch.setattr(trainer.engine, "collect", collect)


def test_rewarded_rollouts_move_the_policy(monkeypatch) -> None:
    trainer = GRPOTrainer(small())
    reward_outcomes(trainer, monkeypatch, lambda ep: ep.rollout_id % 2 == 1)
    before = params(trainer.policy)
    m = trainer.train_step()
    assert m["reward/main/mean"] == pytest.approx(0.1 + 0.9 * 0.5)
    assert m["optim/grad_norm/main"] > 0 and m["optim/skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))


def test_a_non_finite_loss_skips_the_step_and_touches_nothing(monkeypatch) -> None:
    trainer = GRPOTrainer(small())
    real = trainer.policy.logprobs
    real_shared = trainer.policy.logprobs_shared_prefix
    monkeypatch.setattr(
        trainer.policy, "logprobs", lambda ids, mask, t=1.0: real(ids, mask, t) * float("nan")
    )
    monkeypatch.setattr(  # the learner's default path: each group's prompt run once
        trainer.policy,
        "logprobs_shared_prefix",
        lambda ids, mask, groups, t=1.0: real_shared(ids, mask, groups, t) * float("nan"),
    )
    before = params(trainer.policy)
    optimizer, scheduler = trainer.optimizers["main"], trainer.schedulers["main"]
    opt_before = json.dumps(optimizer.state_dict()["state"], default=str)
    m = trainer.train_step()
    assert m["optim/skipped"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))
    assert json.dumps(optimizer.state_dict()["state"], default=str) == opt_before
    assert scheduler.last_epoch == 0


def test_a_non_finite_reward_drops_its_rollout_and_the_rest_trains(monkeypatch) -> None:
    trainer = GRPOTrainer(small(queries_per_step=2, group_size=4))
    reward_outcomes(trainer, monkeypatch, lambda ep: ep.rollout_id % 2 == 1)
    real_score = trainer.engine.collect

    def one_nan(*a, **kw):  # one rollout's format score is NaN (a user env's bug)
        res = real_score(*a, **kw)
        res.episodes[0].infos["main"]["outcome"]["r_format"] = float("nan")
        return res

    monkeypatch.setattr(trainer.engine, "collect", one_nan)
    before = params(trainer.policy)
    m = trainer.train_step()
    assert m["reward/nonfinite"] == 1 and m["optim/skipped"] == 0
    assert m["samples/main"] == 7  # 8 rollouts, one left out of its group
    assert m["loss/main"] is not None and m["reward/main/mean"] is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))


def test_resume_repeats_an_uninterrupted_run(tmp_path, monkeypatch) -> None:
    def rewarded(trainer):
        reward_outcomes(trainer, monkeypatch, lambda ep: ep.agent_turns % 2 == 1)
        return trainer

    full = rewarded(GRPOTrainer(small(steps=3), tmp_path / "full"))
    full.train(progress=False)
    part = rewarded(GRPOTrainer(small(steps=3), tmp_path / "part"))
    part.writer.write(part.train_step())  # step 1, as train() does it ...
    part.save_checkpoint()  # ... with its checkpoint
    part.writer.write(part.train_step())  # step 2 is lost: the run stops before its checkpoint
    resumed = rewarded(GRPOTrainer.resume(tmp_path / "part"))
    assert resumed.step_idx == 1
    resumed.train(progress=False)

    def strip(rows):
        return [{k: v for k, v in m.items() if not k.startswith("perf/")} for m in rows]

    got, want = strip(resumed.writer.read()), strip(full.writer.read())
    assert [m["step"] for m in got] == [1, 2, 3]
    assert got == want
    for a, b in zip(params(full.policy), params(resumed.policy), strict=True):
        assert torch.equal(a, b)
