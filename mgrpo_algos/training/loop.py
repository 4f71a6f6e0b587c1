"""`Learner`, the base of every trainer: models, optimisers, step metrics, checkpoints, the loop.

A trainer (``mgrpo_algos.algorithms``) subclasses :class:`Learner` and writes only its
step (collect -> score -> advantages -> loss -> step -> log).

Reproducibility. A step's queries and sampling noise are pure functions of
``(seed, step)``, so a resumed run repeats the uninterrupted one. With
``deterministic=True`` the learner uses one torch thread and deterministic kernels,
and two runs (resumed or not) are bit-identical. With several threads, torch's
parallel reductions may add in another order from run to run: the runs agree to
float rounding (about 1e-7 relative) at first, and may drift apart as sampling
amplifies the differences.
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos import lora
from mgrpo_algos.buffer import MAIN, RolloutBuffer, Trajectory
from mgrpo_algos.evaluate import EvalResult, evaluate, training_seed
from mgrpo_algos.metrics import MetricsWriter
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.provenance import provenance
from mgrpo_algos.rollout import (
    RolloutConfig,
    RolloutEngine,
    RolloutResult,
    SingleAgentAEC,
)
from mgrpo_algos.training.checkpoints import (
    check_new_run_dir,
    checkpoint_path,
    latest_checkpoint,
    load_policies,
    load_policy_dir,
    load_saved_policies,
    lora_policies,
    rng_state,
    save_lora_checkpoint,
    save_policies,
    set_rng_state,
    write_checkpoint,
)
from mgrpo_algos.training.config import LearnerConfig, config_dict, read_config
from mgrpo_algos.training.scoring import reward_metrics, reward_weights
from mgrpo_algos.training.update import (
    backward_loss,
    frozen_copy,
    make_deterministic,
    make_optimizer,
    with_ref_logprobs,
)
from mgrpo_algos.watch import IdleRoles, output_metrics


def make_env_fn(env: str, env_kwargs: dict[str, Any], *, single: bool) -> Callable[[], Any]:
    """Builds the AEC env, or (``single``) the single-agent view through the engine's shim."""
    env_id = mgrpo_envs.load_env(env)
    if single:
        import gymnasium

        gym_id = {v: k for k, v in mgrpo_envs.registry.gym_ids().items()}[env_id]
        return lambda: SingleAgentAEC(gymnasium.make(gym_id, **env_kwargs).unwrapped)
    return lambda: mgrpo_envs.make(env_id, **env_kwargs)


def env_fn_of(config: LearnerConfig) -> Callable[[], Any]:
    """The env a run of ``config`` trains on: the single-agent view when the config says so
    (`LearnerConfig.single_agent_view`: GRPO's), else the multi-agent AEC env."""
    return make_env_fn(config.env, config.env_kwargs, single=config.single_agent_view)


def step_seeds(seed: int, step: int, n: int) -> list[int]:
    """Env seeds of one step's queries: a pure function of (seed, step), never held out."""
    draws = np.random.default_rng([seed, step]).integers(0, 2**31 - 1, n)
    return [training_seed(int(x)) for x in draws]


