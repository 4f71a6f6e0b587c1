"""Coordination: M-GRPO vs main-only vs single-agent GRPO, per task, regime and seed.

The comparison of arXiv 2511.13288 (sec. 4) at tiny scale, on any built-in task
(``--env research_v0|webwalk_v0|ledger_v0``). Every arm starts from an SFT warm
start on the scripted expert's demonstrations and trains for the same number of
environment episodes (steps x queries x group):

    mgrpo      ``MGRPOTrainer(algo="mgrpo")``: main and the sub-agent each trained
    main-only  ``MGRPOTrainer(algo="main-only")``: the sub-agent frozen at its warm start
    single     ``GRPOTrainer``: one policy with every tool on the single-agent view
    shared     (only with ``--arms``) ``MGRPOTrainer(algo="shared")``: one model, every role
    mgrpo-subtask    (only with ``--arms``) M-GRPO with sub-agent groups per subtask
    mgrpo-alternate  (only with ``--arms``) M-GRPO with ``schedule="alternate:N"``
                     (``--alternate N``, default 6)
    no-sync          (only with ``--arms``) M-GRPO with ``align="none"`` (unsynchronised)

Regimes: ``saturated`` (the sub-agents sample at temperature 1) and ``improvable``
(a sub-agent handicap, the same for every multi-agent arm; ``HANDICAPS`` lists the
mechanisms, today ``--sub-temperature T``: the sub-agents sample at T in training,
evaluation and the diagnosis; ``--regime improvable`` alone takes T = 1.5). The
single arm has no sub-agent and runs in the saturated regime only.

Warm starts (same tiny size, SFT settings and expert episodes for each): ``multi``
(one policy per role of the AEC env, saved as ``multi/<role>/``; the multi-agent
arms), ``single`` (one policy on the single-agent view's demonstrations) and
``shared`` (one policy on every role's demonstrations). They are trained once per
task and cached in ``OUT/warm_start/<env>-<task>/<kind>/``, each with the stamp it
was built under (``stamp.json``: env and its arguments, the SFT settings, the
package versions and the library's code version); a cached one is reused only when
its stamp is the one this run would write, and ``--no-cache`` retrains them all.
Warm starts read from ``--warm-start-dir`` are used as they are (missing ones are
trained there; one built for another env is refused).

Evaluation: :func:`mgrpo_algos.evaluate.evaluate` on the held-out env seeds (never
demonstrations, never training queries), sampling at temperature 1 (sub-agents at
the regime's temperature) with the same generator seed for every arm and seed,
before training (once per warm start), every ``--eval-every`` steps, and at the
end; success rates with 95% Wilson intervals. Training seed k draws the same
training queries in every arm.

Results are cells (``coordination_cells.py``): each (task, regime, arm, seed) run is
written on completion to ``--cells`` (default ``docs/results/coordination/cells/``,
``OUT/cells/`` with ``--quick``) as ``<env>-<task>-<regime>-<arm>-s<seed>.json``;
a rerun skips the cells whose file holds the same settings key. Each run's metrics
go to ``OUT/runs/<cell>/metrics.jsonl``. At the end the summary (``summary.md`` and
one PNG per task and regime, next to the cells directory) is rebuilt from every
cell there; ``--summary`` rebuilds it alone, with no training.

    python benchmarks/coordination.py                               # full: hours on 2 cores
    python benchmarks/coordination.py --preset cpu-small --jobs 2   # under an hour, 2 cores
    python benchmarks/coordination.py --env ledger_v0 --regime improvable --diagnose
    python benchmarks/coordination.py --quick --env webwalk_v0      # under a minute
    python benchmarks/coordination.py --summary [--cells DIR]       # tables and PNGs only

``--diagnose-only`` measures a regime's preconditions on the held-out block with no
RL; ``--calibrate`` measures its learning signal on ``CALIBRATION_QUERIES`` queries
outside that block (to choose a regime by, before its one held-out diagnosis).
``--sft-sub-epochs E`` trains each sub-agent's copy E more epochs on its own calls,
continuing the saved warm start of the same settings.

``--jobs N`` runs N (arm, seed) runs (and warm starts) at once in spawned processes,
each with ``--threads`` torch threads (default 1). The last line of output is one
JSON object: ``success`` and ``ci95`` per arm and seed, the mean and the pooled
interval per arm, the cells written and skipped, the machine and the provenance
(package versions, code version).

Every evaluation record in a cell is ``EvalResult.to_dict()`` (plus ``step``, and
``roles``/``signal`` with ``--diagnose``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import inspect
import json
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.buffer import subtask_key
from mgrpo_algos.demo import cache_usable, read_stamp, stamp_difference, write_stamp
from mgrpo_algos.evaluate import eval_seeds, evaluate
from mgrpo_algos.metrics import emit, format_rate, machine
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.provenance import cache_stamp, provenance
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine
from mgrpo_algos.sft import (
    SFTConfig,
    collect_demonstrations,
    recipe,
    tiny_policies,
    train_sft,
    warm_start,
)
from mgrpo_algos.training.loop import Learner, make_env_fn
from mgrpo_algos.training.scoring import reward_weights, score_main, score_sub

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper module beside this file
import coordination_cells as cells  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS_CELLS = REPO / "docs" / "results" / "coordination" / "cells"
SIGNAL_SAMPLING_SEED = 0  # the learning-signal probe's generator (evaluate's default seed)
ARMS = cells.ARMS
ARM_OPTIONS: dict[str, dict[str, Any]] = {
    "mgrpo": {"algo": "mgrpo"},
    "main-only": {"algo": "main-only"},
    "shared": {"algo": "shared"},
    "mgrpo-subtask": {"algo": "mgrpo", "sub_groups": "subtask"},
    "mgrpo-alternate": {"algo": "mgrpo"},  # schedule alternate:N, N from the settings
    "no-sync": {"algo": "mgrpo", "align": "none"},
}
"""The MGRPOConfig options of each multi-agent arm (``single`` is GRPOTrainer)."""
WARM_START_OF = {
    "mgrpo": "multi",
    "main-only": "multi",
    "single": "single",
    "shared": "shared",
    "mgrpo-subtask": "multi",
    "mgrpo-alternate": "multi",
    "no-sync": "multi",
}
HANDICAPS: dict[str, float] = {"sub_temperature": 1.0, "sub_give_up": 0.0}
"""The sub-agent handicaps (Settings fields) and each one's value in the saturated regime."""
IMPROVABLE: dict[str, float] = {"sub_temperature": 1.5}
"""The handicap ``--regime improvable`` applies when none is given."""
DIAGNOSIS_FIELDS = frozenset(
    "env difficulty arithmetic doc_ref env_kwargs handicap size sub_temperature sub_give_up "
    "sft_episodes sft_epochs sft_copy_steps sft_lookup_steps sft_shared sft_rehearsal "
    "sft_copy_digits sft_context_weight sft_sub_epochs sft_sub_lr max_new_tokens eval_episodes "
    "warm_start_dir".split()
)
"""Cell-key settings that a warm start and its held-out diagnosis depend on."""
ENV_OPTIONS = {"arithmetic": "--arithmetic", "doc_ref": "--doc-ref"}
"""Settings that are env arguments some tasks lack, and their command-line flags."""
Reuse = Literal["matching", "any", "never"]
"""Which cached warm starts to use: those with this run's stamp, any that is there, none."""


