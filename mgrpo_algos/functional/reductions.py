"""Masked reductions: means and sums over the tokens a mask selects, never NaN.

Shapes as in :mod:`mgrpo_algos.functional`: ``(B, T)`` values and a 0/1 mask.
"""

from __future__ import annotations

import torch

from mgrpo_algos.functional.checks import check_shape, shape_of


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
    check_shape("mask", mask, shape_of(values), "the shape of values")
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim)
