"""The main job: a short M-GRPO training run on ``research_v0`` from an SFT warm start.

The regime is one in which the sub-agent has room to improve: its warm start learned
from demonstrations in which 60% of its calls find the fact and then give up
(``SFTConfig.sub_give_up``), while main learned the expert's plans, including
delegating again after a sub-agent gave up. M-GRPO's sub-agent groups then carry
signal (calls that return the fact against calls that give up).

Five stages, each printed as it runs:

1. the scripted expert and a random tool-caller on the held-out episodes, for scale;
2. warm start: one tiny model per role trained by SFT on the expert's
   demonstrations: the one published with the library for the demo's recipe
   (:data:`PUBLISHED`), else the one cached in ``OUT/warm_start`` when its stamp (the
   settings that build it plus the package versions and the library's code
   version) is the one this run would write, else built there
   (``run_demo(..., cache=False)`` always builds it);
3. success of the warm-started agents on held-out episodes (temperature 1);
4. M-GRPO: one policy and one optimiser per role, a few steps, ``OUT/mgrpo/metrics.jsonl``;
5. success of the trained agents on the same held-out episodes.

Stages 3 and 5 also print each agent's own figure: main's success with scripted
(expert) sub-agents, and the share of each sub-agent's calls that returned the fact
asked for, so that the user sees what each agent learned.

Every held-out figure comes from :func:`mgrpo_algos.evaluate.evaluate`. The last
line printed is one JSON object with both success rates, their 95% Wilson
intervals, the settings and the provenance (package versions, code version).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mgrpo_envs
from mgrpo_algos.evaluate import EvalResult, Split, eval_seeds, evaluate
from mgrpo_algos.experiments.cache import STAMP_FILE, cache_usable, read_stamp, write_stamp
from mgrpo_algos.metrics import format_rate, machine, wilson_interval
from mgrpo_algos.provenance import cache_stamp, provenance
from mgrpo_algos.sft import RECIPE, SFTConfig, recipe
from mgrpo_envs.testing import play_episode, random_tool_action

if TYPE_CHECKING:
    from mgrpo_algos.algorithms.mgrpo import MGRPOConfig


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains and measures (the defaults take a few minutes on 2 cores)."""

    env: str = "research_v0"
    difficulty: str = "easy"
    env_args: tuple[tuple[str, Any], ...] = (("doc_ref", "title"),)  # more env arguments
    size: str = "micro"
    sft_episodes: int = 1500  # the rest of the SFT recipe: mgrpo_algos.sft.RECIPE
    sft_epochs: int = 3
    sft_copy_steps: int = 400
    sft_lookup_steps: int = RECIPE.lookup_steps
    sft_rehearsal: float = 0.5
    sft_copy_digits: float = 0.5
    sft_sub_give_up: float = 0.6  # sub-agent demonstrations that give up: room to improve
    sft_shared: bool = True  # one model learns every role's demonstrations; each role gets a copy
    numbers: bool = False  # document ids and years as single tokens (HFPolicy.tiny(numbers=True))
    steps: int = 32
    queries: int = 4
    group_size: int = 8
    lr: float = 2e-5
    sub_lr: float | None = 2e-4  # the sub-agents' learning rate (None: lr)
    lr_schedule: str = "constant"  # or "cosine": every role's lr decays to 10% by the last step
    # The sub-agents' sampling temperature, in training and in every evaluation. Below
    # 1 a sub-agent plays its most likely choices: at the start that is giving up
    # (60% of its demonstrations), once M-GRPO has taught it, the lookup.
    sub_temperature: float = 0.7
    eval_episodes: int = 200
    eval_split: str = "test"  # held-out split of every figure: "test" reports, "val" chooses
    seed: int = 0  # seeds M-GRPO and the evaluations' sampling
    sft_seed: int | None = 1  # seeds the warm start's SFT (None: seed); 1: the published one

    def sft_config(self) -> SFTConfig:
        """The warm start's SFT settings: :data:`mgrpo_algos.sft.RECIPE` with the demo's."""
        return recipe(
            episodes=self.sft_episodes,
            epochs=self.sft_epochs,
            copy_steps=self.sft_copy_steps,
            lookup_steps=self.sft_lookup_steps,
            rehearsal=self.sft_rehearsal,
            copy_digits=self.sft_copy_digits,
            sub_give_up=self.sft_sub_give_up,
            seed=self.seed if self.sft_seed is None else self.sft_seed,
        )

    def warm_start_recipe(self) -> dict[str, Any]:
        """The settings the warm start is built from (what its cache is keyed by)."""
        keys = ("env", "difficulty", "size", "sft_shared", "numbers")
        recipe = {k: getattr(self, k) for k in keys}
        if self.env_args:  # absent when empty: older caches keep their stamps
            recipe["env_args"] = dict(self.env_args)
        return {**recipe, **asdict(self.sft_config())}

    def role_temperature(self, roles: list[str]) -> dict[str, float]:
        """Each sub-agent's sampling temperature when it is not 1 (main samples at 1)."""
        if self.sub_temperature == 1.0:
            return {}
        return {role: self.sub_temperature for role in roles if role != "main"}

    def role_lr(self, roles: list[str]) -> dict[str, float]:
        """Each sub-agent's learning rate when ``sub_lr`` is set."""
        if self.sub_lr is None:
            return {}
        return {role: self.sub_lr for role in roles if role != "main"}

    def mgrpo_config(self, warm_start: str | Path, roles: list[str]) -> MGRPOConfig:
        """Stage 4's M-GRPO run: DAPO's loss from ``warm_start``, no checkpoint but the last.

        Args:
            warm_start: The warm start's policy directory.
            roles: The env's roles (for the sub-agents' learning rate and temperature).
        """
        from mgrpo_algos.algorithms.mgrpo import MGRPOConfig

        return MGRPOConfig(
            env=self.env,
            env_kwargs=self.env_kwargs,
            model=str(warm_start),
            steps=self.steps,
            queries_per_step=self.queries,
            group_size=self.group_size,
            lr=self.lr,
            role_lr=self.role_lr(roles),
            lr_schedule=self.lr_schedule,
            role_temperature=self.role_temperature(roles),
            loss_type="dapo",
            seed=self.seed,
            checkpoint_every=0,
        )

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The env's arguments: the difficulty and ``env_args``."""
        return {"difficulty": self.difficulty, **dict(self.env_args)}


