"""Says when a trained role silently does not train: no samples for several steps, and why.

A run can exit 0 calling itself M-GRPO while a sub-agent never trained: main never
delegated (its outputs cut at ``max_new_tokens`` before the call was written, or a
policy that never learned to call), so the sub-agent had no sample on any step and
``loss/sub`` stayed null. :class:`IdleRoles` reads each step's metrics (the counts
that `output_metrics` adds) and warns once per role, in the run's log (the ``mgrpo``
logger) and on the progress bar, when a trained role has had no sample for
``steps`` steps in a row, with the reason when the counts show it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mgrpo_algos.buffer import MAIN, Trajectory

IDLE_STEPS = 3
"""Steps in a row without a sample after which a trained role is reported."""

CUT_SHARE = 0.5
"""Share of a role's outputs cut at ``max_new_tokens`` that is named as the reason."""

logger = logging.getLogger("mgrpo")


def output_metrics(
    outputs: Mapping[str, int],
    cut: Mapping[str, int],
    scored: Iterable[Trajectory],
    roles: Sequence[str],
) -> dict[str, int]:
    """Per role: ``outputs/<role>`` sampled, ``truncated/<role>`` cut at ``max_new_tokens``,
    ``calls/<role>`` recorded calls (the samples a learner can train on).

    Args:
        outputs: Role -> outputs sampled this step (`RolloutResult.outputs`).
        cut: Role -> outputs that ended at ``max_new_tokens`` without a stop token.
        scored: The step's scored trajectories (every role's calls).
        roles: Every role of the env.
    """
    calls = {role: 0 for role in roles}
    for t in scored:
        calls[t.agent] = calls.get(t.agent, 0) + 1
    out: dict[str, int] = {}
    for role in roles:
        out[f"outputs/{role}"] = int(outputs.get(role, 0))
        out[f"truncated/{role}"] = int(cut.get(role, 0))
        out[f"calls/{role}"] = calls[role]
    return out


class IdleRoles:
    """Warns once per trained role that has had no sample for ``steps`` steps in a row.

    Args:
        trained: The roles whose samples train a model.
        max_new_tokens: The run's budget per output (named in the reason).
        steps: Steps in a row without a sample before the warning.
    """

    def __init__(self, trained: Iterable[str], max_new_tokens: int, steps: int = IDLE_STEPS):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.quiet = {role: 0 for role in trained}
        self.max_new_tokens = max_new_tokens
        self.steps = steps
        self.warned: set[str] = set()

    def observe(self, metrics: Mapping[str, Any]) -> list[str]:
        """Reads one step's metrics; returns the warnings it raises (each also logged)."""
        out = []
        for role in self.quiet:
            calls = metrics.get(f"calls/{role}")
            if calls is None:  # a learner that does not count its calls
                continue
            self.quiet[role] = self.quiet[role] + 1 if calls == 0 else 0
            if self.quiet[role] >= self.steps and role not in self.warned:
                self.warned.add(role)
                message = (
                    f"role {role!r} is trained but has had no sample for {self.quiet[role]} "
                    f"steps, so its model has not changed: {self.reason(role, metrics)}"
                )
                logger.warning(message)
                out.append(message)
        return out

    def reason(self, role: str, metrics: Mapping[str, Any]) -> str:
        """Why ``role`` had no sample, as far as the step's counts tell."""
        cut_main = _share(metrics, MAIN)
        own = _share(metrics, role)
        budget = f"max_new_tokens={self.max_new_tokens} (raise --max-new-tokens)"
        if own is not None and own >= CUT_SHARE:
            return f"{own:.0%} of its outputs were cut at {budget}"
        if role != MAIN and metrics.get(f"outputs/{role}", 0) == 0:
            why = "main delegated no call to it"
            if cut_main is not None and cut_main >= CUT_SHARE:
                return f"{why}; {cut_main:.0%} of main's outputs were cut at {budget}"
            return f"{why} (main's outputs never held a well-formed call to {role!r})"
        if metrics.get(f"outputs/{role}", 0) > 0:
            return "it was sampled but no call of it was recorded (contexts cut, or dropped)"
        return "no output of it was sampled"


def _share(metrics: Mapping[str, Any], role: str) -> float | None:
    """Share of ``role``'s outputs cut at ``max_new_tokens`` (None: it had none)."""
    n = metrics.get(f"outputs/{role}", 0)
    return metrics.get(f"truncated/{role}", 0) / n if n else None
