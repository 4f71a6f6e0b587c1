"""The M-GRPO learner: rewards, alignment and advantages by hand, per-agent updates, resume.

Most learner tests use ``FakeEngine``: rollouts built from the seeds without an env
(``d_k``, correctness and call records drawn per rollout, random tokens scored by the
policies), so every case is fast and its rewards vary. The env is played for real in
the scoring check, a smoke step and the CLI run.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mgrpo_envs
from mgrpo_algos import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.alignment import align_samples
from mgrpo_algos.buffer import RolloutBuffer, Trajectory
from mgrpo_algos.functional import (
    align_calls,
    duplicate_drop,
    estimate_alignment_width,
    fill,
    ragged,
    truncate,
)
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import (
    EpisodeRecord,
    RolloutConfig,
    RolloutEngine,
    RolloutResult,
    expert_script,
)
from mgrpo_algos.store import RolloutReward
from mgrpo_algos.training.loop import step_seeds
from mgrpo_algos.training.scoring import format_of, score_main, score_sub
from mgrpo_envs.core.rewards import RewardWeights, main_reward, sub_reward
from tests.test_buffer import traj

# short budgets keep random-policy episodes (and their contexts) small
ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}
SUB = "searcher"
W = RewardWeights()  # the paper's: (0.1, 0.9) and (0.1, 0.4, 0.5)


def small(**kw) -> MGRPOConfig:
    base = dict(
        steps=2,
        queries_per_step=2,
        group_size=3,
        max_new_tokens=8,
        env_kwargs=ENV,
        lr=1e-2,
        checkpoint_every=1,
    )
    return MGRPOConfig(**{**base, **kw})


def params(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- fakes


def call_record(i: int, format_ok: bool = True, r_format: float = 1.0, expert: float = 1.0):
    return {
        "invocation": i,
        "subtask": f"fact {i}",
        "result": "x" if format_ok else None,
        "format_ok": format_ok,
        "r_format": r_format,
        "expert": expert,
        "reward": 0.0,
    }


def episode(q, k, correct=False, format_ok=True, r_format=1.0, calls=()) -> EpisodeRecord:
    outcome = {
        "correct": correct,
        "format_ok": format_ok,
        "answer": "a",
        "gold": "a" if correct else "b",
        "num_invocations": len(calls),
        "r_format": r_format,
        "reward": 0.0,
    }
    infos = {"main": {"outcome": outcome}, SUB: {"calls": list(calls)}}
    return EpisodeRecord(q, k, 100 + q, correct, 0.0, len(calls), "answered", 1, infos)


def result(episodes: list[EpisodeRecord]) -> RolloutResult:
    """A rollout result whose trajectories are the episodes' calls (tokens do not matter)."""
    trajs = []
    for e in episodes:
        trajs.append(traj("main", e.group_id, e.rollout_id))
        for c in e.infos[SUB]["calls"]:
            call = traj(SUB, e.group_id, e.rollout_id, c["invocation"])
            trajs.append(call.replace(subtask=c["subtask"]))  # as the engine records it
    return RolloutResult(trajs, episodes, 0, 0.0, 0.0, 1.0)


class FakeEngine:
    """Rollouts without an env, drawn from (seed, rollout): the same seeds give the same rollouts.

    Tokens are random ids; their sampling log-probs are the acting policy's own, as
    the real engine records them.
    """

    def __init__(self, policies, max_calls: int = 3, length: int = 8) -> None:
        self.policies, self.max_calls, self.length = policies, max_calls, length

    def _traj(self, role, q, k, invocation, rng) -> Trajectory:
        policy = self.policies[role]
        ids = torch.as_tensor(rng.integers(8, policy.vocab_size, self.length))
        with torch.no_grad():
            lp = policy.logprobs(ids[None], torch.ones_like(ids)[None])[0]  # (T-1,)
        mask = np.array([0, 0, 0] + [1] * (self.length - 3), dtype=np.int8)
        old = np.zeros(self.length, dtype=np.float32)
        old[1:] = lp.numpy() * mask[1:]
        return Trajectory(role, q, k, invocation, ids.numpy(), mask, old)

    def collect(self, seeds, group_size, generator=None) -> RolloutResult:
        episodes, trajs = [], []
        for q, seed in enumerate(seeds):
            for k in range(group_size):
                rng = np.random.default_rng([seed, k])
                calls = [
                    call_record(i, bool(rng.random() < 0.8), float(rng.random()), float(i % 2))
                    for i in range(int(rng.integers(0, self.max_calls + 1)))
                ]
                ep = episode(q, k, bool(rng.random() < 0.5), True, float(rng.random()), calls)
                episodes.append(ep)
                trajs.append(self._traj("main", q, k, 0, rng))
                trajs += [self._traj(SUB, q, k, c["invocation"], rng) for c in calls]
        return RolloutResult(trajs, episodes, 6 * len(trajs), 0.0, 0.0, 1e-3)


