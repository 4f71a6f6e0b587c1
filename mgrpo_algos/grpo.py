"""GRPO: one policy, group-relative advantages, a clipped surrogate (Shao et al. 2024).

The learner reads top to bottom, once per step:

    collect     N queries x K rollouts with the batched engine (one policy acts for
                every role: the single-agent view, or a shared model in the AEC env)
    score       each trajectory's reward from the env's infos
    advantages  z-scores within each group (query x role), ``scale_rewards`` option
    loss        ``policy_loss`` (grpo / dr_grpo / dapo / gspo), k3 KL when beta > 0
    step        AdamW, gradient clipping, LR schedule; ``num_iterations`` passes
                over the batch reuse the sampling log-probs as the old policy
    log         one JSON line of metrics per step; checkpoints every few steps

A non-finite loss or gradient skips the optimiser step (logged as ``skipped``) and
leaves the weights, the optimiser and the schedule untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos.buffer import Batch, Trajectory, collate, minibatches
from mgrpo_algos.functional import (
    LOSS_TYPES,
    SCALE_REWARDS,
    LossType,
    ScaleRewards,
    group_advantages,
    masked_mean,
    policy_loss,
)
from mgrpo_algos.metrics import MetricsWriter
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.prefix import prefix_groups, shared_prefix_pays
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine, RolloutResult, SingleAgentAEC

View = Literal["single", "shared"]


@dataclass
class LearnerConfig:
    """Settings every learner shares (defaults: the public GRPO scripts; eps 0.2/0.28, beta 0).

    Attributes:
        env: Env id (``mgrpo_envs.list_envs()``).
        env_kwargs: Arguments of the env (difficulty, codec, budgets ...).
        model: ``tiny`` (built from the env's vocabulary) or a saved policy directory.
        tiny_size: Size of the tiny model.
        steps: Optimiser steps (one collection each).
        queries_per_step: N, distinct queries per step.
        group_size: K, rollouts per query.
        max_new_tokens: Tokens per agent turn.
        temperature: Sampling temperature.
        lr: Peak learning rate.
        lr_schedule: ``constant`` or ``cosine`` (to 10% of peak), after linear warm-up.
        warmup_steps: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: Max gradient norm.
        loss_type: ``grpo``, ``dr_grpo``, ``dapo`` or ``gspo``.
        scale_rewards: ``group``, ``batch`` or ``none`` (Dr. GRPO pairs with ``none``).
        beta: KL coefficient against the initial policy (0: no reference model).
        epsilon: Lower clip range.
        epsilon_high: Upper clip range (clip-higher when > epsilon).
        num_iterations: Optimiser steps per collection (old log-probs are stored).
        max_batch_tokens: Padded tokens per forward/backward chunk.
        shared_prefix: Run the prompt a group's rollouts share once per chunk and
            only each rollout's own tokens after it (same loss and gradients, to
            float rounding); chunks then keep a group's rollouts together. A chunk
            falls back to full sequences when that forwards fewer tokens.
        max_tokens_norm: Dr. GRPO's constant normaliser: an upper bound on the tokens
            one agent call generates.
        seed: Seeds queries and sampling (step by step, so resumed runs repeat).
        checkpoint_every: Steps between checkpoints (0: only at the end).
    """

    env: str = "research_v0"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"difficulty": "easy"})
    model: str = "tiny"
    tiny_size: Literal["micro", "small", "base"] = "micro"
    steps: int = 20
    queries_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 40
    temperature: float = 1.0
    lr: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss_type: LossType = "grpo"
    scale_rewards: ScaleRewards = "group"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float = 0.28
    num_iterations: int = 1
    max_batch_tokens: int = 16384
    shared_prefix: bool = True
    max_tokens_norm: int = 512
    seed: int = 0
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        validate_learner_config(self, {})

    @property
    def episodes_per_step(self) -> int:
        return self.queries_per_step * self.group_size


@dataclass
class GRPOConfig(LearnerConfig):
    """Settings of a GRPO run: those of :class:`LearnerConfig`, and

    Attributes:
        view: ``single``: the single-agent Gymnasium view (one agent, every tool);
            ``shared``: the AEC env with one policy playing every role.
    """

    view: View = "single"

    def __post_init__(self) -> None:
        validate_learner_config(self, {"view": ("single", "shared")})


# --------------------------------------------------------------------------- helpers
def validate_learner_config(config: Any, choices: dict[str, Sequence[str]]) -> None:
    """Checks the settings every learner's config shares (and ``choices``' options).

    Raises:
        ValueError: Naming the field, the value given and what is allowed.
    """
    if config.env not in mgrpo_envs.list_envs():
        raise ValueError(f"env must be one of {mgrpo_envs.list_envs()}, got {config.env!r}")
    choices = {
        **choices,
        "loss_type": LOSS_TYPES,
        "scale_rewards": SCALE_REWARDS,
        "lr_schedule": ("constant", "cosine"),
        "tiny_size": ("micro", "small", "base"),
    }
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"{name} must be one of {list(allowed)}, got {getattr(config, name)!r}"
            )
    for name in (
        "steps",
        "queries_per_step",
        "group_size",
        "max_new_tokens",
        "num_iterations",
        "max_batch_tokens",
        "max_tokens_norm",
    ):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("lr", "temperature", "grad_clip", "epsilon", "epsilon_high"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not isinstance(config.shared_prefix, bool):
        raise ValueError(f"shared_prefix must be True or False, got {config.shared_prefix!r}")
    if config.beta < 0 or config.weight_decay < 0 or config.warmup_steps < 0:
        raise ValueError(
            "beta, weight_decay and warmup_steps must be >= 0, got "
            f"{config.beta!r}, {config.weight_decay!r}, {config.warmup_steps!r}"
        )
    if config.group_size < 2:
        raise ValueError(
            f"group_size must be >= 2 for group-relative advantages, got {config.group_size}"
        )


def make_env_fn(env: str, env_kwargs: dict[str, Any], view: View) -> Callable[[], Any]:
    """Builds envs of the chosen view (the single-agent view goes through the AEC shim)."""
    if view == "single":
        import gymnasium

        gym_id = {v: k for k, v in mgrpo_envs.registry.gym_ids().items()}[env]
        return lambda: SingleAgentAEC(gymnasium.make(gym_id, **env_kwargs).unwrapped)
    return lambda: mgrpo_envs.make(env, **env_kwargs)


def load_policy(model: str, env: Any, tiny_size: str, seed: int) -> HFPolicy:
    """``tiny`` builds a fresh tiny model from ``env``'s vocabulary; else loads a directory."""
    if model == "tiny":
        return HFPolicy.tiny(env, size=tiny_size, seed=seed)
    path = Path(model)
    if not path.exists():
        raise ValueError(f"model must be 'tiny' or an existing policy directory, got {model!r}")
    return HFPolicy.load(path)


