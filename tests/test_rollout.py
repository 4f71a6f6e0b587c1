"""The batched rollout engine over AEC envs and the SFT warm start, with tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mgrpo_envs
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine, SingleAgentAEC, expert_script
from mgrpo_algos.sft import (
    GIVE_UP,
    GiveUpExpert,
    SFTConfig,
    collect_demonstrations,
    copy_batch,
    interleave,
    lookup_batch,
    tiny_policies,
    train_copy,
    train_sft,
)


def env_fn():
    # short budgets keep random-policy episodes (and their contexts) small
    return mgrpo_envs.make("research_v0", difficulty="easy", main_turns=4, sub_turns=3)


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy.tiny(env_fn(), size="micro", seed=0)


class CountingPolicy:
    """Forwards to a policy and counts generate calls and their batch sizes."""

    def __init__(self, inner: HFPolicy) -> None:
        self.inner, self.batches = inner, []

    def generate(self, prompts, **kw):
        self.batches.append(len(prompts))
        return self.inner.generate(prompts, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_scripted_expert_rollouts_record_every_call(policy: HFPolicy) -> None:
    scripts = {"main": expert_script, "searcher": expert_script}
    engine = RolloutEngine(env_fn, {"main": policy, "searcher": policy}, scripts=scripts)
    res = engine.collect([0, 1, 2], group_size=2)
    assert res.success_rate == 1.0 and len(res.episodes) == 6
    for ep in res.episodes:
        mine = [
            t
            for t in res.trajectories
            if (t.group_id, t.rollout_id) == (ep.group_id, ep.rollout_id)
        ]
        assert sum(t.agent == "main" for t in mine) == 1
        assert [t.invocation for t in mine if t.agent == "searcher"] == list(
            range(ep.num_invocations)
        )
    sub = next(t for t in res.trajectories if t.agent == "searcher")
    acted = policy.decode(sub.input_ids[sub.action_mask.astype(bool)].tolist())
    assert acted.startswith("search[") and "return[" in acted
    # the expert earns the maximum reward on every call
    assert all(t.reward == pytest.approx(1.0) for t in res.trajectories)


def test_sampling_logprobs_match_recomputed_multi_turn_logprobs(policy: HFPolicy) -> None:
    engine = RolloutEngine(
        env_fn, {"main": policy, "searcher": policy}, RolloutConfig(max_new_tokens=12)
    )
    res = engine.collect([0, 1], group_size=2, generator=torch.Generator().manual_seed(0))
    assert res.generated_tokens > 0
    multi = [t for t in res.trajectories if t.num_turns >= 2]
    assert multi, "expected some calls of several turns"
    for t in multi[:4]:
        ids = torch.as_tensor(t.input_ids)[None]
        with torch.no_grad():
            lp = policy.logprobs(ids, torch.ones_like(ids))[0].numpy()  # (T-1,)
        on = t.action_mask[1:].astype(bool)
        np.testing.assert_allclose(lp[on], t.old_logprobs[1:][on], atol=1e-4)


def test_roles_sharing_a_policy_are_batched_together(policy: HFPolicy) -> None:
    shared = CountingPolicy(policy)
    engine = RolloutEngine(
        env_fn, {"main": shared, "searcher": shared}, RolloutConfig(max_new_tokens=4)
    )
    engine.collect([0, 1, 2, 3], group_size=2, generator=torch.Generator().manual_seed(1))
    # first tick: all 8 episodes wait on main, gathered into one call
    assert shared.batches[0] == 8
    separate = {"main": CountingPolicy(policy), "searcher": CountingPolicy(policy)}
    engine = RolloutEngine(env_fn, separate, RolloutConfig(max_new_tokens=4))
    engine.collect([0, 1], group_size=2, generator=torch.Generator().manual_seed(1))
    assert separate["main"].batches[0] == 4


def test_a_role_temperature_applies_to_that_role_alone(policy: HFPolicy) -> None:
    separate = {"main": CountingPolicy(policy), "searcher": CountingPolicy(policy)}
    seen = []
    for role in separate.values():
        role.generate = lambda prompts, _r=role, **kw: (
            seen.append(kw["temperature"]) or (_r.inner.generate(prompts, **kw))
        )
    config = RolloutConfig(max_new_tokens=4, temperature=0.9, role_temperature={"searcher": 1.7})
    engine = RolloutEngine(env_fn, separate, config)
    res = engine.collect([0, 1, 2, 3], group_size=2, generator=torch.Generator().manual_seed(1))
    agents = {t.agent for t in res.trajectories}
    assert set(seen) == ({0.9, 1.7} if "searcher" in agents else {0.9})
    # one model playing both roles: a batch per temperature
    shared = CountingPolicy(policy)
    engine = RolloutEngine(env_fn, {"main": shared, "searcher": shared}, config)
    engine.collect([0], group_size=2, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"role_temperature\['searcher'\] must be a finite"):
        RolloutConfig(role_temperature={"searcher": 0.0})


def test_a_greedy_role_samples_the_same_under_any_seed(policy: HFPolicy) -> None:
    def main_tokens(seed: int) -> list[list[int]]:
        config = RolloutConfig(max_new_tokens=6, role_temperature={"main": 1e-6})
        engine = RolloutEngine(env_fn, {"main": policy, "searcher": policy}, config)
        res = engine.collect([3], group_size=2, generator=torch.Generator().manual_seed(seed))
        return [t.input_ids.tolist() for t in res.trajectories if t.agent == "main"]

    a, b = main_tokens(1), main_tokens(2)
    assert a == b and a[0] == a[1]  # both rollouts, both seeds: main's argmax


def test_collection_is_reproducible_under_a_seed(policy: HFPolicy) -> None:
    def run():
        engine = RolloutEngine(
            env_fn, {"main": policy, "searcher": policy}, RolloutConfig(max_new_tokens=8)
        )
        res = engine.collect([5], group_size=3, generator=torch.Generator().manual_seed(7))
        return [t.input_ids.tolist() for t in res.trajectories]

    assert run() == run()


def test_contexts_that_outgrow_the_model_end_the_call_not_the_run() -> None:
    small = HFPolicy.tiny(env_fn(), size="micro", seed=0, max_positions=200)
    engine = RolloutEngine(
        env_fn, {"main": small, "searcher": small}, RolloutConfig(max_new_tokens=16)
    )
    res = engine.collect([0, 1], group_size=2, generator=torch.Generator().manual_seed(0))
    assert len(res.episodes) == 4
    assert any(t.truncated for t in res.trajectories)
    assert all(t.num_tokens <= 200 for t in res.trajectories)


def test_single_agent_view_runs_through_the_engine(policy: HFPolicy) -> None:
    import gymnasium

    def fn():
        return SingleAgentAEC(gymnasium.make("mgrpo_envs/Research-v0", difficulty="easy"))

    engine = RolloutEngine(fn, {"main": policy}, scripts={"main": expert_script})
    res = engine.collect([0, 1, 2], group_size=1)
    assert res.success_rate == 1.0 and all(t.agent == "main" for t in res.trajectories)


def test_missing_policy_is_named() -> None:
    with pytest.raises(ValueError, match=r"no policy for role\(s\) \['searcher'\]"):
        RolloutEngine(env_fn, {"main": HFPolicy.tiny(env_fn(), size="micro")})


def test_sft_lowers_the_loss_on_the_agents_own_tokens(policy: HFPolicy) -> None:
    fresh = HFPolicy.tiny(env_fn(), size="micro", seed=1)
    demos = collect_demonstrations(env_fn, {"main": fresh, "searcher": fresh}, episodes=8)
    losses = train_sft(
        fresh, demos, SFTConfig(epochs=10, lr=3e-3, max_batch_tokens=4096), progress=False
    )
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_copy_batch_repeats_each_string_after_the_separator() -> None:
    vocab = torch.tensor([5, 6, 7, 9])
    ids, target = copy_batch(vocab, sep_id=2, batch=3, length=4, generator=torch.Generator())
    assert ids.shape == (3, 9) and target.shape == (3, 8)
    assert (ids[:, :4] == ids[:, 5:]).all() and (ids[:, 4] == 2).all()
    assert torch.isin(ids[:, :4], vocab).all()
    # logprobs() row t predicts token t + 1: the targets are exactly the second copy
    assert not target[:, :4].any() and target[:, 4:].all()


def test_copy_pretraining_learns_to_copy() -> None:
    fresh = HFPolicy.tiny(env_fn(), size="micro", seed=2)
    cfg = SFTConfig(copy_steps=150, copy_length=16, copy_batch=16, lr=3e-3)
    losses = train_copy(fresh, cfg, progress=False)
    assert len(losses) == 150 and np.isfinite(losses).all()
    # chance is log(vocabulary size) ~ 5.9 nats a token; copying drives it towards 0
    assert np.mean(losses[-5:]) < 0.1 * np.mean(losses[:5])


def test_copy_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="copy_steps"):
        SFTConfig(copy_steps=-1)
    with pytest.raises(ValueError, match="copy_length"):
        SFTConfig(copy_length=0)
    with pytest.raises(ValueError, match="lookup_steps must be an int >= 0, got -2"):
        SFTConfig(lookup_steps=-2)
    with pytest.raises(ValueError, match="lookup_records"):
        SFTConfig(lookup_records=0)
    with pytest.raises(ValueError, match="rehearsal must be a finite number >= 0"):
        SFTConfig(rehearsal=-0.5)
    with pytest.raises(ValueError, match=r"copy_digits must be in \[0, 1\], got 1.5"):
        SFTConfig(copy_digits=1.5)


def test_digit_rows_copy_strings_of_digits_only() -> None:
    vocab, digits = torch.tensor([5, 6, 7, 9]), torch.tensor([20, 21, 22])
    gen = torch.Generator().manual_seed(0)
    ids, _ = copy_batch(vocab, 2, 4, 6, gen, digits=digits, digit_rows=3)
    assert torch.isin(ids[:3, :6], digits).all() and torch.isin(ids[3, :6], vocab).all()
    assert (ids[:, :6] == ids[:, 7:]).all()


def test_lookup_batch_asks_for_one_records_value_by_its_key() -> None:
    words = torch.arange(100, 120)
    digits = torch.arange(10, 20)
    marks = {" ": 1, "\n": 3, "sep": 2}
    gen = torch.Generator().manual_seed(0)
    ids, target = lookup_batch(words, digits, marks, 4, records=6, value_length=4, generator=gen)
    assert target.shape == (4, ids.shape[1] - 1) and (target.sum(1) == 4).all()
    for b, row in enumerate(ids.tolist()):
        sep = row.index(2)
        lines = [line for line in _split(row[:sep], 3)]
        query, value = row[sep + 1 : sep + 4], row[sep + 5 :]
        assert len(lines) == 6 and len(value) == 4 and row[sep + 4] == 1
        assert all(t in range(10, 20) for t in value)
        keys = [(line[:3], line[4:]) if b % 2 == 0 else (line[5:], line[:4]) for line in lines]
        assert len({tuple(k) for k, _ in keys}) == 6  # distinct keys
        assert [v for k, v in keys if k == query] == [value]  # the target is the key's value
        firsts = [k[0] for k, _ in keys]
        assert len(set(firsts)) < len(firsts)  # keys share words, as near-duplicate titles do
        # logprobs() row t predicts token t + 1: the targets are exactly the value
        assert [row[t + 1] for t in range(len(row) - 1) if target[b, t]] == value


def _split(row: list[int], sep: int) -> list[list[int]]:
    lines, line = [], []
    for t in row:
        if t == sep:
            lines.append(line)
            line = []
        else:
            line.append(t)
    return lines


def test_copy_and_lookup_steps_interleave() -> None:
    assert interleave(2, 3) == ["copy", "lookup", "copy", "lookup", "lookup"]
    assert interleave(3, 0) == ["copy"] * 3 and interleave(0, 0) == []


def test_lookup_pretraining_runs_on_the_tiny_tokenizer() -> None:
    fresh = HFPolicy.tiny(env_fn(), size="micro", seed=2)
    cfg = SFTConfig(copy_steps=2, lookup_steps=3, copy_length=8, copy_batch=4, lr=3e-3)
    losses = train_copy(fresh, cfg, progress=False)
    assert len(losses) == 5 and np.isfinite(losses).all()


def test_rehearsal_adds_the_copying_loss_to_every_demonstration_step() -> None:
    env = env_fn()
    demos = collect_demonstrations(env_fn, tiny_policies(env, size="micro"), 2)
    plain, mixed = (
        train_sft(
            HFPolicy.tiny(env, size="micro", seed=3),
            demos,
            SFTConfig(epochs=1, rehearsal=w, copy_length=8, copy_batch=4),
            progress=False,
        )
        for w in (0.0, 1.0)
    )
    # the first step's loss is the same model's: the rehearsal adds ~log(vocab) nats
    assert len(plain) == len(mixed) and mixed[0] > plain[0] + 3


def test_copy_pretraining_needs_a_tokenizer() -> None:
    class NoTokenizer:
        pass

    with pytest.raises(ValueError, match="has none; set copy_steps=0"):
        train_copy(NoTokenizer(), SFTConfig(copy_steps=1), progress=False)


def test_tiny_policies_shared_or_one_per_role() -> None:
    env = mgrpo_envs.make("research_v0")
    shared = tiny_policies(env, size="micro")
    assert set(shared) == set(env.possible_agents)
    assert len({id(p) for p in shared.values()}) == 1
    apart = tiny_policies(env, size="micro", shared=False)
    main, searcher = apart["main"], apart["searcher"]
    assert main is not searcher
    assert not torch.equal(next(main.parameters()), next(searcher.parameters()))


@pytest.mark.parametrize("env_id", mgrpo_envs.list_envs())
def test_give_up_demonstrations_return_unknown_and_main_asks_again(env_id: str) -> None:
    """sub_give_up: about that share of sub-agent calls return 'unknown'; main re-delegates."""

    def fn():
        return mgrpo_envs.make(env_id, difficulty="easy")

    policies = tiny_policies(fn(), size="micro")
    tok = policies["main"].tokenizer

    def sub_outputs(demos):
        return [
            tok.decode(t.input_ids[t.action_mask.astype(bool)]) for t in demos if t.agent != "main"
        ]

    plain = sub_outputs(collect_demonstrations(fn, policies, 40))
    noisy = sub_outputs(collect_demonstrations(fn, policies, 40, give_up=0.5))
    assert not any(GIVE_UP in out for out in plain)
    gave_up = sum(GIVE_UP in out for out in noisy)
    assert 0.3 < gave_up / len(noisy) < 0.7
    assert len(noisy) > len(plain)  # every fact given up on was asked for again
    again = collect_demonstrations(fn, policies, 40, give_up=0.5)
    assert sub_outputs(again) == noisy  # seeded


def test_give_up_share_is_checked() -> None:
    with pytest.raises(ValueError, match=r"sub_give_up must be in \[0, 1\], got 1.5"):
        SFTConfig(sub_give_up=1.5)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got -0.1"):
        GiveUpExpert(-0.1, seed=0)
