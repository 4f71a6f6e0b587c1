"""Synthetic pre-training of a tiny model: copying and key -> value lookup steps.

A tiny model trained from scratch must learn to copy names, ids and numbers from
its context into its actions. ``copy_steps`` does it first: before the
demonstrations, that many steps on synthetic copying (a random string of the
policy's own tokens, a separator, the same string again; the loss on the second
copy only). This is the shortest route to the "find the earlier occurrence, emit
what followed it" circuit (an induction head) that every lookup in these tasks
needs; the demonstrations alone teach it slowly, because most names can be
half-guessed from their first word.

Copying one token at a time after the token it followed (an induction head) is not
enough for numbers spelled digit by digit: in ``d30`` or ``1971`` the same digit
recurs, so "what followed the last 1" is ambiguous, and the id a searcher must
visit stands *before* the title that identifies it. ``lookup_steps`` trains that
directly, on synthetic records: rows of two-word keys and digit-string values (in
either order, ``key value`` or ``value key``, like "released in 1971" and "d30 Quiet
Valley"), keys sharing words with each other as near-duplicate titles do, then one
key again and, as the target, its value: what reading a document id or a year
needs. Measured, it helped one seed of two (docs/results.md), so it is off in the
recipe.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mgrpo_algos.functional import masked_mean
from mgrpo_algos.policies.base import Policy
from mgrpo_algos.sft.config import SFTConfig


def copy_batch(
    vocab: torch.Tensor,
    sep_id: int,
    batch: int,
    length: int,
    generator: torch.Generator,
    digits: torch.Tensor | None = None,
    digit_rows: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic copying: rows ``x <sep> x`` of random tokens drawn from ``vocab``.

    The first ``digit_rows`` rows draw from ``digits`` instead.

    Returns:
        ``(batch, 2 * length + 1)`` token ids, and the ``(batch, 2 * length)`` target
        mask that is 1 on the second copy of ``x`` only (aligned with `logprobs`).
    """
    x = vocab[torch.randint(len(vocab), (batch, length), generator=generator)]  # (B, L)
    if digit_rows:
        if digits is None:
            raise ValueError("digit_rows > 0 needs the digits' token ids")
        x[:digit_rows] = digits[
            torch.randint(len(digits), (digit_rows, length), generator=generator)
        ]
    sep = torch.full((batch, 1), sep_id, dtype=x.dtype)
    ids = torch.cat([x, sep, x], dim=1)  # (B, 2L+1)
    target = torch.zeros(batch, 2 * length, dtype=torch.bool)
    target[:, length:] = True  # predictions of ids[:, L+1:], the second copy
    return ids, target


LOOKUP_VALUE_LENGTHS = (2, 4)
"""Digits in a lookup value, drawn per step (a document id's, a year's)."""