def fake_trainer(out_dir=None, **kw) -> MGRPOTrainer:
    trainer = MGRPOTrainer(small(**kw), out_dir)
    trainer.engine = FakeEngine(trainer.policies)
    return trainer


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"algo": "ppo"}, r"algo must be one of \['mgrpo', 'main-only', 'shared'\], got 'ppo'"),
        ({"align": "pad"}, r"align must be one of \['duplicate_drop', 'truncate', 'fill'"),
        ({"align_d": 0}, "align_d must be None .* or an int >= 1, got 0"),
        ({"main_weights": (0.1,)}, r"main_weights must be 2 finite numbers >= 0 \(a1, a2\)"),
        ({"sub_weights": (0.1, -1, 0.5)}, r"sub_weights must be 3 finite numbers >= 0"),
        ({"align_quantile": 1.5}, r"align_quantile must be in \(0, 1\]"),
        ({"group_size": 1}, "group_size must be >= 2"),
        ({"loss_type": "ppo"}, "loss_type must be one of"),
        ({"sub_groups": "role"}, r"sub_groups must be one of \['query', 'subtask'\]"),
    ],
)
def test_config_is_validated(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        MGRPOConfig(**kw)


def test_config_survives_its_json_form() -> None:
    cfg = MGRPOConfig(main_weights=[0.2, 0.8], align_d=3)
    again = MGRPOConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.main_weights == (0.2, 0.8)


# --------------------------------------------------------------------------- rewards


def test_rewards_by_hand() -> None:
    ok = {"format_ok": True, "r_format": 0.5, "correct": True}
    assert main_reward(True, format_of(ok, "fraction"), 1.0, W) == pytest.approx(0.05 + 0.9)
    assert main_reward(True, format_of(ok, "fraction"), 0.0, W) == pytest.approx(0.05)
    assert main_reward(False, format_of(ok, "fraction"), 1.0, W) == 0.0  # invalid: 0
    # the paper's binary r_format: 1 for a valid final output, whatever came before
    assert main_reward(True, format_of(ok, "binary"), 1.0, W) == pytest.approx(0.1 + 0.9)
    counts = {"format_ok": True, "outputs": 4, "valid_outputs": 3}
    assert format_of(counts, "fraction") == 0.75 and format_of(counts, "binary") == 1.0
    assert format_of({**counts, "format_ok": False}, "binary") == 0.0
    assert sub_reward(True, 0.5, 1.0, 1.0, W) == pytest.approx(0.05 + 0.4 + 0.5)
    assert sub_reward(True, 0.5, 0.0, 0.0, W) == pytest.approx(0.05)
    assert sub_reward(False, 1.0, 1.0, 1.0, W) == 0.0


def test_sub_rewards_read_main_correctness_from_the_store_rows_and_use_the_judge() -> None:
    res = result([episode(0, 0, correct=True, calls=[call_record(0), call_record(1, False)])])
    main, rows = score_main(res, W, "fraction")
    assert rows == [RolloutReward(0, 0, pytest.approx(1.0), 1.0, 2)]
    assert [t.reward for t in main] == [pytest.approx(1.0)]
    sub = score_sub(res, rows, W)
    assert [t.reward for t in sub] == [pytest.approx(1.0), 0.0]
    # the sub side believes the store, not the env: main's correctness comes from the row
    wrong = [rows[0]._replace(correct=0.0)]
    assert score_sub(res, wrong, W)[0].reward == pytest.approx(0.6)
    seen = []

    def judge(subtask, result, context):
        seen.append((subtask, result, context["role"], context["invocation"], context["seed"]))
        return 0.25

    sub = score_sub(res, rows, W, "fraction", judge)
    assert sub[0].reward == pytest.approx(0.1 + 0.4 + 0.5 * 0.25)
    assert seen == [("fact 0", "x", SUB, 0, 100)]  # never asked about an invalid call

    def silent_judge(subtask, result, context):
        return None

    with pytest.raises(TypeError, match=r"the judge .*silent_judge returned None for 'searcher'"):
        score_sub(res, rows, W, "fraction", silent_judge)
    # a NaN passes through: the learner counts it and leaves its rollout out
    nan = score_sub(res, rows, W, "fraction", lambda *a: float("nan"))
    assert math.isnan(nan[0].reward)


def test_scoring_matches_the_env_on_expert_rollouts() -> None:
    def env_fn():
        return mgrpo_envs.make("research_v0", difficulty="easy")

    policy = HFPolicy.tiny(env_fn(), size="micro")
    scripts = {"main": expert_script, SUB: expert_script}
    res = RolloutEngine(env_fn, {"main": policy, SUB: policy}, scripts=scripts).collect([0, 1], 2)
    main, rows = score_main(res, W, "fraction")
    sub = score_sub(res, rows, W)
    env_rewards = [t.reward for t in res.trajectories]
    assert sub and [t.reward for t in main + sub] == pytest.approx(
        [t.reward for t in res.trajectories if t.agent == "main"]
        + [t.reward for t in res.trajectories if t.agent == SUB]
    )
    assert all(r == pytest.approx(1.0) for r in env_rewards)
    # other weights: the learner's, not the env's
    sub = score_sub(res, rows, RewardWeights(0.1, 0.9, 0.0, 0.0, 0.5))
    assert all(t.reward == pytest.approx(0.5) for t in sub)


# --------------------------------------------------------------------------- alignment


def rows_of(alignment) -> list[list[tuple[int, bool]]]:
    """Per rollout, the (call, duplicate) pairs of an alignment."""
    out: dict[int, list] = {}
    for k, i, dup in zip(*alignment, strict=True):
        out.setdefault(int(k), []).append((int(i), bool(dup)))
    return [out.get(k, []) for k in range(max(out, default=-1) + 1)]


def test_duplicate_drop_by_hand() -> None:
    gen = torch.Generator().manual_seed(0)
    got = rows_of(duplicate_drop([1, 3, 2, 0], 2, gen))
    assert got[0] == [(0, False), (0, True)]  # d_k = 1 < d: its one call, then a copy
    kept = [i for i, _ in got[1]]
    assert len(kept) == 2 and kept == sorted(set(kept)) and set(kept) <= {0, 1, 2}  # one dropped
    assert got[2] == [(0, False), (1, False)]  # d_k = d: untouched
    assert len(got) == 3  # d_k = 0 contributes nothing
    assert len(duplicate_drop([1, 3, 2], 2, gen).call) == 2 * 3


def test_the_other_alignments_by_hand() -> None:
    assert rows_of(truncate([1, 3], 2)) == [[(0, False)], [(0, False), (1, False)]]
    assert rows_of(fill([1, 3, 2], 3)) == [
        [(0, False), (0, True), (0, True)],
        [(0, False), (1, False), (2, False)],
        [(0, False), (1, False), (0, True)],
    ]
    assert rows_of(ragged([2, 0, 1])) == [[(0, False), (1, False)], [], [(0, False)]]
    assert len(align_calls([2, 0, 1], 5, "ragged").call) == 3
    with pytest.raises(ValueError, match="mode must be one of"):
        align_calls([1], 1, "pad")
    with pytest.raises(ValueError, match=r"counts \(d_k\) must be >= 0"):
        duplicate_drop([1, -1], 2)
    with pytest.raises(ValueError, match="d .* must be an int >= 1, got 0"):
        fill([1], 0)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 7), min_size=1, max_size=6),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_duplicate_drop_returns_exactly_d_per_rollout(counts, d, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    got = rows_of(duplicate_drop(counts, d, gen))
    assert sum(len(r) for r in got) == d * len(counts)  # exactly d * K
    for c, row in zip(counts, got, strict=True):
        calls = [i for i, _ in row]
        assert len(row) == d and all(0 <= i < c for i in calls)
        originals = [i for i, dup in row if not dup]
        assert len(originals) == min(c, d) == len(set(originals))  # every kept call once ...
        assert sum(dup for _, dup in row) == max(d - c, 0)  # ... plus d - d_k copies


def chi_square(observed, expected) -> float:
    return float(sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True)))


