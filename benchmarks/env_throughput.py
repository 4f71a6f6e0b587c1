"""Environment throughput: agent steps per second, env time only.

For every registered env id, episodes are played by the scripted expert; only the
time spent inside ``env.step`` and ``env.last`` counts (the expert's own thinking is
excluded). The reference, measured in the same process, is PettingZoo's own
``tictactoe_v3`` under random legal play (sampling excluded as well).

    python benchmarks/env_throughput.py            # full: 5 runs of 3 s per env
    python benchmarks/env_throughput.py --quick    # under a minute

The last line of output is one JSON object: ``steps_per_s`` per env,
``ratio_vs_tictactoe`` per env id, the runs, and the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import mgrpo_envs
from mgrpo_algos.metrics import emit, median


def timed_steps(env, choose: Callable, seconds: float, seed: int) -> float:
    """Steps per second of env time while ``choose(env, obs, info)`` picks the actions."""
    env_time, steps, episode = 0.0, 0, 0
    wall_start = time.perf_counter()
    while time.perf_counter() - wall_start < seconds:
        t = time.perf_counter()
        env.reset(seed=seed + episode)
        env_time += time.perf_counter() - t
        episode += 1
        for _ in env.agent_iter():
            t = time.perf_counter()
            obs, _, term, trunc, info = env.last()
            env_time += time.perf_counter() - t
            action = None if (term or trunc) else choose(env, obs, info)
            t = time.perf_counter()
            env.step(action)
            env_time += time.perf_counter() - t
            steps += 1
    return steps / env_time


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
    samples: dict[str, list[float]] = {"tictactoe_v3": []}
    envs = {env_id: mgrpo_envs.make(env_id) for env_id in mgrpo_envs.list_envs()}
    for env_id in envs:
        samples[env_id] = []
    ttt = tictactoe_v3.env()
    for run in range(runs):  # interleaved, so drifts in machine load hit every env alike
        samples["tictactoe_v3"].append(timed_steps(ttt, tictactoe_random(rng), seconds, run))
        for env_id, env in envs.items():
            samples[env_id].append(timed_steps(env, expert, seconds, 1000 * run))
    steps_per_s = {k: median(v) for k, v in samples.items()}
    ref = steps_per_s["tictactoe_v3"]
    ratio = {k: v / ref for k, v in steps_per_s.items() if k != "tictactoe_v3"}
    print(f"{'env':<16}{'steps/s (median)':>18}{'vs tictactoe':>14}")
    for k, v in steps_per_s.items():
        print(f"{k:<16}{v:>18,.0f}{(v / ref):>14.3f}")
    emit(
        {
            "benchmark": "env_throughput",
            "runs": runs,
            "seconds_per_run": seconds,
            "steps_per_s": steps_per_s,
            "ratio_vs_tictactoe": ratio,
            "samples": samples,
        }
    )


if __name__ == "__main__":
    main()