# --------------------------------------------------------------------------- stages
def _rate(result: EvalResult) -> dict[str, Any]:
    return {**result.to_dict(), "text": result.text}


def role_figures(
    env_fn,
    policies,
    episodes: int,
    system: dict[str, Any],
    temperatures: dict[str, float],
    split: Split = "test",
) -> dict[str, Any]:
    """What each agent does: main with the other side played by the scripted expert.

    Args:
        system: The whole system's evaluation (``_rate`` of an EvalResult), whose
            per-call sub-agent figures are reused.
        temperatures: The roles' sampling temperatures other than 1.
        split: The held-out split (`mgrpo_algos.evaluate.SPLITS`).

    Returns:
        ``main``: main's success with expert sub-agents (an EvalResult dict); per
        sub-agent role, the share of its calls in the whole system's evaluation
        that returned the fact asked for (``{"calls", "accuracy"}``).
    """
    roles = env_fn().possible_agents
    subs = [r for r in roles if r != "main"]
    main = evaluate(
        env_fn, policies, episodes, scripted=subs, role_temperature=temperatures, split=split
    )
    return {"main": _rate(main), **system["sub_calls"]}


def system_figures(s: DemoSettings, env_fn, trainer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole system's success on ``s.eval_split``, and each role's (`role_figures`)."""
    temps = dict(trainer.config.role_temperature)
    n, split = s.eval_episodes, s.eval_split
    system = _rate(evaluate(env_fn, trainer.policies, n, role_temperature=temps, split=split))
    return system, role_figures(env_fn, trainer.policies, n, system, temps, split)


def role_text(figures: dict[str, Any]) -> str:
    """``"main with expert sub-agents 0.42 [...]; searcher calls right 0.81 (n=140)"``."""
    parts = [f"main with expert sub-agents {figures['main']['text']}"]
    for role, stats in figures.items():
        if role != "main":
            parts.append(f"{role} calls right {stats['accuracy']:.3f} (n={stats['calls']})")
    return "; ".join(parts)


def reference_rates(s: DemoSettings) -> dict[str, Any]:
    """The scripted expert and a random tool-caller on the held-out episodes."""

    def env_fn():
        return mgrpo_envs.make(s.env, **s.env_kwargs)

    roles = env_fn().possible_agents
    expert = evaluate(env_fn, {}, s.eval_episodes, scripted=roles, split=s.eval_split)
    env = env_fn()
    rng = np.random.default_rng(s.seed)
    wins = 0
    for seed in eval_seeds(s.eval_episodes, s.eval_split):
        final = play_episode(env, lambda e: random_tool_action(e, rng), seed)["final"]
        wins += bool(final["main"]["outcome"]["correct"])
    random = {
        "success_rate": wins / s.eval_episodes,
        "ci95": list(wilson_interval(wins, s.eval_episodes)),
        "successes": wins,
        "n": s.eval_episodes,
        "text": format_rate(wins, s.eval_episodes),
    }
    return {"expert": _rate(expert), "random": random}


# --------------------------------------------------------------------------- published
PUBLISHED = Path(__file__).resolve().parent / "warm_starts"
"""Warm starts built once with a demo recipe and shipped with the library.

Each is a ``save_policies`` directory (``roles.json`` maps every role to one shared
model) with the ``stamp.json`` it was built under: the recipe, the package versions
and the code version. The demo uses the one whose recipe is its own, as a training
run starts from a published pretrained model; ``mgrpo demo --no-cache`` builds it
afresh instead, and ``benchmarks/demo_repro.py --rebuild`` measures how much a rebuild
varies with the seed and the thread count.
"""


def published_warm_start(s: DemoSettings, env: Any) -> Path | None:
    """The published warm start built from ``s.warm_start_recipe()`` for ``env``, or None.

    A published model whose vocabulary is not the one ``env`` has now (the env's
    words changed since it was built) is not used: it would misread the env's text.
    """
    if not PUBLISHED.is_dir():
        return None
    wanted = json.loads(json.dumps(s.warm_start_recipe()))  # tuples as lists, as stored
    for path in sorted(PUBLISHED.iterdir()):
        stamp = read_stamp(path)
        if stamp is not None and stamp.get("recipe") == wanted:
            return path if same_vocabulary(path, env, s.numbers) else None
    return None


def same_vocabulary(path: Path, env: Any, numbers: bool) -> bool:
    """Whether the tiny model saved in ``path`` has the tokenizer ``env`` builds now."""
    from tokenizers import Tokenizer

    from mgrpo_algos.policies.tiny import build_tokenizer
    from mgrpo_algos.training.checkpoints import read_roles

    model = path / next(iter(read_roles(path).values()))
    saved = Tokenizer.from_file(str(model / "tokenizer.json")).get_vocab()
    return saved == build_tokenizer(env, numbers=numbers).backend_tokenizer.get_vocab()


def publish_warm_start(source: Path, name: str) -> Path:
    """Copies the demo's warm start in ``source`` to ``PUBLISHED / name``, one model once.

    ``source`` must be a shared warm start (every role the same weights) with its
    stamp; the copy keeps the stamp and maps every role to one ``model/``.
    """
    from mgrpo_algos.training.checkpoints import read_roles

    stamp, roles = read_stamp(source), read_roles(source)
    if stamp is None:
        raise ValueError(f"{source} has no {STAMP_FILE}: not a warm start the demo built")
    weights = {(source / d / "model.safetensors").read_bytes() for d in set(roles.values())}
    if len(weights) != 1:
        raise ValueError(f"{source}: its roles have different weights; publish a shared one")
    target = PUBLISHED / name
    if target.exists():
        raise FileExistsError(f"{target} exists: remove it first to publish another")
    shutil.copytree(source / next(iter(roles.values())), target / "model")
    (target / "roles.json").write_text(json.dumps({r: "model" for r in roles}, indent=2))
    write_stamp(target, stamp)
    return target


def warm_start_dir(s: DemoSettings, out: Path, env_fn, *, cache: bool = True) -> Path:
    """The published warm start of this recipe, or per-role SFT models in ``out/warm_start``.

    With ``cache`` the published warm start built from ``s.warm_start_recipe()`` is
    used when there is one; else the one in ``out/warm_start``, when its stamp is
    this run's; else SFT builds it there. With ``sft_shared`` one model is trained
    on every role's demonstrations and saved once per role, so M-GRPO still trains
    a separate model per role from there.

    Args:
        s: The demo's settings (``s.warm_start_recipe()`` builds the warm start).
        out: The demo's directory.
        env_fn: Builds the env.
        cache: False retrains, whatever is published or cached.
    """
    from mgrpo_algos.sft import train_warm_start
    from mgrpo_algos.training.checkpoints import save_policies

    published = published_warm_start(s, env_fn()) if cache else None
    if published is not None:
        built = read_stamp(published) or {}
        versions = ", ".join(f"{k} {v}" for k, v in built.get("versions", {}).items())
        print(f"using the published warm start {published.name} (built with {versions})")
        print("      `mgrpo demo --no-cache` builds it here instead (SFT, 20-40 minutes)")
        return published
    path = out / "warm_start"
    stamp = cache_stamp(s.warm_start_recipe())
    if cache_usable(path, stamp, cache=cache, what="warm start"):
        return path
    shutil.rmtree(path, ignore_errors=True)  # no stale stamp survives a failed rebuild
    t0 = time.perf_counter()
    policies, _ = train_warm_start(
        env_fn, s.sft_config(), size=s.size, shared=s.sft_shared, numbers=s.numbers
    )
    print(f"SFT on {s.sft_episodes} expert episodes: {time.perf_counter() - t0:.0f} s")
    save_policies(policies, {role: role for role in policies}, path)  # a copy per role
    write_stamp(path, stamp)
    return path


def run_demo(
    s: DemoSettings, out: str | Path = "runs/demo", *, cache: bool = True
) -> dict[str, Any]:
    """Runs the five stages; returns the summary that is printed as JSON.

    Args:
        s: What to train and measure.
        out: Holds the warm start cache and the run's files.
        cache: False rebuilds the warm start even when the cached one matches.
    """
    from mgrpo_algos.algorithms.mgrpo import MGRPOTrainer
    from mgrpo_algos.training.checkpoints import latest_checkpoint

    out = Path(out)
    t0 = time.perf_counter()

    def env_fn():
        return mgrpo_envs.make(s.env, **s.env_kwargs)

    refs = reference_rates(s)
    print(f"[1/5] {s.env} ({s.difficulty}), {s.eval_episodes} held-out episodes ({s.eval_split})")
    print(f"      expert {refs['expert']['text']}   random {refs['random']['text']}")
    print(f"[2/5] warm start: tiny-{s.size}, SFT on every role's expert demonstrations")
    if s.sft_sub_give_up:
        print(f"      (the sub-agents' demonstrations give up on {s.sft_sub_give_up:.0%} of calls)")
    warm = warm_start_dir(s, out, env_fn, cache=cache)
    config = s.mgrpo_config(warm, list(env_fn().possible_agents))
    run_dir = out / "mgrpo"
    if run_dir.exists():  # the demo's own scratch run: replaced each time
        shutil.rmtree(run_dir)
    trainer = MGRPOTrainer(config, out_dir=run_dir)
    before, roles_before = system_figures(s, env_fn, trainer)
    print(f"[3/5] warm start      success {before['text']}")
    print(f"      {role_text(roles_before)}")
    print(f"[4/5] M-GRPO: {s.steps} steps x {s.queries} queries x {s.group_size} rollouts")
    trainer.train(progress=True)
    after, roles_after = system_figures(s, env_fn, trainer)
    print(f"[5/5] after M-GRPO    success {after['text']}")
    print(f"      {role_text(roles_after)}")
    ckpt = latest_checkpoint(run_dir)  # train() wrote it at the last step
    print(f"metrics: {run_dir / 'metrics.jsonl'}   checkpoint: {ckpt}")
    return {
        "job": "mgrpo_demo",
        "settings": asdict(s),
        "warm_start": str(warm),
        "expert": refs["expert"],
        "random": refs["random"],
        "before": before,
        "after": after,
        "roles": {"before": roles_before, "after": roles_after},
        "metrics": str(run_dir / "metrics.jsonl"),
        "seconds": time.perf_counter() - t0,
        "machine": machine(),
        "provenance": provenance(),
    }