def test_duplicates_and_drops_are_drawn_uniformly() -> None:
    gen = torch.Generator().manual_seed(1234)
    dup_counts = np.zeros(3)
    for _ in range(1500):  # d_k = 3, d = 9: six copies, each uniform over the 3 calls
        a = duplicate_drop([3], 9, gen)
        np.add.at(dup_counts, a.call[a.duplicate].numpy(), 1)
    kept_counts = np.zeros(4)
    for _ in range(3000):  # d_k = 4, d = 1: the one kept call is uniform over the 4
        np.add.at(kept_counts, duplicate_drop([4], 1, gen).call.numpy(), 1)
    # 99.9% points of chi-square with 2 and 3 degrees of freedom: 13.82, 16.27
    assert chi_square(dup_counts, [1500 * 6 / 3] * 3) < 13.82
    assert chi_square(kept_counts, [3000 / 4] * 4) < 16.27
    # a biased draw would be caught: always copying call 0
    assert chi_square([9000, 0, 0], [3000] * 3) > 13.82


def test_alignment_width_is_the_99th_percentile_of_the_warm_up_batch() -> None:
    assert estimate_alignment_width([1] * 99 + [5]) == 1  # P(d_k <= 1) = 0.99
    assert estimate_alignment_width([1] * 98 + [5, 5]) == 5
    assert estimate_alignment_width([0, 0, 1, 2, 3], quantile=0.6) == 1  # 3rd of 5 sorted
    assert estimate_alignment_width([0, 0, 0]) == 1 and estimate_alignment_width([]) == 1
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\]"):
        estimate_alignment_width([1], quantile=0.0)