class Learner(ABC):
    """The base of the learners: models, optimisers, update, loop and checkpoints.

    A subclass sets ``config_class``, and writes ``trained_groups`` (optimiser name ->
    the roles whose samples it trains on; roles in no group are frozen),
    ``shared_model`` (whether every role plays one model) and ``train_step``.

    Args:
        config: The run's settings.
        out_dir: Where ``config.json``, ``metrics.jsonl`` and ``ckpt-*`` go (None:
            nothing is written). A directory that holds a run is refused.
        policies: Role -> policy to start from instead of ``config.model``.
        resume: Continue the run in ``out_dir`` (use :meth:`resume`).
    """

    config_class: type[LearnerConfig] = LearnerConfig

    def __init__(
        self,
        config: LearnerConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, HFPolicy] | None = None,
        *,
        resume: bool = False,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and not resume:
            check_new_run_dir(self.out_dir)
        if config.deterministic:
            make_deterministic()
        self.env_fn = env_fn_of(config)
        probe = self.env_fn()
        self.roles = list(probe.possible_agents)
        self.groups = self.trained_groups()
        self.owner = {role: name for name, roles in self.groups.items() for role in roles}
        self.names = {role: self.owner.get(role, role) for role in self.roles}
        self.policies = self._initial_policies(probe, policies)
        unknown = sorted(set(config.role_lr) - set(self.groups))
        if unknown:
            raise ValueError(
                f"role_lr names {unknown}, which are not trained models of this run; "
                f"its trained models are {list(self.groups)}"
            )
        strangers = sorted(set(config.role_temperature) - set(self.roles))
        if strangers:
            raise ValueError(
                f"role_temperature names {strangers}, which are not roles of {config.env}; "
                f"its roles are {self.roles}"
            )
        self._check_policies()
        self._setup_optimisers()
        rollout = RolloutConfig(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            role_temperature=dict(config.role_temperature),
        )
        self.engine = RolloutEngine(self.env_fn, self.policies, rollout)
        self.step_idx = 0
        self.writer = MetricsWriter(self.out_dir) if self.out_dir is not None else None
        if self.out_dir is not None:
            run_config = {**config_dict(config), "provenance": provenance()}
            (self.out_dir / "config.json").write_text(json.dumps(run_config, indent=2))

    # -------------------------------------------------------------- what a learner defines
    @abstractmethod
    def trained_groups(self) -> dict[str, list[str]]:
        """Optimiser name -> the roles whose samples it trains on (others are frozen)."""

    @abstractmethod
    def shared_model(self) -> bool:
        """Whether every role plays one model (how ``config.model`` is loaded)."""

    @abstractmethod
    def train_step(self) -> dict[str, Any]:
        """One step: collect -> score -> advantages -> loss -> step; its metrics."""

    def state_dict(self) -> dict[str, Any]:
        """The learner's own state a checkpoint keeps (beyond models and optimisers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (a hook: most keep none)
        """Restores what :meth:`state_dict` returned (by default there is nothing to restore)."""

    # -------------------------------------------------------------- set-up
    def _initial_policies(
        self, probe: Any, given: Mapping[str, HFPolicy] | None
    ) -> dict[str, HFPolicy]:
        """Role -> policy: ``given``, else ``config.model``'s; adapter views when LoRA is on."""
        cfg = self.config
        if cfg.lora_rank > 0:  # one base model, an adapter per trained model / frozen role
            return dict(lora_policies(cfg, probe, self.names, given))
        if given is not None:
            return dict(given)
        return load_policies(
            cfg.model, probe, tiny_size=cfg.tiny_size, seed=cfg.seed, shared=self.shared_model()
        )

    def _check_policies(self) -> None:
        missing = [r for r in self.roles if r not in self.policies]
        if missing:
            raise ValueError(
                f"no policy for role(s) {missing}; expected one for each of {self.roles}"
            )
        for name, roles in self.groups.items():
            if len({id(self.policies[r]) for r in roles}) != 1:
                raise ValueError(f"the roles {roles} trained together as {name!r} need one model")
        models = [{id(self.policies[r]) for r in roles} for roles in self.groups.values()]
        models += [{id(self.policies[r])} for r in self.roles if r not in self.owner]
        if len(set().union(*models)) != len(models):
            raise ValueError(
                "each trained model (and each frozen role) needs its own policy object, so "
                f"that no parameter is shared between agents; got {len(set().union(*models))} "
                f"objects for {len(models)} models"
            )

    def _setup_optimisers(self) -> None:
        for role in self.roles:
            if role not in self.owner:  # frozen (main-only's sub-agents): never updated
                for p in self.policies[role].parameters():
                    p.requires_grad_(False)
        first = {name: self.policies[roles[0]] for name, roles in self.groups.items()}
        # the reference is the initial policy; with LoRA a frozen copy of the starting
        # adapter in the same model (no second base)
        ref_of = lora.initial_reference if self.config.lora_rank > 0 else frozen_copy
        self.refs = {n: ref_of(p) for n, p in first.items()} if self.config.beta > 0 else {}
        self.params, self.optimizers, self.schedulers = {}, {}, {}
        for name, policy in first.items():
            params = [p for p in policy.parameters() if p.requires_grad]
            self.params[name] = params
            self.optimizers[name], self.schedulers[name] = make_optimizer(params, self.config, name)

    # -------------------------------------------------------------- the step's parts
    def collect(self) -> RolloutResult:
        """N queries x K rollouts of this step (seeds and noise fixed by seed and step)."""
        seeds, gen = self.collection(self.step_idx)
        return self.engine.collect(seeds, self.config.group_size, generator=gen)

    def collection(self, step: int) -> tuple[list[int], torch.Generator]:
        """Step ``step``'s env seeds and sampling generator (fixed by the run's seed)."""
        cfg = self.config
        seeds = step_seeds(cfg.seed, step, cfg.queries_per_step)
        return seeds, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """``num_iterations`` steps of every trained model on its roles' samples.

        Returns:
            The last pass's statistics, with ``optim/skipped`` summed over passes.
        """
        buffer = self._with_ref_logprobs(buffer)
        stats: dict[str, float] = {}
        skipped = 0.0
        active = self.active_groups()
        for _ in range(self.config.num_iterations):
            stats = {}
            for name, roles in self.groups.items():
                if name not in active:
                    continue
                samples = {role: buffer.get(role) for role in roles}
                if any(samples.values()):
                    stats.update(self.optimise(name, samples))
            skipped += sum(v for k, v in stats.items() if k.startswith("optim/skipped/"))
        stats["optim/skipped"] = skipped
        return stats

    def active_groups(self) -> list[str]:
        """The optimisers that step this step (all of them; a schedule may say otherwise)."""
        return list(self.groups)

    def _with_ref_logprobs(self, buffer: RolloutBuffer) -> RolloutBuffer:
        if not self.refs:
            return buffer
        cfg = self.config
        out = RolloutBuffer()
        for role in buffer.agents:
            trajs = buffer.get(role)
            if role in self.owner:
                ref = self.refs[self.owner[role]]
                trajs = with_ref_logprobs(
                    ref, trajs, cfg.max_batch_tokens, shared_prefix=cfg.shared_prefix
                )
            out.extend(trajs)
        return out

    def optimise(self, name: str, samples: Mapping[str, list[Trajectory]]) -> dict[str, float]:
        """One step of optimiser ``name`` on the summed losses of its roles.

        arXiv 2511.13288, sec. 3: each agent is optimised separately, with its own
        optimiser; one model playing several roles gets the sum of their losses, each a
        mean over that role's samples. A non-finite loss or gradient skips the step.
        """
        optimizer, scheduler = self.optimizers[name], self.schedulers[name]
        optimizer.zero_grad(set_to_none=True)
        out: dict[str, float] = {}
        for role, trajs in samples.items():
            if trajs:
                out.update(self.backward(role, trajs))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params[name], self.config.grad_clip))
        finite = math.isfinite(grad_norm) and all(
            math.isfinite(v) for k, v in out.items() if k.startswith("loss/")
        )
        if finite:
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        out[f"optim/grad_norm/{name}"] = grad_norm
        out[f"optim/skipped/{name}"] = 0.0 if finite else 1.0
        return out

    def backward(self, role: str, trajs: Sequence[Trajectory]) -> dict[str, float]:
        """Backpropagates ``role``'s loss (mean over its samples) into its policy alone.

        Returns:
            ``loss/<role>``, ``samples/<role>`` and the role's ``clip_ratio``, ``kl``,
            ``entropy`` ... as ``<stat>/<role>``.
        """
        total = len(trajs)
        if not total:
            raise ValueError(f"backward() needs at least one sample of {role!r}, got none")
        chunks = backward_loss(
            self.policies[role],
            trajs,
            self.config,
            total_seqs=total,
            total_tokens=sum(t.num_generated for t in trajs),
        )
        out = {f"loss/{role}": sum(loss * n for n, loss, _ in chunks) / total}
        for n, _, st in chunks:
            for k, v in st.items():
                out[f"{k}/{role}"] = out.get(f"{k}/{role}", 0.0) + v * n / total
        out[f"samples/{role}"] = float(total)
        return out

    def step_metrics(
        self,
        result: RolloutResult,
        scored: Sequence[Trajectory],
        stats: Mapping[str, float],
        seconds: float,
    ) -> dict[str, Any]:
        """The metrics every learner logs (names: docs/training.md, "Metrics")."""
        subs = [r for r in self.roles if r != MAIN]
        m: dict[str, Any] = {
            "step": self.step_idx,
            "episodes": self.step_idx * self.config.episodes_per_step,
            "success_rate": result.success_rate,
        }
        m.update(reward_metrics(scored, self.roles))
        m.update(output_metrics(result.outputs, result.cut, scored, self.roles))
        m["loss/main"] = stats.get(f"loss/{MAIN}")
        m["loss/sub"] = weighted_loss(stats, subs)
        m["optim/lr"] = next(iter(self.schedulers.values())).get_last_lr()[0]
        m.update({k: v for k, v in stats.items() if not k.startswith("optim/skipped/")})
        m["perf/tokens_per_s"] = result.tokens_per_s
        m["perf/step_seconds"] = seconds
        m["perf/env_share"] = result.env_seconds / max(result.wall_seconds, 1e-9)
        return m

    # -------------------------------------------------------------- evaluation, loop
    def eval_policies(self) -> Mapping[str, Any]:
        """What the held-out evaluation plays (a trainer may wrap its policies)."""
        return self.policies

    def evaluate(self, episodes: int | None = None) -> EvalResult:
        """The current policies on the held-out episodes (`mgrpo_algos.evaluate`)."""
        n = episodes if episodes is not None else self.config.eval_episodes
        cfg = self.config
        return evaluate(
            self.env_fn,
            self.eval_policies(),
            n,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            role_temperature=cfg.role_temperature,
            weights=reward_weights(cfg),
            format_reward=cfg.format_reward,
            split=cfg.eval_split,
        )

    def train(
        self,
        progress: bool = True,
        on_step: Callable[[Learner, dict[str, Any]], bool | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Runs the remaining steps; returns their metrics.

        Every ``eval_every`` steps (and at the last) the held-out evaluation adds
        ``eval/*`` to the step's metrics. ``on_step(learner, metrics)`` is called after
        each step, before its metrics are written; it may add keys to them, and
        returns True to end the run after this step (a time budget, say).
        """
        from tqdm.auto import tqdm

        cfg = self.config
        history = []
        bar = tqdm(
            total=cfg.steps, initial=self.step_idx, desc=cfg.algo, disable=not progress, unit="step"
        )
        idle = IdleRoles(self.owner, cfg.max_new_tokens)  # warns about roles that never train
        last = False
        while not last and self.step_idx < cfg.steps:
            metrics = self.train_step()
            idle.observe(metrics)  # logged (the "mgrpo" logger); the bar names the roles
            last = self.step_idx == cfg.steps
            if cfg.eval_every and (self.step_idx % cfg.eval_every == 0 or last):
                metrics.update(eval_metrics(self.evaluate()))
            if on_step is not None and on_step(self, metrics):
                last = True
            history.append(metrics)
            if self.writer is not None:
                self.writer.write(metrics)
            every = cfg.checkpoint_every
            if self.out_dir is not None and ((every and self.step_idx % every == 0) or last):
                self.save_checkpoint()
            bar.update(1)
            untrained = {"untrained": ",".join(sorted(idle.warned))} if idle.warned else {}
            bar.set_postfix(success=f"{metrics['success_rate']:.2f}", **untrained)
        bar.close()
        return history

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Writes ``ckpt-<step>`` atomically: the models (`write_models`), ``state.pt`` and
        ``config.json`` (layout: docs/training.md, "Policy directories")."""
        if self.out_dir is None:
            raise ValueError("save_checkpoint() needs the learner's out_dir, which is None")

        def write(tmp: Path) -> None:
            self.write_models(tmp)
            state = {
                **self.optimizer_states(),
                "step": self.step_idx,
                "learner": self.state_dict(),
                **rng_state(),
            }
            torch.save(state, tmp / "state.pt")
            (tmp / "config.json").write_text(json.dumps(config_dict(self.config), indent=2))

        return write_checkpoint(checkpoint_path(self.out_dir, self.step_idx), write)

    def write_models(self, tmp: Path) -> None:
        """A checkpoint's ``policies/`` (and LoRA's ``base/``) and ``refs/`` (KL references)."""
        save_policies(self.policies, self.names, tmp / "policies")
        if self.config.lora_rank > 0:  # base/ once; refs/<name>/: reference adapters
            save_lora_checkpoint(self.policies, tmp)
        for name, ref in self.refs.items():
            ref.save(tmp / "refs" / name)

    def optimizer_states(self) -> dict[str, Any]:
        """``optimizers`` and ``schedulers``: each trained model's, for ``state.pt``."""
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }

    @classmethod
    def resume(cls, out_dir: str | Path, *, steps: int | None = None, **kwargs: Any) -> Learner:
        """Continues the run in ``out_dir`` from its newest complete checkpoint, exactly.

        Args:
            out_dir: The run directory.
            steps: A new total of steps (to extend a finished run); None keeps the run's.
            **kwargs: Passed to the learner (e.g. an M-GRPO ``judge``, which is code).
        """
        ckpt, config, state = checkpoint_to_resume(out_dir, steps, cls.config_class)
        done = int(state["step"])
        policies = load_saved_policies(ckpt / "policies")
        trainer = cls(config, out_dir, policies=policies, resume=True, **kwargs)
        for name, ref in trainer.refs.items():  # the run's initial policy, not the checkpoint's
            if config.lora_rank > 0:
                lora.load_reference(ref, ckpt / "refs" / name)
            else:
                trainer.refs[name] = frozen_copy(load_policy_dir(ckpt / "refs" / name))
        for name, optimizer in trainer.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            trainer.schedulers[name].load_state_dict(state["schedulers"][name])
        trainer.step_idx = done
        trainer.load_state_dict(state.get("learner", {}))
        set_rng_state(state)
        if trainer.writer is not None:
            trainer.writer.truncate(done)
        return trainer


def checkpoint_to_resume(
    out_dir: str | Path, steps: int | None, config_class: type[LearnerConfig]
) -> tuple[Path, LearnerConfig, dict[str, Any]]:
    """The newest complete checkpoint of ``out_dir``, its config and its ``state.pt``.

    Args:
        out_dir: The run directory.
        steps: A new total of steps (to extend a finished run); None keeps the run's.
        config_class: The config class of the run's trainer.

    Raises:
        ValueError: If ``steps`` is below the steps the checkpoint already made.
    """
    ckpt = latest_checkpoint(out_dir)
    config = read_config(ckpt / "config.json", config_class)
    state = torch.load(ckpt / "state.pt", weights_only=False)
    done = int(state["step"])
    if steps is not None:
        if steps < done:
            raise ValueError(
                f"--steps {steps} is below the {done} steps {str(ckpt)!r} already made; "
                f"pass --steps >= {done} to extend the run"
            )
        config = dataclasses.replace(config, steps=steps)
    return ckpt, config, state


def weighted_loss(stats: Mapping[str, float], roles: Sequence[str]) -> float | None:
    """The roles' losses, averaged with their sample counts as weights (None: none trained)."""
    pairs = [(stats[f"loss/{r}"], stats[f"samples/{r}"]) for r in roles if f"loss/{r}" in stats]
    if not pairs:
        return None
    return sum(loss * n for loss, n in pairs) / sum(n for _, n in pairs)


def eval_metrics(result: EvalResult) -> dict[str, Any]:
    """``eval/*`` metrics of a held-out evaluation."""
    lo, hi = result.ci95
    out = {
        "eval/success_rate": result.success_rate,
        "eval/ci95_low": lo,
        "eval/ci95_high": hi,
        "eval/episodes": result.n,
        "eval/reward_mean": result.reward_mean,
    }
    for role, st in result.sub_calls.items():
        out[f"eval/sub_accuracy/{role}"] = st.get("accuracy")
    return out
