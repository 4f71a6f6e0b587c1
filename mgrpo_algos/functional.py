"""The RL math: small pure functions over tensors, each tested against hand-worked numbers.

Shapes: ``B`` sequences, ``T`` token positions (next-token layout, see
:mod:`mgrpo_algos.buffer`).
"""

from __future__ import annotations

import torch


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