def step_seeds(seed: int, step: int, n: int) -> list[int]:
    """Env seeds of one step's queries: a pure function of (seed, step)."""
    return [int(x) for x in np.random.default_rng([seed, step]).integers(0, 2**31 - 1, n)]


def lr_lambda(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR multiplier: linear warm-up, then constant or cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def add_advantages(
    trajs: Sequence[Trajectory], scale: ScaleRewards, groups: Sequence[Hashable] | None = None
) -> list[Trajectory]:
    """Group-relative advantages; a group is one query's trajectories of one role.

    ``groups`` (one key per trajectory) splits the groups further: trajectories of
    a role and query share a group only when their keys are equal.
    """
    keys: dict[tuple, int] = {}
    extra = groups if groups is not None else [None] * len(trajs)
    if len(extra) != len(trajs):
        raise ValueError(f"groups needs one key per trajectory: {len(extra)} for {len(trajs)}")
    ids = [
        keys.setdefault((t.agent, t.group_id, g), len(keys))
        for t, g in zip(trajs, extra, strict=True)
    ]
    rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float64)  # (N,)
    adv = group_advantages(rewards, torch.tensor(ids, dtype=torch.int64), scale)  # (N,)
    return [t.replace(advantage=float(a)) for t, a in zip(trajs, adv.tolist(), strict=True)]


