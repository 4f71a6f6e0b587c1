"""``TaskEnv``: a task env's arguments, presets and errors, built by the core from its task."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from mgrpo_envs.core.env import Budgets
from mgrpo_envs.core.task import Episode, Task
from mgrpo_envs.core.task_env import BUDGET_NAMES, TaskEnv, difficulty_knobs, env_options


class BoxTask(Task):
    """A task with a knob the presets set (``size``) and one they do not (``colour``)."""

    roles = ("packer",)
    role_descriptions = {"packer": "packs boxes"}

    def __init__(self, size: int, colour: str = "red") -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.size, self.colour = size, colour

    def sample(self, rng: np.random.Generator) -> Episode:
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        return []


PRESETS = {"small": {"size": 1, "main_turns": 2}, "large": {"size": 9, "main_turns": 4}}


class BoxEnv(
    TaskEnv, name="box_v0", task=BoxTask, difficulties=PRESETS, default_difficulty="small"
):
    """box_v0."""


class RedBoxEnv(BoxEnv):
    """A subclass without class keywords keeps its parent's arguments."""


def test_the_arguments_are_the_presets_the_task_knobs_the_budgets_and_the_env_options() -> None:
    params = inspect.signature(BoxEnv.__init__).parameters
    core = [*BUDGET_NAMES, *(p.name for p in env_options())]
    assert list(params) == ["self", "difficulty", "size", "colour", *core]
    assert params["difficulty"].default == "small"
    assert params["size"].default is None and params["size"].annotation == "int | None"
    assert params["colour"].default == "red" and params["main_turns"].default is None
    assert BoxEnv.metadata == {
        "render_modes": ["ansi"],
        "name": "box_v0",
        "is_parallelizable": False,
    }
    assert inspect.signature(RedBoxEnv.__init__) == inspect.signature(BoxEnv.__init__)


def test_a_preset_merges_with_the_arguments_given() -> None:
    env = BoxEnv()
    assert (env.difficulty, env.task.size, env.task.colour) == ("small", 1, "red")
    assert env.budgets == Budgets(main_turns=2)  # the budgets the presets leave out: defaults
    env = RedBoxEnv(difficulty="large", colour="blue", sub_turns=3, codec="json")
    assert (env.task.size, env.task.colour, env.codec_name) == (9, "blue", "json")
    assert env.budgets == Budgets(main_turns=4, sub_turns=3)
    assert BoxEnv(size=5, main_turns=7).budgets.main_turns == 7


def test_bad_arguments_name_what_was_expected() -> None:
    with pytest.raises(
        TypeError, match=r"^BoxEnv.__init__\(\) got an unexpected keyword argument 'hue'$"
    ):
        BoxEnv(hue="red")
    with pytest.raises(
        ValueError, match=r"difficulty must be one of \['large', 'small'\], got 'x'"
    ):
        BoxEnv(difficulty="x")
    with pytest.raises(ValueError, match="budget episode_turns must be a positive int, got 0"):
        BoxEnv(episode_turns=0)
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        BoxEnv(size=0)
    with pytest.raises(TypeError, match="TaskEnv is a base class"):
        TaskEnv()


def test_bad_presets_are_refused_when_the_class_is_defined() -> None:
    with pytest.raises(ValueError, match=r"unknown knobs \['sise'\].*without a default \['size'\]"):

        class Typo(TaskEnv, name="t_v0", task=BoxTask, difficulties={"medium": {"sise": 1}}):
            pass

    with pytest.raises(ValueError, match="every difficulty preset sets the same knobs"):

        class Uneven(
            TaskEnv, name="t_v0", task=BoxTask, difficulties={"medium": {"size": 1}, "b": {}}
        ):
            pass

    with pytest.raises(ValueError, match=r"presets \['a'\], got 'medium'"):

        class NoMedium(TaskEnv, name="t_v0", task=BoxTask, difficulties={"a": {"size": 1}}):
            pass

    with pytest.raises(TypeError, match="needs the class keywords name="):

        class NoName(TaskEnv, task=BoxTask, difficulties=PRESETS):
            pass


def test_difficulty_knobs_keeps_the_preset_where_a_knob_is_none() -> None:
    knobs, budgets = difficulty_knobs(PRESETS, "large", {"size": None, "main_turns": 3})
    assert knobs == {"size": 9, "main_turns": 3} and budgets == Budgets(main_turns=3)
