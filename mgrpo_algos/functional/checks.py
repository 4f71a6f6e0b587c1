"""Shape and dtype checks shared by the RL math: each error names the expected and the given.

Internal to :mod:`mgrpo_algos.functional`: its functions check their inputs with
these before computing anything, so a caller's mistake is a ``ValueError``, never a
broadcast that silently computes something else.
"""

from __future__ import annotations

import torch

INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    """``t``'s shape as a plain tuple, the form the error messages print."""
    return tuple(t.shape)


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    """Raise ``ValueError`` naming ``tensor``'s shape and the ``expected`` one."""
    if shape_of(tensor) != expected:
        raise ValueError(f"{name} has shape {shape_of(tensor)}, expected {expected} ({what})")


def check_2d(name: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``tensor`` is ``(B, T)``."""
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (B, T), got shape {shape_of(tensor)}")
