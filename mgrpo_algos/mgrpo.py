"""M-GRPO: one policy per agent, group-relative advantages per agent, aligned sub-agent groups.

"Multi-Agent Deep Research: Training Multi-Agent Systems with M-GRPO" (arXiv
2511.13288, sec. 3: rewards, groups, trajectory alignment, decoupled training).
Choices of ours are marked *ours*. Once per step:

    collect     N queries x K rollouts with the batched engine, one policy per role
    score       main: ``R_M = a1*r_format + a2*r_correct`` (0 if the answer is
                invalid); the main side writes R_M, r_correct and d_k of every rollout
                to the shared store
    sub side    reads them back, scores each sub-agent call
                ``R_S = b1*r_format + b2*r_correct_main + b3*r_expert`` (0 if invalid),
                and aligns each query's calls to ``d * K`` samples (duplicate / drop)
    advantages  main: z-score of R_M over the K rollouts of a query; sub-agent: z-score
                of R_S over the query's aligned samples, per role
    loss, step  ``policy_loss`` per role, one optimiser per trained policy: no
                gradient crosses agents
    log         one JSON line of metrics per step; checkpoints every few steps

Baselines are options of the same learner (``algo``): ``main-only`` freezes the
sub-agent policies (no optimiser: their parameters never change), ``shared`` lets
one model play every role and updates it from every role's samples. ``align="none"``
is the unsynchronised ablation: each step trains the sub-agents on the previous
step's calls (a one-step-stale queue), unaligned.

A non-finite loss or gradient skips that optimiser's step (logged as ``skipped``)
and leaves its weights, its optimiser and its schedule untouched; so does a step
in which a trained policy has no sample at all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch

from mgrpo_algos.buffer import Trajectory
from mgrpo_algos.functional import AlignMode, align_calls, estimate_alignment_width
from mgrpo_algos.grpo import (
    LearnerConfig,
    add_advantages,
    backward_loss,
    frozen_copy,
    latest_checkpoint,
    make_env_fn,
    make_optimizer,
    rng_state,
    set_rng_state,
    step_seeds,
    train_loop,
    validate_learner_config,
    with_ref_logprobs,
)
from mgrpo_algos.metrics import MetricsWriter
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine, RolloutResult
from mgrpo_algos.store import MemoryStore, RolloutReward, SQLiteStore, StatsStore

Algo = Literal["mgrpo", "main-only", "shared"]
Align = Literal["duplicate_drop", "truncate", "fill", "ragged", "none"]
SubGroups = Literal["query", "subtask"]
ALGOS: tuple[str, ...] = get_args(Algo)
ALIGNS: tuple[str, ...] = get_args(Align)
SUB_GROUPS: tuple[str, ...] = get_args(SubGroups)
MAIN = "main"

Judge = Callable[[str, str, dict[str, Any]], float]
"""An expert judge of one sub-agent call: ``(subtask, result, context) -> r_expert``.

