"""The RL math: small pure functions over tensors, each tested against hand-worked numbers.

Shapes: ``N`` samples (one per trajectory), ``B`` sequences, ``T`` token positions
(next-token layout, see :mod:`mgrpo_algos.buffer`), ``V`` vocabulary entries.

Conventions shared by every function here:

- ``mask`` is the 0/1 float mask of the tokens the agent generated (``(B, T)``).
- ``logp`` are the current policy's log-probs, ``old_logp`` the sampling-time ones,
  ``ref_logp`` the frozen reference policy's; all ``(B, T)``.
- ``advantages`` are ``(B,)``: one per sequence, given to every token the agent
  generated in it (M-GRPO, arXiv 2511.13288, sec. 3).
- Inputs are never modified in place, and gradients flow to ``logp`` only: every
  other tensor is detached.

References:
    GRPO: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), eqs. 3-4.
    Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
    Perspective" (arXiv 2503.20783).
    DAPO: Yu et al. 2025 (arXiv 2503.14476), clip-higher and token-level loss.
    GSPO: Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv 2507.18071).
    k3: Schulman 2020, "Approximating KL Divergence" (joschu.net/blog/kl-approx.html).
    M-GRPO: "Multi-Agent Deep Research: Training Multi-Agent Systems with M-GRPO"
    (arXiv 2511.13288): group advantages per agent, trajectory alignment.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch

ScaleRewards = Literal["group", "batch", "none"]
LossType = Literal["grpo", "dr_grpo", "dapo", "gspo"]

SCALE_REWARDS: tuple[str, ...] = get_args(ScaleRewards)
LOSS_TYPES: tuple[str, ...] = get_args(LossType)

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# --------------------------------------------------------------------------- checks


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    """Raise ``ValueError`` naming ``tensor``'s shape and the ``expected`` one."""
    if _shape(tensor) != expected:
        raise ValueError(f"{name} has shape {_shape(tensor)}, expected {expected} ({what})")


def _check_2d(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (B, T), got shape {_shape(tensor)}")


# --------------------------------------------------------------------------- reductions


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 where the mask is empty (never NaN).

    Args:
        values: ``(B, T)`` (any shape).
        mask: Same shape as ``values``, 0/1.
        dim: Reduce over this dim only (``None``: over everything).
    """
    mask = mask.to(values.dtype)
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1 (0 where the mask is empty).

    Args:
        values: ``(B, T)`` (any shape).
        mask: Same shape as ``values``, 0/1.
        dim: Reduce over this dim only (``None``: over everything).

    Raises:
        ValueError: ``mask`` and ``values`` differ in shape.
    """
    _check_shape("mask", mask, _shape(values), "the shape of values")
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim)


# --------------------------------------------------------------------------- advantages


