"""Shared-prefix log-probs: the same numbers and gradients as full rows, and the learner option."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.buffer import Trajectory, collate
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.prefix import PrefixGroups, prefix_groups, shared_prefix_pays
from mgrpo_algos.training.update import backward_loss, group_minibatches
from tests.test_buffer import traj
from tests.test_grpo import reward_outcomes

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]
ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy.tiny(WORDS, size="micro", seed=0)


def build(
    policy: HFPolicy, spec: list[tuple[int, list[list[int]]]], seed: int = 0
) -> list[Trajectory]:
    """Trajectories per ``(prompt length, [segment lengths of each member])``.

    Segments after the shared prompt alternate generated, observation, generated ...
    (random ids; observations have action mask 0).
    """
    rng = np.random.default_rng(seed)
    out = []
    for group, (prompt_len, members) in enumerate(spec):
        prompt = rng.integers(8, policy.vocab_size, prompt_len).tolist()
        for k, segments in enumerate(members):
            ids, mask = list(prompt), [0] * prompt_len
            for i, n in enumerate(segments):
                ids += rng.integers(8, policy.vocab_size, n).tolist()
                mask += [1 - i % 2] * n
            out.append(
                Trajectory(
                    "main",
                    group,
                    k,
                    0,
                    np.array(ids, np.int64),
                    np.array(mask, np.int8),
                    np.zeros(len(ids), np.float32),
                )
            )
    return out


CASES = {
    "equal_prompts": [(6, [[5], [5], [5]]), (6, [[5], [5], [5]])],
    "different_prompts_and_completions": [(4, [[3], [7], [1]]), (9, [[6], [2]]), (2, [[4], [4]])],
    "group_of_one": [(7, [[4], [6]]), (5, [[3]])],
    "multi_turn": [(5, [[3, 4, 2], [2, 6, 3, 1]]), (8, [[4, 2, 5], [1]]), (3, [[2, 2, 2]])],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logprobs_and_gradients_equal_the_full_rows(policy, case) -> None:
    trajs = build(policy, CASES[case])
    batch = collate(trajs, policy.pad_id)
    groups = prefix_groups(trajs)
    assert groups.num_groups == len(CASES[case])
    weights = torch.randn(batch.action_mask.shape, generator=torch.Generator().manual_seed(1))

    def run(fn):
        policy.model.zero_grad(set_to_none=True)
        logp = fn()  # (B, T-1)
        (logp * batch.action_mask * weights).sum().backward()
        return logp.detach(), [p.grad.clone() for p in policy.parameters()]

    full, full_grads = run(lambda: policy.logprobs(batch.input_ids, batch.attention_mask))
    shared, shared_grads = run(
        lambda: policy.logprobs_shared_prefix(batch.input_ids, batch.attention_mask, groups)
    )
    policy.model.zero_grad(set_to_none=True)
    assert shared.shape == full.shape
    torch.testing.assert_close(shared, full, rtol=0, atol=1e-5)
    assert torch.equal(shared == 0, full == 0)  # padding targets are 0 in both
    for a, b in zip(shared_grads, full_grads, strict=True):
        assert float((a - b).norm()) <= 1e-4 * float(b.norm()) + 1e-12


def test_each_group_prompt_goes_through_the_model_once(policy) -> None:
    trajs = build(policy, CASES["equal_prompts"])  # 2 groups x 3 rows: 6 prompt + 5 tokens
    batch = collate(trajs, policy.pad_id)
    shapes = []
    hook = policy.model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        with torch.no_grad():
            policy.logprobs_shared_prefix(
                batch.input_ids, batch.attention_mask, prefix_groups(trajs)
            )
    finally:
        hook.remove()
    # the prompts once per group, then every row's tokens but its last (only a target)
    assert shapes == [(2, 6), (6, 4)]


def test_prefix_groups_stop_before_the_first_generated_token() -> None:
    ts = [
        traj("main", 0, 0, ids=(5, 6, 7, 8, 9), mask=(0, 0, 0, 1, 1), lp=(0,) * 5),
        traj("main", 0, 1, ids=(5, 6, 7, 8, 3), mask=(0, 0, 1, 1, 1), lp=(0,) * 5),
        traj("searcher", 0, 0, ids=(5, 6, 4, 4), mask=(0, 0, 0, 1), lp=(0,) * 4),
        traj("searcher", 0, 1, ids=(5, 6, 2, 4), mask=(0, 0, 0, 1), lp=(0,) * 4),
        traj("main", 1, 0, ids=(4, 6, 7), mask=(0, 0, 1), lp=(0,) * 3),
        traj("main", 1, 1, ids=(5, 6, 7, 1), mask=(0, 0, 0, 1), lp=(0,) * 4),
    ]
    groups = prefix_groups(ts)
    # main/0: the ids agree on 4 tokens, the second member generates from token 2;
    # searcher/0: differs at token 2; main/1 shares nothing: one group per member
    assert groups.index.tolist() == [0, 0, 1, 1, 2, 3]
    assert groups.lengths.tolist() == [2, 2, 2, 3]
    assert groups.saved_tokens == 2 + 2


def test_a_row_that_does_not_start_with_its_prefix_is_refused(policy) -> None:
    trajs = build(policy, [(5, [[3], [3]])])
    batch = collate(trajs, policy.pad_id)
    ids = batch.input_ids.clone()
    ids[1, 2] = (ids[1, 2] + 1) % policy.vocab_size
    groups = prefix_groups(trajs)
    with pytest.raises(ValueError, match=r"row 1 \(group 0\) differs at token 2"):
        policy.logprobs_shared_prefix(ids, batch.attention_mask, groups)


@pytest.mark.parametrize(
    "index,lengths,match",
    [
        ([0, 0], [6], r"1 <= prefix length <= row length"),
        ([0, 2], [2, 2], r"groups.index must lie in \[0, 2\)"),
        ([0, 0], [2, 2], "every group needs a row"),
        ([0], [2], r"expected groups.index of shape \(2,\)"),
    ],
)
def test_bad_groupings_are_refused(policy, index, lengths, match) -> None:
    ids = torch.tensor([[9, 10, 11, 12, 13], [9, 10, 14, 15, 16]])
    mask = torch.ones_like(ids)
    with pytest.raises(ValueError, match=match):
        policy.logprobs_shared_prefix(
            ids, mask, PrefixGroups(torch.tensor(index), torch.tensor(lengths))
        )


def test_left_padding_is_refused(policy) -> None:
    ids = torch.tensor([[0, 9, 10], [9, 10, 11]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    groups = PrefixGroups(torch.tensor([0, 0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="expected right-padded rows"):
        policy.logprobs_shared_prefix(ids, mask, groups)


def test_it_pays_only_when_fewer_tokens_are_forwarded() -> None:
    long_prompt = PrefixGroups(torch.tensor([0, 0, 0, 0]), torch.tensor([100]))
    assert shared_prefix_pays(long_prompt, [110] * 4)  # 100 + 4 * 9 < 440
    alone = PrefixGroups(torch.tensor([0, 1]), torch.tensor([100, 100]))
    assert not shared_prefix_pays(alone, [110, 110])  # nothing shared
    # the long suffix of group 1 pads every row of the suffix call: 2 * 40 + 3 * 40 > 3 * 42
    padded = PrefixGroups(torch.tensor([0, 0, 1]), torch.tensor([40, 1]))
    assert not shared_prefix_pays(padded, [42, 42, 42])


def test_group_minibatches_keep_groups_whole_within_the_budget() -> None:
    ts = [
        traj("main", g, k, ids=(5,) * (3 + g), mask=(0,) * (3 + g), lp=(0,) * (3 + g))
        for g in (2, 0, 1)
        for k in range(3)
    ]
    chunks = list(group_minibatches(ts, max_tokens=15))
    assert [[t.group_id for t in c] for c in chunks] == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    # a group larger than the budget is cut; its pieces keep their shared prompt
    assert [len(c) for c in group_minibatches(ts[:3], max_tokens=10)] == [2, 1]


def small(shared: bool = False, **kw) -> GRPOConfig | MGRPOConfig:
    """A GRPO config, or (``shared``) M-GRPO's one model playing every role."""
    base = dict(
        steps=1,
        queries_per_step=2,
        group_size=3,
        max_new_tokens=8,
        env_kwargs=ENV,
        lr=1e-3,
    )
    if shared:
        return MGRPOConfig(**{**base, "algo": "shared", **kw})
    return GRPOConfig(**{**base, **kw})