def test_rollouts_without_calls_contribute_nothing_and_are_counted() -> None:
    trajs = [traj(SUB, 0, 1, 0), traj(SUB, 0, 1, 1)]
    rollouts = [(0, 0), (0, 1), (0, 2)]
    got, stats = align_samples(trajs, rollouts, 3, "duplicate_drop", torch.Generator())
    assert len(got) == 3 and {t.rollout_id for t in got} == {1}
    assert stats == {"duplicated": 1, "dropped": 0, "zero_rollouts": 2}


# --------------------------------------------------------------------------- advantages


def test_main_advantages_are_z_scores_over_the_k_rollouts_by_hand() -> None:
    trainer = MGRPOTrainer(small(group_size=4))
    eps = [
        episode(0, 0, correct=True),  # R_M = 0.1 + 0.9 = 1.0
        episode(0, 1, correct=False),  # 0.1
        episode(0, 2, correct=False, format_ok=False),  # 0.0
        episode(0, 3, correct=True),  # 1.0
        *[episode(1, k, correct=True) for k in range(4)],  # all 1.0: zero std
    ]
    main, _ = trainer.main_side(result(eps))
    # q0: mean 0.525, population std sqrt(((.475^2)*2 + .425^2 + .525^2) / 4) = 0.47631
    assert [t.advantage for t in main] == pytest.approx(
        [0.99725, -0.89228, -1.10222, 0.99725, 0.0, 0.0, 0.0, 0.0], abs=1e-4
    )
    assert trainer.store.get_rewards(0)[2] == RolloutReward(0, 2, 0.0, 0.0, 0)


@pytest.mark.parametrize(
    "align,expected",
    [
        # d = 2: rollout 0's single call is copied, rollout 1 keeps 2 of its 3 calls:
        # rewards (1, 1, 0, 0), mean 0.5, std 0.5
        ("duplicate_drop", [1.0, 1.0, -1.0, -1.0]),
        # no alignment: (1, 0, 0, 0), mean 0.25, std sqrt(3)/4
        ("ragged", [math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)]),
    ],
)
def test_sub_advantages_pool_the_aligned_samples_of_a_query_by_hand(align, expected) -> None:
    trainer = MGRPOTrainer(small(group_size=2, align=align, align_d=2, sub_weights=(0, 0, 1)))
    eps = [
        episode(0, 0, calls=[call_record(0, expert=1.0)]),
        episode(0, 1, calls=[call_record(i, expert=0.0) for i in range(3)]),
    ]
    res = result(eps)
    trainer.main_side(res)
    sub = trainer.sub_side(res)
    assert [t.advantage for t in sub.samples] == pytest.approx(expected, abs=1e-6)
    assert [t.duplicate for t in sub.samples].count(True) == (align == "duplicate_drop")


