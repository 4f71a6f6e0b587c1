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

One module per part, every public name importable from here:

- :mod:`~mgrpo_algos.functional.reductions`: masked means and sums;
- :mod:`~mgrpo_algos.functional.advantages`: group-relative advantages;
- :mod:`~mgrpo_algos.functional.ratios`: importance ratios, k3 KL, entropy;
- :mod:`~mgrpo_algos.functional.losses`: the clipped surrogate, the loss
  aggregations and :func:`policy_loss`;
- :mod:`~mgrpo_algos.functional.alignment`: which sub-agent calls become samples,
  and the alignment width ``d``;
- :mod:`~mgrpo_algos.functional.checks`: the shape checks they share.

Each module cites the papers of what it computes: GRPO (arXiv 2402.03300), Dr. GRPO
(arXiv 2503.20783), DAPO (arXiv 2503.14476), GSPO (arXiv 2507.18071), Schulman's k3
estimator, and M-GRPO ("Multi-Agent Deep Research: Training Multi-Agent Systems with
M-GRPO", arXiv 2511.13288) for the per-agent group advantages and the alignment.
"""

from __future__ import annotations

from mgrpo_algos.functional.advantages import SCALE_REWARDS, ScaleRewards, group_advantages
from mgrpo_algos.functional.alignment import (
    ALIGN_MODES,
    Alignment,
    AlignMode,
    align_calls,
    duplicate_drop,
    estimate_alignment_width,
    fill,
    ragged,
    truncate,
)
from mgrpo_algos.functional.losses import (
    LOSS_TYPES,
    LossType,
    clip_active,
    clipped_surrogate,
    loss_dapo,
    loss_dr_grpo,
    loss_grpo,
    loss_gspo,
    policy_loss,
)
from mgrpo_algos.functional.ratios import (
    entropy_from_logits,
    kl_k3,
    policy_ratio_sequence,
    policy_ratio_token,
)
from mgrpo_algos.functional.reductions import masked_mean, masked_sum

__all__ = [
    "ALIGN_MODES",
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "AlignMode",
    "Alignment",
    "LossType",
    "ScaleRewards",
    "align_calls",
    "clip_active",
    "clipped_surrogate",
    "duplicate_drop",
    "entropy_from_logits",
    "estimate_alignment_width",
    "fill",
    "group_advantages",
    "kl_k3",
    "loss_dapo",
    "loss_dr_grpo",
    "loss_grpo",
    "loss_gspo",
    "masked_mean",
    "masked_sum",
    "policy_loss",
    "policy_ratio_sequence",
    "policy_ratio_token",
    "ragged",
    "truncate",
]
