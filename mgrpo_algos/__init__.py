"""mgrpo learners: GRPO and M-GRPO.

The learners are imported on first use, so that ``import mgrpo_algos`` (and the
``mgrpo`` command's light sub-commands) do not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
    from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer

__all__ = ["GRPOConfig", "GRPOTrainer", "MGRPOConfig", "MGRPOTrainer"]

_HOME = {
    "GRPOConfig": "mgrpo_algos.algorithms.grpo",
    "GRPOTrainer": "mgrpo_algos.algorithms.grpo",
    "MGRPOConfig": "mgrpo_algos.algorithms.mgrpo",
    "MGRPOTrainer": "mgrpo_algos.algorithms.mgrpo",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mgrpo_algos' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
