"""The SFT loop and the warm start: each policy fit to its roles' demonstrations, then saved.

Each role's policy is trained to maximise the log-likelihood of its own masked
tokens only (prompts and tool results are context, not targets), so RL starts from
a policy that sometimes succeeds.

A tiny model trained from scratch has no language model underneath it, and must
learn to copy names, ids and numbers from its context into its actions. With
``context_weight > 0`` the loss adds that weight times the mean next-token loss on
the context tokens (prompts and tool results), which are full of such repetitions
(a title, then the same title in the document): a language-modelling term that
stands in for the pretraining a real LM brings. The default, 0, trains on the
agent's own tokens only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mgrpo_algos.buffer import Trajectory, collate, minibatches
from mgrpo_algos.functional import masked_mean
from mgrpo_algos.lora import AdapterSet, LoRAPolicy, peft_config
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.base import Policy
from mgrpo_algos.sft.config import LoRASettings, SFTConfig
from mgrpo_algos.sft.demonstrations import collect_demonstrations
from mgrpo_algos.sft.synthetic import clipped_step, synthetic_copy, synthetic_tokens, train_copy
from mgrpo_algos.training.checkpoints import load_policies, save_lora_checkpoint, save_policies


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
    rehearse = synthetic_tokens(policy) if config.rehearsal > 0 else None
    copy_gen = torch.Generator().manual_seed(config.seed + 2)
    bar = tqdm(total=total, desc="sft", disable=not progress, unit="step")
    for _ in range(config.epochs):
        for i in torch.randperm(len(chunks), generator=gen).tolist():
            loss = sft_loss(policy, chunks[i], config.context_weight)
            if rehearse is not None:
                ids, target = synthetic_copy(rehearse, config, config.rehearsal_batch, copy_gen)
                logp = policy.logprobs(ids, torch.ones_like(ids))  # (B, 2L)
                loss = loss - config.rehearsal * masked_mean(logp, target.to(logp.device))
            losses.append(clipped_step(loss, opt, params, config.grad_clip, bar))
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