def test_sub_groups_by_subtask_compare_calls_on_the_same_subtask_by_hand() -> None:
    eps = [
        episode(0, 0, calls=[call_record(0, expert=1.0), call_record(1, expert=0.0)]),
        episode(0, 1, calls=[call_record(0, expert=0.0), call_record(1, expert=0.0)]),
    ]
    eps[1].infos[SUB]["calls"][0]["subtask"] = "  FACT   0 "  # the same subtask, spelt apart
    res = result(eps)
    advantages = {}
    for groups in ("query", "subtask"):
        config = small(group_size=2, align="ragged", sub_weights=(0, 0, 1), sub_groups=groups)
        trainer = MGRPOTrainer(config)
        trainer.main_side(res)
        advantages[groups] = [t.advantage for t in trainer.sub_side(res).samples]
    # rewards (r0 c0, r0 c1, r1 c0, r1 c1) = (1, 0, 0, 0); the query: mean 0.25, std sqrt(3)/4
    third = 1 / math.sqrt(3)
    assert advantages["query"] == pytest.approx([math.sqrt(3), -third, -third, -third])
    # "fact 0": (1, 0) -> (1, -1); "fact 1": (0, 0) -> zero std, zero advantage
    assert advantages["subtask"] == pytest.approx([1.0, 0.0, -1.0, 0.0])


def test_equal_rewards_give_zero_advantages_never_nan() -> None:
    trainer = MGRPOTrainer(small(group_size=2, align_d=2))
    res = result([episode(0, k, calls=[call_record(0), call_record(1)]) for k in range(2)])
    main, _ = trainer.main_side(res)
    sub = trainer.sub_side(res)
    assert [t.advantage for t in main + sub.samples] == [0.0] * 6
    assert sub.metrics[f"groups/all_equal/{SUB}"] == 1


# --------------------------------------------------------------------------- gradients


def grads(policy) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in policy.parameters()]


def test_dropped_samples_leave_no_gradient() -> None:
    trainer = fake_trainer(align_d=1)
    policy = trainer.policies[SUB]
    engine = trainer.engine
    rng = np.random.default_rng(0)
    calls = [engine._traj(SUB, 0, 0, i, rng).replace(reward=float(i)) for i in range(3)]
    calls.append(engine._traj(SUB, 0, 1, 0, rng).replace(reward=0.5))
    rollouts = [(0, 0), (0, 1)]

    def step_grads(trajs):
        aligned, _ = align_samples(trajs, rollouts, 1, "duplicate_drop", torch.Generator())
        policy.model.zero_grad(set_to_none=True)
        trainer.backward(SUB, RolloutBuffer(aligned).with_advantages("group").get())
        return aligned, grads(policy)

    aligned, before = step_grads(calls)
    kept = {t.invocation for t in aligned if t.rollout_id == 0}
    assert len(kept) == 1  # two of rollout 0's three calls were dropped
    # change the dropped calls' tokens beyond recognition: the gradient does not move
    garbled = [
        t if t.rollout_id == 1 or t.invocation in kept else t.replace(input_ids=t.input_ids[::-1])
        for t in calls
    ]
    _, after = step_grads(garbled)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # while changing a kept call does move it (the check can fail)
    changed = [t.replace(input_ids=t.input_ids[::-1]) if t.rollout_id == 1 else t for t in calls]
    _, moved = step_grads(changed)
    assert not all(torch.equal(a, b) for a, b in zip(before, moved, strict=True))


def test_with_separate_policies_main_loss_leaves_sub_agent_grads_empty() -> None:
    trainer = fake_trainer()
    res = trainer.engine.collect([1, 2], 3)
    main, _ = trainer.main_side(res)
    trainer.backward("main", [t.replace(advantage=1.0 - 2 * (i % 2)) for i, t in enumerate(main)])
    assert all(g is None for g in grads(trainer.policies[SUB]))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(trainer.policies["main"]))
    assert set(trainer.optimizers) == {"main", SUB}


