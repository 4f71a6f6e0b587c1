"""Warm start: supervised fine-tuning on the scripted expert's demonstrations.

The rollout engine plays episodes with the env's scripted expert acting for every
role (``oracle_action``), which records each agent call as a token sequence with the
expert's outputs masked in. Each role's policy is then trained to maximise the
log-likelihood of its own masked tokens only (prompts and tool results are context,
not targets), so RL starts from a policy that sometimes succeeds.

A tiny model trained from scratch has no language model underneath it, and must
learn to copy names, ids and numbers from its context into its actions. With
``context_weight > 0`` the loss adds that weight times the mean next-token loss on
the context tokens (prompts and tool results), which are full of such repetitions
(a title, then the same title in the document): a language-modelling term that
stands in for the pretraining a real LM brings. The default, 0, trains on the
agent's own tokens only.

A stronger lever is ``copy_steps``: before the demonstrations, that many steps on
synthetic copying (a random string of the policy's own tokens, a separator, the
same string again; the loss on the second copy only). This is the shortest route to
the "find the earlier occurrence, emit what followed it" circuit (an induction head)
that every lookup in these tasks needs; the demonstrations alone teach it slowly,
because most names can be half-guessed from their first word.

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

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mgrpo_algos.buffer import Trajectory, collate, minibatches
from mgrpo_algos.functional import masked_mean
from mgrpo_algos.lora import LORA_TARGETS, AdapterSet, LoRAPolicy, check_lora_config, peft_config
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.base import Policy
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine, expert_script
from mgrpo_algos.training.checkpoints import load_policies, save_lora_checkpoint, save_policies
from mgrpo_envs.core.codecs import ToolCall


@dataclass
class SFTConfig:
    """Settings of the warm start.

    Attributes:
        episodes: Expert episodes to record (one demonstration set, reused each epoch).
        epochs: Passes over the demonstrations.
        lr: AdamW learning rate (cosine decay to 10% over the run).
        weight_decay: AdamW weight decay.
        max_batch_tokens: Padded tokens per optimiser step.
        grad_clip: Max gradient norm.
        seed: Seeds the demonstration episodes and the shuffling.
        context_weight: Weight of the next-token loss on context tokens (0: the
            agent's own tokens only).
        copy_steps: Steps of synthetic copying before the demonstrations (0: none).
        copy_length: Tokens in each string to copy.
        copy_batch: Strings per copying step.
        lookup_steps: Steps of synthetic key -> digit-string lookup, interleaved with
            the copying steps (0: none).
        lookup_records: Records in each lookup row.
        rehearsal: Weight of a synthetic copying batch's loss added to every
            demonstration step (0: none), so that SFT keeps the copying circuit
            the synthetic steps built instead of overwriting it.
        rehearsal_batch: Strings in each rehearsal batch.
        copy_digits: Share of the copying (and rehearsal) strings made of digits only,
            where each digit recurs many times, so that copying must track position
            rather than find the one earlier copy of the current token (0: none).
        sub_give_up: Share of the sub-agents' demonstrated calls that give up: the
            expert finds the fact as usual, then returns ``unknown`` instead of it
            (main re-delegates, as the expert does with any fact not returned).
            Noisier demonstrations: the "improvable sub-agent" regime (0: none).
    """

    episodes: int = 400
    epochs: int = 3
    lr: float = 3e-3
    weight_decay: float = 0.01
    max_batch_tokens: int = 16384
    grad_clip: float = 1.0
    seed: int = 0
    context_weight: float = 0.0
    copy_steps: int = 0
    copy_length: int = 48
    copy_batch: int = 32
    lookup_steps: int = 0
    lookup_records: int = 8
    rehearsal: float = 0.0
    rehearsal_batch: int = 8
    copy_digits: float = 0.0
    sub_give_up: float = 0.0

    def __post_init__(self) -> None:
        for name in ("copy_steps", "lookup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        names = ("episodes", "epochs", "max_batch_tokens", "copy_length", "copy_batch")
        for name in (*names, "lookup_records", "rehearsal_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (self.context_weight >= 0 and math.isfinite(self.context_weight)):
            raise ValueError(
                f"context_weight must be a finite number >= 0, got {self.context_weight!r}"
            )
        if not (self.rehearsal >= 0 and math.isfinite(self.rehearsal)):
            raise ValueError(f"rehearsal must be a finite number >= 0, got {self.rehearsal!r}")
        for name in ("copy_digits", "sub_give_up"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")


RECIPE = SFTConfig(
    episodes=1500,
    epochs=3,
    lr=1e-3,
    max_batch_tokens=2048,
    context_weight=1.0,
    copy_steps=400,
    lookup_steps=0,
)
"""The warm start of the demo, the benchmarks and ``mgrpo sft``: 400 steps of copying,
then 3 epochs of the expert's episodes in 2,048-token
batches at lr 1e-3, with the context's language-modelling loss (figures:
docs/results.md)."""


PRETRAINED_RECIPE = SFTConfig(
    episodes=64,
    epochs=2,
    lr=2e-3,
    max_batch_tokens=1024,
    context_weight=0.0,
    copy_steps=0,
    lookup_steps=0,
)
"""The warm start of a pretrained model (``mgrpo sft --model smollm2|DIR``), meant for
LoRA adapters: the expert's episodes alone, on the agent's own tokens (a pretrained
model needs no synthetic copying and no language-modelling term); figures in
docs/training.md, "SmolLM2 recipe"."""


@dataclass
class LoRASettings:
    """The adapters of a LoRA warm start (the ``lora_*`` fields of the learners' configs).

    Attributes:
        lora_rank: Rank of each adapter (> 0).
        lora_alpha: Scaling numerator (the update is ``alpha / rank * B A``).
        lora_dropout: Dropout on the adapters' input in the loss, in [0, 1).
        lora_target_modules: Names of the linear layers that get adapters.
    """

    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        check_lora_config(self)
        if self.lora_rank == 0:
            raise ValueError("a LoRA warm start needs lora_rank > 0, got 0 (no adapters)")

    @property
    def backend(self) -> str:
        """A warm start runs in one process."""
        return "embedded"


def recipe(**changes: Any) -> SFTConfig:
    """:data:`RECIPE` with ``changes`` (e.g. ``episodes=2000``)."""
    return dataclasses.replace(RECIPE, **changes)


GIVE_UP = "unknown"
"""What a giving-up sub-agent returns (a word of every env's vocabulary)."""


class GiveUpExpert:
    """The scripted expert, except that a share of the sub-agents' calls give up.

    At the ``return`` that would hand back the fact, a call gives up with
    probability ``p`` and returns :data:`GIVE_UP` instead. Main is the plain
    expert, which re-delegates every fact that was not returned. One decision per
    call, drawn from ``numpy.random.default_rng(seed)`` in the order calls end.
    """

    def __init__(self, p: float, seed: int) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.p = p
        self.rng = np.random.default_rng(seed)

    def __call__(self, env: Any) -> str:
        u = env.unwrapped
        call = u.oracle_call()
        gives_up = u.agent_selection != "main" and call is not None and call.name == "return"
        if gives_up and self.rng.random() < self.p:
            call = ToolCall.make("return", result=GIVE_UP)
        return u.format_call(call)


def collect_demonstrations(
    env_fn: Callable[[], Any],
    policies: Mapping[str, Policy],
    episodes: int,
    seed: int = 0,
    give_up: float = 0.0,
) -> list[Trajectory]:
    """Records ``episodes`` expert episodes (env seeds ``seed .. seed + episodes - 1``).

    Args:
        give_up: Share of sub-agent calls that give up (:class:`GiveUpExpert`).
    """
    probe = env_fn()
    script = GiveUpExpert(give_up, seed) if give_up > 0 else expert_script
    scripts = {role: script for role in probe.possible_agents}
    engine = RolloutEngine(env_fn, policies, RolloutConfig(), scripts=scripts)
    result = engine.collect(list(range(seed, seed + episodes)), group_size=1)
    return result.trajectories


def sft_loss(
    policy: Policy, trajs: Sequence[Trajectory], context_weight: float = 0.0
) -> torch.Tensor:
    """Mean negative log-likelihood of the agent's own tokens over a minibatch.

    With ``context_weight > 0``, plus that weight times the mean negative
    log-likelihood of the other real tokens (the context).
    """
    batch = collate(trajs, policy.pad_id)
    logp = policy.logprobs(batch.input_ids, batch.attention_mask)  # (B, T-1)
    action = batch.action_mask.to(logp.device)  # (B, T-1)
    loss = -masked_mean(logp, action)
    if context_weight > 0:
        real = batch.attention_mask[:, 1:].to(logp.device).bool()  # (B, T-1) real targets
        context = real & ~action.bool()
        loss = loss - context_weight * masked_mean(logp, context)
    return loss


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


def _synthetic_tokens(policy: Policy) -> tuple[torch.Tensor, torch.Tensor, dict[str, int], int]:
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
    tokens = _synthetic_tokens(policy)
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
        losses.append(_step(loss, opt, params, config.grad_clip, bar))
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


def _step(loss: torch.Tensor, opt, params: list, grad_clip: float, bar) -> float:
    """One clipped optimiser step on ``loss``; returns the loss and shows it on ``bar``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    value = float(loss.detach())
    bar.update(1)
    bar.set_postfix(loss=f"{value:.3f}")
    return value


def train_sft(
    policy: Policy,
    trajs: Sequence[Trajectory],
    config: SFTConfig,
    *,
    progress: bool = True,
) -> list[float]:
    """Fits ``policy`` to the demonstrations; returns the loss of every step."""
    if not trajs:
        raise ValueError("train_sft() needs demonstrations, got none")
    if config.copy_steps or config.lookup_steps:
        train_copy(policy, config, progress=progress)
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    by_length = sorted(trajs, key=lambda t: t.num_tokens)
    chunks = list(minibatches(by_length, config.max_batch_tokens))
    total = config.epochs * len(chunks)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))
    )
    losses: list[float] = []
    rehearse = _synthetic_tokens(policy) if config.rehearsal > 0 else None
    copy_gen = torch.Generator().manual_seed(config.seed + 2)
    bar = tqdm(total=total, desc="sft", disable=not progress, unit="step")
    for _ in range(config.epochs):
        for i in torch.randperm(len(chunks), generator=gen).tolist():
            loss = sft_loss(policy, chunks[i], config.context_weight)
            if rehearse is not None:
                ids, target = synthetic_copy(rehearse, config, config.rehearsal_batch, copy_gen)
                logp = policy.logprobs(ids, torch.ones_like(ids))  # (B, 2L)
                loss = loss - config.rehearsal * masked_mean(logp, target.to(logp.device))
            losses.append(_step(loss, opt, params, config.grad_clip, bar))
            sched.step()
    bar.close()
    return losses


def tiny_policies(
    env: Any, *, size: str = "micro", seed: int = 0, shared: bool = True, numbers: bool = False
) -> dict[str, Policy]:
    """Untrained tiny policies for a warm start, one entry per role of ``env``.

    Args:
        env: The env whose roles (``possible_agents``) and vocabulary are used.
        size: Tiny model size (see `HFPolicy.tiny`).
        seed: Initialisation seed; role ``i`` gets ``seed + i`` when not shared.
        shared: One model for every role (it learns every role's demonstrations;
            save it once per role to give each role its own copy), else one per role.
        numbers: Document ids and years as single tokens (see `HFPolicy.tiny`).
    """
    roles = list(env.possible_agents)
    if shared:
        one = HFPolicy.tiny(env, size=size, seed=seed, numbers=numbers)
        return {r: one for r in roles}
    return {
        r: HFPolicy.tiny(env, size=size, seed=seed + i, numbers=numbers)
        for i, r in enumerate(roles)
    }


def warm_start(
    env_fn: Callable[[], Any],
    policies: Mapping[str, Policy],
    config: SFTConfig,
    *,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Records demonstrations and trains each distinct policy on its roles' calls.

    Roles that share one policy object train it once, on all their calls together.

    Returns:
        Role names joined by ``+`` -> the losses of that policy's steps.
    """
    demos = collect_demonstrations(
        env_fn, policies, config.episodes, config.seed, give_up=config.sub_give_up
    )
    owners: dict[int, list[str]] = {}
    for role, policy in policies.items():
        owners.setdefault(id(policy), []).append(role)
    history = {}
    for roles in owners.values():
        policy = policies[roles[0]]
        mine = [t for t in demos if t.agent in roles]
        history["+".join(roles)] = train_sft(policy, mine, config, progress=progress)
    return history


def warm_start_policies(
    env: Any,
    model: str,
    *,
    lora: LoRASettings | None = None,
    size: str = "micro",
    seed: int = 0,
    shared: bool = True,
) -> dict[str, Policy]:
    """Role -> policy to warm-start: ``model``'s, or LoRA adapters on it.

    Args:
        env: The env (its roles, and the vocabulary of ``tiny``).
        model: ``tiny``, ``smollm2`` or a saved policy directory (see
            ``LearnerConfig.model``).
        lora: Train adapters on one base (``model``, loaded once) instead of the
            model's weights.
        size: Tiny model size.
        seed: Initialisation seed (of the tiny model, or of the adapters).
        shared: One model (or adapter, named ``shared``) learns every role's
            demonstrations; False: one per role (adapters named after the roles).
    """
    if lora is None:
        if model == "tiny":
            return tiny_policies(env, size=size, seed=seed, shared=shared)
        return load_policies(model, env, tiny_size=size, seed=seed, shared=shared)
    roles = list(env.possible_agents)
    base = load_policies(model, env, tiny_size=size, seed=seed, shared=True)[roles[0]]
    return lora_views(base, roles, lora, seed=seed, shared=shared)  # type: ignore[return-value]


def lora_views(
    base: HFPolicy,
    roles: Sequence[str],
    lora: LoRASettings,
    *,
    seed: int = 0,
    shared: bool = True,
) -> dict[str, LoRAPolicy]:
    """Role -> a fresh LoRA adapter's view on ``base`` (its model gets the LoRA layers).

    Args:
        base: The model to adapt; from now on its own forward runs the active adapter.
        roles: The env's roles.
        lora: The adapters' settings.
        seed: Seeds the adapters' initialisation (adapter ``i`` gets ``seed + i``).
        shared: One adapter, ``shared``, for every role; False: one per role.
    """
    adapters = AdapterSet(base)
    names = {role: "shared" if shared else role for role in roles}
    for i, name in enumerate(dict.fromkeys(names.values())):
        adapters.add(name, peft_config(lora), seed=seed + i)
    return {role: adapters.view(names[role]) for role in roles}


def save_warm_start(policies: Mapping[str, Policy], out: str | Path) -> None:
    """Saves a warm start where ``mgrpo train --model OUT`` starts from it.

    Full models: one copy per role, ``OUT/<role>/`` and ``OUT/roles.json``. LoRA
    adapters: the layout of a LoRA checkpoint (``OUT/policies/<adapter>/``,
    ``OUT/policies/roles.json``, ``OUT/policies/lora.json`` and the base once in
    ``OUT/base/``), so ``mgrpo train --model OUT --lora-rank R`` starts every new
    adapter from its role's, and ``mgrpo export --ckpt OUT`` merges them.
    """
    out = Path(out)
    if any(isinstance(p, LoRAPolicy) for p in policies.values()):
        names = {role: policy.name for role, policy in policies.items()}
        save_policies(policies, names, out / "policies")  # type: ignore[arg-type]
        save_lora_checkpoint(policies, out)  # type: ignore[arg-type]
    else:
        save_policies(policies, {role: role for role in policies}, out)  # type: ignore[arg-type]


def train_warm_start(
    env_fn: Callable[[], Any],
    config: SFTConfig,
    *,
    size: str = "micro",
    shared: bool = True,
    numbers: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Policy], dict[str, list[float]]]:
    """Fresh tiny models (seeded by ``config.seed``) trained by :func:`warm_start`.

    Returns:
        Role -> policy (one object for every role when ``shared``), and the losses.
    """
    env = env_fn()
    policies = tiny_policies(env, size=size, seed=config.seed, shared=shared, numbers=numbers)
    history = warm_start(env_fn, policies, config, progress=progress)
    return policies, history
