"""The arms' warm starts: SFT on the scripted expert's demonstrations, built once per task.

Three kinds (`mgrpo_algos.experiments.arms.WarmStartKind`), each of the same tiny
size, SFT recipe and expert episodes: ``multi`` (one policy per role of the AEC env,
saved as ``multi/<role>/``; the multi-agent arms), ``single`` (one policy on the
single-agent view's demonstrations) and ``shared`` (one policy on every role's
demonstrations). They live in ``OUT/warm_start/<env>-<task><suffix>/<kind>/``
(`Plan.warm_start_suffix` tells apart the recipes that differ), each with the stamp
it was built under (`mgrpo_algos.experiments.cache`: the recipe, package versions,
code version); a saved one is reused only under the stamp this run would write.
Warm starts in a directory the spec names (``warm_start_dir``) are used as they are.

Each warm start's held-out evaluations are kept beside it in ``<kind>.json``, keyed
by `Plan.eval_key`, for as long as the provenance they were measured under holds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch

from mgrpo_algos.evaluate import Split
from mgrpo_algos.experiments.arms import ARMS, WarmStartKind
from mgrpo_algos.experiments.cache import cache_usable, read_stamp, stamp_difference, write_stamp
from mgrpo_algos.experiments.diagnosis import held_out
from mgrpo_algos.experiments.spec import Plan
from mgrpo_algos.metrics import format_rate
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.provenance import cache_stamp, provenance
from mgrpo_algos.sft import SFTConfig, collect_demonstrations, recipe, tiny_policies, train_sft
from mgrpo_algos.sft import warm_start as sft_warm_start
from mgrpo_algos.training.loop import make_env_fn

Reuse = Literal["matching", "any", "never"]
"""Which saved warm starts to use: those with this run's stamp, any that is there, none."""