def _reward_scale(
    scale: str, rewards: torch.Tensor, group_std: torch.Tensor
) -> torch.Tensor:  # (N,)
    """The divisor of the centred rewards for one ``scale_rewards`` option."""
    if scale == "group":
        return group_std  # (N,)
    elif scale == "batch":
        # Group mean, batch std: Liu et al. 2025, "Tricks or Traps? A Deep Dive into
        # RL for LLM Reasoning" (arXiv 2508.08221); TRL's scale_rewards="batch".
        return rewards.std(unbiased=False).expand_as(rewards)  # (N,)
    elif scale == "none":
        # Dr. GRPO (arXiv 2503.20783, sec. 3.2): std scaling biases towards groups
        # that are too easy or too hard, so only the mean is removed.
        return torch.ones_like(rewards)  # (N,)
    else:
        raise ValueError(f"scale must be one of {SCALE_REWARDS}, got {scale!r}")


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    scale: ScaleRewards = "group",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantages: each reward minus its group's mean, then scaled.

    GRPO's outcome advantage (DeepSeekMath, arXiv 2402.03300, sec. 4.1.2), with the
    population std as M-GRPO uses it (arXiv 2511.13288, sec. 3). Groups may differ in
    size: M-GRPO's sub-agent groups pool the ``d * K`` aligned calls of a query.

    ``scale`` picks the divisor of ``reward - group mean``:

    - ``"group"``: the group's population std (GRPO, M-GRPO);
    - ``"batch"``: the population std of all ``N`` rewards (group mean, batch std);
    - ``"none"``: 1 (Dr. GRPO; pair it with ``loss_type="dr_grpo"``).

    A group whose rewards are all equal (population std below ``eps``) gets exactly 0
    advantage under every option, as does every sample when the divisor is below
    ``eps`` (``"batch"`` with all rewards equal). Its centred rewards are 0 up to
    rounding anyway; setting them to exactly 0 keeps rounding noise from being
    blown up by a tiny divisor. Nothing is added to the divisor, so under
    ``"group"`` every group with non-zero std has exactly zero mean and unit
    population std (TRL instead divides by ``std + 1e-4``).

    Args:
        rewards: ``(N,)`` one reward per trajectory.
        group_ids: ``(N,)`` integer group of each trajectory (any integer labels).
        scale: ``"group"``, ``"batch"`` or ``"none"``.
        eps: Stds below this count as zero.

    Returns:
        ``(N,)`` advantages, in ``rewards``' dtype (float32 for integer rewards).

    Raises:
        ValueError: Bad shapes or dtypes, ``eps <= 0``, or an unknown ``scale``.
    """
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale must be one of {SCALE_REWARDS}, got {scale!r}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {_shape(rewards)}")
    _check_shape("group_ids", group_ids, _shape(rewards), "one group id per reward")
    if group_ids.dtype not in _INT_DTYPES:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    if rewards.numel() == 0:
        return torch.zeros(0, dtype=out_dtype, device=rewards.device)

    r = rewards.detach().to(torch.float64)  # (N,) float64 keeps the sums exact enough
    _, inverse = torch.unique(group_ids, return_inverse=True)  # (N,) group index 0..G-1
    num_groups = int(inverse.max()) + 1
    zeros = torch.zeros(num_groups, dtype=r.dtype, device=r.device)  # (G,)
    count = zeros.index_add(0, inverse, torch.ones_like(r))  # (G,)
    mean = zeros.index_add(0, inverse, r) / count  # (G,)
    centred = r - mean[inverse]  # (N,)
    var = zeros.index_add(0, inverse, centred * centred) / count  # (G,) population variance
    group_std = var.sqrt()[inverse]  # (N,)

    divisor = _reward_scale(scale, r, group_std)  # (N,)
    flat = (group_std < eps) | (divisor < eps)  # (N,)
    advantages = torch.where(flat, torch.zeros_like(r), centred / divisor.clamp(min=eps))
    return advantages.to(out_dtype)


# --------------------------------------------------------------------------- ratios, KL


def policy_ratio_token(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """Per-token importance ratio ``pi / pi_old = exp(logp - old_logp)`` (PPO, GRPO eq. 3).

    Args:
        logp: ``(B, T)`` current log-probs.
        old_logp: ``(B, T)`` sampling-time log-probs (detached).

    Returns:
        ``(B, T)`` ratios.
    """
    _check_shape("old_logp", old_logp, _shape(logp), "the shape of logp")
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
    _check_2d("logp", logp)
    _check_shape("old_logp", old_logp, _shape(logp), "the shape of logp")
    _check_shape("mask", mask, _shape(logp), "the shape of logp")
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
    _check_shape("ref_logp", ref_logp, _shape(logp), "the shape of logp")
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
        raise ValueError(f"logits must be 3-D (B, T, V), got shape {_shape(logits)}")
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    # clamp: 0 * -inf would be NaN where an entry has probability 0
    logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * logp).sum(-1)  # (B, T)


# --------------------------------------------------------------------------- surrogate


def _broadcast_advantages(ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``(B,)`` advantages shaped to broadcast against a ``(B,)`` or ``(B, T)`` ratio."""
    if ratio.dim() not in (1, 2):
        raise ValueError(f"ratio must be (B,) or (B, T), got shape {_shape(ratio)}")
    _check_shape("advantages", advantages, _shape(ratio)[:1], "one per sequence, (B,)")
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