def frozen_copy(policy: HFPolicy) -> HFPolicy:
    """A copy of ``policy`` that no optimiser can move (the KL reference)."""
    ref = copy.deepcopy(policy)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def with_ref_logprobs(
    ref: HFPolicy,
    trajs: Sequence[Trajectory],
    max_batch_tokens: int,
    *,
    shared_prefix: bool = False,
) -> list[Trajectory]:
    """``trajs`` with their ``ref_logprobs`` under the frozen reference policy ``ref``.

    With ``shared_prefix`` the chunks and the computation are those of the loss
    (`backward_loss` over each agent's trajectories), so a policy equal to ``ref``
    gets bit-identical log-probs and a KL gradient of exactly 0.
    """
    if not shared_prefix:
        chunks: Iterable[list[Trajectory]] = minibatches(trajs, max_batch_tokens)
    else:
        agents = dict.fromkeys(t.agent for t in trajs)
        chunks = (
            chunk
            for agent in agents
            for chunk in group_minibatches([t for t in trajs if t.agent == agent], max_batch_tokens)
        )
    done: dict[int, Trajectory] = {}
    for chunk in chunks:
        batch = collate(chunk, ref.pad_id)
        with torch.no_grad():
            lp = chunk_logprobs(ref, chunk, batch, shared_prefix=shared_prefix)  # (B, T-1)
        for t, row in zip(chunk, lp, strict=True):
            ref_lp = np.zeros(t.num_tokens, dtype=np.float32)
            ref_lp[1:] = row[: t.num_tokens - 1].numpy()
            done[id(t)] = t.replace(ref_logprobs=ref_lp)
    return [done[id(t)] for t in trajs]


def chunk_loss(
    policy: HFPolicy, chunk: Sequence[Trajectory], cfg: Any
) -> tuple[torch.Tensor, dict[str, float]]:
    """``policy_loss`` of one padded chunk under ``cfg``'s loss options, with its stats."""
    batch = collate(chunk, policy.pad_id)
    logp = chunk_logprobs(policy, chunk, batch, shared_prefix=cfg.shared_prefix)  # (B, T-1)
    loss, st = policy_loss(
        logp,
        batch.old_logprobs,
        batch.advantages,
        batch.action_mask,
        loss_type=cfg.loss_type,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        beta=cfg.beta,
        ref_logp=batch.ref_logprobs,
        max_tokens=cfg.max_tokens_norm,
    )
    # Monte Carlo entropy estimate: -log p of the sampled tokens (on-policy, temperature 1)
    entropy = -masked_mean(logp.detach(), batch.action_mask)
    stats = {k: float(v) for k, v in st.items()}
    stats["entropy"] = float(entropy)
    return loss, stats


def chunk_logprobs(
    policy: HFPolicy, chunk: Sequence[Trajectory], batch: Batch, *, shared_prefix: bool
) -> torch.Tensor:
    """``(B, T - 1)`` log-probs of ``batch`` (``chunk`` collated), with gradients.

    With ``shared_prefix``, each ``(agent, group_id)`` group's common prompt goes
    through the model once (`HFPolicy.logprobs_shared_prefix`) when that forwards
    fewer padded tokens than the full rows do; the numbers are the same.
    """
    if shared_prefix:
        groups = prefix_groups(chunk)
        if shared_prefix_pays(groups, [t.num_tokens for t in chunk]):
            return policy.logprobs_shared_prefix(batch.input_ids, batch.attention_mask, groups)
    return policy.logprobs(batch.input_ids, batch.attention_mask)


