"""The one held-out evaluation: disjoint seeds, the expert's ceiling, intervals, determinism."""

from __future__ import annotations

import json
import math

import gymnasium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mgrpo_envs
from mgrpo_algos.evaluate import (
    EVAL_SEED0,
    EVAL_SEED_SPAN,
    SPLIT_SPAN,
    SPLITS,
    EvalResult,
    _normal_interval,
    eval_seeds,
    evaluate,
    is_eval_seed,
    training_seed,
)
from mgrpo_algos.metrics import format_rate, wilson_interval
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import SingleAgentAEC

LAST = EVAL_SEED0 + EVAL_SEED_SPAN - 1
EDGES = [0, -1, EVAL_SEED0 - 1, EVAL_SEED0, EVAL_SEED0 + 1, LAST - 1, LAST, LAST + 1]
EDGES += [LAST + EVAL_SEED_SPAN, 2**63 - 1]


def env_fn():
    return mgrpo_envs.make("research_v0", difficulty="easy")


# ----------------------------------------------------------------------------- seeds
@settings(max_examples=500, deadline=None)
@given(st.one_of(st.sampled_from(EDGES), st.integers(-(2**40), 2**40)))
def test_training_seeds_are_never_eval_seeds(seed: int) -> None:
    moved = training_seed(seed)
    assert not is_eval_seed(moved)
    assert moved == (seed + EVAL_SEED_SPAN if is_eval_seed(seed) else seed)


def test_eval_seeds_are_the_start_of_the_held_out_block() -> None:
    assert eval_seeds(3) == [EVAL_SEED0, EVAL_SEED0 + 1, EVAL_SEED0 + 2]
    assert eval_seeds(3, "test") == eval_seeds(3)  # test: the block's first half
    assert [is_eval_seed(s) for s in EDGES] == [s in range(EVAL_SEED0, LAST + 1) for s in EDGES]
    assert eval_seeds(SPLIT_SPAN, "val")[-1] == LAST
    assert training_seed(EVAL_SEED0) == LAST + 1 and training_seed(LAST) == LAST + EVAL_SEED_SPAN


def test_the_val_and_test_splits_are_disjoint_halves_of_the_held_out_block() -> None:
    test, val = set(eval_seeds(SPLIT_SPAN, "test")), set(eval_seeds(SPLIT_SPAN, "val"))
    assert not test & val and len(test) == len(val) == SPLIT_SPAN == EVAL_SEED_SPAN // 2
    assert test | val == set(range(EVAL_SEED0, LAST + 1))
    assert eval_seeds(2, "val") == [SPLITS["val"], SPLITS["val"] + 1]
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'val'\], got 'train'"):
        eval_seeds(2, "train")  # type: ignore[arg-type]


@pytest.mark.parametrize("episodes", [0, -3, SPLIT_SPAN + 1, 2.0, True])
def test_eval_seeds_reject_a_bad_count(episodes) -> None:
    with pytest.raises(ValueError, match=f"episodes must be .*in 1..{SPLIT_SPAN}, got"):
        eval_seeds(episodes)


# ----------------------------------------------------------------------------- intervals
def test_intervals_match_numbers_worked_by_hand() -> None:
    # rewards 0, 1, 1, 0: mean 0.5, sample sd sqrt(1/3) = 0.57735, half 1.96 * 0.57735 / 2
    lo, hi = _normal_interval([0.0, 1.0, 1.0, 0.0])
    assert (lo, hi) == pytest.approx((0.5 - 0.565803, 0.5 + 0.565803), abs=1e-6)
    assert _normal_interval([0.3]) == (0.3, 0.3)
    with pytest.raises(ValueError, match="at least one number, got none"):
        _normal_interval([])

    r = EvalResult(7, 10, 0.5, (lo, hi), {"searcher": {"calls": 12, "accuracy": 0.75}}, (), 1.0)
    assert r.success_rate == 0.7
    # Wilson at 7/10, z = 1.96: centre 0.7 + 0.19208 / 1.38416, half 0.276862 / 1.38416
    assert r.ci95 == pytest.approx((0.396770, 0.892220), abs=1e-5)
    assert r.ci95 == wilson_interval(7, 10) and r.text == format_rate(7, 10)
    d = json.loads(json.dumps(r.to_dict()))
    assert d == {
        "success_rate": 0.7,
        "ci95": list(r.ci95),
        "successes": 7,
        "n": 10,
        "reward_mean": 0.5,
        "reward_ci95": [lo, hi],
        "sub_calls": {"searcher": {"calls": 12, "accuracy": 0.75}},
        "scripted": [],
        "seconds": 1.0,
        "outputs": 0,
        "parsed": 0,
        "parse_rate": None,
        "split": "test",
    }
    assert r == EvalResult(7, 10, 0.5, (lo, hi), r.sub_calls, (), seconds=99.0)
    assert EvalResult(7, 10, 0.5, (lo, hi), {}, (), 1.0, outputs=8, parsed=6).parse_rate == 0.75


