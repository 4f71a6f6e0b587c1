"""Decoupled per-agent training on Ray (docs/distributed.md).

One Ray actor per model of the run (its policy, optimiser and schedule; it serves
generation and computes its own update), a pool of rollout workers that play the
step's episodes in slices, a store actor through which the main side's rewards
reach the sub-agent side, and a driver that runs the embedded learner's step.

- :class:`RayMGRPOTrainer`, :class:`RayGRPOTrainer`: the drivers (``backend="ray"``).
- :class:`RayStore`: the ``StatsStore`` kept in a Ray actor.
- :class:`RoleActorLost`: raised when a role actor dies mid-run.

Names are imported on first use, so that ``import mgrpo_algos.distributed`` does not
pay for Ray, torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mgrpo_algos.distributed.driver import RayGRPOTrainer, RayMGRPOTrainer
    from mgrpo_algos.distributed.store import RayStore

__all__ = [
    "RayGRPOTrainer",
    "RayMGRPOTrainer",
    "RayStore",
    "RoleActorLost",
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