@dataclass(frozen=True)
class Settings:
    """What one benchmark run does (a preset, with command-line overrides).

    Attributes:
        env: The task, one of ``mgrpo_envs.list_envs()``.
        difficulty: The env's ``difficulty``.
        arithmetic: The env's ``arithmetic`` (whether questions that need the
            calculator are drawn; research_v0 and webwalk_v0); None keeps the
            difficulty's default.
        size: Tiny model size of every warm start.
        sft_episodes: Expert episodes each warm start is trained on.
        sft_epochs: Passes over them.
        sft_copy_steps: Steps of synthetic copying before the demonstrations (the
            rest of the SFT recipe is ``mgrpo_algos.sft.RECIPE``).
        sft_lookup_steps: Steps of synthetic lookup, interleaved with the copying.
        sft_shared: Train the ``multi`` warm start as one model on every role's
            demonstrations and give each role its own copy of it (else one model
            per role, each on its own role's demonstrations).
        steps: RL steps of every arm.
        queries: Queries per step.
        group: Rollouts per query.
        lr: RL learning rate (of main, and of every role in the shared and single arms).
        sub_lr: The sub-agents' RL learning rate in the multi-model arms (None: lr);
            main-only keeps them frozen whatever it is.
        loss: RL ``loss_type``.
        alternate: N of the ``mgrpo-alternate`` arm's ``schedule="alternate:N"``.
        sub_groups: M-GRPO's ``sub_groups`` (``query``: the paper's sub-agent groups;
            ``subtask``: the query's calls on the same subtask).
        max_new_tokens: Tokens per agent turn (training and evaluation).
        eval_episodes: Held-out episodes per evaluation.
        eval_every: Steps between evaluations during training (0: start and end only).
        seeds: Training seeds, each run once per arm.
        arms: Arms to run (``mgrpo``, ``main-only``, ``single``, ``shared``).
        diagnose: Also evaluate multi-role policies with the sub-agents, then main,
            played by the scripted expert (which role limits success).
        doc_ref: research_v0's ``doc_ref`` (``id``: visit by document id; ``title``:
            by title, which a tiny searcher copies far more reliably).
        sub_temperature: The sub-agents' sampling temperature in training, evaluation
            and the diagnosis, the same for every multi-agent arm: 1 is the
            "saturated" regime; above 1 an "improvable sub-agent" regime whose calls
            fail more often and whose groups differ more (docs/coordination.md).
            A handicap (``HANDICAPS``).
        sub_give_up: Share of the sub-agents' demonstrated calls that give up and
            return ``unknown`` in the multi-role warm starts' SFT
            (``SFTConfig.sub_give_up``): 0 is the saturated regime; above 0 an
            "improvable sub-agent" regime whose sub-agents learned to give up on
            some calls (noisier demonstrations). A handicap (``HANDICAPS``).
        sft_rehearsal: ``SFTConfig.rehearsal`` of every warm start.
        sft_copy_digits: ``SFTConfig.copy_digits`` of every warm start.
        sft_context_weight: ``SFTConfig.context_weight`` of every warm start (None: the
            recipe's 1, the context's language-modelling loss; 0 fits only the
            agents' own tokens, which ledger_v0's main needs to learn to copy the
            analyst's figures: docs/coordination.md).
        episode_turns: The env's ``episode_turns``, the budget of agent turns per
            episode (None: the difficulty's). ``--quick`` shortens it: its untrained
            models use every turn they are given.
        sft_sub_epochs: A longer SFT budget for the sub-agents: after the warm start's
            SFT, the model that plays each sub-agent trains this many more epochs on
            that role's demonstrated calls alone (the same demonstrations; in the
            ``multi`` warm start each role has its own copy by then, so main keeps
            its weights). 0: none.
        sft_sub_lr: The peak learning rate of those epochs (cosine, as the recipe's).
    """

    env: str = "research_v0"
    difficulty: str = "medium"
    arithmetic: bool | None = None
    size: str = "small"
    sft_episodes: int = 2000
    sft_epochs: int = 3
    sft_copy_steps: int = 400
    sft_lookup_steps: int = 0
    sft_shared: bool = True
    steps: int = 30
    queries: int = 8
    group: int = 8
    lr: float = 1e-4
    sub_lr: float | None = None
    loss: str = "dapo"
    sub_groups: str = "query"
    alternate: int = 6
    max_new_tokens: int = 40
    eval_episodes: int = 200
    eval_every: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ("mgrpo", "main-only", "single")
    diagnose: bool = False
    doc_ref: str = "id"
    sub_temperature: float = 1.0
    sub_give_up: float = 0.0
    sft_rehearsal: float = 0.0
    sft_copy_digits: float = 0.0
    sft_context_weight: float | None = None
    episode_turns: int | None = None
    sft_sub_epochs: int = 0
    sft_sub_lr: float = 5e-4

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be some of {list(ARMS)}, got {list(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        for name in ("sft_episodes", "sft_epochs", "steps", "queries", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.sub_temperature > 0:
            raise ValueError(f"sub_temperature must be > 0, got {self.sub_temperature}")
        if self.sft_context_weight is not None and not self.sft_context_weight >= 0:
            raise ValueError(f"sft_context_weight must be >= 0, got {self.sft_context_weight}")
        if self.sft_sub_epochs < 0 or not self.sft_sub_lr > 0:
            raise ValueError(
                f"sft_sub_epochs must be >= 0 and sft_sub_lr > 0, got {self.sft_sub_epochs}, "
                f"{self.sft_sub_lr}"
            )
        if self.episode_turns is not None and self.episode_turns < 1:
            raise ValueError(f"episode_turns must be >= 1, got {self.episode_turns}")
        if not 0 <= self.sub_give_up < 1:
            raise ValueError(f"sub_give_up must be in [0, 1), got {self.sub_give_up}")
        if self.handicap and "single" in self.arms:
            raise ValueError(
                f"{', '.join(self.handicap)} applies to sub-agents, which the single arm has "
                "none of; run the single arm in the saturated regime"
            )
        check_env_options(self)
        if self.group < 2 or self.eval_every < 0:
            raise ValueError(
                f"group must be >= 2 and eval_every >= 0, got {self.group}, {self.eval_every}"
            )

    @property
    def handicap(self) -> dict[str, float]:
        """The sub-agent handicaps that are on (empty in the saturated regime)."""
        return {k: getattr(self, k) for k, off in HANDICAPS.items() if getattr(self, k) != off}

    @property
    def warm_start_suffix(self) -> str:
        """Tells apart warm starts whose SFT differs from the default recipe's.

        ``+give_up=p`` (the handicap ``sub_give_up``), ``+separate`` (one model per
        role, ``sft_shared=False``), ``+cw=w`` (``sft_context_weight``), ``+sub=e@lr``
        (``sft_sub_epochs`` at ``sft_sub_lr``).
        """
        out = f"+give_up={self.sub_give_up:g}" if self.sub_give_up else ""
        out += "" if self.sft_shared else "+separate"
        if self.sft_context_weight is not None:
            out += f"+cw={self.sft_context_weight:g}"
        if self.sft_sub_epochs:
            out += f"+sub={self.sft_sub_epochs}@{self.sft_sub_lr:g}"
        return out

    @property
    def regime(self) -> str:
        return "improvable" if self.handicap else "saturated"

    @property
    def task(self) -> str:
        """The difficulty, then ``+name=value`` for each other env argument set."""
        extra = "".join(f"+{k}={v}" for k, v in self.env_kwargs.items() if k != "difficulty")
        return f"{self.difficulty}{extra}"

    def cell_name(self, arm: str, seed: int) -> str:
        return cells.cell_name(self.env, self.task, self.regime, arm, seed)

    def cell_key(self, arm: str, seed: int, warm_start_dir: str | None) -> dict[str, Any]:
        """Every setting the figures of one (arm, seed) cell depend on."""
        # episode_turns is in env_kwargs when set; absent otherwise, as in older cells
        skip = {"arms", "seeds", "episode_turns"}
        skip |= {"sft_context_weight"} if self.sft_context_weight is None else set()
        skip |= {"sft_sub_epochs", "sft_sub_lr"} if not self.sft_sub_epochs else set()
        skip |= {"alternate"} if arm != "mgrpo-alternate" else set()
        key = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        key.update(env_kwargs=self.env_kwargs, handicap=self.handicap, arm=arm, seed=seed)
        if warm_start_dir is not None:  # a warm start the user named, used as it is
            key["warm_start_dir"] = warm_start_dir
        return cells.canonical(key)

    def diagnosis_key(self, warm_start_dir: str | None) -> dict[str, Any]:
        """The settings a regime's diagnosis depends on: its warm start and its evaluation.

        A subset of every cell key of the same task, regime and warm start, so the
        summary can tell which cells a diagnosis (``--diagnose-only``) belongs to.
        """
        key = self.cell_key(self.arms[0], self.seeds[0], warm_start_dir)
        return {k: v for k, v in key.items() if k in DIAGNOSIS_FIELDS}

    @property
    def env_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"difficulty": self.difficulty}
        if self.arithmetic is not None:
            out["arithmetic"] = self.arithmetic
        if self.doc_ref != "id":  # absent by default: older caches keep their keys
            out["doc_ref"] = self.doc_ref
        if self.episode_turns is not None:
            out["episode_turns"] = self.episode_turns
        return out

    def role_temperature(self, roles: Iterable[str]) -> dict[str, float]:
        """Each sub-agent's sampling temperature, when it is not 1."""
        if self.sub_temperature == 1.0:
            return {}
        return {r: self.sub_temperature for r in roles if r != "main"}

    @property
    def episodes_per_run(self) -> int:
        """Environment episodes every arm trains on (the equal budget)."""
        return self.steps * self.queries * self.group

    def sft_config(self) -> SFTConfig:
        """The warm starts' SFT settings: ``mgrpo_algos.sft.RECIPE`` with these."""
        weight = self.sft_context_weight
        return recipe(
            **({} if weight is None else {"context_weight": weight}),
            episodes=self.sft_episodes,
            epochs=self.sft_epochs,
            copy_steps=self.sft_copy_steps,
            lookup_steps=self.sft_lookup_steps,
            rehearsal=self.sft_rehearsal,
            copy_digits=self.sft_copy_digits,
            sub_give_up=self.sub_give_up,
        )

    def sft_key(self) -> dict[str, Any]:
        """What a warm start depends on: reused only when this matches."""
        where = {"env": self.env, **self.env_kwargs, "size": self.size, "shared": self.sft_shared}
        out = {**where, **dataclasses.asdict(self.sft_config())}
        if self.sft_sub_epochs:  # absent when off: older stamps keep matching
            out.update(sub_epochs=self.sft_sub_epochs, sub_lr=self.sft_sub_lr)
        return out

    def eval_key(self) -> str:
        task = "/".join(f"{k}={v}" for k, v in self.env_kwargs.items() if k != "difficulty")
        where = f"{self.env}/{self.difficulty}" + (f"/{task}" if task else "")
        temperature = f"/sub_T{self.sub_temperature:g}" if self.sub_temperature != 1.0 else ""
        return f"{where}/n{self.eval_episodes}/t{self.max_new_tokens}{temperature}"


def check_env_options(s: Settings) -> None:
    """Refuses env options (``--arithmetic``, ``--doc-ref``) the chosen env does not take."""
    if s.env not in mgrpo_envs.list_envs():
        raise ValueError(f"env must be one of {mgrpo_envs.list_envs()}, got {s.env!r}")
    takes = inspect.signature(mgrpo_envs.registry.env_class(s.env).__init__).parameters
    for name, flag in ENV_OPTIONS.items():
        if name in s.env_kwargs and name not in takes:
            owners = [
                e
                for e in mgrpo_envs.list_envs()
                if name in inspect.signature(mgrpo_envs.registry.env_class(e).__init__).parameters
            ]
            raise ValueError(
                f"{flag} is an option of {owners}; {s.env} takes no {name!r} argument: "
                f"drop {flag} or run --env {owners[0]}"
            )


PRESETS = {
    "full": Settings(),
    # tiny-micro warm starts (the SFT recipe of benchmarks/sft_warm_start.py), then
    # 12 steps x 4 queries x 8 rollouts per arm and seed; about 30 CPU minutes in all
    "cpu-small": Settings(
        size="micro", sft_episodes=2000, sft_epochs=3, steps=12, queries=4, eval_episodes=100
    ),
    "quick": Settings(
        episode_turns=12,  # untrained models use every turn they are given
        size="micro",
        sft_episodes=8,
        sft_epochs=1,
        sft_copy_steps=4,
        sft_lookup_steps=4,
        steps=2,
        queries=2,
        group=4,
        eval_episodes=4,
        max_new_tokens=8,  # untrained models babble to the turn limit: keep turns short
        seeds=(0,),
    ),
}


# --------------------------------------------------------------------------- evaluation
def worker_setup(threads: int) -> None:
    """Each task's process: ``threads`` torch threads, no weight-loading progress bars."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()


def held_out(env_fn: Callable[[], Any], policies: dict[str, HFPolicy], s: Settings) -> dict:
    """The held-out evaluation of ``policies`` (``EvalResult.to_dict()``), plus the diagnosis.

    With ``s.diagnose`` on a multi-role env, ``roles`` also gives the evaluation with
    every sub-agent scripted (``expert_subs``: how good main is) and with main
    scripted (``expert_main``: how good the sub-agents are on well-posed subtasks),
    and ``signal`` what a training step's groups give each role to learn from.
    """
    temps = s.role_temperature(policies)
    n, tokens = s.eval_episodes, s.max_new_tokens
    out = evaluate(env_fn, policies, n, max_new_tokens=tokens, role_temperature=temps).to_dict()
    subs = [r for r in policies if r != "main"]
    if s.diagnose and subs:
        out["roles"] = {
            name: evaluate(
                env_fn, policies, n, max_new_tokens=tokens, scripted=roles, role_temperature=temps
            ).to_dict()
            for name, roles in (("expert_subs", subs), ("expert_main", ["main"]))
        }
        out["signal"] = learning_signal(env_fn, policies, s)
    return out


SIGNAL_QUERIES = 16  # held-out queries of the learning-signal probe, s.group rollouts each
CALIBRATION_SEED0 = 3_000_000
"""The first env seed of ``--calibrate``'s queries: past the demonstrations (seeds from
0) and outside the held-out block (``mgrpo_algos.evaluate.EVAL_SEED0``), so choosing a
regime on them never looks at a held-out episode (training draws its queries at random
from 2**31 seeds, these among them)."""
CALIBRATION_QUERIES = 64


def learning_signal(
    env_fn: Callable[[], Any],
    policies: dict[str, HFPolicy],
    s: Settings,
    seeds: list[int] | None = None,
) -> dict[str, dict[str, float]]:
    """What a training step's groups give each sub-agent role to learn from.

    Collects ``SIGNAL_QUERIES`` held-out queries (or the queries ``seeds``) x
    ``s.group`` rollouts as a training step would, scores every call with M-GRPO's
    default ``R_S``, and reports per role:

    * ``between_subtask_share``: the share of ``R_S``'s variance within a query (the
      group M-GRPO z-scores over) that lies between the subtasks the calls served,
      not between calls on the same subtask;
    * ``subtask_groups_differing``: of the (query, subtask) pairs with two or more
      calls, the share whose calls differ in the expert score (the groups in which
      the role's own choices changed the outcome);
    * ``nll_per_token``: the mean negative log-probability of the tokens it sampled
      (how far it is from deterministic); ``main`` gets this one too;
    * ``calls_right``: the share of its calls whose result is the fact asked for;
      ``main`` gets ``success``, the share of the rollouts it answered right.
    """
    defaults = MGRPOConfig()
    engine = RolloutEngine(
        env_fn,
        policies,
        RolloutConfig(
            max_new_tokens=s.max_new_tokens, role_temperature=s.role_temperature(policies)
        ),
    )
    with torch.no_grad():
        res = engine.collect(
            eval_seeds(SIGNAL_QUERIES) if seeds is None else seeds,
            s.group,
            generator=torch.Generator().manual_seed(SIGNAL_SAMPLING_SEED),
        )
    weights = reward_weights(defaults)
    _, rows = score_main(res, weights, defaults.format_reward)
    scored = score_sub(res, rows, weights, defaults.format_reward)
    records = {(e.group_id, e.rollout_id): e.infos for e in res.episodes}
    out: dict[str, dict[str, float]] = {}
    for role in policies:
        mine = [t for t in res.trajectories if t.agent == role]
        stats: dict[str, float] = {"calls": float(len(mine))}
        if mine:
            stats["nll_per_token"] = -float(np.mean([t.old_logprobs.mean() for t in mine]))
        if role == "main":
            stats["success"] = float(np.mean([e.correct for e in res.episodes]))
        if role != "main" and mine:
            calls = []
            for t in scored:
                if t.agent == role:
                    record = records[(t.group_id, t.rollout_id)][role]["calls"][t.invocation]
                    calls.append((t.group_id, record["subtask"], record["expert"], t.reward))
            stats.update(subtask_signal(calls))
            stats["calls_right"] = float(np.mean([expert for _, _, expert, _ in calls]))
        out[role] = stats
    return out


def subtask_signal(calls: Iterable[tuple[int, str, float, float]]) -> dict[str, float]:
    """How much of a role's group-relative signal its own choices can explain.

    Args:
        calls: ``(query, subtask, expert score, R_S)`` of every call of the role;
            subtasks are compared case- and space-insensitively.

    Returns:
        ``between_subtask_share``: summed over queries, the variance of the calls'
        subtask means over the variance of ``R_S`` (population variances within each
        query); ``subtask_groups_differing``: the share of (query, subtask) groups of
        two or more calls whose expert scores are not all equal.
    """
    by_query: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for query, subtask, expert, reward in calls:
        by_query.setdefault(query, {}).setdefault(subtask_key(subtask), []).append((expert, reward))
    total = between = 0.0
    differing = []
    for groups in by_query.values():
        rewards = np.array([r for g in groups.values() for _, r in g])  # (n,)
        means = np.array([np.mean([r for _, r in g]) for g in groups.values() for _ in g])  # (n,)
        total += float(rewards.var())
        between += float(means.var())
        differing += [len({e for e, _ in g}) > 1 for g in groups.values() if len(g) >= 2]
    return {
        "between_subtask_share": between / total if total > 0 else 0.0,
        "subtask_groups_differing": float(np.mean(differing)) if differing else 0.0,
    }


# --------------------------------------------------------------------------- warm starts
def warm_env_fn(kind: str, s: Settings) -> Callable[[], Any]:
    """The env a warm start is trained and evaluated on: the single view or the AEC env."""
    return make_env_fn(s.env, s.env_kwargs, single=kind == "single")


def warm_start_ready(kind: str, path: Path, roles: Iterable[str]) -> bool:
    """Whether ``path`` holds a saved warm start of ``kind``."""
    if kind == "multi":
        return all((path / role / "config.json").is_file() for role in roles)
    return (path / "config.json").is_file()


def fresh_policies(kind: str, env: Any, size: str, shared: bool = True) -> dict[str, HFPolicy]:
    """Untrained policies of a warm start; a shared ``multi`` one is saved as a copy per role."""
    return tiny_policies(env, size=size, seed=0, shared=shared or kind != "multi")


def load_warm_start(kind: str, path: Path, roles: Iterable[str]) -> dict[str, HFPolicy]:
    if kind == "multi":
        return {r: HFPolicy.load(path / r) for r in roles}
    one = HFPolicy.load(path)
    return {r: one for r in roles}


def save_warm_start(kind: str, policies: dict[str, HFPolicy], path: Path) -> None:
    if kind == "multi":
        for role, policy in policies.items():
            policy.save(path / role)
    else:
        policies["main"].save(path)


def prepare_warm_start(
    kind: str, s: Settings, directory: str, train: bool, threads: int, held_out_eval: bool = True
) -> dict:
    """Trains the warm start ``kind`` (when asked) and evaluates it; cached in ``kind.json``.

    A trained warm start gets ``stamp.json`` (``cache_stamp(s.sft_key())``) next to
    its model. Its evaluations are kept in ``kind.json`` by ``s.eval_key()`` for as
    long as the provenance they were measured under holds. Runs in a worker
    process: the returned record is what each cell keeps of its warm start.
    ``held_out_eval=False`` (``--calibrate``) plays no held-out episode: the record
    has no ``start``.
    """
    worker_setup(threads)
    path, meta_path = Path(directory) / kind, Path(directory) / f"{kind}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() and not train else {}
    env_fn = warm_env_fn(kind, s)
    roles = list(env_fn().possible_agents)
    if train:
        print(f"[warm start {kind}] SFT on {s.sft_episodes} expert episodes ...", flush=True)
        stamp = cache_stamp(s.sft_key())
        t0, cpu0 = time.perf_counter(), time.process_time()
        base = saved_base(kind, s, Path(directory), roles) if s.sft_sub_epochs else None
        if base is None:
            policies = fresh_policies(kind, env_fn(), s.size, s.sft_shared)
            history = warm_start(env_fn, policies, s.sft_config(), progress=False)
        else:
            print(f"[warm start {kind}] continuing the saved {base}", flush=True)
            policies, history = load_warm_start(kind, base, roles), {}
        if s.sft_sub_epochs:
            history.update(train_sub_agents_longer(kind, env_fn, policies, s))
        shutil.rmtree(path, ignore_errors=True)
        save_warm_start(kind, policies, path)
        write_stamp(path, stamp)
        meta = {
            "stamp": stamp,
            "sft_seconds": time.perf_counter() - t0,
            "sft_cpu_seconds": time.process_time() - cpu0,
            "final_loss": {k: v[-1] for k, v in history.items()},
            **({"continued": str(base)} if base is not None else {}),
        }
    if meta.get("evals_provenance") != provenance():  # measured by other code or packages
        meta["evals"], meta["evals_provenance"] = {}, provenance()
    evals = meta["evals"]
    cached = evals.get(s.eval_key(), {})
    if not held_out_eval:
        meta_path.write_text(json.dumps(meta, indent=2))
        return {"kind": kind, "path": str(path), "trained_now": train, **meta}
    if not cached or (s.diagnose and kind != "single" and "signal" not in cached):
        evals[s.eval_key()] = held_out(env_fn, load_warm_start(kind, path, roles), s)
    meta_path.write_text(json.dumps(meta, indent=2))
    start = evals[s.eval_key()]
    print(f"[warm start {kind}] {format_rate(start['successes'], start['n'])}", flush=True)
    return {"kind": kind, "path": str(path), "trained_now": train, **meta, "start": start}


def saved_base(kind: str, s: Settings, directory: Path, roles: Iterable[str]) -> Path | None:
    """The saved warm start that ``s.sft_sub_epochs`` continues, when there is one.

    It is the same settings' warm start without the longer sub-agent budget, in its
    own directory next to ``directory`` (the default layout of ``OUT/warm_start``),
    built under the same stamp; its SFT is deterministic, so continuing it gives what
    training it again here would.
    """
    base = dataclasses.replace(s, sft_sub_epochs=0)
    if directory.name != f"{s.env}-{s.task}{s.warm_start_suffix}":
        return None  # a directory the user named: no sibling to look in
    path = directory.parent / f"{s.env}-{s.task}{base.warm_start_suffix}" / kind
    if not warm_start_ready(kind, path, roles):
        return None
    return path if stamp_difference(read_stamp(path), cache_stamp(base.sft_key())) is None else None


def train_sub_agents_longer(
    kind: str, env_fn: Callable[[], Any], policies: dict[str, HFPolicy], s: Settings
) -> dict[str, list[float]]:
    """``s.sft_sub_epochs`` more epochs for each sub-agent's model on its own calls.

    The demonstrations are the warm start's own (same episodes and seed). In the
    ``multi`` warm start every sub-agent first gets its own copy (``policies`` is
    updated), so main keeps the weights it had; the ``shared`` and ``single`` warm
    starts train their one model. Returns ``<role>+sub`` -> the losses of its steps.
    """
    cfg = dataclasses.replace(
        s.sft_config(), epochs=s.sft_sub_epochs, lr=s.sft_sub_lr, copy_steps=0, lookup_steps=0
    )
    subs = [r for r in policies if r != "main"]
    if kind == "multi":
        for role in subs:
            if policies[role] is policies["main"]:
                policies[role] = copy.deepcopy(policies[role])
    demos = collect_demonstrations(
        env_fn, policies, cfg.episodes, cfg.seed, give_up=cfg.sub_give_up
    )
    print(f"[warm start {kind}] {s.sft_sub_epochs} more epochs for {subs}", flush=True)
    return {
        f"{role}+sub": train_sft(
            policies[role], [t for t in demos if t.agent == role], cfg, progress=False
        )
        for role in subs
    }


def warm_starts_to_train(
    s: Settings, directory: Path, reuse: Reuse, arms: Iterable[str] | None = None
) -> dict[str, bool]:
    """Warm start kind -> whether it must be trained now; prints why for each.

    Args:
        s: The run's settings.
        arms: The arms whose warm starts are needed (default ``s.arms``).
        directory: Holds ``<kind>/`` (model and ``stamp.json``) and ``<kind>.json``.
        reuse: ``matching``: use a saved warm start whose stamp is
            ``cache_stamp(s.sft_key())``, retrain otherwise (the cache in
            ``OUT/warm_start``); ``any``: use whatever is saved (a directory the user
            named); ``never``: retrain every one (``--no-cache``).
    """
    if reuse not in ("matching", "any", "never"):
        raise ValueError(f"reuse must be 'matching', 'any' or 'never', got {reuse!r}")
    out = {}
    for kind in dict.fromkeys(WARM_START_OF[a] for a in (s.arms if arms is None else arms)):
        path = directory / kind
        stamp = cache_stamp(s.sft_key())
        roles = warm_env_fn(kind, s)().possible_agents
        ready = warm_start_ready(kind, path, roles)
        built_for = ((read_stamp(path) or {}).get("recipe") or {}).get("env", s.env)
        if built_for != s.env and reuse == "any":
            raise ValueError(
                f"the warm start in {path} was built for {built_for}, this run is on {s.env}: "
                "name another --warm-start-dir"
            )
        if not ready:
            print(f"building the warm start {kind} in {path} (none is saved there)")
        elif reuse == "any":
            differs = stamp_difference(read_stamp(path), stamp)
            print(f"note: using the warm start in {path} as it is ({differs or 'same stamp'})")
        else:
            ready = cache_usable(path, stamp, cache=reuse == "matching", what=f"warm start {kind}")
        out[kind] = not ready
    return out


# --------------------------------------------------------------------------- one run
def make_trainer(arm: str, seed: int, s: Settings, warm_dir: Path, run_dir: Path) -> Learner:
    common = {
        "env": s.env,
        "env_kwargs": s.env_kwargs,
        "steps": s.steps,
        "queries_per_step": s.queries,
        "group_size": s.group,
        "max_new_tokens": s.max_new_tokens,
        "lr": s.lr,
        "loss_type": s.loss,
        "seed": seed,
        "checkpoint_every": 0,
    }
    model = str(warm_dir / WARM_START_OF[arm])
    if arm == "single":
        return GRPOTrainer(GRPOConfig(model=model, **common), out_dir=run_dir)
    roles = warm_env_fn("multi", s)().possible_agents
    options = {
        "sub_groups": s.sub_groups,
        "role_temperature": s.role_temperature(roles),
        **ARM_OPTIONS[arm],
    }
    if arm == "mgrpo-alternate":
        options["schedule"] = f"alternate:{s.alternate}"
    if s.sub_lr is not None and arm not in ("shared", "main-only"):  # one lr / frozen subs
        options["role_lr"] = {r: s.sub_lr for r in roles if r != "main"}
    config = MGRPOConfig(model=model, **options, **common)
    return MGRPOTrainer(config, out_dir=run_dir)


def curve_point(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("step", "episodes", "success_rate", "reward/main/mean", "reward/sub/mean")
    return {**{k: m.get(k) for k in keys}, "seconds": m["perf/step_seconds"]}


def run_arm(arm: str, seed: int, s: Settings, warm_dir: str, out: str, threads: int) -> dict:
    """Trains one arm from its warm start for ``s.steps`` steps and evaluates it.

    Runs in a worker process. ``<out>/runs/<cell>/metrics.jsonl`` gets the trainer's
    metrics of every step.
    """
    worker_setup(threads)
    run_dir = Path(out) / "runs" / s.cell_name(arm, seed)
    shutil.rmtree(run_dir, ignore_errors=True)  # the metrics writer appends
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer = make_trainer(arm, seed, s, Path(warm_dir), run_dir)
    curve, evals = [], []

    def on_step(learner: Learner, m: dict[str, Any]) -> None:
        curve.append(curve_point(m))
        print(
            f"[{arm} seed {seed}] step {m['step']}/{s.steps} success {m['success_rate']:.3f} "
            f"reward {m['reward/main/mean']:.3f} ({m['perf/step_seconds']:.0f} s)",
            flush=True,
        )
        if s.eval_every and m["step"] % s.eval_every == 0 and m["step"] < s.steps:
            evals.append({"step": m["step"], **held_out(learner.env_fn, learner.policies, s)})

    trainer.train(progress=False, on_step=on_step)
    end = held_out(trainer.env_fn, trainer.policies, s)
    evals.append({"step": s.steps, **end})
    return {
        "arm": arm,
        "seed": seed,
        "end": end,
        "evals": evals,
        "curve": curve,
        "episodes": trainer.step_idx * s.queries * s.group,
        "wall_seconds": time.perf_counter() - wall0,
        "cpu_seconds": time.process_time() - cpu0,
    }


# --------------------------------------------------------------------------- scheduling
class InlineExecutor(Executor):
    """Runs tasks one at a time in this process, in submission order (``--jobs 1``)."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Future, Callable[..., Any], tuple, dict]] = deque()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self.queue.append((future, fn, args, kwargs))
        return future

    def run_next(self) -> None:
        """Runs the oldest waiting task; its future holds the result or the exception."""
        future, fn, args, kwargs = self.queue.popleft()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)