def test_a_step_trains_every_agent_and_logs_the_public_keys() -> None:
    trainer = fake_trainer()
    before = {r: params(p) for r, p in trainer.policies.items()}
    m = trainer.train_step()
    for role in ("main", SUB):
        assert not same(before[role], params(trainer.policies[role])), role
    for key in (
        "step",
        "success_rate",
        "reward/main/mean",
        "reward/sub/mean",
        "loss/main",
        "loss/sub",
        f"loss/{SUB}",
        "perf/tokens_per_s",
        "dk/mean",
        "dk/max",
        "dk/zero_rollouts",
        f"align/d/{SUB}",
        f"align/samples/{SUB}",
        "groups/all_equal/main",
        f"groups/all_equal/{SUB}",
        "optim/grad_norm/main",
        f"optim/grad_norm/{SUB}",
        f"entropy/{SUB}",
    ):
        assert m[key] is not None and math.isfinite(float(m[key])), key
    assert m["step"] == 1 and m["optim/skipped"] == 0 and m["loss/sub"] == m[f"loss/{SUB}"]
    assert "tokens_per_s" not in m and m["reward/nonfinite"] == 0
    # d was estimated from this first batch; every rollout with calls gave exactly d samples
    d, zero = m[f"align/d/{SUB}"], m[f"align/zero_rollouts/{SUB}"]
    assert m[f"align/samples/{SUB}"] == d * (6 - zero) and zero == m["dk/zero_rollouts"]


def test_a_non_finite_sub_agent_loss_skips_that_agent_only(monkeypatch) -> None:
    trainer = fake_trainer()
    sub = trainer.policies[SUB]
    real = sub.logprobs
    monkeypatch.setattr(sub, "logprobs", lambda ids, mask, t=1.0: real(ids, mask, t) * float("nan"))
    before = {r: params(p) for r, p in trainer.policies.items()}
    m = trainer.train_step()
    assert m["optim/skipped"] == 1 and trainer.schedulers[SUB].last_epoch == 0
    assert same(before[SUB], params(sub))
    assert not same(before["main"], params(trainer.policies["main"]))


def test_main_only_leaves_the_sub_agents_bit_identical() -> None:
    trainer = fake_trainer(algo="main-only")
    sub_before, main_before = params(trainer.policies[SUB]), params(trainer.policies["main"])
    for _ in range(2):
        m = trainer.train_step()
    assert same(sub_before, params(trainer.policies[SUB]))
    assert not same(main_before, params(trainer.policies["main"]))
    assert set(trainer.optimizers) == {"main"} and m["loss/sub"] is None
    assert m["reward/sub/mean"] is not None  # the sub-agents are still scored and logged


def test_shared_updates_one_parameter_set_from_every_roles_samples(monkeypatch) -> None:
    trainer = fake_trainer(algo="shared")
    assert trainer.policies["main"] is trainer.policies[SUB]
    assert set(trainer.optimizers) == {"shared"}
    called = []
    real = trainer.backward

    def spy(role, trajs):
        called.append(role)
        return real(role, trajs)

    monkeypatch.setattr(trainer, "backward", spy)
    before = params(trainer.policies["main"])
    m = trainer.train_step()
    assert called == ["main", SUB] and m["loss/main"] is not None and m["loss/sub"] is not None
    assert not same(before, params(trainer.policies["main"]))
    # the one gradient is the sum of the roles' gradients
    res = trainer.engine.collect([3, 4], 3)
    main, sub = trainer.main_side(res)[0], trainer.sub_side(res).samples
    assert main and sub
    model = trainer.policies["main"].model

    def grad_of(*parts):
        model.zero_grad(set_to_none=True)
        for role, trajs in parts:
            real(role, trajs)
        return [p.grad.clone() for p in model.parameters()]

    both = grad_of(("main", main), (SUB, sub))
    for a, b, c in zip(both, grad_of(("main", main)), grad_of((SUB, sub)), strict=True):
        torch.testing.assert_close(a, b + c)


def test_unsynchronised_alignment_trains_sub_agents_one_step_late(monkeypatch) -> None:
    trainer = fake_trainer(align="none")
    trained = []
    real = trainer.backward

    def spy(role, trajs):
        trained.append((role, [t.input_ids.tolist() for t in trajs]))
        return real(role, trajs)

    monkeypatch.setattr(trainer, "backward", spy)
    sub_before = params(trainer.policies[SUB])
    first = trainer.engine.collect(step_seeds(0, 0, 2), 3)
    m1 = trainer.train_step()
    assert f"loss/{SUB}" not in m1 and same(sub_before, params(trainer.policies[SUB]))
    m2 = trainer.train_step()
    assert m2[f"loss/{SUB}"] is not None
    late = [ids for role, ids in trained if role == SUB][0]
    step1_calls = sorted(t.input_ids.tolist() for t in first.trajectories if t.agent == SUB)
    assert sorted(late) == step1_calls  # step 1's calls, every one once


# --------------------------------------------------------------------------- resume


def strip(rows):
    return [{k: v for k, v in m.items() if not k.startswith("perf/")} for m in rows]


