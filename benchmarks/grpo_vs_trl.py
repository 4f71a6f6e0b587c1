"""GRPO training step time: ours against TRL's ``GRPOTrainer``, cost against turns, FLOP/s.

Three measurements, in one process on one machine:

1. **Step time against TRL.** The same tiny policy (``HFPolicy.tiny`` over the
   ``research_v0`` vocabulary; each side trains its own copy of the same initial
   weights), the same single-turn text prompts of exactly 128 tokens, the same
   batch: 4 prompts x group 8 = 32 completions of exactly 32 new tokens, the same
   deterministic reward on the completion text (its share of lowercase letters),
   ``scale_rewards="group"``, the same ``loss_type`` (``grpo``), eps 0.2 / 0.28,
   ``beta=0``, one optimiser step per generation batch, AdamW (for-loop, lr 1e-5,
   no weight decay), gradient clipping at 1, float32, no activation checkpointing
   (TRL's default is on), sampling at temperature 1 with no top-k or top-p. Every
   completion has exactly 32 tokens on both sides: here ``stop_ids=[]`` (the stop
   token is an ordinary token), in TRL ``min_new_tokens=32`` (EOS is never sampled,
   so TRL never cuts a completion at one).

   *Ours* is built from the library's parts, the ones ``mgrpo_algos.algorithms.grpo``'s learner
   uses (its env-driven collection cannot take fixed 128-token prompts):
   ``HFPolicy.generate`` (batched KV-cache sampling; its sampling log-probs are the
   old log-probs) -> reward -> ``group_advantages`` -> ``Trajectory`` records ->
   ``collate`` -> ``HFPolicy.logprobs_shared_prefix`` -> ``policy_loss`` -> backward
   -> clip -> ``AdamW.step``; see :func:`single_turn_step`, timed as a whole. The
   learner's default ``shared_prefix=True``: ours trains each group's prompt once
   (its keys and values are shared by the group's completions, with the same
   log-probs and gradients as full sequences), where TRL runs every completion's
   full sequence (prompt and completion) through forward and backward.

   *TRL* is ``trl.GRPOTrainer`` with a ``GRPOConfig`` that makes one optimiser step
   one generation batch of 32 completions (``per_device_train_batch_size=32``,
   ``num_generations=8``, gradient accumulation 1, ``num_iterations=1``), on CPU,
   generation by transformers (no vLLM), no logging or checkpoints. A
   ``TrainerCallback`` times each optimiser step from ``on_step_begin`` to
   ``on_step_end``: generation, reward, loss, backward, clipping and the optimiser
   step all fall in between.

   Each side's first ``--warmup`` steps are dropped and the figure is the median of
   the next ``--steps``. Ours runs half of its steps before TRL and half after, so a
   drift in a shared machine's load touches both sides alike. ``speedup_vs_trl`` is
   TRL's median step time over ours.

2. **Turn scaling** (ours only). Trajectories of T turns (T = 4, 8, 16, 32), each
   turn ``--obs-tokens`` random observation tokens then ``--gen-tokens`` sampled
   ones, are collected with ``HFPolicy.generate(..., sessions=...)`` (each turn
   prefills only its new observation) and trained as one masked sequence per
   trajectory, 32 of them (4 groups of 8). ``turn_scaling``: the median learner step
   (log-probs, loss, backward, clip, AdamW) in seconds, keyed by turns, after one
   warm-up step per turn count; ``turn_scaling_generate``: the seconds to collect
   the batch (one run). Tokens grow 8x from 4 to 32 turns, and
   ``time_ratio_32_vs_4`` is to be read against ``token_ratio_32_vs_4``; training
   every turn as its own sequence (the history re-encoded each time) would cost
   about T/2 times more. ``seconds_per_token_fit`` is a least-squares line of
   seconds against tokens.

3. **Share of a large matmul's FLOP/s.** Learner FLOP/s = ``6 * N * tokens`` per
   learner step (forward and backward) over its median seconds, with ``N`` the
   weights of every matrix multiply: the decoder blocks' linear layers and the
   output projection (``hidden * vocab``; counted once, though tied to the input
   embedding, whose lookup is no multiply). Norms and attention scores are left out,
   so the figure errs low. ``tokens`` counts every token of the batch (all go
   through forward and backward). It is divided by the FLOP/s of a float32
   ``(n, n) @ (n, n)`` matmul (``--matmul-n``, median of 5) measured here.
   ``matmul_share`` is the 32-turn batch's (the most tokens); ``matmul_share_by_turns``
   gives every turn count's.

Threads: torch's default, as in the other benchmarks (reported with the machine).

    python benchmarks/grpo_vs_trl.py            # full: tiny-small, 5 steps after 2 warm-up
    python benchmarks/grpo_vs_trl.py --quick    # under a minute: tiny-micro, 64-token
                                                # prompts, 16 new tokens, 2+2-token turns

The last line of output is one JSON object with ``speedup_vs_trl``, ``step_seconds``
(each side's median), ``turn_scaling`` (learner seconds per step keyed by turns),
``turn_scaling_generate``, ``matmul_share`` and the machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos.buffer import Trajectory, collate, minibatches
from mgrpo_algos.functional import group_advantages, policy_loss
from mgrpo_algos.metrics import emit, median
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.tiny import SPECIAL_TOKENS, resolve_vocabulary
from mgrpo_algos.training.update import chunk_logprobs, group_minibatches

TURNS = (4, 8, 16, 32)
LR = 1e-5
EPSILON, EPSILON_HIGH = 0.2, 0.28
MAX_GRAD_NORM = 1.0
MAX_BATCH_TOKENS = 16384  # the learner's default chunk (GRPOConfig.max_batch_tokens)


# --------------------------------------------------------------------------- shared inputs
def reward_fn(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """Share of lowercase letters in each completion's text: deterministic, varies by sample.

    ``**kwargs`` takes what TRL passes besides the completions (prompts, ids, state).
    """
    return [sum(c.islower() for c in text) / max(len(text), 1) for text in completions]


def make_prompts(policy: HFPolicy, count: int, length: int, seed: int) -> list[str]:
    """``count`` texts of random vocabulary words, each exactly ``length`` tokens.

    Words are added while they fit; the rest is filled with ``.`` (one token each), so
    the length holds whatever the tokenizer does with spaces.
    """
    words = [w for w in resolve_vocabulary(mgrpo_envs.make("research_v0")) if w[0].isalpha()]
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        text = str(rng.choice(words))
        while True:
            longer = f"{text} {rng.choice(words)}"
            if len(policy.encode(longer)) > length:
                break
            text = longer
        text += "." * (length - len(policy.encode(text)))
        if len(policy.encode(text)) != length:
            raise RuntimeError(f"prompt has {len(policy.encode(text))} tokens, expected {length}")
        texts.append(text)
    return texts


def make_policy(size: str) -> HFPolicy:
    """The tiny policy every measurement starts from (seed 0: the same weights each call)."""
    return HFPolicy.tiny(mgrpo_envs.make("research_v0"), size=size, seed=0)


def make_optimizer(policy: HFPolicy) -> torch.optim.Optimizer:
    # foreach=False: the for-loop AdamW, which TRL's optim="adamw_torch" also runs on CPU
    return torch.optim.AdamW(policy.parameters(), lr=LR, weight_decay=0.0, foreach=False)


def matmul_params(policy: HFPolicy) -> int:
    """Weights that take part in a matrix multiply per token (see the module docstring)."""
    model = policy.model
    layers = model.model.layers
    linear = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
    return linear + model.get_output_embeddings().weight.numel()


# --------------------------------------------------------------------------- ours
def learner_step(
    policy: HFPolicy,
    optimizer: torch.optim.Optimizer,
    trajs: Sequence[Trajectory],
    *,
    loss_type: str = "grpo",
    max_tokens: int | None = None,
    shared_prefix: bool = False,
) -> float:
    """log-probs -> ``policy_loss`` -> backward -> clip -> AdamW on ``trajs``; returns the loss.

    Chunks of at most ``MAX_BATCH_TOKENS`` padded tokens, sorted by length, with
    gradients weighted by each chunk's share of the sequences, as the learner does.
    ``shared_prefix``: whole groups per chunk, each group's common prompt run once
    (the learner's ``shared_prefix`` option: ``group_minibatches``, ``chunk_logprobs``).
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    if shared_prefix:
        chunks = group_minibatches(trajs, MAX_BATCH_TOKENS)
    else:
        chunks = minibatches(sorted(trajs, key=lambda t: t.num_tokens), MAX_BATCH_TOKENS)
    for chunk in chunks:
        batch = collate(chunk, policy.pad_id)
        logp = chunk_logprobs(policy, chunk, batch, shared_prefix=shared_prefix)  # (B, T-1)
        loss, _ = policy_loss(
            logp,
            batch.old_logprobs,
            batch.advantages,
            batch.action_mask,
            loss_type=loss_type,
            epsilon=EPSILON,
            epsilon_high=EPSILON_HIGH,
            max_tokens=max_tokens,
        )
        share = len(chunk) / len(trajs)
        (loss * share).backward()
        total += float(loss.detach()) * share
    torch.nn.utils.clip_grad_norm_(list(policy.parameters()), MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def with_advantages(trajs: Sequence[Trajectory]) -> list[Trajectory]:
    """Group z-scores of the rewards (a group: the trajectories of one ``group_id``)."""
    rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float64)  # (N,)
    groups = torch.tensor([t.group_id for t in trajs])  # (N,)
    adv = group_advantages(rewards, groups, "group").tolist()  # (N,)
    return [t.replace(advantage=a) for t, a in zip(trajs, adv, strict=True)]


def single_turn_step(
    policy: HFPolicy,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[Sequence[int]],
    *,
    group_size: int,
    new_tokens: int,
    generator: torch.Generator,
    loss_type: str = "grpo",
) -> dict[str, float]:
    """One GRPO step of ours: collect -> score -> advantages -> loss -> step.

    Args:
        policy: The policy trained in place.
        optimizer: Its optimiser.
        prompts: Token ids of the distinct prompts; each is sampled ``group_size`` times.
        group_size: Completions per prompt (K).
        new_tokens: Tokens sampled per completion (stopping is off).
        generator: Sampling randomness.
        loss_type: A ``policy_loss`` variant.

    Returns:
        ``loss``, ``reward`` (mean), and the seconds of ``generate`` and ``learn``.
    """
    t0 = time.perf_counter()
    rows = [list(p) for p in prompts for _ in range(group_size)]
    out = policy.generate(rows, max_new_tokens=new_tokens, stop_ids=[], generator=generator)
    t1 = time.perf_counter()
    rewards = reward_fn(out.texts)
    trajs = []
    for i, (prompt, ids, lps, reward) in enumerate(
        zip(rows, out.completion_ids, out.logprobs, rewards, strict=True)
    ):
        n = len(prompt)
        trajs.append(
            Trajectory(
                agent="main",
                group_id=i // group_size,
                rollout_id=i % group_size,
                invocation=0,
                input_ids=np.array(prompt + ids, dtype=np.int64),
                action_mask=np.r_[np.zeros(n, np.int8), np.ones(len(ids), np.int8)],
                old_logprobs=np.r_[np.zeros(n, np.float32), np.array(lps, np.float32)],
                reward=reward,
            )
        )
    trajs = with_advantages(trajs)
    loss = learner_step(
        policy, optimizer, trajs, loss_type=loss_type, max_tokens=new_tokens, shared_prefix=True
    )
    t2 = time.perf_counter()
    return {
        "loss": loss,
        "reward": float(np.mean(rewards)),
        "generate_s": t1 - t0,
        "learn_s": t2 - t1,
    }


def time_ours(
    policy: HFPolicy,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[Sequence[int]],
    steps: range,
    args: argparse.Namespace,
) -> list[dict[str, float]]:
    """Single-turn steps ``steps`` (step ``i`` takes prompts ``i * queries ...``), timed.

    Returns:
        One record per step: ``seconds`` and the fields of :func:`single_turn_step`.
    """
    records = []
    for step in steps:
        batch = [prompts[(step * args.queries + q) % len(prompts)] for q in range(args.queries)]
        gen = torch.Generator().manual_seed(step)
        t = time.perf_counter()
        stats = single_turn_step(
            policy,
            optimizer,
            batch,
            group_size=args.group_size,
            new_tokens=args.new_tokens,
            generator=gen,
            loss_type=args.loss_type,
        )
        records.append({"seconds": time.perf_counter() - t, **stats})
    return records


# --------------------------------------------------------------------------- TRL
def time_trl(
    base: HFPolicy, prompts: Sequence[str], args: argparse.Namespace
) -> tuple[list[float], list[int]]:
    """Seconds of every optimiser step of ``trl.GRPOTrainer``, and completion lengths seen.

    ``base``'s model is deep-copied, so TRL trains its own copy of the same weights.
    """
    import datasets
    import trl
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    lengths: list[int] = []

    def lowercase_share(completions, completion_ids, **kwargs) -> list[float]:
        lengths.extend(len(ids) for ids in completion_ids)
        return reward_fn(completions)

    model = copy.deepcopy(base.model).train()
    tokenizer = copy.deepcopy(base.tokenizer)
    steps = args.warmup + args.steps
    timer = StepTimer()
    threads = torch.get_num_threads()
    # transformers 5 renamed gradient_checkpointing (TRL's default: on) to activation_checkpointing
    checkpointing = "activation_checkpointing"
    if checkpointing not in {f.name for f in dataclasses.fields(trl.GRPOConfig)}:
        checkpointing = "gradient_checkpointing"
    with tempfile.TemporaryDirectory() as out_dir:
        config = trl.GRPOConfig(
            output_dir=out_dir,
            use_cpu=True,
            bf16=False,
            fp16=False,
            **{checkpointing: False},
            per_device_train_batch_size=args.queries * args.group_size,
            num_generations=args.group_size,
            gradient_accumulation_steps=1,
            num_iterations=1,
            max_steps=steps,
            max_completion_length=args.new_tokens,
            # EOS is never sampled, so every completion has max_completion_length tokens
            generation_kwargs={"min_new_tokens": args.new_tokens},
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            loss_type=args.loss_type,
            scale_rewards="group",
            beta=0.0,
            epsilon=EPSILON,
            epsilon_high=EPSILON_HIGH,
            learning_rate=LR,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=MAX_GRAD_NORM,
            optim="adamw_torch",
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            log_completions=False,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = trl.GRPOTrainer(
            model=model,
            reward_funcs=lowercase_share,
            args=config,
            train_dataset=datasets.Dataset.from_dict({"prompt": list(prompts)}),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        torch.set_num_threads(threads)  # the same threads as ours, whatever TRL's setup did
        trainer.train()
    if len(timer.seconds) != steps:
        raise RuntimeError(f"TRL ran {len(timer.seconds)} optimiser steps, expected {steps}")
    return timer.seconds, lengths


# --------------------------------------------------------------------------- turns
def collect_turns(
    policy: HFPolicy, turns: int, args: argparse.Namespace, seed: int
) -> list[Trajectory]:
    """Trajectories of ``turns`` turns (random observation tokens, sampled replies).

    Every turn appends ``args.obs_tokens`` observation tokens to the conversation and
    samples ``args.gen_tokens``; ``sessions`` lets each call prefill only what is new.
    """
    rows = args.queries * args.group_size
    rng = np.random.default_rng(seed)
    ids: list[list[int]] = [[] for _ in range(rows)]
    mask: list[list[int]] = [[] for _ in range(rows)]
    old: list[list[float]] = [[] for _ in range(rows)]
    keys = [("turns", turns, seed, r) for r in range(rows)]
    gen = torch.Generator().manual_seed(seed)
    low = len(SPECIAL_TOKENS)  # ids below are special tokens
    for _ in range(turns):
        for r in range(rows):
            obs = rng.integers(low, policy.vocab_size, args.obs_tokens).tolist()
            ids[r] += obs
            mask[r] += [0] * len(obs)
            old[r] += [0.0] * len(obs)
        out = policy.generate(
            ids, max_new_tokens=args.gen_tokens, stop_ids=[], generator=gen, sessions=keys
        )
        for r in range(rows):
            ids[r] += out.completion_ids[r]
            mask[r] += [1] * len(out.completion_ids[r])
            old[r] += out.logprobs[r]
    policy.release()
    rewards = reward_fn([policy.decode(row) for row in ids])
    trajs = [
        Trajectory(
            agent="main",
            group_id=r // args.group_size,
            rollout_id=r % args.group_size,
            invocation=0,
            input_ids=np.array(ids[r], np.int64),
            action_mask=np.array(mask[r], np.int8),
            old_logprobs=np.array(old[r], np.float32),
            reward=rewards[r],
            num_turns=turns,
        )
        for r in range(rows)
    ]
    return with_advantages(trajs)


def turn_scaling(args: argparse.Namespace, matmul_flops: float) -> dict[str, dict[int, float]]:
    """Per turn count: collection and learner seconds, tokens, and share of matmul FLOP/s.

    One warm-up learner step per turn count (new shapes), then ``args.steps`` timed.
    """
    policy = make_policy(args.size)
    optimizer = make_optimizer(policy)
    weights = matmul_params(policy)
    out: dict[str, dict[int, float]] = {"generate": {}, "learn": {}, "tokens": {}, "share": {}}
    for turns in TURNS:
        t = time.perf_counter()
        trajs = collect_turns(policy, turns, args, seed=turns)
        out["generate"][turns] = time.perf_counter() - t
        times = []
        for step in range(1 + args.steps):
            t = time.perf_counter()
            learner_step(policy, optimizer, trajs, loss_type=args.loss_type)
            if step >= 1:
                times.append(time.perf_counter() - t)
        tokens = sum(tr.num_tokens for tr in trajs)
        out["learn"][turns] = seconds = median(times)
        out["tokens"][turns] = tokens
        out["share"][turns] = 6 * weights * tokens / seconds / matmul_flops
        print(
            f"turns {turns:>3}: {tokens:>6} tokens   collect {out['generate'][turns]:6.2f} s   "
            f"learner step {seconds:6.2f} s   ({seconds / tokens * 1e6:.1f} us/token, "
            f"{out['share'][turns]:.1%} of matmul FLOP/s)",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- matmul
def matmul_flops(n: int, repeats: int) -> float:
    """FLOP/s of a float32 ``(n, n) @ (n, n)`` (``2 n^3`` FLOPs), median of ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / median(times)


# --------------------------------------------------------------------------- main
def versus_trl(args: argparse.Namespace) -> dict[str, Any]:
    """Median step seconds of ours and of TRL on the same prompts and batch."""
    base = make_policy(args.size)
    steps = args.warmup + args.steps
    texts = make_prompts(base, args.queries * steps, args.prompt_tokens, seed=0)
    prompts = [base.encode(t) for t in texts]
    if base.tokenizer(text=texts)["input_ids"] != prompts:  # how TRL tokenizes text prompts
        raise RuntimeError("the tokenizer's __call__ and HFPolicy.encode disagree on the prompts")
    ours = make_policy(args.size)
    optimizer = make_optimizer(ours)
    # half of our timed steps before TRL's and half after: load drift touches both
    half = args.warmup + args.steps // 2
    records = time_ours(ours, optimizer, prompts, range(half), args)[args.warmup :]
    trl_runs, lengths = time_trl(base, texts, args)
    records += time_ours(ours, optimizer, prompts, range(half, steps), args)
    if set(lengths) != {args.new_tokens}:
        raise RuntimeError(
            f"TRL's completions have {sorted(set(lengths))} tokens, expected {args.new_tokens}"
        )
    ours_runs, trl_runs = [r["seconds"] for r in records], trl_runs[args.warmup :]
    ours_s, trl_s = median(ours_runs), median(trl_runs)
    phases = {k: median([r[f"{k}_s"] for r in records]) for k in ("generate", "learn")}
    print(
        f"step: ours {ours_s:.3f} s (generate {phases['generate']:.3f} s, learn "
        f"{phases['learn']:.3f} s)   TRL {trl_s:.3f} s   speedup {trl_s / ours_s:.2f}x",
        flush=True,
    )
    return {
        "speedup_vs_trl": trl_s / ours_s,
        "step_seconds": {"ours": ours_s, "trl": trl_s},
        "step_seconds_runs": {"ours": ours_runs, "trl": trl_runs},
        "ours_phase_seconds": phases,
        "matmul_params": matmul_params(base),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, shorter turns")
    sizes = ["micro", "small", "base"]
    parser.add_argument("--size", choices=sizes, help="default small (quick micro)")
    parser.add_argument("--loss-type", default="grpo", choices=["grpo", "dr_grpo", "dapo"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed first steps (default 2, quick 1)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="default 128 (quick 64)")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 32 (quick 16)")
    parser.add_argument("--queries", type=int, default=4, help="distinct prompts per step")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--obs-tokens", type=int, default=None, help="default 16 (quick 2)")
    parser.add_argument("--gen-tokens", type=int, default=None, help="default 16 (quick 2)")
    parser.add_argument("--matmul-n", type=int, default=2048)
    args = parser.parse_args(argv)
    defaults = {
        "size": ("small", "micro"),
        "steps": (5, 2),
        "warmup": (2, 1),
        "prompt_tokens": (128, 64),
        "new_tokens": (32, 16),
        "obs_tokens": (16, 2),
        "gen_tokens": (16, 2),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.steps < 1 or args.warmup < 0 or args.group_size < 2:
        raise ValueError(
            f"need steps >= 1, warmup >= 0, group size >= 2; got {args.steps}, "
            f"{args.warmup}, {args.group_size}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the three measurements, print a table and, last, one JSON line."""
    args = parse_args(argv)
    flops = matmul_flops(args.matmul_n, repeats=5)
    print(f"matmul {args.matmul_n}^3 float32: {flops / 1e9:.1f} GFLOP/s", flush=True)
    result = versus_trl(args)
    turns = turn_scaling(args, flops)
    learn, tokens = turns["learn"], turns["tokens"]
    first, last = TURNS[0], TURNS[-1]
    result.update(
        benchmark="grpo_vs_trl",
        model=f"tiny-{args.size}",
        settings=vars(args),
        turn_scaling=learn,
        turn_scaling_generate=turns["generate"],
        turn_tokens=tokens,
        time_ratio_32_vs_4=learn[last] / learn[first],
        token_ratio_32_vs_4=tokens[last] / tokens[first],
        seconds_per_token_fit=linear_fit(tokens, learn),
        matmul_gflops=flops / 1e9,
        matmul_share=turns["share"][last],
        matmul_share_by_turns=turns["share"],
    )
    emit(result)
    return result


def linear_fit(x: dict[int, float], y: dict[int, float]) -> dict[str, float]:
    """Least-squares line ``y = a + b x`` over the shared keys, with its R^2."""
    keys = sorted(x)
    xs = np.array([x[k] for k in keys], dtype=np.float64)
    ys = np.array([y[k] for k in keys], dtype=np.float64)
    b, a = np.polyfit(xs, ys, 1)
    residual = float(((ys - (a + b * xs)) ** 2).sum())
    total = float(((ys - ys.mean()) ** 2).sum())
    return {"slope": float(b), "intercept": float(a), "r2": 1 - residual / total if total else 1.0}


if __name__ == "__main__":
    main()
