"""Decoupled per-agent training on Ray (docs/distributed.md).

One Ray actor per model of the run (its policy, optimiser and schedule; it serves
generation and computes its own update), a pool of rollout workers that play the
step's episodes in slices, a store actor through which the main side's rewards
reach the sub-agent side, and a driver that runs the embedded learner's step.

- :class:`RayMGRPOTrainer`, :class:`RayGRPOTrainer`: the drivers (``backend="ray"``).
- :func:`make_trainer`, :func:`resume_trainer`: the learner a config (or a run
  directory) asks for, embedded or on Ray.
- :class:`RayStore`: the ``StatsStore`` kept in a Ray actor.
- :class:`RoleActorLost`: raised when a role actor dies mid-run.

Names are imported on first use, so that ``import mgrpo_algos.distributed`` does not
pay for Ray, torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from mgrpo_algos.distributed.driver import RayGRPOTrainer, RayMGRPOTrainer
    from mgrpo_algos.distributed.store import RayStore
    from mgrpo_algos.learner import Learner, LearnerConfig

__all__ = [
    "RayGRPOTrainer",
    "RayMGRPOTrainer",
    "RayStore",
    "RoleActorLost",
    "make_trainer",
    "resume_trainer",
]


class RoleActorLost(RuntimeError):
    """A role actor died: its weights and optimiser state since the last checkpoint are
    gone, so the run stops; ``--resume`` continues it from its newest checkpoint."""


_HOME = {
    "RayGRPOTrainer": "mgrpo_algos.distributed.driver",
    "RayMGRPOTrainer": "mgrpo_algos.distributed.driver",
    "RayStore": "mgrpo_algos.distributed.store",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mgrpo_algos.distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def _ray_trainer_class(algo: str) -> type[Learner]:
    try:
        from mgrpo_algos.distributed.driver import ray_trainer_class
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ValueError(
            "backend='ray' needs Ray, which is not installed: pip install 'mgrpo[distributed]'"
        ) from err
    return ray_trainer_class(algo)


def make_trainer(
    config: LearnerConfig, out_dir: str | Path | None = None, **kwargs: Any
) -> Learner:
    """The learner ``config`` asks for: embedded, or on Ray (``backend="ray"``)."""
    from mgrpo_algos.learner import trainer_class

    if config.backend == "ray":
        return _ray_trainer_class(config.algo)(config, out_dir, **kwargs)
    return trainer_class(config.algo)(config, out_dir, **kwargs)


def resume_trainer(out_dir: str | Path, *, steps: int | None = None, **kwargs: Any) -> Learner:
    """Continues the run in ``out_dir`` on the backend it was started with."""
    from mgrpo_algos.learner import latest_checkpoint, load_config, resume_run

    config = load_config(latest_checkpoint(out_dir) / "config.json")
    if config.backend == "ray":
        return _ray_trainer_class(config.algo).resume(out_dir, steps=steps, **kwargs)
    return resume_run(out_dir, steps=steps, **kwargs)
