"""Which sub-agent calls of one query become training samples: M-GRPO's trajectory alignment.

M-GRPO's trajectory alignment (arXiv 2511.13288, sec. 3.3): main calls a sub-agent a
variable number of times d_k in rollout k, so a query's K rollouts hold a ragged set
of sub-agent calls. Each function below picks, for one query, which of its rollouts'
calls become training samples; the learner then z-scores the sub-agent rewards over
exactly those samples (duplicates included) and trains on them.

:mod:`mgrpo_algos.alignment` applies these choices to trajectories.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch

from mgrpo_algos.functional.checks import INT_DTYPES, shape_of

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
    if counts.dim() != 1 or (counts.numel() and counts.dtype not in INT_DTYPES):
        raise ValueError(
            f"counts must be a 1-D integer tensor (K,), got shape {shape_of(counts)}, "
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