def make_executor(jobs: int, threads: int) -> Executor:
    torch.set_num_threads(threads)
    if jobs == 1:
        return InlineExecutor()
    return ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))


def run_all(
    s: Settings,
    todo: list[tuple[str, int]],
    train: dict[str, bool],
    paths: tuple[Path, Path],
    jobs: int,
    threads: int,
    on_run: Callable[[dict, dict], None],
) -> dict[str, dict]:
    """Warm starts, then every (arm, seed) of ``todo`` as soon as its warm start is ready.

    ``on_run(run, warm)`` gets each finished run's record with its warm start's record,
    in this process, as soon as the run ends.

    Returns:
        Warm start kind -> its record.
    """
    out, warm_dir = paths
    warm: dict[str, dict] = {}
    pool = make_executor(jobs, threads)
    try:
        pending = {
            pool.submit(prepare_warm_start, kind, s, str(warm_dir), need, threads): kind
            for kind, need in train.items()
        }
        while pending:
            if isinstance(pool, InlineExecutor):
                pool.run_next()
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                kind = pending.pop(future)
                record = future.result()
                if kind is None:
                    on_run(record, warm[WARM_START_OF[record["arm"]]])
                    continue
                warm[kind] = record
                for arm, seed in todo:
                    if WARM_START_OF[arm] == kind:
                        args = (arm, seed, s, str(warm_dir), str(out), threads)
                        pending[pool.submit(run_arm, *args)] = None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return warm


