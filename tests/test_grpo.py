"""The GRPO learner: config validation, a smoke step, skipped non-finite steps, resume."""

from __future__ import annotations

import json

import pytest
import torch

from mgrpo_algos.grpo import GRPOConfig, GRPOTrainer, add_advantages, lr_lambda, step_seeds
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
        ({"env": "chess_v6"}, "env must be one of"),
        ({"view": "parallel"}, "view must be one of"),
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
    adv = [t.advantage for t in add_advantages(ts, "group")]
    # main/q0: z-scores of (1, 0) are (1, -1); searcher/q0 and main/q1 have zero std -> 0
    assert adv == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])


def test_schedule_and_seeds_are_pure_functions() -> None:
    assert lr_lambda(0, 10, 2, "constant") == 0.5 and lr_lambda(5, 10, 2, "constant") == 1.0
    assert lr_lambda(10, 10, 0, "cosine") == pytest.approx(0.1)
    assert step_seeds(0, 3, 4) == step_seeds(0, 3, 4) != step_seeds(0, 4, 4)


@pytest.mark.parametrize(
    "view,loss_type,beta,iters",
    [
        ("single", "grpo", 0.0, 1),
        ("shared", "dapo", 0.04, 2),
        ("single", "dr_grpo", 0.0, 1),
        ("shared", "gspo", 0.0, 1),
    ],
)
def test_a_step_changes_parameters_and_logs_finite_numbers(view, loss_type, beta, iters) -> None:
    trainer = GRPOTrainer(small(view=view, loss_type=loss_type, beta=beta, num_iterations=iters))
    before = params(trainer.policy)
    m = trainer.train_step()
    assert m["step"] == 1 and m["skipped"] == 0
    for key in (
        "success_rate",
        "reward/main/mean",
        "loss/main",
        "grad_norm",
        "entropy",
        "kl",
        "clip_ratio",
        "perf/tokens_per_s",
        "tokens_per_s",
    ):
        assert m[key] is not None and torch.isfinite(torch.tensor(float(m[key]))), key
    if view == "shared":
        assert "reward/sub/mean" in m
    # an untrained model earns 0 everywhere: zero advantages, and the KL term has zero
    # gradient while the policy equals its reference, so nothing may move
    moved = any(not torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))
    assert not moved


def test_rewarded_rollouts_move_the_policy(monkeypatch) -> None:
    trainer = GRPOTrainer(small())
    real = trainer.engine.collect

    def collect_with_rewards(*a, **kw):
        res = real(*a, **kw)
        res.trajectories = [t.replace(reward=float(i % 2)) for i, t in enumerate(res.trajectories)]
        return res

    monkeypatch.setattr(trainer.engine, "collect", collect_with_rewards)
    before = params(trainer.policy)
    m = trainer.train_step()
    assert m["grad_norm"] > 0 and m["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))


def test_a_non_finite_loss_skips_the_step_and_touches_nothing(monkeypatch) -> None:
    trainer = GRPOTrainer(small())
    real = trainer.policy.logprobs
    real_shared = trainer.policy.logprobs_shared_prefix
    monkeypatch.setattr(
        trainer.policy, "logprobs", lambda ids, mask: real(ids, mask) * float("nan")
    )
    monkeypatch.setattr(  # the learner's default path: each group's prompt run once
        trainer.policy,
        "logprobs_shared_prefix",
        lambda ids, mask, groups: real_shared(ids, mask, groups) * float("nan"),
    )
    before = params(trainer.policy)
    opt_before = json.dumps(trainer.optimizer.state_dict()["state"], default=str)
    m = trainer.train_step()
    assert m["skipped"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, params(trainer.policy), strict=True))
    assert json.dumps(trainer.optimizer.state_dict()["state"], default=str) == opt_before
    assert trainer.scheduler.last_epoch == 0


def test_resume_repeats_an_uninterrupted_run(tmp_path, monkeypatch) -> None:
    def rewarded(trainer):
        real = trainer.engine.collect

        def collect(*a, **kw):
            res = real(*a, **kw)
            res.trajectories = [
                t.replace(reward=float(len(t.input_ids) % 2)) for t in res.trajectories
            ]
            return res

        monkeypatch.setattr(trainer.engine, "collect", collect)
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
        return [
            {k: v for k, v in m.items() if not k.startswith(("perf/", "tokens_per_s"))}
            for m in rows
        ]

    got, want = strip(resumed.writer.read()), strip(full.writer.read())
    assert [m["step"] for m in got] == [1, 2, 3]
    assert got == want
    for a, b in zip(params(full.policy), params(resumed.policy), strict=True):
        assert torch.equal(a, b)


def test_cli_train_writes_metrics_and_eval_reads_the_checkpoint(tmp_path, capsys) -> None:
    from mgrpo_algos.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--algo",
                "grpo",
                "--steps",
                "1",
                "--out",
                str(out),
                "--queries",
                "2",
                "--group-size",
                "2",
                "--max-new-tokens",
                "6",
                "--env-arg",
                "main_turns=2",
                "--env-arg",
                "episode_turns=3",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1
    for key in (
        "success_rate",
        "reward/main/mean",
        "reward/sub/mean",
        "loss/main",
        "loss/sub",
        "tokens_per_s",
    ):
        assert key in rows[0]
    assert (out / "ckpt-000001" / "policy").is_dir()
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--episodes", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 3 and 0.0 <= result["success_rate"] <= 1.0
    lo, hi = result["success_ci95"]
    assert lo <= result["success_rate"] <= hi


def test_cli_train_needs_an_output_directory() -> None:
    from mgrpo_algos.cli import main

    for algo in ("grpo", "mgrpo"):
        with pytest.raises(SystemExit, match="--out DIR is required"):
            main(["train", "--algo", algo])
