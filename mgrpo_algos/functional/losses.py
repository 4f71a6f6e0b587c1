"""The clipped policy loss of one agent: the surrogate, its four aggregations, ``policy_loss``.

References:
    GRPO: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), eqs. 3-4.
    Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
    Perspective" (arXiv 2503.20783).
    DAPO: Yu et al. 2025 (arXiv 2503.14476), clip-higher and token-level loss.
    GSPO: Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv 2507.18071).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from mgrpo_algos.functional.checks import check_2d, check_shape, shape_of
from mgrpo_algos.functional.ratios import kl_k3, policy_ratio_sequence, policy_ratio_token
from mgrpo_algos.functional.reductions import masked_mean, masked_sum

LossType = Literal["grpo", "dr_grpo", "dapo", "gspo"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)


# --------------------------------------------------------------------------- surrogate


def _broadcast_advantages(ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``(B,)`` advantages shaped to broadcast against a ``(B,)`` or ``(B, T)`` ratio."""
    if ratio.dim() not in (1, 2):
        raise ValueError(f"ratio must be (B,) or (B, T), got shape {shape_of(ratio)}")
    check_shape("advantages", advantages, shape_of(ratio)[:1], "one per sequence, (B,)")
    advantages = advantages.detach().to(ratio.dtype)
    return advantages if ratio.dim() == 1 else advantages[:, None]  # (B,) or (B, 1)


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> torch.Tensor:
    """PPO's clipped surrogate as a loss: ``-min(r * A, clip(r, 1 - eps, 1 + eps_high) * A)``.

    GRPO eq. 3 (arXiv 2402.03300); with ``epsilon_high > epsilon`` it is DAPO's
    clip-higher (arXiv 2503.14476, sec. 3.1), which leaves low-probability tokens room
    to grow. Where the clipped branch is taken the loss is constant in ``ratio``, so
    no gradient flows through that token.

    Args:
        ratio: ``(B, T)`` per-token ratios, or ``(B,)`` sequence ratios (GSPO).
        advantages: ``(B,)``, broadcast over ``T``.
        epsilon: Lower clip range.
        epsilon_high: Upper clip range (``None``: same as ``epsilon``).

    Returns:
        Per-token (or per-sequence) loss, the shape of ``ratio``.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    adv = _broadcast_advantages(ratio, advantages)  # (B, 1) or (B,)
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high)
    return -torch.minimum(ratio * adv, clipped * adv)  # (B, T) or (B,)


def _clip_sides(
    ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float, epsilon_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(low, high)`` masks of where the clipped branch is taken, by side."""
    adv = _broadcast_advantages(ratio, advantages)  # (B, 1) or (B,)
    ratio = ratio.detach()
    low = (ratio < 1.0 - epsilon) & (adv < 0)
    high = (ratio > 1.0 + epsilon_high) & (adv > 0)
    return low, high


