"""The ``mgrpo`` command."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import mgrpo_envs
from mgrpo_algos.metrics import format_rate, wilson_interval
from mgrpo_envs.testing import play_episode, random_tool_action


def _demo(args: argparse.Namespace) -> int:
    """Plays seeded episodes with the scripted expert and a random policy; prints both rates."""
    env = mgrpo_envs.make(args.env, difficulty=args.difficulty, render_mode="ansi")
    play_episode(env, lambda e: e.unwrapped.oracle_action(), args.seed)
    print(f"One {args.env} ({args.difficulty}) episode played by the scripted expert:\n")
    print(env.render())
    rng = np.random.default_rng(args.seed)
    policies = {
        "expert": lambda e: e.unwrapped.oracle_action(),
        "random": lambda e: random_tool_action(e, rng),
    }
    results = {}
    for name, policy in policies.items():
        wins = sum(
            bool(play_episode(env, policy, args.seed + i)["final"]["main"]["outcome"]["correct"])
            for i in range(args.episodes)
        )
        results[name] = {
            "success_rate": wins / args.episodes,
            "ci95": wilson_interval(wins, args.episodes),
        }
        print(f"\n{name:>6} success rate: {format_rate(wins, args.episodes)}", end="")
    print()
    summary = {
        "env": args.env,
        "difficulty": args.difficulty,
        "episodes": args.episodes,
        "seed": args.seed,
        **results,
    }
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgrpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="play episodes with the scripted expert and a random policy")
    demo.add_argument("--env", default="research_v0", choices=mgrpo_envs.list_envs())
    demo.add_argument("--difficulty", default="medium", choices=["easy", "medium", "hard"])
    demo.add_argument("--episodes", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