def group_minibatches(trajs: Sequence[Trajectory], max_tokens: int) -> Iterator[list[Trajectory]]:
    """Chunks of whole ``(agent, group_id)`` groups, at most ``max_tokens`` padded tokens.

    Groups go shortest first (by their longest member), each sorted by length; a
    group larger than ``max_tokens`` alone is cut as `minibatches` cuts it, so its
    pieces still share their prompt.
    """
    groups: dict[tuple[str, int], list[Trajectory]] = {}
    for t in trajs:
        groups.setdefault((t.agent, t.group_id), []).append(t)
    ordered = sorted(groups.values(), key=lambda g: max(t.num_tokens for t in g))
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
    policy: HFPolicy,
    trajs: Sequence[Trajectory],
    cfg: Any,
    *,
    total_seqs: int,
    total_tokens: int,
) -> list[tuple[int, float, dict[str, float]]]:
    """Backpropagates the loss of ``trajs`` into ``policy``, chunk by chunk.

    Trajectories are sorted by length and cut into chunks of at most
    ``cfg.max_batch_tokens`` padded tokens (whole groups at a time under
    ``cfg.shared_prefix``, see `group_minibatches`); each chunk's loss is weighted by its
    share of ``total_seqs`` sequences (of ``total_tokens`` generated tokens under
    ``dapo``), so the gradients add up to those of one batch of that size.

    Returns:
        ``(sequences, loss, stats)`` of every chunk.
    """
    out = []
    if cfg.shared_prefix:
        chunks = group_minibatches(trajs, cfg.max_batch_tokens)
    else:
        chunks = minibatches(sorted(trajs, key=lambda t: t.num_tokens), cfg.max_batch_tokens)
    for chunk in chunks:
        loss, st = chunk_loss(policy, chunk, cfg)
        weight = (
            sum(t.num_generated for t in chunk) / max(total_tokens, 1)
            if cfg.loss_type == "dapo"
            else len(chunk) / total_seqs
        )
        (loss * weight).backward()
        out.append((len(chunk), float(loss.detach()), st))
    return out


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: Any
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` and its warm-up / decay schedule, from ``cfg``."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.steps, cfg.warmup_steps, cfg.lr_schedule)
    )
    return optimizer, scheduler


def rng_state() -> dict[str, Any]:
    """The global RNG states a checkpoint keeps (sampling itself is explicitly seeded)."""
    return {"torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])


def train_loop(trainer: Any, desc: str, progress: bool) -> list[dict[str, Any]]:
    """Runs ``trainer``'s remaining steps: metrics line and checkpoints as configured.

    ``trainer`` has ``config`` (``steps``, ``checkpoint_every``), ``step_idx``,
    ``train_step()``, ``writer``, ``out_dir`` and ``save_checkpoint()``.
    """
    from tqdm.auto import tqdm

    history = []
    cfg = trainer.config
    bar = tqdm(
        total=cfg.steps, initial=trainer.step_idx, desc=desc, disable=not progress, unit="step"
    )
    while trainer.step_idx < cfg.steps:
        metrics = trainer.train_step()
        history.append(metrics)
        if trainer.writer is not None:
            trainer.writer.write(metrics)
        every = cfg.checkpoint_every
        if trainer.out_dir is not None and (
            (every and trainer.step_idx % every == 0) or trainer.step_idx == cfg.steps
        ):
            trainer.save_checkpoint()
        bar.update(1)
        bar.set_postfix(
            success=f"{metrics['success_rate']:.2f}",
            reward=f"{metrics['reward/main/mean']:.3f}",
        )
    bar.close()
    return history


# --------------------------------------------------------------------------- learner
class GRPOTrainer:
    """Trains one policy with GRPO.

    Args:
        config: The run's settings.
        out_dir: Where ``metrics.jsonl`` and ``ckpt-*`` go (None: nothing written).
        policy: Start from this policy instead of ``config.model`` (e.g. after SFT).
    """

    def __init__(
        self, config: GRPOConfig, out_dir: str | Path | None = None, policy: HFPolicy | None = None
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.env_fn = make_env_fn(config.env, config.env_kwargs, config.view)
        probe = self.env_fn()
        self.roles = list(probe.possible_agents)
        self.policy = policy or load_policy(config.model, probe, config.tiny_size, config.seed)
        self.ref = self._frozen_copy(self.policy) if config.beta > 0 else None
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = make_optimizer(self.params, config)
        rollout = RolloutConfig(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature
        )
        self.engine = RolloutEngine(self.env_fn, {r: self.policy for r in self.roles}, rollout)
        self.step_idx = 0
        self.writer = MetricsWriter(self.out_dir) if self.out_dir is not None else None

    @staticmethod
    def _frozen_copy(policy: HFPolicy) -> HFPolicy:
        return frozen_copy(policy)

    # -------------------------------------------------------------- one step
    def train_step(self) -> dict[str, Any]:
        """collect -> score -> advantages -> loss -> step -> log, for one step."""
        cfg = self.config
        t0 = time.perf_counter()
        seeds = step_seeds(cfg.seed, self.step_idx, cfg.queries_per_step)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step_idx)
        result = self.engine.collect(seeds, cfg.group_size, generator=gen)  # collect
        trajs = add_advantages(result.trajectories, cfg.scale_rewards)  # score, advantages
        if self.ref is not None:
            trajs = self._with_ref_logprobs(trajs)
        stats = [self._optimise(trajs) for _ in range(cfg.num_iterations)]  # loss, step
        self.step_idx += 1
        return self._metrics(result, trajs, stats, time.perf_counter() - t0)  # log

    def _with_ref_logprobs(self, trajs: list[Trajectory]) -> list[Trajectory]:
        assert self.ref is not None
        cfg = self.config
        return with_ref_logprobs(
            self.ref, trajs, cfg.max_batch_tokens, shared_prefix=cfg.shared_prefix
        )

    def _optimise(self, trajs: list[Trajectory]) -> dict[str, float]:
        """One optimiser step over every trajectory (gradients accumulated over chunks)."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        total_seqs = len(trajs)
        total_tokens = sum(t.num_generated for t in trajs)
        for agent in dict.fromkeys(t.agent for t in trajs):
            mine = [t for t in trajs if t.agent == agent]
            key = "loss/main" if agent == "main" else "loss/sub"
            for n, loss, st in backward_loss(
                self.policy, mine, self.config, total_seqs=total_seqs, total_tokens=total_tokens
            ):
                sums[key] = sums.get(key, 0.0) + loss * n
                sums[f"_n/{key}"] = sums.get(f"_n/{key}", 0.0) + n
                for k, v in st.items():
                    sums[k] = sums.get(k, 0.0) + v * (n / total_seqs)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip))
        finite = math.isfinite(grad_norm) and all(
            math.isfinite(v) for k, v in sums.items() if k.startswith("loss/")
        )
        if finite:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        out = {k: v / sums[f"_n/{k}"] for k, v in sums.items() if k.startswith("loss/")}
        out.update({k: v for k, v in sums.items() if not k.startswith(("loss/", "_n/"))})
        out.update(grad_norm=grad_norm, skipped=0.0 if finite else 1.0)
        return out

    def _metrics(
        self,
        result: RolloutResult,
        trajs: list[Trajectory],
        stats: list[dict[str, float]],
        seconds: float,
    ) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            return float(np.mean(xs)) if xs else None

        main = [t.reward for t in trajs if t.agent == "main"]
        sub = [t.reward for t in trajs if t.agent != "main"]
        last = stats[-1]
        m: dict[str, Any] = {
            "step": self.step_idx,
            "success_rate": result.success_rate,
            "reward/main/mean": mean(main),
            "reward/sub/mean": mean(sub),
            "loss/main": last.get("loss/main"),
            "loss/sub": last.get("loss/sub"),
            "kl": last.get("kl", 0.0),
            "clip_ratio": last.get("clip_ratio", 0.0),
            "entropy": last.get("entropy"),
            "grad_norm": last["grad_norm"],
            "skipped": sum(s["skipped"] for s in stats),
            "lr": self.scheduler.get_last_lr()[0],
            "invocations/mean": float(np.mean(result.invocations)),
            "tokens_per_s": result.tokens_per_s,
            "perf/tokens_per_s": result.tokens_per_s,
            "perf/step_seconds": seconds,
            "perf/env_share": result.env_seconds / max(result.wall_seconds, 1e-9),
            "episodes": (self.step_idx) * self.config.episodes_per_step,
        }
        return m

    # -------------------------------------------------------------- loop, checkpoints
    def train(self, progress: bool = True) -> list[dict[str, Any]]:
        """Runs the remaining steps; returns their metrics."""
        return train_loop(self, "grpo", progress)

    def save_checkpoint(self) -> Path:
        """Writes ``ckpt-<step>``: policy, reference, optimiser, schedule, step, config."""
        assert self.out_dir is not None
        path = self.out_dir / f"ckpt-{self.step_idx:06d}"
        self.policy.save(path / "policy")
        if self.ref is not None:
            self.ref.save(path / "ref")
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step_idx,
                **rng_state(),
            },
            path / "state.pt",
        )
        (path / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        return path

    @classmethod
    def resume(cls, out_dir: str | Path) -> GRPOTrainer:
        """Continues the run in ``out_dir`` from its latest checkpoint, exactly."""
        ckpt = latest_checkpoint(out_dir)
        config = GRPOConfig(**json.loads((ckpt / "config.json").read_text()))
        trainer = cls(config, out_dir, policy=HFPolicy.load(ckpt / "policy"))
        if config.beta > 0:
            trainer.ref = cls._frozen_copy(HFPolicy.load(ckpt / "ref"))
        state = torch.load(ckpt / "state.pt", weights_only=False)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.step_idx = int(state["step"])
        set_rng_state(state)
        if trainer.writer is not None:
            trainer.writer.truncate(trainer.step_idx)
        return trainer


def latest_checkpoint(out_dir: str | Path) -> Path:
    """The newest ``ckpt-*`` directory in ``out_dir``."""
    ckpts = sorted(Path(out_dir).glob("ckpt-*"))
    if not ckpts:
        raise ValueError(f"no checkpoint (ckpt-*) in {str(out_dir)!r}; nothing to resume")
    return ckpts[-1]