def loss_grpo(per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's generated tokens, then mean over the ``B`` sequences.

    GRPO eq. 3 (arXiv 2402.03300): ``1/G sum_i 1/|o_i| sum_t``. Long sequences weigh
    less per token. A sequence with no generated token contributes 0 (and counts in B).

    Args:
        per_token_loss: ``(B, T)``.
        mask: ``(B, T)`` 0/1.

    Returns:
        Scalar loss.
    """
    _check_2d("per_token_loss", per_token_loss)
    _check_shape("mask", mask, _shape(per_token_loss), "the shape of per_token_loss")
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
    _check_2d("per_token_loss", per_token_loss)
    _check_shape("mask", mask, _shape(per_token_loss), "the shape of per_token_loss")
    batch, length = _shape(per_token_loss)
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
        Scalar loss.
    """
    _check_2d("per_token_loss", per_token_loss)
    _check_shape("mask", mask, _shape(per_token_loss), "the shape of per_token_loss")
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
    _check_2d("mask", mask)
    _check_shape("per_sequence_loss", per_sequence_loss, _shape(mask)[:1], "(B,), B = mask rows")
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
    _check_2d("logp", logp)
    _check_shape("old_logp", old_logp, _shape(logp), "the shape of logp")
    _check_shape("mask", mask, _shape(logp), "the shape of logp")
    _check_shape("advantages", advantages, _shape(logp)[:1], "one per sequence, (B,)")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0:
        if ref_logp is None:
            raise ValueError(f"ref_logp is required when beta > 0 (got beta={beta})")
        _check_shape("ref_logp", ref_logp, _shape(logp), "the shape of logp")


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


# --------------------------------------------------------------------------- alignment
#
# M-GRPO's trajectory alignment (arXiv 2511.13288, sec. 3.3): main calls a sub-agent a
# variable number of times d_k in rollout k, so a query's K rollouts hold a ragged set
# of sub-agent calls. Each function below picks, for one query, which of its rollouts'
# calls become training samples; the learner then z-scores the sub-agent rewards over
# exactly those samples (duplicates included) and trains on them.

AlignMode = Literal["duplicate_drop", "truncate", "fill", "ragged"]
ALIGN_MODES: tuple[str, ...] = get_args(AlignMode)


class Alignment(NamedTuple):
    """The sub-agent samples of one query after alignment, ``M`` of them.

    Attributes:
        rollout: ``(M,)`` int64, the rollout (0..K-1) each sample comes from.
        call: ``(M,)`` int64, the call (0..d_k-1) within that rollout.
        duplicate: ``(M,)`` bool, the sample repeats a call already selected.
    """

    rollout: torch.Tensor
    call: torch.Tensor
    duplicate: torch.Tensor


def _check_counts(counts: torch.Tensor | list[int]) -> list[int]:
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or (counts.numel() and counts.dtype not in _INT_DTYPES):
        raise ValueError(
            f"counts must be a 1-D integer tensor (K,), got shape {_shape(counts)}, "
            f"dtype {counts.dtype}"
        )
    if counts.numel() and int(counts.min()) < 0:
        raise ValueError(f"counts (d_k) must be >= 0, got {counts.tolist()}")
    return [int(c) for c in counts.tolist()]


def _check_width(d: int) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d (the aligned calls per rollout) must be an int >= 1, got {d!r}")


def _alignment(rows: list[list[int]]) -> Alignment:
    """Per rollout, the chosen call indices in order (repeats after their first use)."""
    rollout, call, duplicate = [], [], []
    for k, chosen in enumerate(rows):
        seen: set[int] = set()
        for i in chosen:
            rollout.append(k)
            call.append(i)
            duplicate.append(i in seen)
            seen.add(i)
    return Alignment(
        torch.tensor(rollout, dtype=torch.int64),
        torch.tensor(call, dtype=torch.int64),
        torch.tensor(duplicate, dtype=torch.bool),
    )


def duplicate_drop(
    counts: torch.Tensor | list[int], d: int, generator: torch.Generator | None = None
) -> Alignment:
    """M-GRPO's alignment: every rollout with calls contributes exactly ``d`` samples.

    arXiv 2511.13288, sec. 3.3: a rollout with ``d_k < d`` calls gets ``d - d_k`` of
    its own calls duplicated, each drawn uniformly at random from its ``d_k`` calls
    (independently, so with replacement: ``d - d_k`` may exceed ``d_k``); a rollout
    with ``d_k > d`` has ``d_k - d`` calls dropped, chosen uniformly at random
    without replacement (the kept ones stay in call order). A rollout with
    ``d_k = 0`` has nothing to duplicate and contributes no sample. When every
    ``d_k >= 1`` the query yields exactly ``d * K`` samples: fixed shapes.

    Args:
        counts: ``(K,)`` ``d_k`` of each rollout of the query.
        d: Samples per rollout (``P(d_k <= d) ~ 0.99``, see
            :func:`estimate_alignment_width`).
        generator: Seeds the random choices.

    Returns:
        The chosen samples, rollout by rollout: a rollout's own calls first, then
        its duplicates.
    """
    _check_width(d)
    rows = []
    for c in _check_counts(counts):
        if c == 0:
            rows.append([])
        elif c >= d:
            keep = torch.randperm(c, generator=generator)[:d]  # drops c - d at random
            rows.append(sorted(keep.tolist()))
        else:
            extra = torch.randint(0, c, (d - c,), generator=generator)  # uniform over own calls
            rows.append(list(range(c)) + extra.tolist())
    return _alignment(rows)


def truncate(counts: torch.Tensor | list[int], d: int) -> Alignment:
    """*Ours* (alignment ablation): keep each rollout's first ``min(d_k, d)`` calls.

    Only the dropping half of :func:`duplicate_drop`, and deterministic (the latest
    calls go): nothing is duplicated, so a query yields at most ``d * K`` samples.
    """
    _check_width(d)
    return _alignment([list(range(min(c, d))) for c in _check_counts(counts)])


def fill(counts: torch.Tensor | list[int], d: int) -> Alignment:
    """*Ours* (alignment ablation): exactly ``d`` samples per rollout with calls, no draws.

    The deterministic counterpart of :func:`duplicate_drop`: a rollout keeps its
    first ``d`` calls, and a shorter one is filled up by repeating its calls in
    order (``0, 1, .., d_k - 1, 0, 1, ..``). ``d_k = 0`` contributes nothing.
    """
    _check_width(d)
    return _alignment([[i % c for i in range(d)] if c else [] for c in _check_counts(counts)])


def ragged(counts: torch.Tensor | list[int]) -> Alignment:
    """No alignment: every call of every rollout once (``sum(d_k)`` samples)."""
    return _alignment([list(range(c)) for c in _check_counts(counts)])


def align_calls(
    counts: torch.Tensor | list[int],
    d: int,
    mode: AlignMode,
    generator: torch.Generator | None = None,
) -> Alignment:
    """One query's sub-agent samples under the alignment ``mode``.

    Args:
        counts: ``(K,)`` ``d_k`` of each rollout of the query.
        d: Samples per rollout (unused by ``"ragged"``).
        mode: ``"duplicate_drop"`` (the paper's), ``"truncate"``, ``"fill"`` or ``"ragged"``.
        generator: Seeds ``"duplicate_drop"``'s random choices.
    """
    if mode == "duplicate_drop":
        return duplicate_drop(counts, d, generator)
    elif mode == "truncate":
        return truncate(counts, d)
    elif mode == "fill":
        return fill(counts, d)
    elif mode == "ragged":
        return ragged(counts)
    else:
        raise ValueError(f"mode must be one of {ALIGN_MODES}, got {mode!r}")


def estimate_alignment_width(counts: torch.Tensor | list[int], quantile: float = 0.99) -> int:
    """The paper's choice of ``d``: the smallest ``d`` with ``P(d_k <= d) >= quantile``.

    arXiv 2511.13288, sec. 3.3 picks ``d`` so that ``P(d_k <= d) ~ 0.99``, estimated
    here by the empirical distribution of ``d_k`` over a warm-up batch (every rollout
    of it, ``d_k = 0`` ones included). Never below 1.

    Args:
        counts: ``(N,)`` ``d_k`` of every rollout of the warm-up batch.
        quantile: Target probability, in ``(0, 1]``.

    Returns:
        ``d``, an int >= 1 (1 for an empty batch).
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    values = sorted(_check_counts(counts))
    if not values:
        return 1
    # the inverted empirical CDF: the first value whose rank reaches quantile * N
    rank = max(math.ceil(quantile * len(values) - 1e-9), 1)
    return max(values[rank - 1], 1)
