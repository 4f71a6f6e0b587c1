"""Trajectory alignment of sub-agent calls, query by query (arXiv 2511.13288, sec. 3.3).

M-GRPO's sub-agent groups hold ``d`` samples per rollout: a rollout with fewer calls
gets some of its own duplicated, one with more has some dropped, at random
(``functional.align_calls`` does the counting; here it is applied to trajectories).
Also the subtask keys of *ours* ``sub_groups="subtask"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from mgrpo_algos.buffer import Trajectory
from mgrpo_algos.functional import AlignMode, align_calls


def align_generator(seed: int, step: int) -> torch.Generator:
    """The alignment's random draws of one step: a pure function of (seed, step)."""
    state = np.random.default_rng([seed, step, 2511]).integers(0, 2**62)
    return torch.Generator().manual_seed(int(state))


def align_samples(
    trajs: Sequence[Trajectory],
    rollouts: Sequence[tuple[int, int]],
    d: int,
    mode: AlignMode,
    generator: torch.Generator | None = None,
) -> tuple[list[Trajectory], dict[str, int]]:
    """One role's calls aligned query by query (``functional.align_calls``).

    Args:
        trajs: The role's call trajectories of the step.
        rollouts: Every ``(query, rollout)`` of the step, those without calls included.
        d: Samples per rollout.
        mode: ``duplicate_drop``, ``truncate``, ``fill`` or ``ragged``.
        generator: Seeds the random choices.

    Returns:
        The samples (copies marked ``duplicate``) and counts: ``duplicated``,
        ``dropped``, ``zero_rollouts`` (rollouts with no call of this role).
    """
    calls: dict[tuple[int, int], list[Trajectory]] = defaultdict(list)
    for t in sorted(trajs, key=lambda t: (t.group_id, t.rollout_id, t.invocation)):
        calls[(t.group_id, t.rollout_id)].append(t)
    by_query: dict[int, list[int]] = defaultdict(list)
    for q, k in sorted(rollouts):
        by_query[q].append(k)
    out: list[Trajectory] = []
    stats = {"duplicated": 0, "dropped": 0, "zero_rollouts": 0}
    for q, ks in by_query.items():
        counts = [len(calls[(q, k)]) for k in ks]  # (K,) d_k of this role
        chosen = align_calls(counts, d, mode, generator)
        for k_idx, i, dup in zip(chosen.rollout, chosen.call, chosen.duplicate, strict=True):
            out.append(calls[(q, ks[int(k_idx)])][int(i)].replace(duplicate=bool(dup)))
        stats["duplicated"] += int(chosen.duplicate.sum())
        stats["dropped"] += sum(counts) - int((~chosen.duplicate).sum())
        stats["zero_rollouts"] += counts.count(0)
    return out, stats
