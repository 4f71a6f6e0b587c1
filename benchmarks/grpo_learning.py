"""GRPO learns: success before and after a CPU-time budget of training, per seed.

One shared tiny policy plays every role of ``research_v0`` (the AEC env): the learner
is ``MGRPOTrainer`` with ``algo="shared"`` and ``align="ragged"`` (group advantages
per query and role, no alignment: GRPO with one model for every role).
It starts from the SFT warm start (``--warm-start DIR``, a policy directory as
``benchmarks/sft_warm_start.py --shared --save DIR`` writes, used as it is; without it
one is trained in ``OUT/warm_start``, with ``stamp.json`` next to it: the SFT recipe,
the package versions and the library's code version, and reused by a later run only
when that stamp is the one it would write; ``--no-cache`` retrains it), is evaluated
on held-out episodes at temperature 1, trained with GRPO until its process has used
``--cpu-minutes`` of CPU time, and evaluated again on the same episodes. Each seed
seeds the training queries; the start and end evaluations are
:func:`mgrpo_algos.evaluate.evaluate`, the same held-out env seeds and sampling for
every seed.

    python benchmarks/grpo_learning.py --warm-start runs/sft-easy/main   # 3 seeds
    python benchmarks/grpo_learning.py --jobs 2                          # 2 seeds at once
    python benchmarks/grpo_learning.py --quick                           # a minute

``--jobs N`` runs N seeds at once in spawned processes, each with ``--threads`` torch
threads (default 1 when N > 1).

CPU time (``time.process_time``) is the budget, so that runs sharing a machine are
charged for what they use, not for waiting. The last line of output is one JSON
object: per seed the start and end evaluations (``EvalResult.to_dict()`` plus
``text``: success rates with 95% Wilson intervals, main's mean reward with its
interval), the steps and episodes trained, and whether the intervals are disjoint;
the machine and the provenance (package versions, code version). Renamed from
earlier versions: ``start.success`` and ``end.success`` -> ``success_rate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

import mgrpo_envs
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.evaluate import evaluate
from mgrpo_algos.experiments.cache import cache_usable, write_stamp
from mgrpo_algos.metrics import emit
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.provenance import cache_stamp, provenance
from mgrpo_algos.sft import SFTConfig, recipe, warm_start


def held_out(env_fn, policy: HFPolicy, episodes: int, max_new_tokens: int) -> dict:
    """``policy`` playing every role on the held-out episodes, at temperature 1."""
    policies = {r: policy for r in env_fn().possible_agents}
    result = evaluate(env_fn, policies, episodes, max_new_tokens=max_new_tokens)
    return {**result.to_dict(), "text": result.text}


def warm_start_recipe(args) -> dict:
    """What the warm start of ``train_warm_start`` is built from (its cache key)."""
    cfg = recipe(  # as benchmarks/sft_warm_start.py trains it
        episodes=20 if args.quick else 2000,
        epochs=1 if args.quick else 3,
        copy_steps=20 if args.quick else 400,
    )
    env = {"env": "research_v0", "difficulty": args.difficulty}
    return {**env, "size": args.size, "init_seed": 0, "sft": dataclasses.asdict(cfg)}


def train_warm_start(env_fn, args) -> Path:
    """SFT of one shared policy on expert episodes, cached in ``OUT/warm_start``.

    Reused when its ``stamp.json`` equals ``cache_stamp(warm_start_recipe(args))``
    (and ``--no-cache`` is not given); returns the saved directory.
    """
    path = Path(args.out) / "warm_start"
    recipe = warm_start_recipe(args)
    stamp = cache_stamp(recipe)
    if cache_usable(path, stamp, cache=args.cache, what="warm start"):
        return path
    shutil.rmtree(path, ignore_errors=True)  # no stale stamp survives a failed rebuild
    policy = HFPolicy.tiny(env_fn(), size=args.size, seed=recipe["init_seed"])
    roles = env_fn().possible_agents
    cfg = SFTConfig(**recipe["sft"])
    warm_start(env_fn, {r: policy for r in roles}, cfg, progress=False)
    policy.save(path)
    write_stamp(path, stamp)
    return path


def run_seed(seed: int, warm: Path, args) -> dict:
    """Evaluate, train for the CPU budget, evaluate; one seed (in its own process with --jobs)."""
    if args.threads:
        torch.set_num_threads(args.threads)

    def env_fn():
        return mgrpo_envs.make("research_v0", difficulty=args.difficulty)

    policy = HFPolicy.load(warm)
    start = held_out(env_fn, policy, args.episodes, args.max_new_tokens)
    config = MGRPOConfig(
        algo="shared",
        align="ragged",
        env="research_v0",
        env_kwargs={"difficulty": args.difficulty},
        model=str(warm),
        steps=10_000,  # the CPU budget ends the run
        queries_per_step=args.queries,
        group_size=args.group,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        loss_type=args.loss,
        seed=seed,
        checkpoint_every=0,
    )
    out = Path(args.out) / f"seed{seed}"
    if out.exists():  # this benchmark's own run directory: a rerun replaces it
        shutil.rmtree(out)
    roles = env_fn().possible_agents
    trainer = MGRPOTrainer(config, out_dir=out, policies={role: policy for role in roles})
    cpu0, wall0 = time.process_time(), time.perf_counter()
    budget = args.cpu_minutes * 60
    curve = []

    def on_step(learner, m) -> bool:  # the CPU budget ends the run (checkpointed)
        curve.append(m["success_rate"])
        print(
            f"seed {seed} step {m['step']:>3} success {m['success_rate']:.3f} "
            f"reward {m['reward/main/mean']:.3f} cpu {time.process_time() - cpu0:.0f}s",
            flush=True,
        )
        return time.process_time() - cpu0 >= budget

    trainer.train(progress=False, on_step=on_step)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    end = held_out(env_fn, policy, args.episodes, args.max_new_tokens)
    return {
        "seed": seed,
        "start": start,
        "end": end,
        "steps": trainer.step_idx,
        "episodes_trained": trainer.step_idx * config.episodes_per_step,
        "cpu_seconds": cpu_s,
        "wall_seconds": wall_s,
        "disjoint": end["ci95"][0] > start["ci95"][1],
        "train_success_curve": curve,
    }


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--warm-start", default=None, help="saved policy directory")
    parser.add_argument("--difficulty", default="easy")
    parser.add_argument("--size", default="micro", help="tiny size when training a warm start")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cpu-minutes", type=float, default=None)
    parser.add_argument("--episodes", type=int, default=None, help="evaluation episodes")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--loss", default="dapo")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--out", default="runs/grpo_learning")
    parser.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="retrain the warm start even when the cached one was built the same way",
    )
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def main() -> None:
    args = parse_args()
    if args.jobs > 1 and not args.threads:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    args.cpu_minutes = args.cpu_minutes or (0.3 if args.quick else 20.0)
    args.episodes = args.episodes or (20 if args.quick else 200)
    if args.quick:
        args.queries, args.group = 2, 4

    def env_fn():
        return mgrpo_envs.make("research_v0", difficulty=args.difficulty)

    warm = Path(args.warm_start) if args.warm_start else train_warm_start(env_fn, args)
    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        runs = [pool.submit(run_seed, seed, warm, args) for seed in args.seeds]
        for future in runs:  # in seed order; each is saved as soon as it is in
            r = future.result()
            results.append(r)
            print(
                f"seed {r['seed']}: {r['start']['text']} -> {r['end']['text']} after "
                f"{r['steps']} steps ({r['episodes_trained']} episodes, "
                f"{r['cpu_seconds'] / 60:.1f} CPU min)",
                flush=True,
            )
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))
    emit(
        {
            "benchmark": "grpo_learning",
            "env": "research_v0",
            "difficulty": args.difficulty,
            "warm_start": str(warm),
            "cpu_minutes": args.cpu_minutes,
            "eval_episodes": args.episodes,
            "config": {
                "queries": args.queries,
                "group": args.group,
                "lr": args.lr,
                "loss": args.loss,
                "max_new_tokens": args.max_new_tokens,
            },
            "seeds": [{k: v for k, v in r.items() if k != "train_success_curve"} for r in results],
            "provenance": provenance(),
        }
    )


if __name__ == "__main__":
    main()