def rewarded(cfg: GRPOConfig | MGRPOConfig, monkeypatch) -> GRPOTrainer | MGRPOTrainer:
    """A learner whose rewards vary within every group, so the step moves the weights."""
    trainer = GRPOTrainer(cfg) if isinstance(cfg, GRPOConfig) else MGRPOTrainer(cfg)
    reward_outcomes(trainer, monkeypatch, lambda ep: ep.rollout_id % 2 == 1)
    return trainer


def one_step(cfg: GRPOConfig, monkeypatch) -> dict:
    """One rewarded step: metrics, gradients at the optimiser step, weights, shared calls.

    The step is plain SGD at lr 1 (after clipping to norm 1): AdamW's first step,
    ``lr * g / (|g| + 1e-8)``, turns float rounding of a near-zero gradient into a
    share of ``lr``, while SGD moves each weight by its gradient, so equal weights
    after the step mean equal gradients.
    """
    trainer = rewarded(cfg, monkeypatch)
    (name,) = trainer.optimizers
    params = trainer.params[name]
    optimizer = trainer.optimizers[name] = torch.optim.SGD(params, lr=1.0)
    trainer.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    out: dict = {"calls": 0, "grads": []}
    policy = trainer.policies["main"]
    real = policy.logprobs_shared_prefix

    def counted(*args):
        out["calls"] += 1
        return real(*args)

    def keep_grads(optimizer, args, kwargs):
        out["grads"] = [p.grad.clone() for p in params]

    monkeypatch.setattr(policy, "logprobs_shared_prefix", counted)
    optimizer.register_step_pre_hook(keep_grads)
    out["before"] = [p.detach().clone() for p in params]
    out["metrics"] = trainer.train_step()
    out["after"] = [p.detach().clone() for p in params]
    return out


