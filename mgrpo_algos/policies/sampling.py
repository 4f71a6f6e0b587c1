"""Batch padding and next-token sampling, shared by the generation loops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch


class LeftPadded(NamedTuple):
    """A left-padded batch of prompts.

    Attributes:
        ids: ``(B, P)`` token ids, padding first.
        mask: ``(B, P)`` long, 1 on real tokens.
        positions: ``(B, P)`` position ids counting from each row's first real
            token (padding gets 0; it is masked anyway).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor


def left_pad(
    prompts: Sequence[Sequence[int]], *, pad_id: int, device: torch.device | str = "cpu"
) -> LeftPadded:
    """Left-pad token-id lists into one batch.

    Args:
        prompts: One non-empty list of ids per row.
        pad_id: Id written into the padding.
        device: Where the tensors go.

    Returns:
        The padded ids, attention mask and position ids.

    Raises:
        ValueError: If there are no prompts or one is empty.
    """
    if len(prompts) == 0:
        raise ValueError("prompts must hold at least one prompt; got an empty sequence")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(
            f"expected at least one token in every prompt; prompt {lengths.index(0)} is empty"
        )
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return LeftPadded(ids.to(device), mask.to(device), positions.to(device))


def check_sampling_args(max_new_tokens: int, temperature: float, top_p: float, top_k: int) -> None:
    """Validate generation arguments.

    Raises:
        ValueError: Naming the argument, its allowed range and the value given.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if not (temperature >= 0.0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off, 1 = greedy); got {top_k}")


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    top_k: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row and return it with its log-prob at the sampling temperature.

    The log-prob is that of the tempered distribution ``log_softmax(logits / T)``
    (``T = 1`` when greedy), without top-k/top-p truncation: the policy a learner
    optimises is the tempered one, so the learner recomputes the same number
    (`mgrpo_algos.policies.base`, "Log-probabilities").

    Args:
        logits: ``(B, V)`` float32 raw logits.
        temperature: > 0 scales the logits; 0 picks the argmax.
        top_p: Keep the smallest set of tokens whose probability reaches ``top_p``.
        top_k: Keep the ``top_k`` largest logits (0: all; 1: argmax).
        generator: Random generator of the one uniform draw per call.

    Returns:
        ``(B,)`` token ids and ``(B,)`` log-probs under ``log_softmax(logits / T)``.
    """
    scale = logit_temperature(temperature)
    logp_all = torch.log_softmax(logits if scale == 1.0 else logits / scale, dim=-1)  # (B, V)
    if temperature == 0.0 or top_k == 1:
        token = logits.argmax(dim=-1)
    else:
        if top_k == 0 and top_p >= 1.0:
            scores = logp_all
        else:
            scores = _truncate(logits / temperature, top_p, top_k)
        # Gumbel-max trick: argmax(scores + Gumbel noise) is an exact draw from
        # softmax(scores), with one uniform draw and no per-row CDF search; on CPU
        # this is several times cheaper than torch.multinomial for small batches.
        uniform = torch.rand(scores.shape, generator=generator, device=scores.device)
        token = (scores - torch.log(-torch.log(uniform))).argmax(dim=-1)
    return token, logp_all.gather(-1, token[:, None]).squeeze(-1)


def logit_temperature(temperature: float) -> float:
    """The temperature that divides the logits of the stored log-probs: ``T``, or 1 when greedy.

    A greedy pick (``T = 0``) has no tempered distribution; its log-probs are the
    model's own.
    """
    return float(temperature) if temperature > 0 else 1.0


def _truncate(scores: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """Set scores outside the top-k and the top-p nucleus to ``-inf``."""
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # Drop a token when the mass before it already reaches top_p (keeps >= 1).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_scores = sorted_scores.masked_fill(drop, -math.inf)
        scores = torch.full_like(scores, -math.inf).scatter(-1, order, sorted_scores)
    return scores
