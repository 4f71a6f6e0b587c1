"""Per-token and per-sequence importance ratios, the k3 KL estimate and the entropy.

References:
    GRPO: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), eqs. 3-4.
    GSPO: Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv 2507.18071).
    k3: Schulman 2020, "Approximating KL Divergence" (joschu.net/blog/kl-approx.html).
"""

from __future__ import annotations

import torch

from mgrpo_algos.functional.checks import check_2d, check_shape, shape_of
from mgrpo_algos.functional.reductions import masked_mean


def policy_ratio_token(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """Per-token importance ratio ``pi / pi_old = exp(logp - old_logp)`` (PPO, GRPO eq. 3).

    Args:
        logp: ``(B, T)`` current log-probs.
        old_logp: ``(B, T)`` sampling-time log-probs (detached).

    Returns:
        ``(B, T)`` ratios.
    """
    check_shape("old_logp", old_logp, shape_of(logp), "the shape of logp")
    return torch.exp(logp - old_logp.detach())  # (B, T)


def policy_ratio_sequence(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """GSPO's length-normalised sequence ratio (Zheng et al. 2025, arXiv 2507.18071, eq. 7).

    ``s_i = (pi(y_i) / pi_old(y_i)) ** (1 / |y_i|) = exp(mean over the generated
    tokens of (logp - old_logp))``. A sequence with no generated token gets 1.

    The paper also gives a GSPO-token form, ``sg[s_i] * exp(logp_t - sg[logp_t])``,
    which differs from this one only when advantages vary across the tokens of a
    sequence. Here advantages are one per sequence, so after the per-sequence mean
    of :func:`loss_gspo` both forms have the same value and the same gradient,
    ``s_i * A_i * mean_t grad logp_t``; only the sequence form is provided.

    Args:
        logp: ``(B, T)`` current log-probs.
        old_logp: ``(B, T)`` sampling-time log-probs (detached).
        mask: ``(B, T)`` 0/1 generated-token mask.

    Returns:
        ``(B,)`` sequence ratios.
    """
    check_2d("logp", logp)
    check_shape("old_logp", old_logp, shape_of(logp), "the shape of logp")
    check_shape("mask", mask, shape_of(logp), "the shape of logp")
    mask = mask.detach().to(logp.dtype)
    # where(), not a product: a padded position may hold anything, even inf
    log_ratio = torch.where(mask > 0, logp - old_logp.detach(), torch.zeros_like(logp))  # (B, T)
    return torch.exp(masked_mean(log_ratio, mask, dim=1))  # (B,)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of ``KL(pi || pi_ref)``: ``exp(d) - d - 1``, ``d = ref - logp``.

    Schulman 2020, "Approximating KL Divergence"; GRPO eq. 4 (arXiv 2402.03300).
    Unbiased for samples drawn from ``pi`` and never negative (``e^d >= 1 + d``);
    ``expm1`` keeps it accurate for small ``d`` and the clamp removes a rounding
    residue below zero.

    Args:
        logp: ``(B, T)`` current log-probs.
        ref_logp: ``(B, T)`` reference-policy log-probs (detached).

    Returns:
        ``(B, T)`` non-negative per-token KL estimates.
    """
    check_shape("ref_logp", ref_logp, shape_of(logp), "the shape of logp")
    d = ref_logp.detach() - logp  # (B, T)
    return (torch.expm1(d) - d).clamp(min=0.0)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at each position, in nats.

    ``H = -sum_v p_v log p_v`` with ``p = softmax(logits)``; ``-inf`` logits (masked
    vocabulary entries) contribute 0.

    Args:
        logits: ``(B, T, V)``.

    Returns:
        ``(B, T)`` entropies.

    Raises:
        ValueError: ``logits`` is not 3-D.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be 3-D (B, T, V), got shape {shape_of(logits)}")
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    # clamp: 0 * -inf would be NaN where an entry has probability 0
    logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * logp).sum(-1)  # (B, T)