``context`` holds ``role``, ``query``, ``rollout``, ``invocation``, ``seed`` (the
episode's env seed) and ``record`` (the call's record from the env's ``infos``).
"""


@dataclass
class MGRPOConfig(LearnerConfig):
    """Settings of an M-GRPO run: those of :class:`~mgrpo_algos.grpo.LearnerConfig`, and

    Attributes:
        algo: ``mgrpo`` (every agent trained, one policy each), ``main-only`` (the
            sub-agent policies frozen) or ``shared`` (one policy plays every role).
        main_weights: ``(a1, a2)`` of ``R_M`` (the paper's: 0.1, 0.9).
        sub_weights: ``(b1, b2, b3)`` of ``R_S`` (the paper's: 0.1, 0.4, 0.5).
        align: ``duplicate_drop`` (the paper's), ``truncate``, ``fill``, ``ragged``
            (no alignment) or ``none`` (unsynchronised: ragged, one step stale).
        align_d: ``d``, samples per rollout; None: estimated per role, as the
            ``align_quantile`` quantile of ``d_k``, from the warm-up batch: the
            first step's batch in which the role was called at all.
        align_quantile: The target ``P(d_k <= d)``.
        sub_groups: What a sub-agent sample's advantage is relative to: ``query``
            (the paper's: all aligned samples of the query, per role) or ``subtask``
            (*ours*: the query's aligned samples whose subtask text is the same,
            compared without case and extra spaces; calls on different subtasks
            then never serve as each other's baseline).
        store_path: None: the rewards pass through memory; else this SQLite file
            (shared with a sub-agent learner in another process).
        store_timeout: Seconds the sub-agent side waits for the main side's rewards.

    The shared settings apply to every agent, each with its own optimiser. ``model``
    is ``tiny`` (fresh tiny models from the env's vocabulary, one per role), a saved
    policy directory (every role starts from a copy of it), or a directory with one
    policy sub-directory per role (``main/``, ``searcher/`` ...: what the SFT warm
    start saves, or an M-GRPO checkpoint's ``policies/``); ``shared`` takes the main
    role's policy from a per-role directory. The env is always the AEC env.
    """

    algo: Algo = "mgrpo"
    main_weights: tuple[float, float] = (0.1, 0.9)
    sub_weights: tuple[float, float, float] = (0.1, 0.4, 0.5)
    align: Align = "duplicate_drop"
    align_d: int | None = None
    align_quantile: float = 0.99
    sub_groups: SubGroups = "query"
    store_path: str | None = None
    store_timeout: float = 60.0

    def __post_init__(self) -> None:
        validate_learner_config(self, {"algo": ALGOS, "align": ALIGNS, "sub_groups": SUB_GROUPS})
        self.main_weights = _weights("main_weights", self.main_weights, 2, "(a1, a2)")
        self.sub_weights = _weights("sub_weights", self.sub_weights, 3, "(b1, b2, b3)")
        d = self.align_d
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise ValueError(f"align_d must be None (estimate it) or an int >= 1, got {d!r}")
        if not 0 < self.align_quantile <= 1:
            raise ValueError(f"align_quantile must be in (0, 1], got {self.align_quantile!r}")
        if not (self.store_timeout >= 0 and math.isfinite(self.store_timeout)):
            raise ValueError(
                f"store_timeout must be a finite number >= 0, got {self.store_timeout}"
            )


def _weights(name: str, value: Any, n: int, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not all(math.isfinite(v) and v >= 0 for v in out):
        raise ValueError(f"{name} must be {n} finite numbers >= 0 {what}, got {value!r}")
    return out


# --------------------------------------------------------------------------- policies
def trained_groups(algo: str, roles: Sequence[str]) -> dict[str, list[str]]:
    """Optimiser name -> the roles whose samples it trains on.

    ``mgrpo``: one optimiser per role; ``main-only``: main's alone (the sub-agents
    are frozen); ``shared``: one optimiser, every role.
    """
    if algo == "mgrpo":
        return {role: [role] for role in roles}
    elif algo == "main-only":
        return {MAIN: [MAIN]}
    elif algo == "shared":
        return {"shared": list(roles)}
    else:
        raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")


def role_directories(path: Path, roles: Sequence[str]) -> dict[str, Path]:
    """Where each role's policy is saved under ``path`` (see ``MGRPOConfig.model``)."""
    if (path / "roles.json").is_file():  # an M-GRPO checkpoint's policies/
        names = json.loads((path / "roles.json").read_text())
        return {role: path / names[role] for role in roles}
    if (path / "config.json").is_file():  # one policy for every role
        return {role: path for role in roles}
    missing = [role for role in roles if not (path / role / "config.json").is_file()]
    if missing:
        raise ValueError(
            f"model {str(path)!r} must be a saved policy directory or hold one per role "
            f"({', '.join(f'{r}/' for r in roles)}); missing: {missing}"
        )
    return {role: path / role for role in roles}


def load_policies(config: MGRPOConfig, env: Any) -> dict[str, HFPolicy]:
    """Role -> policy for ``config.model``; ``shared`` maps every role to one object."""
    roles = list(env.possible_agents)
    shared = config.algo == "shared"
    if config.model == "tiny":
        if shared:
            one = HFPolicy.tiny(env, size=config.tiny_size, seed=config.seed)
            return {role: one for role in roles}
        return {
            role: HFPolicy.tiny(env, size=config.tiny_size, seed=config.seed + i)
            for i, role in enumerate(roles)
        }
    path = Path(config.model)
    if not path.is_dir():
        raise ValueError(
            f"model must be 'tiny' or an existing policy directory, got {config.model!r}"
        )
    dirs = role_directories(path, roles)
    if shared:
        one = HFPolicy.load(dirs[MAIN])
        return {role: one for role in roles}
    return {role: HFPolicy.load(dirs[role]) for role in roles}


def _check_policies(policies: Mapping[str, HFPolicy], roles: Sequence[str], algo: str) -> None:
    missing = [r for r in roles if r not in policies]
    if missing:
        raise ValueError(f"no policy for role(s) {missing}; expected one for each of {roles}")
    distinct = len({id(policies[r]) for r in roles})
    if algo == "shared" and distinct != 1:
        raise ValueError(f"algo='shared' needs one policy object for every role, got {distinct}")
    if algo != "shared" and distinct != len(roles):
        raise ValueError(
            f"algo={algo!r} needs a separate policy object per role (no parameter may be "
            f"shared between agents), got {distinct} objects for {len(roles)} roles"
        )


# --------------------------------------------------------------------------- score
def main_reward(outcome: Mapping[str, Any], weights: Sequence[float]) -> float:
    """``R_M``: 0 if the final output is invalid, else ``a1*r_format + a2*r_correct``.

    arXiv 2511.13288, sec. 3 (rewards), with (a1, a2) = (0.1, 0.9) there. *Ours*: an
    env that reports no ``r_format`` counts a valid final output as well-formed.
    """
    if not outcome["format_ok"]:
        return 0.0
    a1, a2 = weights
    r_format = float(outcome.get("r_format", 1.0))
    return a1 * r_format + a2 * float(outcome["correct"])


def sub_reward(
    record: Mapping[str, Any], correct_main: float, expert: float, weights: Sequence[float]
) -> float:
    """``R_S`` of one call: 0 if invalid, else ``b1*r_format + b2*r_correct_main + b3*r_expert``.

    arXiv 2511.13288, sec. 3 (rewards), with (b1, b2, b3) = (0.1, 0.4, 0.5) there:
    ``r_correct_main`` is the main agent's correctness, copied to every call of the
    rollout.
    """
    if not record["format_ok"]:
        return 0.0
    b1, b2, b3 = weights
    r_format = float(record.get("r_format", 1.0))
    return b1 * r_format + b2 * float(correct_main) + b3 * float(expert)


def score_main(
    result: RolloutResult, weights: Sequence[float]
) -> tuple[list[Trajectory], list[RolloutReward]]:
    """Main's trajectories with ``R_M``, and the row of every rollout for the store."""
    rows, reward_of = [], {}
    for ep in result.episodes:
        outcome = ep.infos[MAIN]["outcome"]
        reward = main_reward(outcome, weights)
        reward_of[(ep.group_id, ep.rollout_id)] = reward
        rows.append(
            RolloutReward(
                ep.group_id,
                ep.rollout_id,
                reward,
                float(outcome["correct"]),
                int(outcome["num_invocations"]),
            )
        )
    trajs = [
        t.replace(reward=reward_of[(t.group_id, t.rollout_id)])
        for t in result.trajectories
        if t.agent == MAIN
    ]
    return trajs, rows


def score_sub(
    result: RolloutResult,
    rows: Sequence[RolloutReward],
    weights: Sequence[float],
    judge: Judge | None = None,
) -> list[Trajectory]:
    """Every sub-agent call's trajectory with ``R_S``, main's correctness read from ``rows``.

    ``r_expert`` is the env's verifiable ``expert`` score of the call, or
    ``judge(subtask, result, context)`` when a judge is given (the paper uses an LLM
    judge; *ours*: every task knows the facts its subtasks ask for, so the default is
    a verifiable check, and any callable may stand in for a judge).
    """
    correct = {(r.query, r.rollout): r.correct for r in rows}
    episodes = {(e.group_id, e.rollout_id): e for e in result.episodes}
    out = []
    for t in result.trajectories:
        if t.agent == MAIN:
            continue
        key = (t.group_id, t.rollout_id)
        record = episodes[key].infos[t.agent]["calls"][t.invocation]
        expert = float(record.get("expert", 0.0))
        if judge is not None and record["format_ok"]:
            context = {
                "role": t.agent,
                "query": t.group_id,
                "rollout": t.rollout_id,
                "invocation": t.invocation,
                "seed": episodes[key].seed,
                "record": record,
            }
            expert = float(judge(record["subtask"], record["result"], context))
            if not math.isfinite(expert):
                raise ValueError(f"the judge must return a finite number, got {expert!r}")
        out.append(t.replace(reward=sub_reward(record, correct[key], expert, weights)))
    return out


# --------------------------------------------------------------------------- align
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


def subtask_key(subtask: str) -> str:
    """A subtask's text as groups compare it: lower-cased, runs of spaces collapsed."""
    return " ".join(str(subtask).lower().split())


def subtask_keys(result: RolloutResult, trajs: Sequence[Trajectory]) -> list[str]:
    """The ``subtask_key`` of each sub-agent call."""
    infos = {(e.group_id, e.rollout_id): e.infos for e in result.episodes}
    records = (infos[(t.group_id, t.rollout_id)][t.agent]["calls"][t.invocation] for t in trajs)
    return [subtask_key(r["subtask"]) for r in records]


def all_equal_groups(trajs: Sequence[Trajectory]) -> int:
    """Queries whose rewards are all equal (zero advantage: nothing to learn from them)."""
    rewards: dict[int, list[float]] = defaultdict(list)
    for t in trajs:
        rewards[t.group_id].append(t.reward)
    return sum(max(r) - min(r) < 1e-12 for r in rewards.values())


class SubSide(NamedTuple):
    """The sub-agent side's work of one step.

    Attributes:
        samples: What the sub-agents train on now, with advantages.
        scored: Every call of this step with its ``R_S`` (before alignment).
        rows: Main's rows of this step, as read from the store.
        metrics: Alignment statistics, namespaced per role.
    """

    samples: list[Trajectory]
    scored: list[Trajectory]
    rows: list[RolloutReward]
    metrics: dict[str, Any]


def open_store(config: MGRPOConfig) -> StatsStore:
    return MemoryStore() if config.store_path is None else SQLiteStore(config.store_path)


# --------------------------------------------------------------------------- learner
class MGRPOTrainer:
    """Trains a main agent and its sub-agents with M-GRPO (or a baseline, see ``algo``).

    Args:
        config: The run's settings.
        out_dir: Where ``metrics.jsonl`` and ``ckpt-*`` go (None: nothing written).
        policies: Role -> policy to start from instead of ``config.model``; separate
            objects per role, or one object for every role under ``algo="shared"``.
        store: The statistics store the two sides exchange rewards through (default:
            ``config.store_path``'s SQLite file, or memory).
        judge: The expert judge of sub-agent calls (default: the env's verifiable score).
    """

    def __init__(
        self,
        config: MGRPOConfig,
        out_dir: str | Path | None = None,
        policies: Mapping[str, HFPolicy] | None = None,
        store: StatsStore | None = None,
        judge: Judge | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.env_fn = make_env_fn(config.env, config.env_kwargs, "shared")  # the AEC env
        probe = self.env_fn()
        self.roles = list(probe.possible_agents)
        if MAIN not in self.roles:
            raise ValueError(f"the env's agents must include {MAIN!r}, got {self.roles}")
        self.sub_roles = [r for r in self.roles if r != MAIN]
        self.policies = dict(policies) if policies is not None else load_policies(config, probe)
        _check_policies(self.policies, self.roles, config.algo)
        self.groups = trained_groups(config.algo, self.roles)
        self.owner = {role: name for name, roles in self.groups.items() for role in roles}
        for role in self.roles:
            if role not in self.owner:  # main-only: a frozen sub-agent, never updated
                for p in self.policies[role].parameters():
                    p.requires_grad_(False)
        self.refs = {
            name: frozen_copy(self.policies[roles[0]])
            for name, roles in self.groups.items()
            if config.beta > 0
        }
        self.params, self.optimizers, self.schedulers = {}, {}, {}
        for name, roles in self.groups.items():
            params = [p for p in self.policies[roles[0]].parameters() if p.requires_grad]
            self.params[name] = params
            self.optimizers[name], self.schedulers[name] = make_optimizer(params, config)
        rollout = RolloutConfig(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature
        )
        self.engine = RolloutEngine(self.env_fn, self.policies, rollout)
        self.store = store if store is not None else open_store(config)
        self.judge = judge
        self.align_width: dict[str, int] = {}
        if config.align_d is not None:
            self.align_width = {role: config.align_d for role in self.sub_roles}
        self.stale: list[Trajectory] = []  # align="none": last step's sub-agent samples
        self.step_idx = 0
        self.writer = MetricsWriter(self.out_dir) if self.out_dir is not None else None

    # -------------------------------------------------------------- one step
    def train_step(self) -> dict[str, Any]:
        """collect -> score -> store -> align -> advantages -> loss -> step -> log."""
        cfg = self.config
        t0 = time.perf_counter()
        seeds = step_seeds(cfg.seed, self.step_idx, cfg.queries_per_step)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step_idx)
        result = self.engine.collect(seeds, cfg.group_size, generator=gen)  # collect
        main = self.main_side(result)  # score, write to the store, advantages
        sub = self.sub_side(result)  # read, score, align, advantages
        samples = {MAIN: main}
        for role in self.sub_roles:
            samples[role] = [t for t in sub.samples if t.agent == role]
        samples = self._with_ref_logprobs(samples)
        stats = [self._update(samples) for _ in range(cfg.num_iterations)]  # loss, step
        self.step_idx += 1
        return self._metrics(result, main, sub, stats, time.perf_counter() - t0)  # log

    def main_side(self, result: RolloutResult) -> list[Trajectory]:
        """Scores main's rollouts, publishes them to the store, z-scores them per query."""
        trajs, rows = score_main(result, self.config.main_weights)
        # decoupled training (arXiv 2511.13288, sec. 3): main writes its rewards (and
        # the correctness and d_k the sub-agent side needs) to the shared store
        self.store.put_rewards(self.step_idx, rows)
        # group advantage (sec. 3): z-score of R_M over the K rollouts of a query
        # (population std; zero std gives zero advantage)
        return add_advantages(trajs, self.config.scale_rewards)

    def sub_side(self, result: RolloutResult) -> SubSide:
        """Reads main's rewards, scores and aligns the sub-agent calls, z-scores them.

        Under ``align="none"`` the samples to train on are the previous step's.
        """
        cfg = self.config
        rows = self.store.get_rewards(self.step_idx, timeout=cfg.store_timeout)
        self.store.prune(before=self.step_idx)
        scored = score_sub(result, rows, cfg.sub_weights, self.judge)
        rollouts = [(r.query, r.rollout) for r in rows]
        mode = "ragged" if cfg.align == "none" else cfg.align
        gen = align_generator(cfg.seed, self.step_idx)
        samples: list[Trajectory] = []
        metrics: dict[str, Any] = {}
        for role in self.sub_roles:
            mine = [t for t in scored if t.agent == role]
            if role not in self.align_width and mine:
                # the warm-up batch: the first step in which the role was called at all
                counts = _counts(mine, rollouts)
                self.align_width[role] = estimate_alignment_width(counts, cfg.align_quantile)
            d = self.align_width.get(role, 1)  # with no call yet, d aligns nothing
            # trajectory alignment (sec. 3.3): d samples per rollout with calls
            aligned, st = align_samples(mine, rollouts, d, mode, gen)
            # group advantage (sec. 3): z-score of R_S over the query's aligned samples,
            # duplicates included, pooled across its rollouts, per role (*ours*, with
            # sub_groups="subtask": over those of them on the same subtask)
            keys = subtask_keys(result, aligned) if cfg.sub_groups == "subtask" else None
            samples += add_advantages(aligned, cfg.scale_rewards, keys)
            metrics.update({f"align/{k}/{role}": v for k, v in st.items()})
            metrics[f"align/d/{role}"] = self.align_width.get(role)
            metrics[f"align/samples/{role}"] = len(aligned)
            metrics[f"groups/all_equal/{role}"] = all_equal_groups(aligned)
        if cfg.align == "none":  # unsynchronised: train on last step's samples
            samples, self.stale = self.stale, samples
        return SubSide(samples, scored, rows, metrics)

    def _with_ref_logprobs(
        self, samples: dict[str, list[Trajectory]]
    ) -> dict[str, list[Trajectory]]:
        if self.config.beta == 0:
            return samples
        return {
            role: with_ref_logprobs(
                self.refs[self.owner[role]],
                trajs,
                self.config.max_batch_tokens,
                shared_prefix=self.config.shared_prefix,
            )
            if role in self.owner
            else trajs
            for role, trajs in samples.items()
        }

    def _update(self, samples: Mapping[str, list[Trajectory]]) -> dict[str, float]:
        """One step of every optimiser that has samples (frozen roles have none)."""
        out: dict[str, float] = {}
        for name, roles in self.groups.items():
            mine = {role: samples.get(role, []) for role in roles}
            if any(mine.values()):
                out.update(self._optimise(name, mine))
        return out

    def _optimise(self, name: str, samples: Mapping[str, list[Trajectory]]) -> dict[str, float]:
        """One step of optimiser ``name`` on the summed losses of its roles.

        arXiv 2511.13288, sec. 3: each agent is optimised separately, with its own
        optimiser; under ``shared`` the one model's gradient is the sum of every
        role's loss gradient, each role's loss a mean over that role's samples.
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
        out[f"grad_norm/{name}"] = grad_norm
        out[f"skipped/{name}"] = 0.0 if finite else 1.0
        return out

    def backward(self, role: str, trajs: Sequence[Trajectory]) -> dict[str, float]:
        """Backpropagates ``role``'s loss (mean over its samples) into its policy alone.

        Returns:
            ``loss/<role>`` and the role's ``clip_ratio``, ``kl``, ``entropy`` ...
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

    def _metrics(
        self,
        result: RolloutResult,
        main: list[Trajectory],
        sub: SubSide,
        stats: list[dict[str, float]],
        seconds: float,
    ) -> dict[str, Any]:
        last = stats[-1]
        dk = np.array([r.num_invocations for r in sub.rows], dtype=np.float64)
        sub_rewards = [t.reward for t in sub.scored]
        m: dict[str, Any] = {
            "step": self.step_idx,
            "success_rate": result.success_rate,
            "reward/main/mean": float(np.mean([t.reward for t in main])) if main else None,
            "reward/sub/mean": float(np.mean(sub_rewards)) if sub_rewards else None,
            "loss/main": last.get(f"loss/{MAIN}"),
            "loss/sub": _weighted_loss(last, self.sub_roles),
            "skipped": sum(v for s in stats for k, v in s.items() if k.startswith("skipped/")),
            "lr": next(iter(self.schedulers.values())).get_last_lr()[0],
            "dk/mean": float(dk.mean()),
            "dk/max": int(dk.max()),
            "dk/zero_rollouts": int((dk == 0).sum()),
            "groups/all_equal/main": all_equal_groups(main),
            "tokens_per_s": result.tokens_per_s,
            "perf/tokens_per_s": result.tokens_per_s,
            "perf/step_seconds": seconds,
            "perf/env_share": result.env_seconds / max(result.wall_seconds, 1e-9),
            "episodes": self.step_idx * self.config.episodes_per_step,
        }
        for role in self.sub_roles:
            mine = [t.reward for t in sub.scored if t.agent == role]
            m[f"reward/{role}/mean"] = float(np.mean(mine)) if mine else None
        m.update(sub.metrics)
        m.update({k: v for k, v in last.items() if not k.startswith("skipped/")})
        return m

    # -------------------------------------------------------------- loop, checkpoints
    def train(self, progress: bool = True) -> list[dict[str, Any]]:
        """Runs the remaining steps; returns their metrics."""
        return train_loop(self, self.config.algo, progress)

    def save_checkpoint(self) -> Path:
        """Writes ``ckpt-<step>``: policies, references, optimisers, schedules, queue, config."""
        assert self.out_dir is not None
        path = self.out_dir / f"ckpt-{self.step_idx:06d}"
        names = {role: self.owner.get(role, role) for role in self.roles}
        for name, role in {name: role for role, name in names.items()}.items():
            self.policies[role].save(path / "policies" / name)
        (path / "policies" / "roles.json").write_text(json.dumps(names, indent=2))
        for name, ref in self.refs.items():
            ref.save(path / "refs" / name)
        state = {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "step": self.step_idx,
            "align_width": dict(self.align_width),
            "stale": list(self.stale),
            **rng_state(),
        }
        torch.save(state, path / "state.pt")
        (path / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        return path

    @classmethod
    def resume(
        cls, out_dir: str | Path, store: StatsStore | None = None, judge: Judge | None = None
    ) -> MGRPOTrainer:
        """Continues the run in ``out_dir`` from its latest checkpoint, exactly.

        A judge is code, not state: pass the run's judge again.
        """
        ckpt = latest_checkpoint(out_dir)
        config, policies = load_checkpoint(ckpt)
        trainer = cls(config, out_dir, policies=policies, store=store, judge=judge)
        trainer.refs = {
            name: frozen_copy(HFPolicy.load(ckpt / "refs" / name)) for name in trainer.refs
        }
        state = torch.load(ckpt / "state.pt", weights_only=False)
        for name, optimizer in trainer.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            trainer.schedulers[name].load_state_dict(state["schedulers"][name])
        trainer.step_idx = int(state["step"])
        trainer.align_width = dict(state["align_width"])
        trainer.stale = list(state["stale"])
        set_rng_state(state)
        if trainer.writer is not None:
            trainer.writer.truncate(trainer.step_idx)
        return trainer


def _counts(trajs: Sequence[Trajectory], rollouts: Sequence[tuple[int, int]]) -> list[int]:
    """``d_k`` of one role in every rollout."""
    per = {key: 0 for key in rollouts}
    for t in trajs:
        per[(t.group_id, t.rollout_id)] += 1
    return list(per.values())


def _weighted_loss(stats: Mapping[str, float], roles: Sequence[str]) -> float | None:
    """The sub-agent roles' losses, averaged with their sample counts as weights."""
    pairs = [(stats[f"loss/{r}"], stats[f"samples/{r}"]) for r in roles if f"loss/{r}" in stats]
    if not pairs:
        return None
    return sum(loss * n for loss, n in pairs) / sum(n for _, n in pairs)


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an M-GRPO checkpoint (``ckpt-*`` with ``policies/roles.json``)."""
    return (Path(path) / "policies" / "roles.json").is_file()


def load_checkpoint(ckpt: str | Path) -> tuple[MGRPOConfig, dict[str, HFPolicy]]:
    """The config and the role -> policy map of an M-GRPO checkpoint (shared policies tied)."""
    ckpt = Path(ckpt)
    config = MGRPOConfig(**json.loads((ckpt / "config.json").read_text()))
    names = json.loads((ckpt / "policies" / "roles.json").read_text())
    loaded = {name: HFPolicy.load(ckpt / "policies" / name) for name in set(names.values())}
    return config, {role: loaded[name] for role, name in names.items()}
