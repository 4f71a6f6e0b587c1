"""Shared-prefix log-probs: a group's common prompt goes through the model once.

The K rollouts of a GRPO group start with the same prompt. `shared_prefix_logprobs`
runs each group's shared prefix once (with gradients), copies its keys and values
to the group's rows (an index along the batch, so the gradient of every row flows
back into the one prefix computation), then runs only each row's suffix (its
completion, or the rest of a multi-turn sequence) attending to the cached prefix.
The result equals ``HFPolicy.logprobs`` on the full rows, to float rounding, with
the same gradients: the model sees the same tokens at the same positions under
the same causal mask, only laid out differently.

Layout (``G`` groups of ``B`` rows; ``P`` the longest shared prefix, ``S`` the
longest suffix without its last token, which is only ever a target)::

    prefix call   (G, P)       right-padded; positions 0 .. P_g - 1
    suffix call   (B, S)       right-padded; positions P_g .. ; attention mask
                               (B, P + S): the prefix's (padding in the middle
                               for shorter prefixes) then the suffix's

`prefix_groups` finds the groups of a list of trajectories: rows of one
``(agent, group_id)`` share the longest common prefix of their token ids, cut
before the first token any of them generated. `shared_prefix_pays` says whether
the two calls forward fewer padded tokens than one call on the full rows.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from mgrpo_algos.policies.head import decoder_states, token_logprobs

if TYPE_CHECKING:
    from mgrpo_algos.buffer import Trajectory


class PrefixGroups(NamedTuple):
    """Which rows share a prefix, and how long it is.

    Attributes:
        index: ``(B,)`` int64, the group of each row, in ``[0, G)``; every group
            has at least one row.
        lengths: ``(G,)`` int64, tokens every row of the group starts with (>= 1).
    """

    index: torch.Tensor
    lengths: torch.Tensor

    @property
    def num_groups(self) -> int:
        return int(self.lengths.numel())

    @property
    def saved_tokens(self) -> int:
        """Prefix tokens not recomputed: ``sum_g (rows_g - 1) * lengths_g``."""
        rows = torch.bincount(self.index, minlength=self.num_groups)  # (G,)
        return int(((rows - 1) * self.lengths).sum())


def prefix_groups(trajs: Sequence[Trajectory]) -> PrefixGroups:
    """Group ``trajs`` (in order) by ``(agent, group_id, temperature)`` with their shared prefixes.

    A group's prefix is the longest common prefix of its members' ``input_ids``,
    cut before the first position where any member's ``action_mask`` is 1. A group
    whose members share no token before that is split into one group per member
    (its prompt, up to its first generated token). Prefixes keep at least one token.

    Args:
        trajs: Trajectories, each with at least one token.

    Returns:
        The grouping of the rows of ``collate(trajs, ...)``.

    Raises:
        ValueError: If a trajectory has no token.
    """
    members: dict[tuple[str, int, float], list[int]] = {}
    for row, t in enumerate(trajs):
        if t.num_tokens < 1:
            raise ValueError(f"expected trajectories of >= 1 token; row {row} has none")
        # one temperature per group: its prefix's log-probs are computed once
        members.setdefault((t.agent, t.group_id, t.temperature), []).append(row)
    index = np.zeros(len(trajs), dtype=np.int64)
    lengths: list[int] = []
    for rows in members.values():
        length = _common_prefix([trajs[r] for r in rows])
        split = [[r] for r in rows] if length == 0 else [rows]
        for part in split:
            index[part] = len(lengths)
            lengths.append(max(_common_prefix([trajs[r] for r in part]), 1))
    return PrefixGroups(torch.from_numpy(index), torch.tensor(lengths, dtype=torch.int64))


def _common_prefix(trajs: Sequence[Trajectory]) -> int:
    """Longest common prefix of the token ids, cut before the first generated token."""
    limit = min(t.num_tokens for t in trajs)
    for t in trajs:
        generated = np.flatnonzero(t.action_mask[:limit])
        if generated.size:
            limit = int(generated[0])
    first = trajs[0].input_ids[:limit]
    for t in trajs[1:]:
        differ = np.flatnonzero(t.input_ids[:limit] != first)
        if differ.size:
            limit = int(differ[0])
            first = first[:limit]
    return limit


def shared_prefix_pays(groups: PrefixGroups, row_lengths: Sequence[int]) -> bool:
    """True when the prefix and suffix calls forward fewer padded tokens than one call.

    One call forwards ``B * T`` tokens (``T`` the longest row); the shared-prefix
    calls ``G * P + B * S`` (see the module docstring).

    Args:
        groups: The rows' grouping.
        row_lengths: ``(B,)`` real tokens of every row.
    """
    n = torch.as_tensor(list(row_lengths), dtype=torch.int64)  # (B,)
    if n.numel() == 0 or groups.saved_tokens == 0:
        return False
    suffix = int((n - groups.lengths[groups.index]).max()) - 1
    shared = groups.num_groups * int(groups.lengths.max()) + n.numel() * max(suffix, 0)
    return shared < n.numel() * int(n.max())


def shared_prefix_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    groups: PrefixGroups,
    *,
    pad_id: int = 0,
    temperature: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable next-token log-probs, each group's prefix run once.

    Equal to ``HFPolicy.logprobs(input_ids, attention_mask)`` (positions count
    from each row's first token), to float rounding.

    Args:
        model: A transformers ``*ForCausalLM`` whose forward takes a ``DynamicCache``.
        input_ids: ``(B, T)`` token ids, right-padded (as `collate` pads).
        attention_mask: ``(B, T)``, 1 on a leading run of real tokens, then 0.
        groups: Row ``b`` starts with the ``groups.lengths[groups.index[b]]``
            tokens of its group's prefix.
        pad_id: Id fed at padded places (never attended to or scored).
        temperature: ``(B,)`` each row's temperature (the logits are divided by
            it); the rows of a group share one. None: 1 everywhere.

    Returns:
        ``(B, T - 1)`` float32, ``log p(input_ids[:, t + 1] | input_ids[:, : t + 1])``,
        0 where the target token is padding.

    Raises:
        ValueError: On bad shapes, rows not right-padded, a bad grouping, or rows
            that do not start with their group's prefix.
    """
    device = input_ids.device
    ids = input_ids.long()
    mask = attention_mask.to(device).long()
    n = _check_inputs(ids, mask)  # (B,)
    index, lengths = groups.index.to(device), groups.lengths.to(device)
    _check_groups(index, lengths, n)
    prefix_ids, prefix_mask = _prefix_batch(ids, index, lengths, pad_id)  # (G, P)
    temps = _group_temperatures(temperature, index, lengths.numel())  # (G,) or None
    kwarg = _cache_kwarg(model)
    # hidden states, not (G, P, V) logits: the output layer runs chunk by chunk (head.py)
    states, head, out = decoder_states(
        model,
        input_ids=prefix_ids,
        attention_mask=prefix_mask.long(),
        position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )  # (G, P, H)
    start = lengths[index]  # (B,)

    # predictions inside the prefix: the same for every row of a group
    inner_t = None if temps is None else temps[:, None].expand(-1, prefix_ids.shape[1] - 1)
    inner = token_logprobs(states[:, :-1], head, prefix_ids[:, 1:], temperature=inner_t)
    inner = inner[index]  # (B, P-1)
    inner_cols = torch.arange(inner.shape[1], device=device).expand_as(inner)  # (B, P-1)
    inner_ok = inner_cols < (start - 1)[:, None]

    # the prefix's last token predicts each row's first suffix token
    target = ids.gather(1, start.clamp(max=ids.shape[1] - 1)[:, None])  # (B, 1)
    edge_t = None if temps is None else temps[index][:, None]  # (B, 1)
    edge = token_logprobs(states[index, start - 1][:, None], head, target, temperature=edge_t)
    edge_cols = (start - 1)[:, None]  # (B, 1)
    edge_ok = start[:, None] < n[:, None]

    # the suffixes, attending to their group's cached prefix
    suffix_lp, suffix_cols, suffix_ok = _suffix_logprobs(
        model, out, kwarg, ids, n, start, index, prefix_mask, pad_id, temps
    )

    values = torch.cat([inner, edge, suffix_lp], dim=1)  # (B, C)
    cols = torch.cat([inner_cols, edge_cols, suffix_cols], dim=1)  # (B, C)
    ok = torch.cat([inner_ok, edge_ok, suffix_ok], dim=1)  # (B, C)
    width = ids.shape[1]
    cols = cols.masked_fill(~ok, width - 1)  # column T - 1 is dropped below
    logp = torch.zeros(ids.shape, dtype=values.dtype, device=device)  # (B, T)
    logp = logp.scatter(1, cols, values.masked_fill(~ok, 0.0))
    return logp[:, :-1]  # (B, T-1)