# --------------------------------------------------------------------------- cells
def cell_record(s: Settings, run: dict, warm: dict, warm_start_dir: str | None) -> dict:
    """One finished run as a result cell: settings, warm start, figures, provenance."""
    arm, seed = run["arm"], run["seed"]
    warm_start = {k: v for k, v in warm.items() if k not in ("evals", "start", "evals_provenance")}
    return {
        "benchmark": "coordination",
        "cell": s.cell_name(arm, seed),
        "key": s.cell_key(arm, seed, warm_start_dir),
        "env": s.env,
        "task": s.task,
        "regime": s.regime,
        "handicap": s.handicap,
        "settings": dataclasses.asdict(s),
        "warm_start": warm_start,
        "start": warm["start"],
        **run,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "provenance": provenance(),
    }


def plan_cells(
    s: Settings, directory: Path, warm_start_dir: str | None
) -> tuple[list[tuple[str, int]], list[dict]]:
    """The (arm, seed) cells to run, and the finished ones read back (skipped)."""
    todo, done = [], []
    for seed in s.seeds:
        for arm in s.arms:
            path = directory / f"{s.cell_name(arm, seed)}.json"
            if cells.cell_done(path, s.cell_key(arm, seed, warm_start_dir)):
                done.append(json.loads(path.read_text()))
            else:
                todo.append((arm, seed))
    return todo, done