@pytest.mark.parametrize("shared,loss_type", [(False, "grpo"), (True, "dapo")])
def test_the_learner_option_gives_the_same_step(monkeypatch, shared, loss_type) -> None:
    cfg = small(shared, loss_type=loss_type)
    off = one_step(dataclasses.replace(cfg, shared_prefix=False), monkeypatch)
    on = one_step(cfg, monkeypatch)
    assert off["calls"] == 0 and on["calls"] > 0
    # on-policy, the loss is -mean(advantage) = 0 up to rounding; the gradients carry the test
    assert on["metrics"]["loss/main"] == pytest.approx(off["metrics"]["loss/main"], abs=1e-6)
    for a, b in zip(on["grads"], off["grads"], strict=True):
        assert float((a - b).norm()) <= 1e-4 * float(b.norm()) + 1e-12
    assert any(not torch.equal(a, b) for a, b in zip(on["before"], on["after"], strict=True))
    for a, b in zip(on["after"], off["after"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backward_loss_is_the_same_on_hand_built_groups(policy) -> None:
    trajs = build(policy, CASES["multi_turn"] + CASES["different_prompts_and_completions"])
    with torch.no_grad():
        batch = collate(trajs, policy.pad_id)
        old = policy.logprobs(batch.input_ids, batch.attention_mask)  # (B, T-1)
    trajs = [
        t.replace(
            old_logprobs=np.r_[0.0, old[i, : t.num_tokens - 1].numpy() - 0.1 * (i % 3)].astype(
                np.float32
            ),
            advantage=float(i % 3) - 1.0,
        )
        for i, t in enumerate(trajs)
    ]
    grads, losses = {}, {}
    for on in (False, True):
        cfg = GRPOConfig(max_batch_tokens=64, shared_prefix=on)
        policy.model.zero_grad(set_to_none=True)
        chunks = backward_loss(policy, trajs, cfg, total_seqs=len(trajs), total_tokens=1)
        losses[on] = sum(n * loss for n, loss, _ in chunks) / len(trajs)
        grads[on] = [p.grad.clone() for p in policy.parameters()]
    policy.model.zero_grad(set_to_none=True)
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    for a, b in zip(grads[True], grads[False], strict=True):
        assert float((a - b).norm()) <= 1e-4 * float(b.norm()) + 1e-12


@pytest.mark.parametrize("shared,loss_type", [(False, "grpo"), (True, "dapo"), (False, "gspo")])
def test_copies_are_forwarded_once_with_the_gradient_of_every_copy(
    policy, monkeypatch, shared, loss_type
) -> None:
    from mgrpo_algos.functional import policy_loss

    base = build(policy, CASES["multi_turn"] + CASES["equal_prompts"])
    # alignment's copies, and a repeated call with its own advantage: same tokens, 3x
    trajs = [*base, base[0].replace(duplicate=True), base[0].replace(rollout_id=7), base[4]]
    trajs = [
        t.replace(advantage=float(i % 4) - 1.5, old_logprobs=t.old_logprobs - 0.05 * (i % 2))
        for i, t in enumerate(trajs)
    ]
    cfg = GRPOConfig(max_batch_tokens=48, shared_prefix=shared, loss_type=loss_type)
    tokens = sum(t.num_generated for t in trajs)

    # reference: every row through the model, one batch
    policy.model.zero_grad(set_to_none=True)
    batch = collate(trajs, policy.pad_id)
    logp = policy.logprobs(batch.input_ids, batch.attention_mask)
    loss, _ = policy_loss(
        logp,
        batch.old_logprobs,
        batch.advantages,
        batch.action_mask,
        loss_type=loss_type,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.clip_high,
    )
    loss.backward()
    want = [p.grad.clone() for p in policy.parameters()]
    assert sum(float(g.norm()) for g in want) > 0

    rows_seen = []
    for name in ("logprobs", "logprobs_shared_prefix"):
        real = getattr(policy, name)
        monkeypatch.setattr(
            policy, name, lambda ids, *a, _real=real: rows_seen.append(len(ids)) or _real(ids, *a)
        )
    policy.model.zero_grad(set_to_none=True)
    chunks = backward_loss(policy, trajs, cfg, total_seqs=len(trajs), total_tokens=tokens)
    got = [p.grad.clone() for p in policy.parameters()]
    policy.model.zero_grad(set_to_none=True)
    assert sum(rows_seen) == len(base)  # the 3 copies were not forwarded
    assert sum(n for n, _, _ in chunks) == len(trajs)
    for a, b in zip(got, want, strict=True):
        assert float((a - b).norm()) <= 1e-4 * float(b.norm()) + 1e-12


def test_a_non_finite_shared_prefix_loss_skips_the_step(monkeypatch) -> None:
    trainer = GRPOTrainer(small())
    real = trainer.policy.logprobs_shared_prefix
    monkeypatch.setattr(
        trainer.policy, "logprobs_shared_prefix", lambda *a: real(*a) * float("nan")
    )
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    m = trainer.train_step()
    assert m["optim/skipped"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters(), strict=True))


def test_the_option_is_validated() -> None:
    with pytest.raises(ValueError, match="shared_prefix must be True or False, got 'yes'"):
        GRPOConfig(shared_prefix="yes")
