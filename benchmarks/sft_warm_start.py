"""SFT warm start: success of a tiny model trained on the scripted expert's demonstrations.

A tiny policy is trained by SFT on expert episodes of ``research_v0`` (by default one
model on every role's demonstrations, each role's loss on its own tokens; ``--per-role``
trains one model per role) and evaluated on held-out seeds (disjoint from the demonstration
seeds) by sampling at temperature 1, the setting RL starts from. Reported: success
rate with its 95% Wilson interval, next to the scripted expert and the untrained
model on the same seeds, plus the SFT wall time.

    python benchmarks/sft_warm_start.py                 # medium, 200 eval episodes
    python benchmarks/sft_warm_start.py --quick         # under a minute, tiny numbers
    python benchmarks/sft_warm_start.py --save runs/sft # also keep the trained models

Every evaluation is :func:`mgrpo_algos.evaluate.evaluate` (the same held-out seeds and
sampling as everywhere else; the expert is every role scripted). ``--save DIR`` also
writes ``DIR/stamp.json``: the settings the models were built from, the package
versions and the library's code version. The last line of output is one JSON object
with the figures, the machine and the provenance (package versions, code version).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import mgrpo_envs
from mgrpo_algos.evaluate import evaluate
from mgrpo_algos.experiments.cache import write_stamp
from mgrpo_algos.metrics import emit
from mgrpo_algos.provenance import cache_stamp, provenance
from mgrpo_algos.sft import RECIPE, SFTConfig, recipe, tiny_policies, warm_start


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--difficulty", default="medium")
    parser.add_argument("--size", default="micro")
    parser.add_argument("--demos", type=int, default=None, help="expert episodes")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None, help="evaluation episodes")
    parser.add_argument("--lr", type=float, default=RECIPE.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="directory to save the trained policies")
    parser.add_argument(
        "--per-role",
        dest="shared",
        action="store_false",
        help="one model per role, each on its own role's demonstrations",
    )
    parser.add_argument(
        "--shared",
        dest="shared",
        action="store_true",
        help="one model learns every role's demonstrations (the default)",
    )
    parser.add_argument("--batch-tokens", type=int, default=RECIPE.max_batch_tokens)
    parser.add_argument(
        "--numbers",
        action="store_true",
        help="document ids and years as single tokens (HFPolicy.tiny(numbers=True))",
    )
    parser.add_argument(
        "--copy-steps",
        type=int,
        default=None,
        help="steps of synthetic copying before the demonstrations (default 400; quick 50)",
    )
    parser.add_argument(
        "--lookup-steps",
        type=int,
        default=None,
        help="steps of synthetic lookup, interleaved with the copying (default: the recipe's)",
    )
    parser.add_argument(
        "--context-weight",
        type=float,
        default=RECIPE.context_weight,
        help="weight of the language-modelling loss on context tokens (0: actions only)",
    )
    args = parser.parse_args()
    return args


def save(args: argparse.Namespace, policies: dict, cfg: SFTConfig) -> None:
    """Saves each role's model in ``--save``/<role>, and the stamp they were built under."""
    for role, policy in policies.items():
        policy.save(f"{args.save}/{role}")
    recipe = {"env": "research_v0", "difficulty": args.difficulty, "size": args.size}
    recipe |= {"shared": args.shared, "numbers": args.numbers, "init_seed": args.seed}
    write_stamp(Path(args.save), cache_stamp({**recipe, "sft": dataclasses.asdict(cfg)}))


def main() -> None:
    args = parse_args()
    demos_n = args.demos or (20 if args.quick else 2000)
    epochs = args.epochs or (1 if args.quick else 3)
    episodes = args.episodes or (20 if args.quick else 200)
    copy_steps = args.copy_steps if args.copy_steps is not None else (50 if args.quick else 400)
    lookup_steps = args.lookup_steps
    if lookup_steps is None:
        lookup_steps = RECIPE.lookup_steps

    def env_fn():
        return mgrpo_envs.make("research_v0", difficulty=args.difficulty)

    torch.manual_seed(args.seed)
    policies = tiny_policies(
        env_fn(), size=args.size, seed=args.seed, shared=args.shared, numbers=args.numbers
    )
    # the untrained model on a few episodes only: it never succeeds, and sampling until
    # every budget runs out is the most expensive evaluation there is
    untrained = evaluate(env_fn, policies, min(episodes, 20))
    expert = evaluate(env_fn, {}, episodes, scripted=env_fn().possible_agents)
    t0 = time.perf_counter()
    cfg = recipe(
        episodes=demos_n,
        epochs=epochs,
        lr=args.lr,
        max_batch_tokens=args.batch_tokens,
        seed=args.seed,
        context_weight=args.context_weight,
        copy_steps=copy_steps,
        lookup_steps=lookup_steps,
    )
    history = warm_start(env_fn, policies, cfg, progress=not args.quick)
    sft_seconds = time.perf_counter() - t0
    trained = evaluate(env_fn, policies, episodes)
    if args.save:
        save(args, policies, cfg)
    losses = {k: v[-1] for k, v in history.items()}
    for name, r in (("untrained", untrained), ("sft", trained), ("expert", expert)):
        print(f"{name:>10}: {r.text}")
    print(
        f"SFT: {demos_n} expert episodes, {epochs} epochs, {sft_seconds:.0f} s, final loss {losses}"
    )
    emit(
        {
            "benchmark": "sft_warm_start",
            "env": "research_v0",
            "difficulty": args.difficulty,
            "model": f"tiny-{args.size}",
            "shared": args.shared,
            "numbers": args.numbers,
            "seed": args.seed,
            "demo_episodes": demos_n,
            "epochs": epochs,
            "lr": args.lr,
            "context_weight": args.context_weight,
            "copy_steps": copy_steps,
            "lookup_steps": lookup_steps,
            "batch_tokens": args.batch_tokens,
            "sft_seconds": sft_seconds,
            "final_loss": losses,
            "eval_episodes": episodes,
            "success": {
                "untrained": untrained.success_rate,
                "sft": trained.success_rate,
                "expert": expert.success_rate,
            },
            "ci95": {
                "untrained": list(untrained.ci95),
                "sft": list(trained.ci95),
                "expert": list(expert.ci95),
            },
            "provenance": provenance(),
        }
    )


if __name__ == "__main__":
    main()