@pytest.mark.parametrize(
    "kw",
    [
        {"algo": "mgrpo"},
        {"algo": "shared", "align": "none", "beta": 0.05, "num_iterations": 2},
        {"algo": "main-only", "align": "fill", "loss_type": "dapo"},
    ],
)
def test_resume_repeats_an_uninterrupted_run(tmp_path, kw) -> None:
    full = fake_trainer(tmp_path / "full", steps=3, **kw)
    full.train(progress=False)
    part = fake_trainer(tmp_path / "part", steps=3, **kw)
    part.writer.write(part.train_step())  # step 1, as train() does it ...
    part.save_checkpoint()  # ... with its checkpoint
    part.writer.write(part.train_step())  # step 2 is lost: the run stops before its checkpoint
    resumed = MGRPOTrainer.resume(tmp_path / "part")
    resumed.engine = FakeEngine(resumed.policies)
    assert resumed.step_idx == 1
    resumed.train(progress=False)
    got, want = strip(resumed.writer.read()), strip(full.writer.read())
    assert [m["step"] for m in got] == [1, 2, 3]
    assert got == want
    for role in full.roles:
        assert same(params(full.policies[role]), params(resumed.policies[role])), role
    assert (resumed.policies["main"] is resumed.policies[SUB]) == (kw["algo"] == "shared")


# --------------------------------------------------------------------------- warm start


def test_warm_start_from_per_role_directories(tmp_path) -> None:
    env = mgrpo_envs.make("research_v0", **ENV)
    saved = {r: HFPolicy.tiny(env, size="micro", seed=10 + i) for i, r in enumerate(["main", SUB])}
    for role, policy in saved.items():  # the layout the SFT warm start's --save writes
        policy.save(tmp_path / "sft" / role)
    trainer = MGRPOTrainer(small(model=str(tmp_path / "sft")))
    for role in ("main", SUB):
        assert same(params(saved[role]), params(trainer.policies[role]))
    shared = MGRPOTrainer(small(model=str(tmp_path / "sft"), algo="shared"))
    assert same(params(saved["main"]), params(shared.policies[SUB]))
    one = MGRPOTrainer(small(model=str(tmp_path / "sft" / "main")))  # one policy for all
    assert one.policies["main"] is not one.policies[SUB]
    assert same(params(one.policies["main"]), params(one.policies[SUB]))
    (tmp_path / "half").mkdir()
    saved["main"].save(tmp_path / "half" / "main")
    with pytest.raises(
        ValueError, match=r"one per role \(main/, searcher/\); missing: \['searcher'\]"
    ):
        MGRPOTrainer(small(model=str(tmp_path / "half")))


def test_policies_must_match_the_algorithm() -> None:
    env = mgrpo_envs.make("research_v0", **ENV)
    one = HFPolicy.tiny(env, size="micro")
    with pytest.raises(ValueError, match="each trained model .* needs its own policy object"):
        MGRPOTrainer(small(), policies={"main": one, SUB: one})
    with pytest.raises(ValueError, match=r"no policy for role\(s\) \['searcher'\]"):
        MGRPOTrainer(small(), policies={"main": one})


# --------------------------------------------------------------------------- real env


def test_a_real_step_through_the_sqlite_store(tmp_path) -> None:
    trainer = MGRPOTrainer(small(store_path=str(tmp_path / "store.db")))
    m = trainer.train_step()
    assert m["step"] == 1 and m["optim/skipped"] == 0 and math.isfinite(m["loss/main"])
    assert len(trainer.store.get_rewards(0)) == 6 and m["episodes"] == 6


def test_real_sub_agent_calls_flow_through_scoring_alignment_and_the_loss() -> None:
    trainer = MGRPOTrainer(small(align_d=2))
    # the scripted main delegates at once, so the sampled searcher has calls to train on
    trainer.engine = RolloutEngine(
        trainer.env_fn,
        trainer.policies,
        RolloutConfig(max_new_tokens=8),
        scripts={"main": expert_script},
    )
    m = trainer.train_step()
    assert m["dk/mean"] > 0 and m[f"align/samples/{SUB}"] == 2 * (6 - m["dk/zero_rollouts"])
    assert math.isfinite(m[f"loss/{SUB}"]) and m["optim/skipped"] == 0


