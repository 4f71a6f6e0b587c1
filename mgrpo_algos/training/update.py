"""The update: group advantages, the chunked loss with its KL reference, the optimisers."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mgrpo_algos.buffer import Batch, RolloutBuffer, Trajectory, collate, minibatches
from mgrpo_algos.functional import (
    masked_mean,
    policy_loss,
)
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.prefix import prefix_groups, shared_prefix_pays


def frozen_copy(policy: HFPolicy) -> HFPolicy:
    """A copy of ``policy`` that no optimiser can move (the KL reference)."""
    ref = copy.deepcopy(policy)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def with_ref_logprobs(
    ref: HFPolicy, trajs: Sequence[Trajectory], max_batch_tokens: int, *, shared_prefix: bool
) -> list[Trajectory]:
    """``trajs`` (one agent's) with their ``ref_logprobs`` under the frozen policy ``ref``.

    The chunks and the computation are those of the loss (`backward_loss`), so a
    policy equal to ``ref`` gets bit-identical log-probs and a KL gradient of 0.
    """
    done: dict[int, Trajectory] = {}
    for members, distinct, rows in distinct_chunks(trajs, max_batch_tokens, shared_prefix):
        with torch.no_grad():
            batch = collate(distinct, ref.pad_id)
            lp = chunk_logprobs(ref, distinct, batch, shared_prefix=shared_prefix)
        for t, row in zip(members, rows.tolist(), strict=True):
            ref_lp = np.zeros(t.num_tokens, dtype=np.float32)
            ref_lp[1:] = lp[row, : t.num_tokens - 1].numpy()
            done[id(t)] = t.replace(ref_logprobs=ref_lp)
    return [done[id(t)] for t in trajs]


def distinct_chunks(
    trajs: Sequence[Trajectory], max_tokens: int, shared_prefix: bool
) -> Iterator[tuple[list[Trajectory], list[Trajectory], torch.Tensor]]:
    """Chunks of ``trajs`` in which each distinct token sequence goes through the model once.

    Trajectory alignment copies sub-agent calls (M-GRPO sec. 3.3: about half of a
    step's sub-agent samples when calls per rollout vary), and a near-deterministic
    policy repeats its own calls. Log-probs depend on the tokens alone, so each
    distinct sequence is forwarded once and its row is repeated for every trajectory
    that has it: the loss and its gradient are those of forwarding every copy.

    Args:
        trajs: One policy's trajectories.
        max_tokens: Padded tokens per forward pass (of the distinct sequences).
        shared_prefix: Chunk whole ``(agent, group_id)`` groups (`group_minibatches`),
            else sequences sorted by length (`minibatches`).

    Yields:
        ``(members, distinct, rows)``: the chunk's trajectories, copies included; one
        trajectory per distinct sequence among them (what the model is run on); and
        ``(len(members),)`` the row of ``distinct`` that holds each member's tokens.
    """
    first: dict[bytes, int] = {}
    distinct: list[Trajectory] = []
    copies: list[list[Trajectory]] = []
    for t in trajs:
        i = first.setdefault(np.asarray(t.input_ids, dtype=np.int64).tobytes(), len(distinct))
        if i == len(distinct):
            distinct.append(t)
            copies.append([])
        copies[i].append(t)
    slot = {id(t): i for i, t in enumerate(distinct)}
    if shared_prefix:
        chunks: Iterable[list[Trajectory]] = group_minibatches(distinct, max_tokens)
    else:
        chunks = minibatches(sorted(distinct, key=lambda t: t.num_tokens), max_tokens)
    for chunk in chunks:
        members: list[Trajectory] = []
        rows: list[int] = []
        for row, t in enumerate(chunk):
            members += copies[slot[id(t)]]
            rows += [row] * len(copies[slot[id(t)]])
        yield members, chunk, torch.tensor(rows, dtype=torch.int64)


def chunk_loss(
    policy: HFPolicy,
    chunk: Sequence[Trajectory],
    cfg: Any,
    distinct: Sequence[Trajectory] | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``policy_loss`` of one padded chunk under ``cfg``'s loss options, with its stats.

    With ``distinct`` and ``rows`` (from `distinct_chunks`), the model is run on
    ``distinct`` only and row ``rows[i]`` gives ``chunk[i]``'s log-probs.
    """
    batch = collate(chunk, policy.pad_id)
    if distinct is None or rows is None:
        logp = chunk_logprobs(policy, chunk, batch, shared_prefix=cfg.shared_prefix)  # (B, T-1)
    else:
        once_batch = collate(distinct, policy.pad_id)
        once = chunk_logprobs(policy, distinct, once_batch, shared_prefix=cfg.shared_prefix)
        logp = once.index_select(0, rows)  # (B, T-1): copies share their row's gradient
    loss, st = policy_loss(
        logp,
        batch.old_logprobs,
        batch.advantages,
        batch.action_mask,
        loss_type=cfg.loss_type,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.clip_high,
        beta=cfg.beta,
        ref_logp=batch.ref_logprobs,
        max_tokens=cfg.max_tokens_norm,
    )
    # Monte Carlo entropy estimate: -log p of the sampled tokens (on-policy, at the
    # sampling temperature)
    entropy = -masked_mean(logp.detach(), batch.action_mask)
    stats = {k: float(v) for k, v in st.items()}
    stats["entropy"] = float(entropy)
    return loss, stats


def chunk_logprobs(
    policy: HFPolicy, chunk: Sequence[Trajectory], batch: Batch, *, shared_prefix: bool
) -> torch.Tensor:
    """``(B, T - 1)`` log-probs of ``batch`` (``chunk`` collated), with gradients.

    Each row is scored at its trajectory's sampling temperature (the tempered
    policy is the one optimised, as in TRL and verl), so the numbers equal the
    sampler's stored log-probs at the same weights.

    With ``shared_prefix``, each ``(agent, group_id)`` group's common prompt goes
    through the model once (`HFPolicy.logprobs_shared_prefix`) when that forwards
    fewer padded tokens than the full rows do; the numbers are the same.
    """
    temps = batch.temperatures  # (B,): each row at its sampling temperature
    if shared_prefix:
        groups = prefix_groups(chunk)
        if shared_prefix_pays(groups, [t.num_tokens for t in chunk]):
            return policy.logprobs_shared_prefix(
                batch.input_ids, batch.attention_mask, groups, temps
            )
    return policy.logprobs(batch.input_ids, batch.attention_mask, temps)


def group_minibatches(trajs: Sequence[Trajectory], max_tokens: int) -> Iterator[list[Trajectory]]:
    """Chunks of whole ``(agent, group_id)`` groups, at most ``max_tokens`` padded tokens.

    Groups go shortest first (by their longest member), each sorted by length; a
    group larger than ``max_tokens`` alone is cut as `minibatches` cuts it, so its
    pieces still share their prompt.
    """
    groups = RolloutBuffer(trajs).groups().values()
    ordered = sorted(groups, key=lambda g: max(t.num_tokens for t in g))
    chunk: list[Trajectory] = []
    width = 0
    for group in ordered:
        for piece in minibatches(sorted(group, key=lambda t: t.num_tokens), max_tokens):
            new_width = max(width, piece[-1].num_tokens)
            if chunk and new_width * (len(chunk) + len(piece)) > max_tokens:
                yield chunk
                chunk, new_width = [], piece[-1].num_tokens
            chunk += piece
            width = new_width
    if chunk:
        yield chunk


def backward_loss(
    policy: HFPolicy, trajs: Sequence[Trajectory], cfg: Any, *, total_seqs: int, total_tokens: int
) -> list[tuple[int, float, dict[str, float]]]:
    """Backpropagates the loss of ``trajs`` into ``policy``, chunk by chunk.

    Trajectories are cut into chunks of at most ``cfg.max_batch_tokens`` padded
    tokens (whole groups at a time under ``cfg.shared_prefix``), each distinct token
    sequence forwarded once (`distinct_chunks`); each chunk's loss is
    weighted by its share of ``total_seqs`` sequences (of ``total_tokens`` generated
    tokens under ``dapo``), so the gradients add up to those of one batch.

    Returns:
        ``(sequences, loss, stats)`` of every chunk.
    """
    out = []
    for members, distinct, rows in distinct_chunks(trajs, cfg.max_batch_tokens, cfg.shared_prefix):
        loss, st = chunk_loss(policy, members, cfg, distinct, rows)
        weight = (
            sum(t.num_generated for t in members) / max(total_tokens, 1)
            if cfg.loss_type == "dapo"
            else len(members) / total_seqs
        )
        (loss * weight).backward()
        out.append((len(members), float(loss.detach()), st))
    return out


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: Any, name: str | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` and its warm-up / decay schedule, from ``cfg``.

    The peak learning rate is ``cfg.role_lr[name]`` when given for optimiser ``name``,
    else ``cfg.lr``.
    """
    lr = getattr(cfg, "role_lr", {}).get(name, cfg.lr)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.steps, cfg.warmup_steps, cfg.lr_schedule)
    )
    return optimizer, scheduler


def lr_lambda(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR multiplier: linear warm-up, then constant or cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def make_deterministic() -> None:
    """One torch thread and deterministic kernels (a process-wide setting)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
