"""The Ray backend against the embedded learner: steps/s and bytes moved per step.

The same M-GRPO run (``research_v0`` easy with short budgets, tiny micro models, one
torch thread in every process) is trained by the embedded learner and by the Ray
backend with 1 and 2 rollout workers (one set of actors: a pool of 2 workers, the
step's slices sent to the first 1 or 2), and with 1 worker and ``sync="off"`` (the
next step played while this one updates; its ``staleness`` is the median of the
steps' mean sample staleness), on a local Ray of 2 CPUs. Each figure is the
median of 3 timed trials of a few steps each, after one warm-up step (actors start
before it, outside the timing). ``bytes_per_step`` is the median of the Ray steps'
``perf/bytes_moved``: the serialized sizes of everything that crossed an actor
boundary (slices to and from the rollout workers, generate requests and replies,
samples to the role actors and their stats, rows to and from the store), with its
breakdown per part. ``weights_at_start_bytes`` is what the role actors were sent
when they started (every model's weights, once; weights do not move during steps).

    python benchmarks/distributed.py            # N=8 queries x K=4, 16 new tokens
    python benchmarks/distributed.py --quick    # under a minute

The last line of output is one JSON object: ``ray_vs_embedded`` (steps/s ratio per
worker count), ``workers`` (steps/s and bytes per worker count), ``embedded``,
``bytes_per_step``, ``sync_off`` and the machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import ray
import torch

from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.distributed import RayMGRPOTrainer
from mgrpo_algos.distributed.rollout import RayRollouts
from mgrpo_algos.metrics import emit, median
from mgrpo_algos.training.loop import Learner

ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}


def config(args: argparse.Namespace, **kw: Any) -> MGRPOConfig:
    return MGRPOConfig(
        steps=10_000,  # the loop below decides how many steps run
        queries_per_step=args.queries,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        env_kwargs=ENV,
        lr=1e-3,
        **kw,
    )


def timed(learner: Learner, trials: int, steps: int) -> tuple[float, list[dict[str, Any]]]:
    """Median steps/s over ``trials`` runs of ``steps`` steps, after one warm-up step."""
    learner.train_step()
    rates, metrics = [], []
    for _ in range(trials):
        t0 = time.perf_counter()
        metrics += [learner.train_step() for _ in range(steps)]
        rates.append(steps / (time.perf_counter() - t0))
    return median(rates), metrics


def bytes_of(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Median bytes per step, in total and per part."""
    keys = ["perf/bytes_moved", *sorted(k for k in metrics[0] if k.startswith("perf/bytes/"))]
    return {
        k.removeprefix("perf/").removeprefix("bytes/"): median([m[k] for m in metrics])
        for k in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="steps per trial")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--group-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.quick else 4)
    args.queries = args.queries or (2 if args.quick else 8)
    args.group_size = args.group_size or (3 if args.quick else 4)
    args.max_new_tokens = args.max_new_tokens or (8 if args.quick else 16)
    torch.set_num_threads(1)
    embedded, _ = timed(MGRPOTrainer(config(args)), args.trials, args.steps)
    print(f"embedded: {embedded:.2f} steps/s", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    workers: dict[int, dict[str, Any]] = {}
    try:
        with RayMGRPOTrainer(config(args, backend="ray", rollout_workers=2)) as learner:
            weights_at_start = learner.weight_bytes["start"]
            for n in (1, 2):  # one set of actors; the step's slices go to the first n workers
                learner.engine = RayRollouts(learner.workers[:n])
                rate, metrics = timed(learner, args.trials, args.steps)
                workers[n] = {"steps_per_s": rate, "bytes_per_step": bytes_of(metrics)}
                print(
                    f"ray, {n} rollout worker(s): {rate:.2f} steps/s ({rate / embedded:.2f}x), "
                    f"{workers[n]['bytes_per_step']['bytes_moved'] / 1024:.0f} KiB/step",
                    flush=True,
                )
        # asynchronous: the next step is played while this one updates (1 worker)
        off = config(args, backend="ray", rollout_workers=1, sync="off", max_staleness=1)
        with RayMGRPOTrainer(off) as learner:
            rate, metrics = timed(learner, args.trials, args.steps)
        staleness = median([m["staleness/mean"] for m in metrics])
        sync_off = {"steps_per_s": rate, "vs_embedded": rate / embedded, "staleness": staleness}
        print(
            f"ray, 1 rollout worker, sync off: {rate:.2f} steps/s ({rate / embedded:.2f}x), "
            f"mean staleness {staleness:.2f} updates",
            flush=True,
        )
    finally:
        ray.shutdown()
    emit(
        {
            "benchmark": "distributed",
            "settings": {
                "queries": args.queries,
                "group_size": args.group_size,
                "max_new_tokens": args.max_new_tokens,
                "steps_per_trial": args.steps,
                "trials": args.trials,
                "model": "tiny-micro",
                "torch_threads": 1,
                "ray_cpus": 2,
            },
            "embedded": {"steps_per_s": embedded},
            "workers": workers,
            "ray_vs_embedded": {n: w["steps_per_s"] / embedded for n, w in workers.items()},
            "bytes_per_step": {n: w["bytes_per_step"]["bytes_moved"] for n, w in workers.items()},
            "sync_off": sync_off,
            "weights_at_start_bytes": weights_at_start,
        }
    )


if __name__ == "__main__":
    main()
