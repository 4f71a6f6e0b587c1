"""Environment throughput: agent steps per second, env time only.

For every registered env id (``mgrpo_envs.list_envs()``, each at its default
arguments, i.e. medium difficulty), episodes are played by the scripted expert; only
the time spent inside ``env.reset``, ``env.step`` and ``env.last`` counts (the
expert's own thinking is excluded). The reference, measured in the same process, is
PettingZoo's own ``tictactoe_v3`` under random legal play (sampling excluded as well).

    python benchmarks/env_throughput.py            # full: 5 runs of 3 s per env
    python benchmarks/env_throughput.py --quick    # under a minute

The last line of output is one JSON object: ``steps_per_s`` per env,
``ratio_vs_tictactoe`` per env id, ``per_env`` (per env id: median steps per
second, ratio against the reference, ``reset_ms``, the median time of one
``reset``, which draws a new world, and ``steps_per_episode``), the runs, and the
machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import mgrpo_envs
from mgrpo_algos.metrics import emit, median


@dataclass
class Run:
    """One timed run: agent steps and env time, and the part of it spent in ``reset``."""

    steps: int = 0
    episodes: int = 0
    env_time: float = 0.0
    reset_time: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.env_time

    @property
    def reset_ms(self) -> float:
        return 1000 * self.reset_time / max(self.episodes, 1)

    @property
    def steps_per_episode(self) -> float:
        return self.steps / max(self.episodes, 1)


def timed_steps(env, choose: Callable, seconds: float, seed: int) -> Run:
    """Plays episodes for ``seconds`` while ``choose(env, obs, info)`` picks the actions."""
    run = Run()
    wall_start = time.perf_counter()
    while time.perf_counter() - wall_start < seconds:
        t = time.perf_counter()
        env.reset(seed=seed + run.episodes)
        elapsed = time.perf_counter() - t
        run.env_time += elapsed
        run.reset_time += elapsed
        run.episodes += 1
        for _ in env.agent_iter():
            t = time.perf_counter()
            obs, _, term, trunc, info = env.last()
            run.env_time += time.perf_counter() - t
            action = None if (term or trunc) else choose(env, obs, info)
            t = time.perf_counter()
            env.step(action)
            run.env_time += time.perf_counter() - t
            run.steps += 1
    return run


def tictactoe_random(rng: np.random.Generator) -> Callable:
    def choose(env, obs, info):
        legal = np.flatnonzero(obs["action_mask"])
        return int(legal[rng.integers(len(legal))])

    return choose


def expert(env, obs, info) -> str:
    return env.unwrapped.oracle_action()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 3.0)

    from pettingzoo.classic import tictactoe_v3

    rng = np.random.default_rng(0)
    runs_of: dict[str, list[Run]] = {"tictactoe_v3": []}
    envs = {env_id: mgrpo_envs.make(env_id) for env_id in mgrpo_envs.list_envs()}
    for env_id in envs:
        runs_of[env_id] = []
    ttt = tictactoe_v3.env()
    for run in range(runs):  # interleaved, so drifts in machine load hit every env alike
        runs_of["tictactoe_v3"].append(timed_steps(ttt, tictactoe_random(rng), seconds, run))
        for env_id, env in envs.items():
            runs_of[env_id].append(timed_steps(env, expert, seconds, 1000 * run))
    samples = {k: [r.steps_per_s for r in v] for k, v in runs_of.items()}
    steps_per_s = {k: median(v) for k, v in samples.items()}
    ref = steps_per_s["tictactoe_v3"]
    ratio = {k: v / ref for k, v in steps_per_s.items() if k != "tictactoe_v3"}
    per_env = {
        env_id: {
            "steps_per_s": steps_per_s[env_id],
            "ratio_vs_tictactoe": ratio[env_id],
            "reset_ms": median([r.reset_ms for r in runs_of[env_id]]),
            "steps_per_episode": median([r.steps_per_episode for r in runs_of[env_id]]),
        }
        for env_id in envs
    }
    print(
        f"{'env':<16}{'steps/s (median)':>18}{'vs tictactoe':>14}{'reset ms':>10}{'steps/ep':>10}"
    )
    print(f"{'tictactoe_v3':<16}{ref:>18,.0f}{1.0:>14.3f}")
    for k, fig in per_env.items():
        print(
            f"{k:<16}{fig['steps_per_s']:>18,.0f}{fig['ratio_vs_tictactoe']:>14.3f}"
            f"{fig['reset_ms']:>10.2f}{fig['steps_per_episode']:>10.1f}"
        )
    emit(
        {
            "benchmark": "env_throughput",
            "runs": runs,
            "seconds_per_run": seconds,
            "steps_per_s": steps_per_s,
            "ratio_vs_tictactoe": ratio,
            "per_env": per_env,
            "samples": samples,
        }
    )


if __name__ == "__main__":
    main()
