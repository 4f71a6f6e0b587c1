"""The ``mgrpo`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import mgrpo_envs
from mgrpo_algos.metrics import format_rate, wilson_interval


def _demo(args: argparse.Namespace) -> int:
    """The main job: warm start, then a short M-GRPO run; success before and after."""
    from dataclasses import replace

    from mgrpo_algos.demo import DemoSettings, run_demo

    settings = DemoSettings(difficulty=args.difficulty, seed=args.seed)
    if args.quick:  # seconds, to check that everything runs; the numbers mean nothing
        settings = replace(
            settings,
            sft_episodes=16,
            sft_epochs=1,
            sft_copy_steps=4,
            steps=1,
            queries=2,
            group_size=2,
            eval_episodes=4,
        )
    if args.steps is not None:
        settings = replace(settings, steps=args.steps)
    if args.episodes is not None:
        settings = replace(settings, eval_episodes=args.episodes)
    try:
        summary = run_demo(settings, args.out)
    except ValueError as err:
        raise SystemExit(f"mgrpo demo: {err}") from err
    print(json.dumps(summary))
    return 0


def _env_args(pairs: list[str]) -> dict:
    """``["main_turns=4", "codec=json"]`` -> ``{"main_turns": 4, "codec": "json"}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env-arg takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _trainer(args: argparse.Namespace):
    """The learner of ``--algo`` (or of the run in ``--resume DIR``)."""
    from mgrpo_algos.grpo import GRPOConfig, GRPOTrainer, latest_checkpoint
    from mgrpo_algos.mgrpo import MGRPOConfig, MGRPOTrainer, is_checkpoint

    if args.resume:
        if is_checkpoint(latest_checkpoint(args.resume)):
            return MGRPOTrainer.resume(args.resume)
        return GRPOTrainer.resume(args.resume)
    if not args.out:
        raise SystemExit("--out DIR is required (or --resume DIR)")
    common = dict(
        env=args.env,
        env_kwargs={"difficulty": args.difficulty, **_env_args(args.env_arg)},
        model=args.model,
        steps=args.steps,
        queries_per_step=args.queries,
        group_size=args.group_size,
        lr=args.lr,
        loss_type=args.loss_type,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )
    if args.algo == "grpo":
        return GRPOTrainer(GRPOConfig(view=args.view, **common), args.out)
    config = MGRPOConfig(
        algo=args.algo,
        align=args.align,
        align_d=args.align_d,
        sub_groups=args.sub_groups,
        store_path=args.store,
        **common,
    )
    return MGRPOTrainer(config, args.out)


def _train(args: argparse.Namespace) -> int:
    """``mgrpo train``: a GRPO or M-GRPO run; writes metrics.jsonl and ckpt-*."""
    try:
        args.env = mgrpo_envs.load_env(args.env)  # FILE.py:ID or MODULE:ID registers a user env
        trainer = _trainer(args)
    except ValueError as err:  # a bad setting: say which, without a traceback
        raise SystemExit(f"mgrpo train: {err}") from err
    history = trainer.train(progress=True)
    if history:
        last = history[-1]
        print(
            json.dumps(
                {
                    "step": last["step"],
                    "success_rate": last["success_rate"],
                    "reward/main/mean": last["reward/main/mean"],
                    "reward/sub/mean": last["reward/sub/mean"],
                }
            )
        )
    return 0


def _eval_policies(ckpt: Path):
    """``(checkpoint, env factory, role -> policy, max_new_tokens)`` of a GRPO or M-GRPO run."""
    from mgrpo_algos.grpo import GRPOConfig, latest_checkpoint, make_env_fn
    from mgrpo_algos.mgrpo import is_checkpoint, load_checkpoint
    from mgrpo_algos.policies import HFPolicy

    if not (ckpt / "policy").is_dir() and not is_checkpoint(ckpt):
        ckpt = latest_checkpoint(ckpt)
    if is_checkpoint(ckpt):
        config, policies = load_checkpoint(ckpt)
        env_fn = make_env_fn(config.env, config.env_kwargs, "shared")
        return ckpt, env_fn, policies, config.max_new_tokens
    config = GRPOConfig(**json.loads((ckpt / "config.json").read_text()))
    env_fn = make_env_fn(config.env, config.env_kwargs, config.view)
    policy = HFPolicy.load(ckpt / "policy")
    return ckpt, env_fn, {r: policy for r in env_fn().possible_agents}, config.max_new_tokens