def clip_active(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> torch.Tensor:
    """Where :func:`clipped_surrogate` takes its clipped branch (and passes no gradient).

    That is ``r > 1 + eps_high`` with ``A > 0``, or ``r < 1 - eps`` with ``A < 0``: a
    ratio outside the range whose clipped value is the smaller objective. A ratio
    outside the range on the other side keeps its gradient (PPO's pessimistic bound),
    and a token with ``A = 0`` is never clipped.

    Args:
        ratio: ``(B, T)`` or ``(B,)``.
        advantages: ``(B,)``.
        epsilon: Lower clip range.
        epsilon_high: Upper clip range (``None``: same as ``epsilon``).

    Returns:
        Boolean tensor, the shape of ``ratio``.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    low, high = _clip_sides(ratio, advantages, epsilon, epsilon_high)
    return low | high


# --------------------------------------------------------------------------- aggregations


def _check_per_token(per_token_loss: torch.Tensor, mask: torch.Tensor) -> None:
    """The checks every token-level aggregation runs: a ``(B, T)`` loss and its mask."""
    check_2d("per_token_loss", per_token_loss)
    check_shape("mask", mask, shape_of(per_token_loss), "the shape of per_token_loss")


def loss_grpo(per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's generated tokens, then mean over the ``B`` sequences.

    GRPO eq. 3 (arXiv 2402.03300): ``1/G sum_i 1/|o_i| sum_t``. Long sequences weigh
    less per token. A sequence with no generated token contributes 0 (and counts in B).

    Args:
        per_token_loss: ``(B, T)``.
        mask: ``(B, T)`` 0/1.

    Returns:
        Scalar loss: the mean over ``B`` of the per-sequence token means.
    """
    _check_per_token(per_token_loss, mask)
    return masked_mean(per_token_loss, mask, dim=1).mean()


def loss_dr_grpo(
    per_token_loss: torch.Tensor, mask: torch.Tensor, max_tokens: int | None = None
) -> torch.Tensor:
    """Sum of the generated tokens' losses over a constant, ``max_tokens * B``.

    Dr. GRPO (Liu et al. 2025, arXiv 2503.20783, sec. 3.2): dividing by each
    sequence's own length favours long wrong answers; a constant normaliser does not.
    Dr. GRPO also drops the std scaling of advantages; that is the caller's choice of
    ``scale="none"`` in :func:`group_advantages`, not part of this function.

    Args:
        per_token_loss: ``(B, T)``.
        mask: ``(B, T)`` 0/1.
        max_tokens: The generation budget per sequence (``None``: ``T``).

    Returns:
        Scalar loss.

    Raises:
        ValueError: ``max_tokens`` is not a positive integer.
    """
    _check_per_token(per_token_loss, mask)
    batch, length = shape_of(per_token_loss)
    max_tokens = length if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    return masked_sum(per_token_loss, mask) / (max_tokens * max(batch, 1))


def loss_dapo(per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level mean over every generated token of the batch.

    DAPO (Yu et al. 2025, arXiv 2503.14476, sec. 3.3): every token weighs the same,
    whatever the length of its sequence. The mean is over this call's batch; TRL
    normalises by the token count of the whole generation batch, which is the same
    when the batch is not split into micro-batches.

    Args:
        per_token_loss: ``(B, T)``.
        mask: ``(B, T)`` 0/1.

    Returns:
        Scalar loss: the mean over every generated token of the batch.
    """
    _check_per_token(per_token_loss, mask)
    return masked_mean(per_token_loss, mask)


def loss_gspo(per_sequence_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of a sequence-level loss (GSPO, arXiv 2507.18071, eq. 5).

    ``per_sequence_loss`` is :func:`clipped_surrogate` of the sequence ratios of
    :func:`policy_ratio_sequence` (plus any per-sequence KL term). A sequence with
    no generated token contributes 0 (and counts in ``B``), as in :func:`loss_grpo`.

    Args:
        per_sequence_loss: ``(B,)``.
        mask: ``(B, T)`` 0/1.

    Returns:
        Scalar loss.
    """
    check_2d("mask", mask)
    check_shape("per_sequence_loss", per_sequence_loss, shape_of(mask)[:1], "(B,), B = mask rows")
    has_tokens = mask.detach().sum(1) > 0  # (B,)
    return torch.where(has_tokens, per_sequence_loss, torch.zeros_like(per_sequence_loss)).mean()


# --------------------------------------------------------------------------- entry point


def _check_loss_inputs(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    beta: float,
    ref_logp: torch.Tensor | None,
) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    check_2d("logp", logp)
    check_shape("old_logp", old_logp, shape_of(logp), "the shape of logp")
    check_shape("mask", mask, shape_of(logp), "the shape of logp")
    check_shape("advantages", advantages, shape_of(logp)[:1], "one per sequence, (B,)")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0:
        if ref_logp is None:
            raise ValueError(f"ref_logp is required when beta > 0 (got beta={beta})")
        check_shape("ref_logp", ref_logp, shape_of(logp), "the shape of logp")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: LossType,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped policy loss of one agent, for one of the GRPO family's variants.

    Per token: ``clipped_surrogate + beta * kl_k3`` (GRPO eq. 3), aggregated by

    - ``"grpo"``: :func:`loss_grpo` (per-sequence token mean, then mean over B);
    - ``"dr_grpo"``: :func:`loss_dr_grpo` (sum over ``max_tokens * B``; ``max_tokens``
      defaults to ``T``); pair it with ``scale="none"`` advantages;
    - ``"dapo"``: :func:`loss_dapo` (token mean over the batch);
    - ``"gspo"``: the sequence ratio of :func:`policy_ratio_sequence` clipped once per
      sequence, plus ``beta`` times the sequence's mean k3, averaged by
      :func:`loss_gspo`. GSPO's paper uses far smaller clip ranges (3e-4, 4e-4) than
      the token-level defaults here; the caller's config sets them.

    Positions off the mask never matter: their log-ratio and KL are replaced by 0
    before anything is computed, so padding may hold any value and the gradient there
    is exactly 0.

    Args:
        logp: ``(B, T)`` current log-probs (the only input that receives gradients).
        old_logp: ``(B, T)`` sampling-time log-probs.
        advantages: ``(B,)``.
        mask: ``(B, T)`` 0/1 generated-token mask.
        loss_type: ``"grpo"``, ``"dr_grpo"``, ``"dapo"`` or ``"gspo"``.
        epsilon: Lower clip range.
        epsilon_high: Upper clip range (DAPO's clip-higher when above ``epsilon``;
            ``None``: same as ``epsilon``, the symmetric clip of GRPO and TRL).
        beta: KL coefficient; ``ref_logp`` is required when it is above 0.
        ref_logp: ``(B, T)`` reference-policy log-probs.
        max_tokens: ``dr_grpo``'s per-sequence generation budget (``None``: ``T``).

    Returns:
        ``(loss, stats)``: the scalar loss and detached scalar statistics

        - ``clip_ratio``: share of generated tokens whose surrogate took the clipped
          branch (:func:`clip_active`); for ``gspo`` every token of a clipped
          sequence counts; ``clip_ratio_low`` / ``clip_ratio_high`` split it by side;
        - ``kl``: mean k3 over the generated tokens when ``beta > 0``, else 0;
        - ``ratio_mean``: mean over the generated tokens of the ratio applied to them.

    Raises:
        ValueError: Unknown ``loss_type``, bad shapes, ``beta < 0``, ``beta > 0``
            without ``ref_logp``, or a bad ``max_tokens``.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    _check_loss_inputs(logp, old_logp, advantages, mask, loss_type, beta, ref_logp)
    mask = mask.detach().to(logp.dtype)
    on = mask > 0  # (B, T)
    zero = torch.zeros_like(logp)
    # off the mask, logp and old_logp are both set to 0: ratio 1, no gradient, no NaN
    logp = torch.where(on, logp, zero)  # (B, T)
    old_logp = torch.where(on, old_logp.detach().to(logp.dtype), zero)  # (B, T)
    advantages = advantages.detach().to(logp.dtype)  # (B,)

    kl = zero
    if beta > 0:
        assert ref_logp is not None  # checked above
        ref = torch.where(on, ref_logp.detach().to(logp.dtype), zero)
        kl = kl_k3(logp, ref)  # (B, T)

    if loss_type == "gspo":
        ratio = policy_ratio_sequence(logp, old_logp, mask)  # (B,)
        seq_loss = clipped_surrogate(ratio, advantages, epsilon, epsilon_high)  # (B,)
        loss = loss_gspo(seq_loss + beta * masked_mean(kl, mask, dim=1), mask)
        ratio_tokens = ratio[:, None].expand_as(logp)  # (B, T)
    else:
        ratio_tokens = policy_ratio_token(logp, old_logp)  # (B, T)
        per_token = clipped_surrogate(ratio_tokens, advantages, epsilon, epsilon_high)
        per_token = per_token + beta * kl  # (B, T)
        if loss_type == "grpo":
            loss = loss_grpo(per_token, mask)
        elif loss_type == "dr_grpo":
            loss = loss_dr_grpo(per_token, mask, max_tokens)
        elif loss_type == "dapo":
            loss = loss_dapo(per_token, mask)
        else:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")

    stats = _loss_stats(ratio_tokens, advantages, mask, kl, epsilon, epsilon_high)
    return loss, stats


def _loss_stats(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor,
    epsilon: float,
    epsilon_high: float,
) -> dict[str, torch.Tensor]:
    """Detached scalar statistics of :func:`policy_loss`, token-weighted over the mask."""
    low, high = _clip_sides(ratio, advantages, epsilon, epsilon_high)  # (B, T) each
    low, high = low.to(mask.dtype), high.to(mask.dtype)
    return {
        "clip_ratio": masked_mean(high + low, mask),
        "clip_ratio_low": masked_mean(low, mask),
        "clip_ratio_high": masked_mean(high, mask),
        "kl": masked_mean(kl.detach(), mask),
        "ratio_mean": masked_mean(ratio.detach(), mask),
    }