def _suffix_logprobs(
    model: Any,
    prefix_out: Any,
    kwarg: str,
    ids: torch.Tensor,
    n: torch.Tensor,
    start: torch.Tensor,
    index: torch.Tensor,
    prefix_mask: torch.Tensor,
    pad_id: int,
    temps: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of every suffix token after the first, with their columns and validity.

    Row ``b``'s suffix is ``ids[b, start_b : n_b]``; its last token is only a
    target, so ``S = max_b (n_b - start_b) - 1`` tokens per row are forwarded.

    Returns:
        ``(B, S)`` log-probs, ``(B, S)`` output columns, ``(B, S)`` validity.
    """
    size, width = ids.shape
    steps = int((n - start).max()) - 1
    device = ids.device
    if steps <= 0:
        empty = torch.zeros(size, 0, device=device)
        return empty, empty.long(), empty.bool()
    src = start[:, None] + torch.arange(steps + 1, device=device)  # (B, S+1) columns of ids
    real = src < n[:, None]  # (B, S+1)
    tokens = ids.gather(1, src.clamp(max=width - 1)).masked_fill(~real, pad_id)  # (B, S+1)
    cache = getattr(prefix_out, kwarg)  # the output names it as the forward does
    cache.batch_select_indices(index)  # (G, ...) -> (B, ...): autograd-tracked indexing
    states, head, _ = decoder_states(
        model,
        input_ids=tokens[:, :-1],
        attention_mask=torch.cat([prefix_mask[index], real[:, :-1]], dim=1).long(),
        position_ids=torch.minimum(src[:, :-1], n[:, None] - 1),
        use_cache=True,
        **{kwarg: cache},
    )  # (B, S, H)
    suffix_t = None if temps is None else temps[index][:, None].expand(-1, steps)  # (B, S)
    logp = token_logprobs(states, head, tokens[:, 1:], temperature=suffix_t)  # (B, S)
    return logp, src[:, :-1], real[:, 1:]


def _group_temperatures(
    temperature: torch.Tensor | None, index: torch.Tensor, groups: int
) -> torch.Tensor | None:
    """``(G,)`` each group's temperature, or None when every row's is 1.

    Raises:
        ValueError: If two rows of one group have different temperatures.
    """
    if temperature is None or bool((temperature == 1.0).all()):
        return None
    t = temperature.to(index.device, torch.float32)
    low = torch.full((groups,), math.inf, device=t.device).scatter_reduce(0, index, t, "amin")
    high = torch.full((groups,), -math.inf, device=t.device).scatter_reduce(0, index, t, "amax")
    if not bool((low == high).all()):
        raise ValueError(
            "the rows of a prefix group must share one temperature; got groups with "
            f"{low.tolist()} to {high.tolist()}"
        )
    return low


def _prefix_batch(
    ids: torch.Tensor, index: torch.Tensor, lengths: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's prefix, right-padded, taken from its first row; checks every row.

    Returns:
        ``(G, P)`` prefix ids and ``(G, P)`` bool mask.

    Raises:
        ValueError: If a row does not start with its group's prefix.
    """
    size = index.numel()
    rows = torch.arange(size, device=ids.device)
    first = torch.full_like(lengths, size).scatter_reduce(0, index, rows, "amin")  # (G,)
    width = int(lengths.max())
    mask = torch.arange(width, device=ids.device)[None, :] < lengths[:, None]  # (G, P)
    prefix = ids[first, :width].masked_fill(~mask, pad_id)  # (G, P)
    mismatch = (ids[:, :width] != prefix[index]) & mask[index]  # (B, P)
    if mismatch.any():
        row = int(mismatch.any(-1).nonzero()[0])
        raise ValueError(
            f"expected every row to start with its group's prefix; row {row} (group "
            f"{int(index[row])}) differs at token {int(mismatch[row].nonzero()[0])}"
        )
    return prefix, mask


def _check_inputs(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row lengths ``(B,)`` of a right-padded batch; raises `ValueError` otherwise."""
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(
            "input_ids and attention_mask must both be (B, T); got "
            f"{tuple(ids.shape)} and {tuple(mask.shape)}"
        )
    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError(f"expected B >= 1 rows of T >= 2 columns; got {tuple(ids.shape)}")
    if bool((mask[:, 1:] > mask[:, :-1]).any()) or bool((mask[:, 0] == 0).any()):
        raise ValueError(
            "expected right-padded rows (attention_mask 1 on a leading run, then 0), as "
            "collate() pads them; got a row with padding before a real token"
        )
    return mask.sum(-1)


def _check_groups(index: torch.Tensor, lengths: torch.Tensor, n: torch.Tensor) -> None:
    """Raise `ValueError` unless ``index`` and ``lengths`` group the ``n``-token rows."""
    if index.shape != n.shape or lengths.ndim != 1 or lengths.numel() == 0:
        raise ValueError(
            f"expected groups.index of shape {tuple(n.shape)} and 1-D groups.lengths; got "
            f"{tuple(index.shape)} and {tuple(lengths.shape)}"
        )
    count = lengths.numel()
    if bool((index < 0).any()) or bool((index >= count).any()):
        raise ValueError(f"groups.index must lie in [0, {count}); got {index.tolist()}")
    if bool((torch.bincount(index, minlength=count) == 0).any()):
        raise ValueError(f"every group needs a row; got index {index.tolist()} for {count}")
    if bool((lengths < 1).any()) or bool((lengths[index] > n).any()):
        raise ValueError(
            "expected 1 <= prefix length <= row length for every row; got lengths "
            f"{lengths[index].tolist()} for rows of {n.tolist()} tokens"
        )


def _cache_kwarg(model: Any) -> str:
    """The forward's name for the key/value cache (``cache`` in newer transformers)."""
    forward = inspect.signature(model.forward).parameters
    return "cache" if "cache" in forward else "past_key_values"