def _eval(args: argparse.Namespace) -> int:
    """``mgrpo eval``: success rate and reward of a checkpoint, with 95% intervals."""
    import torch

    from mgrpo_algos.rollout import RolloutConfig, RolloutEngine

    if args.env:
        mgrpo_envs.load_env(args.env)
    ckpt, env_fn, policies, max_new_tokens = _eval_policies(Path(args.ckpt))
    engine = RolloutEngine(
        env_fn,
        policies,
        RolloutConfig(max_new_tokens=max_new_tokens, temperature=args.temperature),
    )
    seeds = list(range(args.seed, args.seed + args.episodes))
    res = engine.collect(seeds, 1, generator=torch.Generator().manual_seed(args.seed))
    wins = sum(e.correct for e in res.episodes)
    rewards = np.array([e.reward for e in res.episodes])
    half = 1.96 * rewards.std(ddof=1) / np.sqrt(len(rewards)) if len(rewards) > 1 else 0.0
    out = {
        "ckpt": str(ckpt),
        "episodes": args.episodes,
        "success_rate": wins / args.episodes,
        "success_ci95": wilson_interval(wins, args.episodes),
        "reward_mean": float(rewards.mean()),
        "reward_ci95": [float(rewards.mean() - half), float(rewards.mean() + half)],
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"success {format_rate(wins, args.episodes)}  reward {out['reward_mean']:.3f} "
            f"[{out['reward_ci95'][0]:.3f}, {out['reward_ci95'][1]:.3f}]"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgrpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the main job: SFT warm start, then a short M-GRPO run on research_v0"
    )
    demo.add_argument("--difficulty", default="easy", choices=["easy", "medium", "hard"])
    demo.add_argument("--steps", type=int, default=None, help="M-GRPO steps (default 6)")
    demo.add_argument("--episodes", type=int, default=None, help="held-out evaluation episodes")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="runs/demo", help="warm start cache and the run's files")
    demo.add_argument("--quick", action="store_true", help="a few seconds, tiny sizes")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train agents (writes DIR/metrics.jsonl, DIR/ckpt-*)")
    train.add_argument(
        "--env",
        default="research_v0",
        help=f"one of {mgrpo_envs.list_envs()}, or FILE.py:ID / MODULE:ID for your own env",
    )
    train.add_argument("--algo", default="grpo", choices=["mgrpo", "main-only", "shared", "grpo"])
    train.add_argument("--model", default="tiny", help="'tiny' or a saved policy directory")
    train.add_argument("--steps", type=int, default=20)
    train.add_argument("--out", default=None)
    train.add_argument("--resume", default=None, help="continue the run in this directory")
    train.add_argument("--difficulty", default="easy", choices=["easy", "medium", "hard"])
    train.add_argument(
        "--view",
        default="single",
        choices=["single", "shared"],
        help="grpo only: the single-agent view, or one policy for every role of the AEC env",
    )
    train.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an env argument (repeatable), e.g. --env-arg main_turns=4",
    )
    train.add_argument("--queries", type=int, default=8)
    train.add_argument("--group-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--loss-type", default="grpo", choices=["grpo", "dr_grpo", "dapo", "gspo"])
    train.add_argument("--max-new-tokens", type=int, default=40)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--align",
        default="duplicate_drop",
        choices=["duplicate_drop", "truncate", "fill", "ragged", "none"],
        help="M-GRPO's trajectory alignment of sub-agent calls (none: unsynchronised)",
    )
    train.add_argument(
        "--align-d",
        type=int,
        default=None,
        help="aligned sub-agent calls per rollout (default: estimated from the first batch)",
    )
    train.add_argument(
        "--sub-groups",
        default="query",
        choices=["query", "subtask"],
        help="a sub-agent call's advantage is relative to its query's calls (the paper's)"
        " or to those on the same subtask",
    )
    train.add_argument(
        "--store",
        default=None,
        metavar="PATH",
        help="SQLite file through which the agents exchange rewards (default: memory)",
    )
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="success rate of a checkpoint with a 95% interval")
    ev.add_argument("--ckpt", required=True, help="a ckpt-* directory or a run directory")
    ev.add_argument("--env", default=None, help="FILE.py:ID / MODULE:ID: load your own env first")
    ev.add_argument("--episodes", type=int, default=200)
    ev.add_argument("--seed", type=int, default=1_000_000)
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
