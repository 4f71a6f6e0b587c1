"""Group-relative advantages: rewards centred on their group's mean and scaled (GRPO, M-GRPO).

References:
    GRPO: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), sec. 4.1.2.
    Dr. GRPO: Liu et al. 2025 (arXiv 2503.20783), sec. 3.2: no std scaling.
    M-GRPO: arXiv 2511.13288, sec. 3: population std, sub-agent groups pooled per query.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from mgrpo_algos.functional.checks import INT_DTYPES, check_shape, shape_of

ScaleRewards = Literal["group", "batch", "none"]
SCALE_REWARDS: tuple[str, ...] = get_args(ScaleRewards)


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
        raise ValueError(f"rewards must be 1-D (N,), got shape {shape_of(rewards)}")
    check_shape("group_ids", group_ids, shape_of(rewards), "one group id per reward")
    if group_ids.dtype not in INT_DTYPES:
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