def worker_setup(threads: int) -> None:
    """A worker process: ``threads`` torch threads, no weight-loading progress bars."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()


# --------------------------------------------------------------------------- recipe and key
def sft_config(plan: Plan) -> SFTConfig:
    """The warm starts' SFT settings: ``mgrpo_algos.sft.RECIPE`` with the plan's."""
    sft, weight = plan.sft, plan.sft.context_weight
    return recipe(
        **({} if weight is None else {"context_weight": weight}),
        episodes=sft.episodes,
        epochs=sft.epochs,
        copy_steps=sft.copy_steps,
        lookup_steps=sft.lookup_steps,
        rehearsal=sft.rehearsal,
        copy_digits=sft.copy_digits,
        sub_give_up=plan.regime.sub_give_up,
    )


def sft_key(plan: Plan) -> dict[str, Any]:
    """What a warm start depends on (its stamp's recipe): reused only when this matches."""
    where = {"env": plan.env, **plan.env_kwargs, "size": plan.sft.size, "shared": plan.sft.shared}
    out = {**where, **dataclasses.asdict(sft_config(plan))}
    if plan.sft.sub_epochs:  # absent when off: older stamps keep matching
        out.update(sub_epochs=plan.sft.sub_epochs, sub_lr=plan.sft.sub_lr)
    return out


def directory_of(plan: Plan, out: Path) -> Path:
    """Where ``plan``'s warm starts live: the spec's directory, else ``OUT/warm_start/...``."""
    if plan.warm_start_dir is not None:
        return Path(plan.warm_start_dir)
    return out / "warm_start" / f"{plan.env}-{plan.task.name}{plan.warm_start_suffix}"


# --------------------------------------------------------------------------- saved models
def warm_env_fn(kind: WarmStartKind, plan: Plan) -> Callable[[], Any]:
    """The env a warm start is trained and evaluated on: the single view or the AEC env."""
    return make_env_fn(plan.env, plan.env_kwargs, single=kind == "single")


def warm_start_ready(kind: WarmStartKind, path: Path, roles: Iterable[str]) -> bool:
    """Whether ``path`` holds a saved warm start of ``kind``."""
    if kind == "multi":
        return all((path / role / "config.json").is_file() for role in roles)
    return (path / "config.json").is_file()


def load_warm_start(kind: WarmStartKind, path: Path, roles: Iterable[str]) -> dict[str, HFPolicy]:
    if kind == "multi":
        return {r: HFPolicy.load(path / r) for r in roles}
    one = HFPolicy.load(path)
    return {r: one for r in roles}


def save_warm_start(kind: WarmStartKind, policies: dict[str, HFPolicy], path: Path) -> None:
    if kind == "multi":
        for role, policy in policies.items():
            policy.save(path / role)
    else:
        policies["main"].save(path)


# --------------------------------------------------------------------------- building
def train_warm_start(
    kind: WarmStartKind, plan: Plan, directory: Path, roles: list[str]
) -> tuple[dict[str, HFPolicy], dict[str, Any]]:
    """SFT of the warm start ``kind`` (continuing a saved base when that is the same run).

    Returns:
        The policies and the record kept in ``<kind>.json``.
    """
    print(f"[warm start {kind}] SFT on {plan.sft.episodes} expert episodes ...", flush=True)
    env_fn = warm_env_fn(kind, plan)
    t0, cpu0 = time.perf_counter(), time.process_time()
    base = saved_base(kind, plan, directory, roles) if plan.sft.sub_epochs else None
    if base is None:
        shared = plan.sft.shared or kind != "multi"  # shared multi: saved as a copy per role
        policies = tiny_policies(env_fn(), size=plan.sft.size, seed=0, shared=shared)
        history = sft_warm_start(env_fn, policies, sft_config(plan), progress=False)
    else:
        print(f"[warm start {kind}] continuing the saved {base}", flush=True)
        policies, history = load_warm_start(kind, base, roles), {}
    if plan.sft.sub_epochs:
        history.update(train_sub_agents_longer(kind, env_fn, policies, plan))
    return policies, {
        "stamp": cache_stamp(sft_key(plan)),
        "sft_seconds": time.perf_counter() - t0,
        "sft_cpu_seconds": time.process_time() - cpu0,
        "final_loss": {k: v[-1] for k, v in history.items()},
        **({"continued": str(base)} if base is not None else {}),
    }


def saved_base(
    kind: WarmStartKind, plan: Plan, directory: Path, roles: Iterable[str]
) -> Path | None:
    """The saved warm start that ``plan.sft.sub_epochs`` continues, when there is one.

    It is the same settings' warm start without the longer sub-agent budget, in its
    own directory next to ``directory`` (the default layout of ``OUT/warm_start``),
    built under the same stamp; its SFT is deterministic, so continuing it gives what
    training it again here would.
    """
    base = dataclasses.replace(plan, sft=dataclasses.replace(plan.sft, sub_epochs=0))
    if directory.name != f"{plan.env}-{plan.task.name}{plan.warm_start_suffix}":
        return None  # a directory the user named: no sibling to look in
    path = directory.parent / f"{plan.env}-{plan.task.name}{base.warm_start_suffix}" / kind
    if not warm_start_ready(kind, path, roles):
        return None
    same = stamp_difference(read_stamp(path), cache_stamp(sft_key(base))) is None
    return path if same else None


def train_sub_agents_longer(
    kind: WarmStartKind, env_fn: Callable[[], Any], policies: dict[str, HFPolicy], plan: Plan
) -> dict[str, list[float]]:
    """``plan.sft.sub_epochs`` more epochs for each sub-agent's model on its own calls.

    The demonstrations are the warm start's own (same episodes and seed). In the
    ``multi`` warm start every sub-agent first gets its own copy (``policies`` is
    updated), so main keeps the weights it had; the ``shared`` and ``single`` warm
    starts train their one model. Returns ``<role>+sub`` -> the losses of its steps.
    """
    cfg = dataclasses.replace(
        sft_config(plan),
        epochs=plan.sft.sub_epochs,
        lr=plan.sft.sub_lr,
        copy_steps=0,
        lookup_steps=0,
    )
    subs = [r for r in policies if r != "main"]
    if kind == "multi":
        for role in subs:
            if policies[role] is policies["main"]:
                policies[role] = copy.deepcopy(policies[role])
    demos = collect_demonstrations(
        env_fn, policies, cfg.episodes, cfg.seed, give_up=cfg.sub_give_up
    )
    print(f"[warm start {kind}] {plan.sft.sub_epochs} more epochs for {subs}", flush=True)
    return {
        f"{role}+sub": train_sft(
            policies[role], [t for t in demos if t.agent == role], cfg, progress=False
        )
        for role in subs
    }


def prepare_warm_start(
    kind: WarmStartKind,
    plan: Plan,
    directory: str,
    train: bool,
    threads: int,
    split: Split | None = "test",
) -> dict:
    """Trains the warm start ``kind`` (when asked) and evaluates it on ``split``.

    Runs in a worker process: the returned record is what each cell keeps of its
    warm start, with the evaluation as ``start``. The evaluations are cached in
    ``<kind>.json`` by ``plan.eval_key(split)``. ``split=None`` (``--calibrate``)
    plays no held-out episode: the record has no ``start``.
    """
    worker_setup(threads)
    path, meta_path = Path(directory) / kind, Path(directory) / f"{kind}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() and not train else {}
    env_fn = warm_env_fn(kind, plan)
    roles = list(env_fn().possible_agents)
    if train:
        policies, meta = train_warm_start(kind, plan, Path(directory), roles)
        shutil.rmtree(path, ignore_errors=True)
        save_warm_start(kind, policies, path)
        write_stamp(path, meta["stamp"])
    if meta.get("evals_provenance") != provenance():  # measured by other code or packages
        meta["evals"], meta["evals_provenance"] = {}, provenance()
    record = {"kind": kind, "path": str(path), "trained_now": train}
    if split is None:
        meta_path.write_text(json.dumps(meta, indent=2))
        return {**record, **meta}
    evals, key = meta["evals"], plan.eval_key(split)
    cached = evals.get(key, {})
    if not cached or (plan.diagnose and kind != "single" and "signal" not in cached):
        evals[key] = held_out(env_fn, load_warm_start(kind, path, roles), plan, split)
    meta_path.write_text(json.dumps(meta, indent=2))
    start = evals[key]
    print(f"[warm start {kind}] {format_rate(start['successes'], start['n'])}", flush=True)
    return {**record, **meta, "start": start}


# --------------------------------------------------------------------------- which to build
def warm_starts_to_train(
    plan: Plan, directory: Path, reuse: Reuse, arms: Iterable[str] | None = None
) -> dict[WarmStartKind, bool]:
    """Warm start kind -> whether it must be trained now; prints why for each.

    Args:
        plan: What the warm starts are for.
        directory: Holds ``<kind>/`` (model and ``stamp.json``) and ``<kind>.json``.
        reuse: ``matching``: use a saved warm start whose stamp is
            ``cache_stamp(sft_key(plan))``, retrain otherwise (the cache in
            ``OUT/warm_start``); ``any``: use whatever is saved (a directory the spec
            names); ``never``: retrain every one (``--no-cache``).
        arms: The arms whose warm starts are needed (default ``plan.arms``).
    """
    if reuse not in ("matching", "any", "never"):
        raise ValueError(f"reuse must be 'matching', 'any' or 'never', got {reuse!r}")
    out = {}
    stamp = cache_stamp(sft_key(plan))
    for kind in dict.fromkeys(ARMS[a].warm_start for a in (plan.arms if arms is None else arms)):
        path = directory / kind
        roles = warm_env_fn(kind, plan)().possible_agents
        ready = warm_start_ready(kind, path, roles)
        built_for = ((read_stamp(path) or {}).get("recipe") or {}).get("env", plan.env)
        if built_for != plan.env and reuse == "any":
            raise ValueError(
                f"the warm start in {path} was built for {built_for}, this run is on "
                f"{plan.env}: name another warm_start_dir"
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
