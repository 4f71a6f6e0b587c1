"""The main job: a short M-GRPO training run on ``research_v0`` from an SFT warm start.

Five stages, each printed as it runs:

1. the scripted expert and a random tool-caller on the held-out episodes, for scale;
2. warm start: one tiny model per role, trained by SFT on the expert's
   demonstrations (cached in ``OUT/warm_start``, reused when its settings match);
3. success of the warm-started agents on held-out episodes (temperature 1);
4. M-GRPO: one policy and one optimiser per role, a few steps, ``OUT/mgrpo/metrics.jsonl``;
5. success of the trained agents on the same held-out episodes.

The last line printed is one JSON object with both success rates, their 95% Wilson
intervals and the settings.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mgrpo_envs
from mgrpo_algos.metrics import format_rate, machine, wilson_interval
from mgrpo_envs.testing import play_episode, random_tool_action

EVAL_SEED0 = 1_000_000
"""Held-out env seeds: the demonstrations use 0.., training draws seeds at random."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains and measures (the defaults take a few minutes on 2 cores)."""

    env: str = "research_v0"
    difficulty: str = "easy"
    size: str = "micro"
    sft_episodes: int = 1500
    sft_epochs: int = 3
    sft_lr: float = 1e-3
    sft_batch_tokens: int = 2048
    sft_context_weight: float = 1.0
    sft_copy_steps: int = 400
    sft_shared: bool = True  # one model learns every role's demonstrations; each role gets a copy
    steps: int = 6
    queries: int = 4
    group_size: int = 8
    lr: float = 2e-5
    eval_episodes: int = 100
    seed: int = 0


def success(env_fn, policies: dict, episodes: int, seed: int) -> dict[str, Any]:
    """Success of ``policies`` on the held-out episodes, sampled at temperature 1."""
    from mgrpo_algos.rollout import RolloutConfig, RolloutEngine

    engine = RolloutEngine(env_fn, policies, RolloutConfig(max_new_tokens=40, temperature=1.0))
    res = engine.collect(
        list(range(EVAL_SEED0, EVAL_SEED0 + episodes)),
        group_size=1,
        generator=torch.Generator().manual_seed(seed),
    )
    wins = sum(e.correct for e in res.episodes)
    return {
        "success_rate": wins / episodes,
        "ci95": list(wilson_interval(wins, episodes)),
        "text": format_rate(wins, episodes),
    }


def reference_rates(s: DemoSettings) -> dict[str, Any]:
    """The scripted expert and a random tool-caller on the held-out episodes."""
    env = mgrpo_envs.make(s.env, difficulty=s.difficulty)
    rng = np.random.default_rng(s.seed)
    players = {
        "expert": lambda e: e.unwrapped.oracle_action(),
        "random": lambda e: random_tool_action(e, rng),
    }
    out = {}
    for name, player in players.items():
        wins = sum(
            bool(play_episode(env, player, EVAL_SEED0 + i)["final"]["main"]["outcome"]["correct"])
            for i in range(s.eval_episodes)
        )
        out[name] = {
            "success_rate": wins / s.eval_episodes,
            "ci95": list(wilson_interval(wins, s.eval_episodes)),
            "text": format_rate(wins, s.eval_episodes),
        }
    return out


def warm_start_dir(s: DemoSettings, out: Path, env_fn) -> Path:
    """Per-role SFT models in ``out/warm_start`` (trained unless cached with these settings).

    With ``sft_shared`` one model is trained on every role's demonstrations and saved
    once per role, so M-GRPO still trains a separate model per role from there.
    """
    from mgrpo_algos.sft import SFTConfig, tiny_policies, warm_start

    path = out / "warm_start"
    keys = ("env", "difficulty", "size", "seed")
    stamp = {k: v for k, v in asdict(s).items() if k in keys or k.startswith("sft_")}
    stamp_file = path / "settings.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        print(f"using the cached warm start in {path}")
        return path
    policies = tiny_policies(env_fn(), size=s.size, seed=s.seed, shared=s.sft_shared)
    config = SFTConfig(
        episodes=s.sft_episodes,
        epochs=s.sft_epochs,
        lr=s.sft_lr,
        max_batch_tokens=s.sft_batch_tokens,
        context_weight=s.sft_context_weight,
        copy_steps=s.sft_copy_steps,
        seed=s.seed,
    )
    t0 = time.perf_counter()
    warm_start(env_fn, policies, config, progress=True)
    print(f"SFT on {s.sft_episodes} expert episodes: {time.perf_counter() - t0:.0f} s")
    for role, policy in policies.items():
        policy.save(path / role)
    stamp_file.write_text(json.dumps(stamp, indent=2))
    return path


def run_demo(s: DemoSettings, out: str | Path = "runs/demo") -> dict[str, Any]:
    """Runs the five stages; returns the summary that is printed as JSON."""
    from mgrpo_algos.mgrpo import MGRPOConfig, MGRPOTrainer

    out = Path(out)
    t0 = time.perf_counter()

    def env_fn():
        return mgrpo_envs.make(s.env, difficulty=s.difficulty)

    refs = reference_rates(s)
    print(f"[1/5] {s.env} ({s.difficulty}), {s.eval_episodes} held-out episodes")
    print(f"      expert {refs['expert']['text']}   random {refs['random']['text']}")
    print(f"[2/5] warm start: tiny-{s.size}, SFT on every role's expert demonstrations")
    warm = warm_start_dir(s, out, env_fn)
    config = MGRPOConfig(
        env=s.env,
        env_kwargs={"difficulty": s.difficulty},
        model=str(warm),
        steps=s.steps,
        queries_per_step=s.queries,
        group_size=s.group_size,
        lr=s.lr,
        loss_type="dapo",
        seed=s.seed,
        checkpoint_every=0,
    )
    run_dir = out / "mgrpo"
    if run_dir.exists():  # the demo's own scratch run: replaced each time
        shutil.rmtree(run_dir)
    trainer = MGRPOTrainer(config, out_dir=run_dir)
    before = success(env_fn, trainer.policies, s.eval_episodes, s.seed)
    print(f"[3/5] warm start      success {before['text']}")
    print(f"[4/5] M-GRPO: {s.steps} steps x {s.queries} queries x {s.group_size} rollouts")
    trainer.train(progress=True)
    after = success(env_fn, trainer.policies, s.eval_episodes, s.seed)
    print(f"[5/5] after M-GRPO    success {after['text']}")
    print(f"metrics: {run_dir / 'metrics.jsonl'}   checkpoint: {trainer.save_checkpoint()}")
    return {
        "job": "mgrpo_demo",
        "settings": asdict(s),
        "expert": refs["expert"],
        "random": refs["random"],
        "before": before,
        "after": after,
        "metrics": str(run_dir / "metrics.jsonl"),
        "seconds": time.perf_counter() - t0,
        "machine": machine(),
    }