def test_a_judge_returning_nan_drops_that_rollout_and_the_rest_trains() -> None:
    calls = []

    def judge(subtask, result, context):  # NaN for the first call it sees
        calls.append(context["invocation"])
        return float("nan") if len(calls) == 1 else 1.0

    trainer = fake_trainer()
    trainer.judge = judge
    before = {r: params(p) for r, p in trainer.policies.items()}
    m = trainer.train_step()
    assert m["reward/nonfinite"] == 1 and m["optim/skipped"] == 0
    assert math.isfinite(m["loss/main"]) and math.isfinite(m[f"loss/{SUB}"])
    for role in ("main", SUB):
        assert not same(before[role], params(trainer.policies[role])), role


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"schedule": "alternate"}, r"schedule must be 'joint' or 'alternate:N' with N >= 1"),
        ({"schedule": "alternate:0"}, r"schedule must be 'joint' or 'alternate:N'"),
        ({"schedule": "every"}, r"schedule must be 'joint' or 'alternate:N'"),
        ({"schedule": "alternate:2", "algo": "shared"}, "needs separate trained models"),
        ({"schedule": "alternate:2", "algo": "main-only"}, "needs separate trained models"),
        ({"role_lr": {"main": 0}}, r"role_lr\['main'\] must be a finite number > 0, got 0"),
        ({"role_lr": {"main": float("nan")}}, r"role_lr\['main'\] must be a finite number"),
        ({"role_temperature": {"searcher": -1}}, r"role_temperature\['searcher'\] must be"),
    ],
)
def test_schedule_and_role_lr_are_validated(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        MGRPOConfig(**kw)


def test_role_lr_must_name_a_trained_model() -> None:
    with pytest.raises(ValueError, match=r"role_lr names \['searcher'\].*trained models"):
        MGRPOTrainer(small(algo="main-only", role_lr={"searcher": 1e-3}))


def test_role_temperature_must_name_a_role_and_reaches_the_rollouts() -> None:
    with pytest.raises(ValueError, match=r"role_temperature names \['critic'\].*roles are"):
        MGRPOTrainer(small(role_temperature={"critic": 2.0}))
    trainer = MGRPOTrainer(small(role_temperature={"searcher": 1.5}))
    assert trainer.engine.config.role_temperature == {"searcher": 1.5}


def test_alternate_trains_main_then_the_sub_agents_in_blocks_of_n() -> None:
    trainer = fake_trainer(schedule="alternate:2", steps=6)
    moved = []
    for _ in range(6):
        before = {r: params(p) for r, p in trainer.policies.items()}
        m = trainer.train_step()
        changed = {r for r, p in trainer.policies.items() if not same(before[r], params(p))}
        moved.append(changed)
        assert {r for r in trainer.roles if m[f"optim/active/{r}"] == 1.0} == changed
        assert m["reward/sub/mean"] is not None  # every role is scored every step
    main, sub = {"main"}, {SUB}
    assert moved == [main, main, sub, sub, main, main]
    # a frozen phase does not advance that model's schedule
    assert trainer.schedulers["main"].last_epoch == 4
    assert trainer.schedulers[SUB].last_epoch == 2


def test_joint_trains_every_model_every_step() -> None:
    trainer = fake_trainer(steps=2)
    for _ in range(2):
        before = {r: params(p) for r, p in trainer.policies.items()}
        m = trainer.train_step()
        assert all(not same(before[r], params(p)) for r, p in trainer.policies.items())
        assert m["optim/active/main"] == m[f"optim/active/{SUB}"] == 1.0


def test_role_lr_sets_each_optimisers_peak_rate() -> None:
    trainer = fake_trainer(lr=1e-3, role_lr={SUB: 5e-2})
    assert trainer.optimizers["main"].param_groups[0]["lr"] == 1e-3
    assert trainer.optimizers[SUB].param_groups[0]["lr"] == 5e-2
    trainer.train_step()
    assert trainer.schedulers[SUB].get_last_lr() == [5e-2]


def test_alternate_resumes_in_its_phase(tmp_path) -> None:
    cfg = {"schedule": "alternate:1", "steps": 3}
    whole = fake_trainer(tmp_path / "a", **cfg)
    whole.train(progress=False)
    half = fake_trainer(tmp_path / "b", **{**cfg, "checkpoint_every": 1})
    half.train_step()
    half.save_checkpoint()
    again = MGRPOTrainer.resume(tmp_path / "b")
    again.engine = FakeEngine(again.policies)
    while again.step_idx < 3:
        again.train_step()
    for role in whole.roles:
        assert same(params(whole.policies[role]), params(again.policies[role]))
