"""Your own hierarchical tool-use env on mgrpo's core: weights of invented materials.

``main`` asks a ``chemist`` sub-agent for a material's density (a fresh table each
episode, so it cannot be memorised), multiplies with the calculator and answers.

    python examples/my_env.py    # conformance checks, then one expert episode
    mgrpo train --env examples/my_env.py:density_v0 --algo grpo --model tiny --steps 5 \\
        --out runs/density
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import mgrpo_envs
from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent
from mgrpo_envs.core.task_env import TaskEnv
from mgrpo_envs.core.tools import Tool, ToolError

MATERIALS = "Zorbium Blipite Quantine Frellite Daxon Moolium Snibite Garnyx".split()
BUDGETS = dict(main_turns=5, sub_turns=3, episode_turns=12, context_chars=3000)
#: Each difficulty's knobs: DensityTask's (litres asked about, up to) and the budgets.
DIFFICULTIES = {
    name: dict(max_litres=litres, **BUDGETS)
    for name, litres in (("easy", 10), ("medium", 100), ("hard", 1000))
}


class DensityEpisode(Episode):
    def __init__(self, densities: dict[str, int], material: str, litres: int) -> None:
        self.densities = densities
        self.question = f"How many grams do {litres} litres of {material} weigh?"
        density = str(densities[material])
        self.facts = (Fact("chemist", f"What is the density of {material}?", density),)
        self.calculation = f"{litres}*{density}"  # what the scripted main agent computes
        self.gold = str(litres * densities[material])

    def tools(self, role: str) -> list[Tool]:
        return [Tool("density", ("material",), "grams per litre of a material", self._density)]

    def _density(self, material: str) -> str:
        name = material.strip().title()
        if name not in self.densities:
            raise ToolError(f"unknown material {material.strip()[:30]!r}; try {MATERIALS[0]}")
        return f"{name}: {self.densities[name]} grams per litre"

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        if fact is None:  # a subtask that asks for nothing this episode knows
            return ToolCall.make("return", result="unknown")
        if any(e.ok and e.call is not None and e.call.name == "density" for e in history):
            return ToolCall.make("return", result=fact.answer)
        return ToolCall.make("density", material=fact.subtask.split()[-1].rstrip("?"))

    def admissible_calls(self, role: str, history: Sequence[ToolEvent]) -> list[ToolCall]:
        # what a finite-action view (the discrete view for SB3) offers: the expert first
        others = [ToolCall.make("density", material=m) for m in MATERIALS]
        return [*self.expert_calls(role, history), *others]


class DensityTask(Task):
    roles = ("chemist",)
    role_descriptions = {"chemist": "looks up the density of a material"}

    def __init__(self, max_litres: int) -> None:
        self.max_litres = max_litres

    def sample(self, rng: np.random.Generator) -> DensityEpisode:
        densities = {m: int(rng.integers(2, 30)) for m in MATERIALS}
        material = MATERIALS[int(rng.integers(len(MATERIALS)))]
        return DensityEpisode(densities, material, int(rng.integers(2, self.max_litres + 1)))

    def vocabulary(self) -> list[str]:
        words = "How many grams do litres of weigh What is the density per litre unknown"
        return [*MATERIALS, *words.split()]


class DensityEnv(
    TaskEnv,
    name="density_v0",
    task=DensityTask,
    difficulties=DIFFICULTIES,
    default_difficulty="easy",
):
    """density_v0: ``difficulty`` sets ``max_litres``; budgets, ``codec``... as every task env."""


mgrpo_envs.register("density_v0", DensityEnv)  # now mgrpo_envs.make("density_v0") works

if __name__ == "__main__":
    from mgrpo_envs.testing import check_tool_env, play_episode

    print(check_tool_env(lambda: mgrpo_envs.make("density_v0")))
    env = mgrpo_envs.make("density_v0", render_mode="ansi")
    play_episode(env, lambda e: e.unwrapped.oracle_action(), seed=0)
    print(env.render())
