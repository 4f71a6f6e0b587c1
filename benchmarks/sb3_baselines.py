"""SB3 baselines: PPO and A2C from stable-baselines3 on every env's discrete view.

For every id in ``mgrpo_envs.list_envs()``, PPO and A2C (``MlpPolicy``, 4 envs,
entropy bonus 0.01, otherwise SB3's defaults but PPO's rollout of 256 steps per env)
train for a fixed budget of steps on the discrete view
(``mgrpo_envs/<Task>Discrete-v0``: a menu of tool calls, a vector observation).
Then each is evaluated, acting greedily, on held-out seeds, next to two references
on the same seeds: a uniform choice among the filled menu slots (random menu) and
the scripted expert restricted to the menu (it fails an episode at the first step
whose call the menu lacks; ``menu_coverage`` is the share of its steps that were in
the menu). ``expert_text`` is the same expert on the text view, the upper bound.
Success rates carry 95% Wilson intervals.

    python benchmarks/sb3_baselines.py             # 25,000 steps per run, 200 episodes
    python benchmarks/sb3_baselines.py --quick     # under a minute, tiny numbers
    python benchmarks/sb3_baselines.py --plot sb3.png --env research_v0

The last line of output is one JSON object with the figures and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import mgrpo_envs
from mgrpo_algos.evaluate import EVAL_SEED0, eval_seeds
from mgrpo_algos.metrics import emit, format_rate, wilson_interval
from mgrpo_envs.registry import discrete_ids
from mgrpo_envs.wrappers.discrete import DiscreteToolEnv

N_ENVS = 4
ALGOS = {
    "ppo": lambda env, seed: PPO(
        "MlpPolicy", env, n_steps=256, ent_coef=0.01, seed=seed, device="cpu", verbose=0
    ),
    "a2c": lambda env, seed: A2C("MlpPolicy", env, ent_coef=0.01, seed=seed, device="cpu"),
}
Chooser = Callable[[DiscreteToolEnv, np.ndarray], int | None]


def evaluate(env: DiscreteToolEnv, choose: Chooser, episodes: int) -> dict[str, Any]:
    """Success and reward over the held-out seeds; ``choose`` returning None fails the episode."""
    wins, rewards = 0, []
    for seed in eval_seeds(episodes):  # the held-out block of mgrpo_algos.evaluate
        obs, _ = env.reset(seed=seed)
        reward, done, info = 0.0, False, {}
        while not done:
            action = choose(env, obs)
            if action is None:
                break
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        wins += bool(done and info["outcome"]["correct"])
        rewards.append(float(reward) if done else 0.0)
    return rate(wins, episodes) | {"reward_mean": float(np.mean(rewards))}


def rate(wins: int, n: int) -> dict[str, Any]:
    return {"success": wins / n, "ci95": wilson_interval(wins, n), "text": format_rate(wins, n)}


def expert_text(env: DiscreteToolEnv, episodes: int) -> dict[str, Any]:
    """The scripted expert on the text view underneath, same seeds."""
    text_env, wins = env.text_env, 0
    for seed in eval_seeds(episodes):
        text_env.reset(seed=seed)
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = text_env.step(text_env.unwrapped.oracle_action())
            done = terminated or truncated
        wins += bool(info["outcome"]["correct"])
    return rate(wins, episodes)


def expert_menu(env: DiscreteToolEnv, episodes: int) -> dict[str, Any]:
    """The expert restricted to the menu, and the share of its steps the menu held."""
    steps = [0, 0]  # (in the menu, asked)

    def choose(e: DiscreteToolEnv, _: np.ndarray) -> int | None:
        index = e.oracle_index()
        steps[0] += index is not None
        steps[1] += 1
        return index

    result = evaluate(env, choose, episodes)
    return result | {"menu_coverage": steps[0] / max(steps[1], 1)}


def random_menu(seed: int) -> Chooser:
    rng = np.random.default_rng(seed)

    def choose(env: DiscreteToolEnv, _: np.ndarray) -> int:
        filled = np.flatnonzero(env.action_masks())
        return int(rng.choice(filled)) if len(filled) else 0

    return choose


def train(gym_id: str, algo: str, steps: int, env_kwargs: dict, seed: int) -> tuple[Any, float]:
    """A trained model and its wall time in seconds."""

    venv = DummyVecEnv([lambda: gymnasium.make(gym_id, **env_kwargs)] * N_ENVS)
    venv.seed(seed)  # env i starts from seed + i, far below the held-out block
    model = ALGOS[algo](venv, seed)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, progress_bar=sys.stderr.isatty())
    return model, time.perf_counter() - t0


def run_env(env_id: str, args: argparse.Namespace, steps: int, episodes: int) -> dict[str, Any]:
    gym_id = {v: k for k, v in discrete_ids().items()}[env_id]
    env_kwargs = {"difficulty": args.difficulty}
    env: DiscreteToolEnv = gymnasium.make(gym_id, **env_kwargs).unwrapped
    out: dict[str, Any] = {"gym_id": gym_id, "n_actions": env.n_actions}
    out["expert_text"] = expert_text(env, episodes)
    out["expert_menu"] = expert_menu(env, episodes)
    out["random_menu"] = evaluate(env, random_menu(args.seed), episodes)
    for algo in ALGOS:
        model, seconds = train(gym_id, algo, steps, env_kwargs, args.seed)

        def greedy(e: DiscreteToolEnv, obs: np.ndarray, model: Any = model) -> int:
            return int(model.predict(obs, deterministic=True)[0])

        out[algo] = evaluate(env, greedy, episodes) | {
            "train_seconds": seconds,
            "train_steps_per_s": steps / seconds,
        }
        print(f"  {env_id} {algo}: {out[algo]['text']} after {steps} steps ({seconds:.0f} s)")
    best = out["expert_text"]["success"]
    for name in (*ALGOS, "random_menu", "expert_menu"):
        out[name]["ratio_vs_expert_text"] = out[name]["success"] / best if best else None
    return out


def plot(results: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["random_menu", *ALGOS, "expert_menu", "expert_text"]
    fig, ax = plt.subplots(figsize=(3.5 + 2.2 * len(results), 3.5))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        xs = np.arange(len(results)) + j * width
        ys = [r[name]["success"] for r in results.values()]
        lo = [y - r[name]["ci95"][0] for y, r in zip(ys, results.values(), strict=True)]
        hi = [r[name]["ci95"][1] - y for y, r in zip(ys, results.values(), strict=True)]
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(np.arange(len(results)) + 0.4 - width / 2, list(results))
    ax.set_ylabel("success rate (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute, tiny numbers")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--episodes", type=int, default=None, help="evaluation episodes")
    parser.add_argument("--difficulty", default="easy", choices=["easy", "medium", "hard"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also plot the rates")
    parser.add_argument(
        "--env", action="append", default=None, help="only this env id (repeatable; default: all)"
    )
    args = parser.parse_args()
    steps = args.steps or (1024 if args.quick else 25_000)
    episodes = args.episodes or (20 if args.quick else 200)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {}
    for env_id in args.env or mgrpo_envs.list_envs():
        results[env_id] = run_env(env_id, args, steps, episodes)
    wall = time.perf_counter() - t0
    names = ("random_menu", *ALGOS, "expert_menu", "expert_text")
    print(f"\nsuccess on {episodes} held-out episodes ({args.difficulty}), {steps} steps per run")
    print(f"{'env':<14}" + "".join(f"{n:>30}" for n in names))
    for env_id, r in results.items():
        print(f"{env_id:<14}" + "".join(f"{r[n]['text']:>30}" for n in names))
    if args.plot:
        plot(results, args.plot)
    for r in results.values():
        for n in names:
            r[n].pop("text")
    emit(
        {
            "benchmark": "sb3_baselines",
            "difficulty": args.difficulty,
            "steps_per_run": steps,
            "eval_episodes": episodes,
            "eval_seed0": EVAL_SEED0,  # mgrpo_algos.evaluate's held-out block
            "n_envs": N_ENVS,
            "seed": args.seed,
            "envs": list(results),
            "wall_seconds": wall,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
