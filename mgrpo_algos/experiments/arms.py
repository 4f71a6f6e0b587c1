"""The arms an experiment compares: each a learner, its options and the warm start it starts from.

An arm is a name a spec lists (``arms = ["mgrpo", "main-only"]``). Every arm of a
(task, regime) trains for the same episodes (steps x queries x group) from an SFT
warm start of the same recipe; the arms differ in what they train and how
(arXiv 2511.13288, sec. 4, compares the first three):

==================  =================================================================
``mgrpo``           M-GRPO: main and every sub-agent trained, one model each
``main-only``       main trained, the sub-agents frozen at their warm start
``single``          GRPO: one policy with every tool on the single-agent view
``shared``          one model plays every role (``algo="shared"``)
``mgrpo-subtask``   M-GRPO with sub-agent groups per subtask (``sub_groups="subtask"``)
``mgrpo-alternate`` M-GRPO with ``schedule="alternate:N"`` (N: the spec's ``alternate``)
``no-sync``         M-GRPO with ``align="none"`` (unsynchronised, one step stale)
==================  =================================================================

The table is data; the runner builds each arm's config from it through the
algorithm table (`mgrpo_algos.algorithms.ALGORITHMS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

WarmStartKind = Literal["multi", "single", "shared"]
"""``multi``: one policy per role of the AEC env; ``single``: one policy on the
single-agent view; ``shared``: one policy on every role's demonstrations."""


@dataclass(frozen=True)
class Arm:
    """One arm.

    Attributes:
        name: What a spec calls it.
        algo: The algorithm table's name of its learner.
        warm_start: The warm start it starts from.
        options: Its learner config's options beyond the spec's budgets.
    """

    name: str
    algo: str
    warm_start: WarmStartKind
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def trains_sub_agents_apart(self) -> bool:
        """Whether the sub-agents train as models of their own (the spec's ``sub_lr`` applies)."""
        return self.warm_start == "multi" and self.algo == "mgrpo"


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("mgrpo", "mgrpo", "multi"),
        Arm("main-only", "main-only", "multi"),
        Arm("single", "grpo", "single"),
        Arm("shared", "shared", "shared"),
        Arm("mgrpo-subtask", "mgrpo", "multi", {"sub_groups": "subtask"}),
        Arm("mgrpo-alternate", "mgrpo", "multi"),  # schedule alternate:N, N from the spec
        Arm("no-sync", "mgrpo", "multi", {"align": "none"}),
    )
}
"""Every arm, in the order tables list them."""

REFERENCE_ARM = "main-only"
"""The arm every other arm's paired difference is taken against."""


def arm_order(arm: str) -> int:
    """Where ``arm`` stands in tables: the order of ``ARMS``, arms unknown here last."""
    names = list(ARMS)
    return names.index(arm) if arm in ARMS else len(names)
