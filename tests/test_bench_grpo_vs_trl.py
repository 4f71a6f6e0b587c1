"""The GRPO-vs-TRL benchmark's own step functions, on the micro model (no timing asserted)."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "grpo_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("grpo_vs_trl", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


def changed(before, policy) -> bool:
    return any(not torch.equal(a, p) for a, p in zip(before, policy.parameters(), strict=True))


def test_prompts_have_the_exact_length(bench) -> None:
    policy = bench.make_policy("micro")
    texts = bench.make_prompts(policy, count=3, length=20, seed=1)
    assert [len(policy.encode(t)) for t in texts] == [20, 20, 20]
    assert len(set(texts)) == 3


def test_single_turn_step_trains_on_full_length_completions(bench) -> None:
    policy = bench.make_policy("micro")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    prompts = [policy.encode(t) for t in bench.make_prompts(policy, 2, 12, seed=0)]
    before = snapshot(policy)
    stats = bench.single_turn_step(
        policy, optimizer, prompts, group_size=4, new_tokens=6, generator=torch.Generator()
    )
    assert math.isfinite(stats["loss"])
    assert stats["generate_s"] > 0 and stats["learn_s"] > 0
    assert changed(before, policy)


def test_multi_turn_batch_masks_the_generated_tokens(bench) -> None:
    policy = bench.make_policy("micro")
    args = argparse.Namespace(queries=2, group_size=2, obs_tokens=3, gen_tokens=2)
    trajs = bench.collect_turns(policy, turns=3, args=args, seed=0)
    assert len(trajs) == 4
    assert all(t.num_tokens == 3 * (3 + 2) and t.num_generated == 3 * 2 for t in trajs)
    assert policy.cache_tokens == 0  # sessions released
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    before = snapshot(policy)
    loss = bench.learner_step(policy, optimizer, trajs)
    assert math.isfinite(loss)
    assert changed(before, policy)


def test_linear_fit_recovers_a_line(bench) -> None:
    fit = bench.linear_fit({1: 1.0, 2: 2.0, 4: 4.0}, {1: 3.0, 2: 5.0, 4: 9.0})
    assert fit["slope"] == pytest.approx(2.0)
    assert fit["intercept"] == pytest.approx(1.0)
    assert fit["r2"] == pytest.approx(1.0)