def lookup_batch(
    words: torch.Tensor,
    digits: torch.Tensor,
    marks: dict[str, int],
    batch: int,
    records: int,
    value_length: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic lookup rows: ``records`` records, a separator, a key, its value.

    A record is a two-word key (``first second``) and a ``value_length``-digit value, written
    ``key value\n`` in half the rows and ``value key\n`` in the other half. The keys
    of a row are distinct pairs drawn from ``ceil(records / 2)`` first and second words,
    so most keys share a word with another key. After the separator comes one of
    the row's keys and a space; the target is that key's value.

    Args:
        words: Token ids to draw key words from.
        digits: The token ids of ``0`` .. ``9``.
        marks: Token ids of ``" "``, ``"\n"`` and ``"sep"``.

    Returns:
        ``(batch, T)`` token ids, and the ``(batch, T - 1)`` target mask that is 1 on
        the predictions of the queried value's digits (aligned with `logprobs`).
    """
    half = max(2, (records + 1) // 2)  # half * half >= records distinct keys
    space, newline, sep = marks[" "], marks["\n"], marks["sep"]
    rows = []
    for b in range(batch):
        pool = words[torch.randperm(len(words), generator=generator)[: 2 * half]]
        pairs = torch.randperm(half * half, generator=generator)[:records]
        gap = torch.full((records,), space)
        keys = torch.stack([pool[pairs // half], gap, pool[half + pairs % half]], dim=1)  # (R, 3)
        values = digits[torch.randint(10, (records, value_length), generator=generator)]
        key_first = b % 2 == 0
        row: list[torch.Tensor] = []
        for key, value in zip(keys, values, strict=True):
            first, second = (key, value) if key_first else (value, key)
            row += [first, torch.tensor([space]), second, torch.tensor([newline])]
        q = int(torch.randint(records, (1,), generator=generator))
        row += [torch.tensor([sep]), keys[q], torch.tensor([space]), values[q]]
        rows.append(torch.cat(row))
    ids = torch.stack(rows)  # (B, T): every row has the same layout, so the same length
    target = torch.zeros(batch, ids.shape[1] - 1, dtype=torch.bool)
    target[:, -value_length:] = True  # predictions of the last value_length tokens
    return ids, target


def synthetic_tokens(policy: Policy) -> tuple[torch.Tensor, torch.Tensor, dict[str, int], int]:
    """The policy's ordinary tokens, its word tokens, its digit and mark ids, its separator."""
    tok = getattr(policy, "tokenizer", None)
    if tok is None:
        raise ValueError(
            f"copy pretraining draws its strings from the policy's tokenizer, and this "
            f"{type(policy).__name__} has none; set copy_steps=0 and lookup_steps=0"
        )
    special = set(tok.all_special_ids)
    ordinary = [i for i in range(len(tok)) if i not in special]
    if len(ordinary) < 2:
        raise ValueError("copy pretraining needs a tokenizer with at least 2 ordinary tokens")
    sep_id = tok.eos_token_id if tok.eos_token_id is not None else policy.pad_id
    pieces = {i: tok.convert_ids_to_tokens(i) for i in ordinary}
    words = [i for i, p in pieces.items() if isinstance(p, str) and len(p) > 1 and p.isalpha()]
    single = {p: i for i, p in pieces.items() if isinstance(p, str) and len(p) == 1}
    return torch.tensor(ordinary), torch.tensor(words), {**single, "sep": sep_id}, sep_id


def synthetic_copy(
    policy_tokens: tuple[torch.Tensor, torch.Tensor, dict[str, int], int],
    config: SFTConfig,
    batch: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A copying batch of ``batch`` strings, ``config.copy_digits`` of them digits only."""
    vocab, _, marks, sep_id = policy_tokens
    rows = round(config.copy_digits * batch)
    digits = None
    if rows:
        found = [marks.get(str(d)) for d in range(10)]
        if None in found:
            raise ValueError("copy_digits > 0 needs single-token digits in the tokenizer")
        digits = torch.tensor(found)
    return copy_batch(vocab, sep_id, batch, config.copy_length, generator, digits, rows)


def train_copy(policy: Policy, config: SFTConfig, *, progress: bool = True) -> list[float]:
    """Synthetic pretraining: ``copy_steps`` copying and ``lookup_steps`` lookup steps.

    The two kinds alternate while both last. Copy strings are drawn from the
    policy's non-special tokens; the separator of both tasks is its end-of-turn
    token, so the model also learns that a turn boundary does not break a lookup.

    Returns:
        The loss of every step, in order.
    """
    tokens = synthetic_tokens(policy)
    _, words, marks, _ = tokens
    lookup = None
    if config.lookup_steps:
        digits = [marks.get(str(d)) for d in range(10)]
        if None in digits or " " not in marks or "\n" not in marks or len(words) < 8:
            raise ValueError(
                "lookup pretraining needs single-token digits, space and newline and at "
                "least 8 word tokens in the policy's tokenizer; set lookup_steps=0"
            )
        lookup = (words, torch.tensor(digits), marks)
    kinds = interleave(config.copy_steps, config.lookup_steps)
    gen = torch.Generator().manual_seed(config.seed + 1)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    bar = tqdm(total=len(kinds), desc="copy", disable=not progress, unit="step")
    for kind in kinds:
        if kind == "copy":
            ids, target = synthetic_copy(tokens, config, config.copy_batch, gen)
        else:
            n = LOOKUP_VALUE_LENGTHS[int(torch.randint(2, (1,), generator=gen))]
            ids, target = lookup_batch(
                *lookup,
                config.copy_batch,
                config.lookup_records,
                n,
                gen,  # type: ignore[misc]
            )
        logp = policy.logprobs(ids, torch.ones_like(ids))  # (B, T-1)
        loss = -masked_mean(logp, target.to(logp.device))
        losses.append(clipped_step(loss, opt, params, config.grad_clip, bar))
    bar.close()
    return losses


def interleave(copy_steps: int, lookup_steps: int) -> list[str]:
    """``"copy"`` and ``"lookup"`` alternating while both last, then the rest of one."""
    both = min(copy_steps, lookup_steps)
    return (
        ["copy", "lookup"] * both
        + ["copy"] * (copy_steps - both)
        + ["lookup"] * (lookup_steps - both)
    )


def clipped_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    grad_clip: float,
    bar: tqdm,
) -> float:
    """One clipped optimiser step on ``loss``; returns the loss and shows it on ``bar``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    value = float(loss.detach())
    bar.update(1)
    bar.set_postfix(loss=f"{value:.3f}")
    return value
