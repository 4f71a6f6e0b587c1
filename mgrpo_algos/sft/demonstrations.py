"""The scripted expert's demonstrations: episodes in which the expert acts for every role.

The rollout engine plays episodes with the env's scripted expert acting for every
role (``oracle_action``), which records each agent call as a token sequence with the
expert's outputs masked in. `GiveUpExpert` makes them noisier: a share of the
sub-agents' calls give up instead of returning their fact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mgrpo_algos.buffer import Trajectory
from mgrpo_algos.policies.base import Policy
from mgrpo_algos.rollout import RolloutConfig, RolloutEngine, expert_script
from mgrpo_envs.core.codecs import ToolCall

GIVE_UP = "unknown"
"""What a giving-up sub-agent returns (a word of every env's vocabulary)."""


class GiveUpExpert:
    """The scripted expert, except that a share of the sub-agents' calls give up.

    At the ``return`` that would hand back the fact, a call gives up with
    probability ``p`` and returns :data:`GIVE_UP` instead. Main is the plain
    expert, which re-delegates every fact that was not returned. One decision per
    call, drawn from ``numpy.random.default_rng(seed)`` in the order calls end.
    """

    def __init__(self, p: float, seed: int) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.p = p
        self.rng = np.random.default_rng(seed)

    def __call__(self, env: Any) -> str:
        u = env.unwrapped
        call = u.oracle_call()
        gives_up = u.agent_selection != "main" and call is not None and call.name == "return"
        if gives_up and self.rng.random() < self.p:
            call = ToolCall.make("return", result=GIVE_UP)
        return u.format_call(call)


def collect_demonstrations(
    env_fn: Callable[[], Any],
    policies: Mapping[str, Policy],
    episodes: int,
    seed: int = 0,
    give_up: float = 0.0,
) -> list[Trajectory]:
    """Records ``episodes`` expert episodes (env seeds ``seed .. seed + episodes - 1``).

    Args:
        give_up: Share of sub-agent calls that give up (:class:`GiveUpExpert`).
    """
    probe = env_fn()
    script = GiveUpExpert(give_up, seed) if give_up > 0 else expert_script
    scripts = {role: script for role in probe.possible_agents}
    engine = RolloutEngine(env_fn, policies, RolloutConfig(), scripts=scripts)
    result = engine.collect(list(range(seed, seed + episodes)), group_size=1)
    return result.trajectories