# ----------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("env_id", mgrpo_envs.list_envs())
def test_the_scripted_expert_solves_every_held_out_episode(env_id: str) -> None:
    def make():
        return mgrpo_envs.make(env_id)

    roles = tuple(make().possible_agents)
    r = evaluate(make, {}, 6, scripted=list(reversed(roles)))
    assert (r.successes, r.n, r.success_rate) == (6, 6, 1.0)
    assert r.scripted == roles  # in the env's order
    assert r.reward_ci95[0] <= r.reward_mean <= r.reward_ci95[1]
    assert set(r.sub_calls) == set(roles) - {"main"}
    for stats in r.sub_calls.values():
        assert stats["calls"] >= 6 and stats["accuracy"] == 1.0
    # main answers once and delegates at least once, and a sub-agent call takes a turn
    assert r.outputs >= 6 * 2 + sum(s["calls"] for s in r.sub_calls.values())
    assert r.parsed == r.outputs and r.parse_rate == 1.0  # the expert writes well-formed calls


def test_a_split_plays_its_own_seeds_and_the_weights_are_the_callers(monkeypatch) -> None:
    from mgrpo_algos.rollout import RolloutEngine
    from mgrpo_envs.core.rewards import RewardWeights

    played: list[int] = []
    real = RolloutEngine.collect

    def spy(self, seeds, *a, **kw):
        played.extend(seeds)
        return real(self, seeds, *a, **kw)

    monkeypatch.setattr(RolloutEngine, "collect", spy)
    roles = env_fn().possible_agents
    val = evaluate(env_fn, {}, 3, scripted=roles, split="val")
    assert played == eval_seeds(3, "val") and val.split == "val"
    assert val.to_dict()["split"] == "val"
    # R_M with a1 = 0, a2 = 1 is the correctness alone: the mean reward is the success
    only = evaluate(env_fn, {}, 3, scripted=roles, weights=RewardWeights(a1=0.0, a2=1.0))
    assert only.reward_mean == only.success_rate == 1.0
    paper = evaluate(env_fn, {}, 3, scripted=roles)
    assert paper.reward_mean == pytest.approx(1.0)  # 0.1 * 1 + 0.9 * 1: both weights count


def test_the_single_agent_view_has_no_sub_calls() -> None:
    def single():
        return SingleAgentAEC(gymnasium.make("mgrpo_envs/Research-v0", difficulty="easy"))

    r = evaluate(single, {}, 3, scripted=["main"])
    assert r.success_rate == 1.0 and r.sub_calls == {}


class Recording:
    """A policy that records every text it samples."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy = policy
        self.texts: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def generate(self, prompts, **kwargs):
        out = self.policy.generate(prompts, **kwargs)
        self.texts += out.texts
        return out


def test_the_same_call_gives_the_same_result() -> None:
    policy = Recording(HFPolicy.tiny(env_fn(), size="micro", seed=0))
    kwargs = {"max_new_tokens": 8, "scripted": ["searcher"]}
    first = evaluate(env_fn, {"main": policy}, 3, sampling_seed=5, **kwargs)
    texts, policy.texts = policy.texts, []
    assert texts, "the main policy sampled nothing"
    assert evaluate(env_fn, {"main": policy}, 3, sampling_seed=5, **kwargs) == first
    assert policy.texts == texts
    policy.texts = []
    evaluate(env_fn, {"main": policy}, 3, sampling_seed=6, **kwargs)
    assert policy.texts != texts  # the sampling seed reaches the sampler
    assert not math.isnan(first.reward_mean) and first.n == 3


def test_bad_inputs_name_what_was_expected() -> None:
    policy = HFPolicy.tiny(env_fn(), size="micro", seed=0)
    with pytest.raises(ValueError, match="episodes must be in 1..500000, got 0"):
        evaluate(env_fn, {"main": policy, "searcher": policy}, 0)
    with pytest.raises(ValueError, match=r"agents of the env \['main', 'searcher'\], got \['x'\]"):
        evaluate(env_fn, {"main": policy}, 2, scripted=["x"])
    with pytest.raises(ValueError, match="sequence of roles, got the string 'searcher'"):
        evaluate(env_fn, {"main": policy}, 2, scripted="searcher")
    with pytest.raises(ValueError, match=r"no policy for role\(s\) \['searcher'\].*got \['main'\]"):
        evaluate(env_fn, {"main": policy}, 2)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1, got 0"):
        evaluate(env_fn, {}, 2, max_new_tokens=0, scripted=["main", "searcher"])
