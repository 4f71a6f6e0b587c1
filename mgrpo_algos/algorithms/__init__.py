"""The algorithm table: each ``--algo`` name -> its config, trainer, what it trains, backends.

The CLI, the Ray driver and the run loaders read this table and nothing else to
decide which algorithm runs. Adding an algorithm is one module (its config class,
a subclass of `LearnerConfig`, and its trainer, a subclass of `Learner`) and one
`Algorithm` entry in `ALGORITHMS` below (docs/training.md, "Adding an algorithm").

A backend other than ``embedded`` names its trainer as ``"module:Class"``, imported
when a run asks for it, so that this table does not import Ray.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.algorithms.tfgrpo import TFGRPOConfig, TFGRPOTrainer, load_tfgrpo_policies
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.training.checkpoints import (
    is_complete_checkpoint,
    latest_checkpoint,
    load_saved_policies,
)
from mgrpo_algos.training.config import LearnerConfig, config_of, read_config
from mgrpo_algos.training.loop import Learner


@dataclass(frozen=True)
class Algorithm:
    """One ``--algo``.

    Attributes:
        name: The ``--algo`` value (the config's ``algo`` field).
        config: Its config class.
        trainer: Its embedded trainer.
        trains: What is trained, in a few words (docs and ``--help``).
        backends: Backend -> trainer: ``embedded`` is ``trainer``; others are
            ``"module:Class"`` entry points, imported on use.
        load_policies: Opens a checkpoint's policies when they need more than the
            saved models (tf-grpo's experience libraries); None: the saved models.
    """

    name: str
    config: type[LearnerConfig]
    trainer: type[Learner]
    trains: str
    backends: Mapping[str, str] = dataclasses.field(default_factory=dict)
    load_policies: Any = None

    @property
    def backend_names(self) -> list[str]:
        return ["embedded", *self.backends]


RAY_MGRPO = "mgrpo_algos.distributed.driver:RayMGRPOTrainer"

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "mgrpo",
            MGRPOConfig,
            MGRPOTrainer,
            "every agent, one model each (M-GRPO)",
            {"ray": RAY_MGRPO},
        ),
        Algorithm(
            "main-only",
            MGRPOConfig,
            MGRPOTrainer,
            "main; the sub-agents frozen",
            {"ray": RAY_MGRPO},
        ),
        Algorithm(
            "shared", MGRPOConfig, MGRPOTrainer, "one model plays every role", {"ray": RAY_MGRPO}
        ),
        Algorithm(
            "grpo",
            GRPOConfig,
            GRPOTrainer,
            "one policy with every tool on the single-agent view",
            {"ray": "mgrpo_algos.distributed.driver:RayGRPOTrainer"},
        ),
        Algorithm(
            "tf-grpo",
            TFGRPOConfig,
            TFGRPOTrainer,
            "no weights: one experience library per role (Training-Free GRPO)",
            load_policies=load_tfgrpo_policies,
        ),
    )
}


def algorithm(name: str) -> Algorithm:
    """The table's entry for ``name``.

    Raises:
        ValueError: For a name not in the table, listing the names.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"algo must be one of {list(ALGORITHMS)}, got {name!r}")
    return ALGORITHMS[name]


def trainer_class(name: str, backend: str = "embedded") -> type[Learner]:
    """The trainer of algorithm ``name`` on ``backend``.

    Raises:
        ValueError: For an unknown algorithm, a backend it does not run on, or a
            backend whose package is not installed.
    """
    algo = algorithm(name)
    if backend == "embedded":
        return algo.trainer
    if backend not in algo.backends:
        raise ValueError(
            f"--algo {name} runs on the backends {algo.backend_names}, not {backend!r}"
        )
    module, _, cls = algo.backends[backend].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ValueError(
            "backend='ray' needs Ray, which is not installed: pip install 'mgrpo[distributed]'"
        ) from err


def config_from_dict(data: Mapping[str, Any], source: str = "the config") -> LearnerConfig:
    """The config that ``data`` (a ``config.json``) describes, by its ``algo``."""
    return config_of(data, algorithm(data.get("algo", "grpo")).config, source)


def load_config(path: str | Path, **overrides: Any) -> LearnerConfig:
    """Reads a ``config.json`` written by a run (or by hand); ``overrides`` replace fields."""
    path = Path(path)
    try:
        algo = json.loads(path.read_text()).get("algo", "grpo")
    except (OSError, json.JSONDecodeError, AttributeError):
        algo = "grpo"  # read_config says what is wrong with the file
    return read_config(path, algorithm(overrides.get("algo", algo)).config, **overrides)


class LoadedRun(NamedTuple):
    """A checkpoint opened for use: where it is, its config and its role -> policy map."""

    ckpt: Path
    config: LearnerConfig
    policies: dict[str, HFPolicy]


def load_run(path: str | Path, *, env: str | None = None) -> LoadedRun:
    """Opens a checkpoint, or a run directory's newest complete one (for eval, demo, benchmarks).

    Args:
        path: A ``ckpt-*`` directory or a run directory.
        env: Use this env spec instead of the recorded one (e.g. a moved env file).
    """
    path = Path(path)
    ckpt = path if is_complete_checkpoint(path) else latest_checkpoint(path)
    overrides = {"env": env} if env is not None else {}
    config = load_config(ckpt / "config.json", **overrides)
    opener = algorithm(config.algo).load_policies
    if opener is not None:
        return LoadedRun(ckpt, config, opener(ckpt, config))
    return LoadedRun(ckpt, config, load_saved_policies(ckpt / "policies"))


def make_trainer(
    config: LearnerConfig, out_dir: str | Path | None = None, **kwargs: Any
) -> Learner:
    """The trainer ``config`` asks for, on its backend (``embedded`` or ``ray``)."""
    return trainer_class(config.algo, config.backend)(config, out_dir, **kwargs)


def resume_trainer(out_dir: str | Path, *, steps: int | None = None, **kwargs: Any) -> Learner:
    """Continues the run in ``out_dir`` with the algorithm and backend it was started with."""
    config = load_config(latest_checkpoint(out_dir) / "config.json")
    cls = trainer_class(config.algo, config.backend)
    return cls.resume(out_dir, steps=steps, **kwargs)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "LoadedRun",
    "algorithm",
    "config_from_dict",
    "load_config",
    "load_run",
    "make_trainer",
    "resume_trainer",
    "trainer_class",
]
