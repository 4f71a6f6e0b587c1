"""Log-probs at the sampling temperature: the sampler, the learner and the KL reference agree.

The policy a learner optimises is the tempered one, ``softmax(logits / T)`` (as in
TRL and verl): a batch sampled at ``T = 0.7`` stores the log-probs the learner
recomputes at the same weights, and the loss's gradient is the one of tempered
logits worked out here from the raw model output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
from mgrpo_algos.buffer import RolloutBuffer, collate
from mgrpo_algos.functional import masked_mean
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.training.update import chunk_logprobs, chunk_loss

ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}
T = 0.7


def config(**kw) -> GRPOConfig:
    base = dict(
        steps=2,
        queries_per_step=2,
        group_size=3,
        max_new_tokens=8,
        env_kwargs=ENV,
        temperature=T,
        deterministic=True,
        checkpoint_every=1,
    )
    return GRPOConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def sampled() -> tuple[GRPOTrainer, list]:
    trainer = GRPOTrainer(config())
    trajs = trainer.collect().trajectories
    assert trajs and all(t.temperature == T for t in trajs)
    return trainer, trajs


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_stored_logprobs_equal_the_learners_at_the_same_weights(sampled, shared_prefix) -> None:
    trainer, trajs = sampled
    batch = collate(trajs, trainer.policy.pad_id)
    with torch.no_grad():
        logp = chunk_logprobs(trainer.policy, trajs, batch, shared_prefix=shared_prefix)
    mask = batch.action_mask.bool()
    torch.testing.assert_close(logp[mask], batch.old_logprobs[mask], rtol=0, atol=2e-5)
    # and they are not the temperature-1 numbers: the check above can fail
    with torch.no_grad():
        plain = trainer.policy.logprobs(batch.input_ids, batch.attention_mask)
    assert (plain[mask] - batch.old_logprobs[mask]).abs().max() > 1e-2


def hand_logprobs(policy: HFPolicy, ids: np.ndarray, temperature: float) -> torch.Tensor:
    """``(T - 1,)`` log-probs of one unpadded row from the model's raw logits / T."""
    x = torch.as_tensor(ids, dtype=torch.long)[None]
    logits = policy.model(input_ids=x).logits[0, :-1].float()  # (T-1, V)
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, x[0, 1:, None])[:, 0]


def test_the_gradient_is_that_of_tempered_logits(sampled) -> None:
    trainer, trajs = sampled
    policy, cfg = trainer.policy, trainer.config
    chunk = [
        t.replace(advantage=a) for t, a in zip(trajs[:4], (1.0, -0.5, 0.25, -1.0), strict=False)
    ]
    params = [p for p in policy.parameters() if p.requires_grad]

    policy.model.zero_grad(set_to_none=True)
    loss, _ = chunk_loss(policy, chunk, cfg)
    loss.backward()
    ours = [p.grad.detach().clone() for p in params]

    # by hand: GRPO's per-sequence token mean of -A * ratio at ratio 1 (the same weights)
    policy.model.zero_grad(set_to_none=True)
    per_seq = []
    for t in chunk:
        logp = hand_logprobs(policy, t.input_ids, T)  # (T-1,)
        old = torch.as_tensor(t.old_logprobs[1:])
        mask = torch.as_tensor(t.action_mask[1:], dtype=torch.float32)
        ratio = torch.exp(logp - old)
        per_seq.append(-t.advantage * masked_mean(ratio, mask))
    torch.stack(per_seq).mean().backward()
    hand = [p.grad.detach().clone() for p in params]
    policy.model.zero_grad(set_to_none=True)

    assert any(h.abs().max() > 0 for h in hand)
    for a, b in zip(ours, hand, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_generate_scores_its_tokens_at_the_sampling_temperature() -> None:
    policy = HFPolicy.tiny(["find", "the", "page", "answer"], size="micro", seed=0)
    prompt = policy.encode_chat([{"role": "user", "content": "find the page"}])
    gen = torch.Generator().manual_seed(0)
    for temperature in (0.5, 1.0, 1.7):
        out = policy.generate(
            [prompt] * 3, max_new_tokens=6, temperature=temperature, generator=gen
        )
        for ids, lps in zip(out.completion_ids, out.logprobs, strict=True):
            full = np.array([*prompt, *ids])
            with torch.no_grad():
                want = hand_logprobs(policy, full, temperature)[len(prompt) - 1 :]
            torch.testing.assert_close(torch.tensor(lps), want, rtol=0, atol=2e-5)
    # greedy picks have no tempered distribution: their log-probs are the model's own
    out = policy.generate([prompt], max_new_tokens=4, temperature=0.0)
    with torch.no_grad():
        want = hand_logprobs(policy, np.array([*prompt, *out.completion_ids[0]]), 1.0)
    torch.testing.assert_close(
        torch.tensor(out.logprobs[0]), want[len(prompt) - 1 :], atol=2e-5, rtol=0
    )


def test_per_row_temperatures_match_one_call_per_row() -> None:
    policy = HFPolicy.tiny(["find", "the", "page", "answer"], size="micro", seed=1)
    ids = torch.randint(4, 20, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    temps = torch.tensor([0.5, 1.0, 1.5])
    with torch.no_grad():
        rows = policy.logprobs(ids, mask, temps)
        for i, t in enumerate(temps.tolist()):
            torch.testing.assert_close(
                rows[i], policy.logprobs(ids[i : i + 1], mask[i : i + 1], t)[0]
            )
    with pytest.raises(ValueError, match=r"temperatures must be finite and > 0"):
        policy.logprobs(ids, mask, torch.tensor([0.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"one per row \(3,\), got \(2,\)"):
        policy.logprobs(ids, mask, torch.tensor([0.5, 1.0]))


def test_the_kl_reference_is_tempered_too() -> None:
    """At step 0 the reference equals the policy: ref log-probs = stored ones, KL 0."""
    trainer = GRPOTrainer(config(beta=0.1))
    buffer = RolloutBuffer()
    buffer.extend(trainer.collect().trajectories)
    for t in trainer._with_ref_logprobs(buffer).get("main"):
        on = t.action_mask.astype(bool)
        np.testing.assert_allclose(t.ref_logprobs[on], t.old_logprobs[on], rtol=0, atol=2e-5)
    assert abs(GRPOTrainer(config(beta=0.1)).train_step()["kl/main"]) < 1e-6