# --------------------------------------------------------------------------- report
def print_table(s: Settings, runs: list[dict]) -> None:
    print()
    print(f"{s.env} {s.task}, {s.regime} regime, {s.episodes_per_run} episodes per run")
    head = f"{'arm':<11}{'seed':>5}  {'final success (95%)':<34}{'train first->last':>18}"
    print(head + f"{'episodes':>10}{'min':>7}{'start':>8}")
    for arm, rs in cells.by_arm(s.arms, runs).items():
        for r in rs:
            rate = format_rate(r["end"]["successes"], r["end"]["n"])
            first, last = r["curve"][0]["success_rate"], r["curve"][-1]["success_rate"]
            print(
                f"{arm:<11}{r['seed']:>5}  {rate:<34}{first:>9.3f} ->{last:>6.3f}"
                f"{r['episodes']:>10}{r['wall_seconds'] / 60:>7.1f}"
                f"{r['start']['success_rate']:>8.3f}"
            )
        wins, n = sum(r["end"]["successes"] for r in rs), sum(r["end"]["n"] for r in rs)
        print(f"{arm:<11}{'all':>5}  {format_rate(wins, n):<34}")
    diagnosis = cells.summarise(s.arms, runs).get("diagnosis", {})
    if diagnosis:
        cells.print_diagnosis(diagnosis)
    print()


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=["full", "cpu-small"], default="full")
    p.add_argument("--quick", action="store_true", help="micro models, 2 steps, 1 seed")
    p.add_argument("--env", choices=mgrpo_envs.list_envs(), help="the task (default research_v0)")
    p.add_argument(
        "--regime",
        choices=["saturated", "improvable"],
        help="improvable: a sub-agent handicap (--sub-temperature or --sub-give-up; default: "
        "--sub-temperature 1.5)",
    )
    p.add_argument("--arms", nargs="+", choices=ARMS)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--difficulty", choices=["easy", "medium", "hard"])
    p.add_argument(
        "--arithmetic",
        choices=["yes", "no"],
        help="draw questions that need the calculator (default: the difficulty's; "
        "research_v0 and webwalk_v0)",
    )
    p.add_argument("--size", choices=["micro", "small", "base"])
    p.add_argument("--loss", choices=["grpo", "dr_grpo", "dapo", "gspo"])
    p.add_argument("--sub-groups", choices=["query", "subtask"])
    p.add_argument("--alternate", type=int, help="N of the mgrpo-alternate arm (default 6)")
    p.add_argument("--doc-ref", choices=["id", "title"], help="research_v0's doc_ref (default id)")
    p.add_argument(
        "--episode-turns", type=int, help="agent turns per episode (default: the difficulty's)"
    )
    p.add_argument(
        "--sub-temperature",
        type=float,
        help="the sub-agents' sampling temperature (default 1: the saturated regime)",
    )
    p.add_argument(
        "--sub-give-up",
        type=float,
        help="share of the sub-agents' demonstrated calls that give up (default 0: saturated)",
    )
    p.add_argument("--sft-rehearsal", type=float, help="SFTConfig.rehearsal (default 0)")
    p.add_argument("--sft-copy-digits", type=float, help="SFTConfig.copy_digits (default 0)")
    p.add_argument(
        "--sft-context-weight",
        type=float,
        help="SFTConfig.context_weight (default: the recipe's 1; 0: the agents' tokens only)",
    )
    p.add_argument(
        "--sft-separate",
        dest="sft_shared",
        action="store_const",
        const=False,
        default=None,
        help="train the multi-role warm start as one model per role, each on its own calls",
    )
    p.add_argument(
        "--sft-sub-epochs",
        type=int,
        help="more SFT epochs for each sub-agent's model on its own calls (default 0)",
    )
    p.add_argument(
        "--sft-sub-lr", type=float, help="peak learning rate of those epochs (default 5e-4)"
    )
    for name, kind in (
        ("sft-episodes", int),
        ("sft-epochs", int),
        ("steps", int),
        ("queries", int),
        ("group", int),
        ("lr", float),
        ("sub-lr", float),
        ("eval-episodes", int),
        ("eval-every", int),
    ):
        p.add_argument(f"--{name}", type=kind)
    p.add_argument(
        "--diagnose",
        action="store_true",
        default=None,
        help="also evaluate with the sub-agents, then main, played by the scripted expert",
    )
    p.add_argument(
        "--diagnose-only",
        action="store_true",
        help="the regime's diagnosis alone: build or load the multi-agent warm start, measure "
        "the preconditions, write CELLS/diagnoses/<env>-<task>-<regime>.json; no RL",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="the regime's learning signal on queries outside the held-out block (to choose a "
        "regime by), written to CELLS/calibrations/; no held-out episode, no RL",
    )
    add_output_options(p)
    return p.parse_args(argv)


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Where the runs, cells and warm starts go, and how many run at once."""
    p.add_argument("--jobs", type=int, default=2, help="runs at once, in spawned processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", default=None, help="default: runs/coordination(-quick)")
    p.add_argument(
        "--cells",
        default=None,
        help="result cells (default docs/results/coordination/cells, OUT/cells with --quick)",
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="rebuild summary.md and the PNGs from the cells, with no training",
    )
    p.add_argument("--warm-start-dir", default=None, help="holds multi/<role>/, single/ ...")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="retrain the warm starts even when the cached ones were built the same way",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    preset = PRESETS["quick" if args.quick else args.preset]
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(args, f.name, None) is not None
    }
    for name in ("arms", "seeds"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    if "arithmetic" in overrides:
        overrides["arithmetic"] = overrides["arithmetic"] == "yes"
    handicap = {k: overrides[k] for k, off in HANDICAPS.items() if overrides.get(k, off) != off}
    if args.regime == "saturated" and handicap:
        raise ValueError(
            f"--regime saturated runs without a sub-agent handicap, got {handicap}: "
            "drop the handicap or use --regime improvable"
        )
    if args.regime == "improvable" and not handicap:
        handicap = dict(IMPROVABLE)
    if handicap and "arms" not in overrides and "single" in preset.arms:
        print("note: the improvable regime has no single arm (it has no sub-agent)")
        overrides["arms"] = tuple(a for a in preset.arms if a != "single")
    return dataclasses.replace(preset, **{**overrides, **handicap})


def summary_command(args: argparse.Namespace) -> dict[str, Any]:
    """``--summary``: the tables and PNGs rebuilt from the cells, no training."""
    cells_dir = Path(args.cells) if args.cells else DOCS_CELLS
    result = cells.write_summary(cells_dir)
    print(result.pop("text"))
    emit({"benchmark": "coordination-summary", "cells": str(cells_dir), **result})
    return result


def reuse_of(args: argparse.Namespace) -> Reuse:
    """How this run may reuse saved warm starts (see ``warm_starts_to_train``)."""
    return "never" if args.no_cache else "any" if args.warm_start_dir else "matching"


def diagnose_command(args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    """``--diagnose-only``: a regime's preconditions, measured before any training.

    Builds (or loads) the multi-agent warm start as a run of the grid would, plays
    it on the held-out episodes with the diagnosis, and writes the record to
    ``CELLS/diagnoses/<env>-<task>-<regime>.json`` (keyed by the warm start's and the
    evaluation's settings; the summary shows it for the cells with the same ones).
    """
    if not any(WARM_START_OF[a] == "multi" for a in s.arms):
        raise ValueError(f"--diagnose-only needs a multi-agent arm, got {list(s.arms)}")
    _, cells_dir, warm_dir = paths_of(args, s)
    named = str(warm_dir) if args.warm_start_dir else None
    reuse = reuse_of(args)
    train = warm_starts_to_train(s, warm_dir, reuse, ["mgrpo"])["multi"]
    t0 = time.perf_counter()
    warm = prepare_warm_start("multi", s, str(warm_dir), train, args.threads)
    name = f"{s.env}-{s.task}-{s.regime}"
    record = {
        "benchmark": "coordination-diagnosis",
        "diagnosis": name,
        "key": s.diagnosis_key(named),
        "env": s.env,
        "task": s.task,
        "regime": s.regime,
        "handicap": s.handicap,
        "settings": dataclasses.asdict(s),
        "warm_start": {k: v for k, v in warm.items() if k not in ("evals", "evals_provenance")},
        "preconditions": cells.regime_diagnosis(warm["start"]),
        "wall_seconds": time.perf_counter() - t0,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "provenance": provenance(),
    }
    path = cells.write_diagnosis(cells_dir, record)
    print("\n".join([f"{name}:", *cells.diagnosis_markdown(record["preconditions"])]))
    emit({**{k: record[k] for k in ("benchmark", "diagnosis", "preconditions")}, "file": str(path)})
    return record


def calibrate_command(args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    """``--calibrate``: a regime's learning signal on queries outside the held-out block.

    Builds (or loads) the multi-agent warm start and runs the learning-signal probe
    on ``CALIBRATION_QUERIES`` queries from ``CALIBRATION_SEED0`` (``s.group``
    rollouts each), without playing a held-out episode: a regime can be chosen on
    it (a handicap, a budget) and then diagnosed once on the held-out block. Writes
    ``CELLS/calibrations/<env>-<task>-<regime><warm start suffix>-T<temperature>.json``.
    """
    if not any(WARM_START_OF[a] == "multi" for a in s.arms):
        raise ValueError(f"--calibrate needs a multi-agent arm, got {list(s.arms)}")
    _, cells_dir, warm_dir = paths_of(args, s)
    named = str(warm_dir) if args.warm_start_dir else None
    train = warm_starts_to_train(s, warm_dir, reuse_of(args), ["mgrpo"])["multi"]
    t0 = time.perf_counter()
    warm = prepare_warm_start("multi", s, str(warm_dir), train, args.threads, False)
    roles = warm_env_fn("multi", s)().possible_agents
    policies = load_warm_start("multi", Path(warm["path"]), roles)
    seeds = list(range(CALIBRATION_SEED0, CALIBRATION_SEED0 + CALIBRATION_QUERIES))
    signal = learning_signal(warm_env_fn("multi", s), policies, s, seeds)
    name = f"{s.env}-{s.task}-{s.regime}{s.warm_start_suffix}-T{s.sub_temperature:g}"
    record = {
        "benchmark": "coordination-calibration",
        "calibration": name,
        "key": s.diagnosis_key(named),
        "seeds": [seeds[0], seeds[-1]],
        "group": s.group,
        "signal": signal,
        "warm_start": {k: v for k, v in warm.items() if k not in ("evals", "evals_provenance")},
        "wall_seconds": time.perf_counter() - t0,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "provenance": provenance(),
    }
    path = cells_dir / "calibrations" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    emit({k: record[k] for k in ("benchmark", "calibration", "signal")} | {"file": str(path)})
    return record


def paths_of(args: argparse.Namespace, s: Settings) -> tuple[Path, Path, Path]:
    """``--out``, the cells directory and the warm starts' directory of this run."""
    out = Path(args.out or ("runs/coordination-quick" if args.quick else "runs/coordination"))
    cells_dir = Path(args.cells) if args.cells else out / "cells" if args.quick else DOCS_CELLS
    warm_dir = (
        Path(args.warm_start_dir)
        if args.warm_start_dir
        else out / "warm_start" / f"{s.env}-{s.task}{s.warm_start_suffix}"
    )
    for path in (out, cells_dir, warm_dir):
        path.mkdir(parents=True, exist_ok=True)
    return out, cells_dir, warm_dir


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.summary:
        return summary_command(args)
    if args.jobs < 1 or args.threads < 1:
        raise ValueError(f"--jobs and --threads must be >= 1, got {args.jobs}, {args.threads}")
    s = settings_from(args)
    if args.diagnose_only:
        return diagnose_command(args, dataclasses.replace(s, diagnose=True))
    if args.calibrate:
        return calibrate_command(args, s)
    preset = "quick" if args.quick else args.preset
    out, cells_dir, warm_dir = paths_of(args, s)
    named = str(warm_dir) if args.warm_start_dir else None
    todo, finished = plan_cells(s, cells_dir, named)
    reuse = reuse_of(args)
    train = warm_starts_to_train(s, warm_dir, reuse, [a for a, _ in todo]) if todo else {}
    print(
        f"{preset}: {s.env} {s.task}, {s.regime} regime, arms {list(s.arms)}, seeds "
        f"{list(s.seeds)}, {s.episodes_per_run} episodes per run; {len(todo)} cells to run, "
        f"{len(finished)} done earlier; warm starts to train: "
        f"{[k for k, v in train.items() if v] or 'none'}",
        flush=True,
    )
    t0 = time.perf_counter()
    written: list[dict] = []

    def on_run(run: dict, warm: dict) -> None:
        cell = cell_record(s, run, warm, named)
        cells.write_cell(cells_dir / f"{cell['cell']}.json", cell)
        written.append(cell)
        minutes = (time.perf_counter() - t0) / 60
        print(
            f"-- {cell['cell']} written ({len(written)}/{len(todo)}), {minutes:.1f} min", flush=True
        )

    warm = run_all(s, todo, train, (out, warm_dir), args.jobs, args.threads, on_run)
    runs = finished + written
    print_table(s, runs)
    summary = cells.write_summary(cells_dir)
    print(f"summary of every cell in {cells_dir}: {summary['summary']}")
    result = {
        **final_record(s, args, runs),
        "cells": {
            "dir": str(cells_dir),
            "written": [c["cell"] for c in written],
            "skipped": [c["cell"] for c in finished],
        },
        "sft_seconds": {k: w.get("sft_seconds") for k, w in warm.items()},
        "seconds": time.perf_counter() - t0,
        "summary": summary["summary"],
        "plots": summary["plots"],
        "provenance": provenance(),
    }
    emit(result)
    return result


def final_record(s: Settings, args: argparse.Namespace, runs: list[dict]) -> dict[str, Any]:
    """The last line's figures of this run's cells (without the per-run extras)."""
    return {
        "benchmark": "coordination",
        "preset": "quick" if args.quick else args.preset,
        "env": s.env,
        "task": s.task,
        "regime": s.regime,
        "settings": dataclasses.asdict(s),
        "episodes_per_run": s.episodes_per_run,
        "jobs": args.jobs,
        "threads": args.threads,
        **cells.summarise(s.arms, runs),
    }


if __name__ == "__main__":
    main()
