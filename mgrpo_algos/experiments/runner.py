"""Plays a spec: the missing cells of its grid, their warm starts first, then the summary.

For each (task, regime, block) of the spec (`Spec.plans`), the cells whose file
already holds the same key are skipped; the warm starts the missing ones need are
built (or reused, `warm_starts`); then every missing (arm, seed) run trains as soon
as its warm start is ready, ``jobs`` at a time in spawned processes with
``threads`` torch threads each (one process, in order, with ``jobs=1``). Each run
is written as a cell the moment it ends (`cells`), so a grid stopped at any point
resumes where it was. Each run's metrics go to ``OUT/runs/<cell>/metrics.jsonl``.

Two more ways to play a spec, with no RL: :func:`diagnose_spec` measures each
regime's preconditions on its multi-agent warm start (on ``[eval]
diagnosis_split``, ``val`` by default) and :func:`calibrate_spec` its learning
signal on queries outside the held-out block.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from mgrpo_algos.algorithms import algorithm, make_trainer
from mgrpo_algos.evaluate import Split
from mgrpo_algos.experiments.arms import ARMS
from mgrpo_algos.experiments.cells import (
    cell_record,
    now,
    plan_cells,
    write_calibration,
    write_cell,
    write_diagnosis,
)
from mgrpo_algos.experiments.diagnosis import calibration_rollouts, held_out, learning_signal
from mgrpo_algos.experiments.spec import Plan, Spec
from mgrpo_algos.experiments.statistics import regime_diagnosis, summarise
from mgrpo_algos.experiments.summary import diagnosis_markdown, print_table, write_summary
from mgrpo_algos.experiments.warm_starts import (
    Reuse,
    directory_of,
    load_warm_start,
    prepare_warm_start,
    warm_env_fn,
    warm_starts_to_train,
    worker_setup,
)
from mgrpo_algos.metrics import machine
from mgrpo_algos.provenance import provenance
from mgrpo_algos.training.loop import Learner


@dataclass(frozen=True)
class RunOptions:
    """How a spec is played (not what: that is the spec).

    Attributes:
        out: Scratch: warm starts (``OUT/warm_start``) and runs' metrics (``OUT/runs``).
        cells: The cells directory (None: the spec's, else ``OUT/cells``).
        jobs: Runs (and warm starts) at once, in spawned processes.
        threads: Torch threads per process.
        no_cache: Retrain the warm starts even when saved ones were built the same way.
    """

    out: Path = Path("runs/experiments")
    cells: Path | None = None
    jobs: int = 2
    threads: int = 1
    no_cache: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 1 or self.threads < 1:
            raise ValueError(f"jobs and threads must be >= 1, got {self.jobs}, {self.threads}")

    def cells_dir(self, spec: Spec) -> Path:
        return self.cells or spec.cells or self.out / "cells"

    def reuse(self, plan: Plan) -> Reuse:
        """How this run may reuse saved warm starts (see ``warm_starts_to_train``)."""
        return "never" if self.no_cache else "any" if plan.warm_start_dir else "matching"


# --------------------------------------------------------------------------- one run
def trainer_for(arm: str, seed: int, plan: Plan, warm_dir: Path, run_dir: Path) -> Learner:
    """The learner of one (arm, seed) cell, from its warm start in ``warm_dir``."""
    spec, train = ARMS[arm], plan.train
    options: dict[str, Any] = {
        "algo": spec.algo,
        "model": str(warm_dir / spec.warm_start),
        "env": plan.env,
        "env_kwargs": plan.env_kwargs,
        "steps": train.steps,
        "queries_per_step": train.queries,
        "group_size": train.group,
        "max_new_tokens": train.max_new_tokens,
        "lr": train.lr,
        "loss_type": train.loss,
        "seed": seed,
        "checkpoint_every": 0,
    }
    if spec.warm_start != "single":
        subs = [r for r in warm_env_fn("multi", plan)().possible_agents if r != "main"]
        options.update(sub_groups=train.sub_groups, role_temperature=plan.role_temperature(subs))
        options.update(spec.options)
        if arm == "mgrpo-alternate":  # N is a budget of the spec's, not of the arm's
            options["schedule"] = f"alternate:{train.alternate}"
        if train.sub_lr is not None and spec.trains_sub_agents_apart:
            options["role_lr"] = {r: train.sub_lr for r in subs}
    return make_trainer(algorithm(spec.algo).config(**options), run_dir)


def curve_point(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("step", "episodes", "success_rate", "reward/main/mean", "reward/sub/mean")
    return {**{k: m.get(k) for k in keys}, "seconds": m["perf/step_seconds"]}


def run_arm(arm: str, seed: int, plan: Plan, warm_dir: str, out: str, threads: int) -> dict:
    """Trains one arm from its warm start for ``plan.train.steps`` steps and evaluates it.

    Runs in a worker process. ``<out>/runs/<cell>/metrics.jsonl`` gets the trainer's
    metrics of every step.
    """
    worker_setup(threads)
    run_dir = Path(out) / "runs" / plan.cell_name(arm, seed)
    shutil.rmtree(run_dir, ignore_errors=True)  # the metrics writer appends
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer = trainer_for(arm, seed, plan, Path(warm_dir), run_dir)
    steps, every, split = plan.train.steps, plan.eval.every, plan.eval.split
    curve, evals = [], []

    def on_step(learner: Learner, m: dict[str, Any]) -> None:
        curve.append(curve_point(m))
        print(
            f"[{arm} seed {seed}] step {m['step']}/{steps} success {m['success_rate']:.3f} "
            f"reward {m['reward/main/mean']:.3f} ({m['perf/step_seconds']:.0f} s)",
            flush=True,
        )
        if every and m["step"] % every == 0 and m["step"] < steps:
            result = held_out(learner.env_fn, learner.policies, plan, split)
            evals.append({"step": m["step"], **result})

    trainer.train(progress=False, on_step=on_step)
    end = held_out(trainer.env_fn, trainer.policies, plan, split)
    evals.append({"step": steps, **end})
    return {
        "arm": arm,
        "seed": seed,
        "end": end,
        "evals": evals,
        "curve": curve,
        "episodes": trainer.step_idx * plan.train.queries * plan.train.group,
        "wall_seconds": time.perf_counter() - wall0,
        "cpu_seconds": time.process_time() - cpu0,
    }


# --------------------------------------------------------------------------- scheduling
class InlineExecutor(Executor):
    """Runs tasks one at a time in this process, in submission order (``jobs=1``)."""

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
    plan: Plan,
    todo: list[tuple[str, int]],
    train: dict[str, bool],
    paths: tuple[Path, Path],
    options: RunOptions,
    on_run: Callable[[dict, dict], None],
) -> dict[str, dict]:
    """Warm starts, then every (arm, seed) of ``todo`` as soon as its warm start is ready.

    ``on_run(run, warm)`` gets each finished run's record with its warm start's record,
    in this process, as soon as the run ends.

    Returns:
        Warm start kind -> its record.
    """
    out, warm_dir = paths
    threads, split = options.threads, plan.eval.split
    warm: dict[str, dict] = {}
    pool = make_executor(options.jobs, threads)
    try:
        pending = {
            pool.submit(prepare_warm_start, kind, plan, str(warm_dir), need, threads, split): kind
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
                    on_run(record, warm[ARMS[record["arm"]].warm_start])
                    continue
                warm[kind] = record
                for arm, seed in todo:
                    if ARMS[arm].warm_start == kind:
                        args = (arm, seed, plan, str(warm_dir), str(out), threads)
                        pending[pool.submit(run_arm, *args)] = None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return warm


# --------------------------------------------------------------------------- a spec
def run_plan(plan: Plan, cells_dir: Path, options: RunOptions) -> dict[str, Any]:
    """The missing cells of one plan, written as they end; the plan's cells, done and new."""
    warm_dir = directory_of(plan, options.out)
    for path in (options.out, cells_dir, warm_dir):
        path.mkdir(parents=True, exist_ok=True)
    todo, finished = plan_cells(plan, cells_dir)
    needed = [arm for arm, _ in todo]
    train = warm_starts_to_train(plan, warm_dir, options.reuse(plan), needed) if todo else {}
    print(
        f"{plan.name}: arms {list(plan.arms)}, seeds {list(plan.seeds)}, "
        f"{plan.episodes_per_run} episodes per run; {len(todo)} cells to run, "
        f"{len(finished)} done earlier; warm starts to train: "
        f"{[k for k, v in train.items() if v] or 'none'}",
        flush=True,
    )
    t0 = time.perf_counter()
    written: list[dict] = []

    def on_run(run: dict, warm: dict) -> None:
        cell = cell_record(plan, run, warm)
        write_cell(cells_dir / f"{cell['cell']}.json", cell)
        written.append(cell)
        minutes = (time.perf_counter() - t0) / 60
        print(f"-- {cell['cell']} written ({len(written)}/{len(todo)}), {minutes:.1f} min")

    warm = run_all(plan, todo, train, (options.out, warm_dir), options, on_run)
    print_table(plan.name, plan.episodes_per_run, list(plan.arms), finished + written)
    sft = {f"{warm_dir.name}/{k}": w.get("sft_seconds") for k, w in warm.items()}
    return {"written": written, "skipped": finished, "sft_seconds": sft}


def run_spec(spec: Spec, options: RunOptions) -> dict[str, Any]:
    """Plays every missing cell of ``spec``, then rebuilds the summary of its cells directory.

    Returns:
        The JSON-ready result: per (task, regime) the success and interval of every
        arm and seed, the cells written and skipped, the summary's paths.
    """
    cells_dir = options.cells_dir(spec)
    for note in spec.notes():
        print(f"note: {note}")
    t0 = time.perf_counter()
    written, skipped, sft, groups = [], [], {}, {}
    for plan in spec.plans():
        done = run_plan(plan, cells_dir, options)
        written += done["written"]
        skipped += done["skipped"]
        sft.update(done["sft_seconds"])
        group = groups.setdefault(plan.name, {"plan": plan, "arms": [], "runs": []})
        group["arms"] += [a for a in plan.arms if a not in group["arms"]]
        group["runs"] += done["written"] + done["skipped"]
    summary = write_summary(cells_dir)
    print(f"summary of every cell in {cells_dir}: {summary['summary']}")
    return {
        "experiment": spec.name,
        "groups": {name: group_result(**g) for name, g in groups.items()},
        "cells": {
            "dir": str(cells_dir),
            "written": [c["cell"] for c in written],
            "skipped": [c["cell"] for c in skipped],
        },
        "sft_seconds": sft,
        "seconds": time.perf_counter() - t0,
        "summary": summary["summary"],
        "plots": summary["plots"],
        "jobs": options.jobs,
        "threads": options.threads,
        "provenance": provenance(),
    }


def group_result(plan: Plan, arms: list[str], runs: list[dict]) -> dict[str, Any]:
    """One (task, regime)'s figures in a run's result."""
    head = {"env": plan.env, "task": plan.task.name, "regime": plan.regime.name}
    return {**head, "episodes_per_run": plan.episodes_per_run, **summarise(arms, runs)}


# --------------------------------------------------------------------------- no RL
def regime_plans(spec: Spec, what: str) -> list[Plan]:
    """One plan per (task, regime) with a multi-agent arm: what a regime is measured on."""
    out: dict[str, Plan] = {}
    for plan in spec.plans():
        if any(ARMS[a].warm_start == "multi" for a in plan.arms):
            out.setdefault(plan.name, plan)
    if not out:
        arms = sorted({a for b in spec.runs for a in b.arms})
        raise ValueError(f"{what} needs a multi-agent arm (e.g. mgrpo), got {arms}")
    return list(out.values())


def multi_warm_start(plan: Plan, options: RunOptions, split: Split | None) -> dict[str, Any]:
    """The plan's multi-agent warm start, built or reused, evaluated on ``split`` (None: not)."""
    warm_dir = directory_of(plan, options.out)
    warm_dir.mkdir(parents=True, exist_ok=True)
    train = warm_starts_to_train(plan, warm_dir, options.reuse(plan), ["mgrpo"])["multi"]
    return prepare_warm_start("multi", plan, str(warm_dir), train, options.threads, split)


def diagnose_spec(spec: Spec, options: RunOptions) -> list[dict[str, Any]]:
    """Each regime's preconditions, measured on its warm start before any training.

    Plays the multi-agent warm start with the diagnosis on ``[eval] diagnosis_split``
    and writes the record to ``CELLS/diagnoses/<env>-<task>-<regime>.json``, keyed by
    the warm start's and the evaluation's settings (`Plan.diagnosis_key`); the
    summary shows it for the cells with the same ones.
    """
    records = []
    for plan in regime_plans(spec, "--diagnose-only"):
        plan = dataclasses.replace(plan, diagnose=True)
        t0, split = time.perf_counter(), plan.eval.diagnosis_split
        warm = multi_warm_start(plan, options, split)
        record = {
            "benchmark": "coordination-diagnosis",
            "diagnosis": plan.name,
            "key": plan.diagnosis_key(),
            "env": plan.env,
            "task": plan.task.name,
            "regime": plan.regime.name,
            "handicap": plan.handicap,
            "split": split,
            "settings": plan.settings(),
            "warm_start": {k: v for k, v in warm.items() if k not in ("evals", "evals_provenance")},
            "preconditions": regime_diagnosis(warm["start"]),
            "wall_seconds": time.perf_counter() - t0,
            "finished": now(),
            "machine": machine(),
            "provenance": provenance(),
        }
        record["file"] = str(write_diagnosis(options.cells_dir(spec), record))
        print("\n".join([f"{plan.name}:", *diagnosis_markdown(record["preconditions"])]))
        records.append(record)
    return records


def calibrate_spec(spec: Spec, options: RunOptions) -> list[dict[str, Any]]:
    """Each regime's learning signal on queries outside the held-out block (no RL).

    Builds (or loads) the multi-agent warm start and probes it on
    ``CALIBRATION_QUERIES`` queries from ``CALIBRATION_SEED0``, without playing a
    held-out episode: a regime can be chosen on it and then diagnosed once. Writes
    ``CELLS/calibrations/<env>-<task>-<regime><warm start suffix>-T<temperature>.json``.
    """
    records = []
    for plan in regime_plans(spec, "--calibrate"):
        t0 = time.perf_counter()
        warm = multi_warm_start(plan, options, None)
        env_fn = warm_env_fn("multi", plan)
        policies = load_warm_start("multi", Path(warm["path"]), env_fn().possible_agents)
        seeds, rollouts = calibration_rollouts(env_fn, policies, plan)
        name = f"{plan.name}{plan.warm_start_suffix}-T{plan.regime.sub_temperature:g}"
        record = {
            "benchmark": "coordination-calibration",
            "calibration": name,
            "key": plan.diagnosis_key(),
            "seeds": [seeds[0], seeds[-1]],
            "group": plan.train.group,
            "signal": learning_signal(rollouts, policies),
            "warm_start": {k: v for k, v in warm.items() if k not in ("evals", "evals_provenance")},
            "wall_seconds": time.perf_counter() - t0,
            "finished": now(),
            "machine": machine(),
            "provenance": provenance(),
        }
        record["file"] = str(write_calibration(options.cells_dir(spec), record))
        records.append(record)
    return records
