"""Chunked log-probs of given tokens: the numbers and gradients of the full logits."""

from __future__ import annotations

import pytest
import torch

from mgrpo_algos.buffer import collate
from mgrpo_algos.policies import HFPolicy, head
from mgrpo_algos.policies.head import split_head, token_logprobs
from mgrpo_algos.policies.prefix import prefix_groups
from tests.test_shared_prefix import CASES, WORDS, build


def full_logprobs(states: torch.Tensor, layer: torch.nn.Linear, targets: torch.Tensor):
    """The unchunked computation: every logit at once, then log_softmax."""
    logits = layer(states).float()  # (B, T, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("positions_per_chunk", [1, 3, 5, 14, 100])
def test_values_and_gradients_equal_the_full_logits(positions_per_chunk) -> None:
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(8, 50, bias=True)
    with torch.no_grad():  # its own weights, not whatever the global RNG holds by now
        layer.weight.copy_(torch.randn(50, 8, generator=gen) / 8**0.5)
        layer.bias.copy_(torch.randn(50, generator=gen) / 8**0.5)
    states = torch.randn(2, 7, 8, generator=gen, requires_grad=True)  # (B, T, H): 14 positions
    targets = torch.randint(0, 50, (2, 7), generator=gen)
    weights = torch.randn(2, 7, generator=gen)

    def run(fn):
        layer.zero_grad(set_to_none=True)
        states.grad = None
        logp = fn()  # (B, T)
        (logp * weights).sum().backward()
        return logp.detach(), [states.grad.clone(), layer.weight.grad.clone(), layer.bias.grad]

    chunk_bytes = positions_per_chunk * 4 * 50
    chunked, chunked_grads = run(
        lambda: token_logprobs(states, layer, targets, chunk_bytes=chunk_bytes)
    )
    full, full_grads = run(lambda: full_logprobs(states, layer, targets))
    assert chunked.shape == (2, 7) and chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    # gradients sum over positions in another order: equal to a few float32 ulps of their size
    for a, b in zip(chunked_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_logits_without_a_layer_give_the_same_numbers() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 11, generator=gen, requires_grad=True)
    targets = torch.randint(0, 11, (3, 4), generator=gen)
    chunked = token_logprobs(logits, None, targets, chunk_bytes=2 * 4 * 11)
    (grad,) = torch.autograd.grad(chunked.sum(), logits)
    full = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    (full_grad,) = torch.autograd.grad(full.sum(), logits)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, full_grad, rtol=0, atol=1e-6)


def test_no_tensor_of_every_logit_is_kept_for_the_backward_pass() -> None:
    gen = torch.Generator().manual_seed(2)
    layer = torch.nn.Linear(8, 1000, bias=False)
    states = torch.randn(4, 16, 8, generator=gen, requires_grad=True)  # 64 positions
    targets = torch.randint(0, 1000, (4, 16), generator=gen)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp = token_logprobs(states, layer, targets, chunk_bytes=8 * 4 * 1000)
    logp.sum().backward()  # the chunks' logits are recomputed here
    assert max(saved) < 64 * 1000 / 4  # what stays is states-sized, not (64, 1000)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        full_logprobs(states, layer, targets)
    assert max(saved) >= 64 * 1000  # the check sees the full logits when they are kept


def test_mismatched_targets_are_refused() -> None:
    layer = torch.nn.Linear(4, 9)
    with pytest.raises(ValueError, match=r"states \(2, 3, 4\) need targets \(2, 3\), got \(2, 2\)"):
        token_logprobs(torch.zeros(2, 3, 4), layer, torch.zeros(2, 2, dtype=torch.long))


def test_the_layer_is_split_off_llama_models_only() -> None:
    policy = HFPolicy.tiny(WORDS, size="micro", seed=0)
    split = split_head(policy.model)
    assert split is not None and split[1] is policy.model.lm_head
    policy.model.config.model_type = "gemma2"  # softcapped logits: its own forward
    assert split_head(policy.model) is None


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_policy_logprobs_in_small_chunks_equal_the_full_logits(monkeypatch, split, shared) -> None:
    policy = HFPolicy.tiny(WORDS, size="micro", seed=0)
    trajs = build(policy, CASES["multi_turn"])
    batch = collate(trajs, policy.pad_id)
    ids, mask = batch.input_ids, batch.attention_mask
    weights = torch.randn(batch.action_mask.shape, generator=torch.Generator().manual_seed(3))

    def run():
        policy.model.zero_grad(set_to_none=True)
        if shared:
            logp = policy.logprobs_shared_prefix(ids, mask, prefix_groups(trajs))
        else:
            logp = policy.logprobs(ids, mask)  # (B, T-1)
        (logp * batch.action_mask * weights).sum().backward()
        return logp.detach(), [p.grad.clone() for p in policy.parameters()]

    with monkeypatch.context() as m:  # one position per chunk
        m.setattr(head, "HEAD_CHUNK_BYTES", 4 * policy.vocab_size)
        if not split:
            m.setattr(head, "split_head", lambda model: None)
        chunked, chunked_grads = run()
    with monkeypatch.context() as m:  # every logit at once
        m.setattr(head, "HEAD_CHUNK_BYTES", 2**40)
        m.setattr(head, "split_head", lambda model: None)
        full, full_grads = run()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():  # the definition, from the model's own logits
        logits = policy.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        wanted = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(full, wanted.masked_fill(mask[:, 1:] == 0, 0.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    for a, b in zip(chunked_grads, full_grads, strict=True):  # summed in another order
        assert float((a - b).norm()) <= 2e-6 * float(b.norm()), float((a - b).norm() / b.norm())
