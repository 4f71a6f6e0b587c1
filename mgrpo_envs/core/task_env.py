"""The plumbing every task env shares: its arguments, difficulty presets and factories.

A task env is a :class:`~mgrpo_envs.core.env.HierarchicalToolEnv` over one
:class:`~mgrpo_envs.core.task.Task` family. A task module (or a user's file, see
``examples/my_env.py``) subclasses :class:`TaskEnv`, naming its env id, its task
class and its difficulty presets; the core builds the rest, once for every env:

- the arguments, in this order: ``difficulty`` (a preset's name); the task's knobs,
  which are the parameters of the task class's ``__init__`` (a knob the presets set
  defaults to None, the preset's value; any other keeps the task's default); one
  budget per :class:`~mgrpo_envs.core.env.Budgets` field (None: the preset's value,
  or the field's default where the presets leave it out); and the keyword arguments
  of ``HierarchicalToolEnv`` but ``budgets`` (``codec``, ``reward_weights``,
  ``max_observation_chars``, ``render_mode``), with their defaults;
- ``__init__``, whose signature lists them (``mgrpo_envs.make`` checks a caller's
  arguments against it), and which merges the preset with the arguments given and
  builds the budgets and the task;
- ``metadata``, and :func:`wrap`, the wrappers of PettingZoo's ``env()`` factory.

So a new budget field or env option reaches every task env, the built-in ones and
a user's, with no edit to a task module.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from mgrpo_envs.core.env import Budgets, HierarchicalToolEnv
from mgrpo_envs.core.task import Task

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
#: The budgets, each an argument of every task env (one per ``Budgets`` field).
BUDGET_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Budgets))


def wrap(env: AECEnv) -> AECEnv:
    """``env`` in the wrappers of PettingZoo's ``env()`` factory: the order-enforcing one."""
    return OrderEnforcingWrapper(env)


def difficulty_knobs(
    table: Mapping[str, Mapping[str, Any]], difficulty: str, given: Mapping[str, Any]
) -> tuple[dict[str, Any], Budgets]:
    """A task's knobs at ``difficulty``, overridden by the ``given`` ones that are not None.

    Args:
        table: Difficulty name -> the value of each knob it sets (task knobs and budgets).
        difficulty: A key of ``table``.
        given: Knobs the user set (None: keep the difficulty's value).

    Returns:
        The merged knobs, and the `Budgets` they name (a budget they leave out keeps
        its default).

    Raises:
        ValueError: If ``difficulty`` is not in ``table``, or a budget is not a positive int.
    """
    if difficulty not in table:
        raise ValueError(f"difficulty must be one of {sorted(table)}, got {difficulty!r}")
    knobs = {**table[difficulty], **{k: v for k, v in given.items() if v is not None}}
    budgets = Budgets(**{name: knobs[name] for name in BUDGET_NAMES if name in knobs})
    return knobs, budgets


def _optional(annotation: Any) -> Any:
    """``X | None`` of an annotation (annotations are strings here: postponed evaluation)."""
    return annotation if annotation is inspect.Parameter.empty else f"{annotation} | None"


def task_knobs(task: type[Task]) -> list[inspect.Parameter]:
    """The parameters of ``task``'s ``__init__`` (none when it defines no ``__init__``)."""
    if task.__init__ is object.__init__:
        return []
    params = list(inspect.signature(task.__init__).parameters.values())[1:]
    wrong = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if wrong:
        raise TypeError(
            f"{task.__name__}.__init__ takes *args/**kwargs {wrong}; a task env's "
            "arguments are the task's named parameters: name each one"
        )
    return params


def env_options() -> list[inspect.Parameter]:
    """``HierarchicalToolEnv``'s keyword arguments but ``budgets``, with their defaults."""
    params = inspect.signature(HierarchicalToolEnv.__init__).parameters.values()
    return [p for p in params if p.kind is _KEYWORD and p.name != "budgets"]


def env_signature(
    task: type[Task], difficulties: Mapping[str, Mapping[str, Any]], default_difficulty: str
) -> inspect.Signature:
    """The ``__init__`` signature of a task env over ``task`` (the module docstring's order).

    Raises:
        ValueError: The presets are empty, differ in the knobs they set, set a knob
            that is neither the task's nor a budget, or leave out a task knob that
            has no default; or ``default_difficulty`` is not a preset.
    """
    if not difficulties or default_difficulty not in difficulties:
        raise ValueError(
            f"default_difficulty must be one of the presets {list(difficulties)}, "
            f"got {default_difficulty!r}"
        )
    knobs = task_knobs(task)
    preset = set(next(iter(difficulties.values())))
    for name, values in difficulties.items():
        if set(values) != preset:
            raise ValueError(
                f"every difficulty preset sets the same knobs: {name!r} sets "
                f"{sorted(values)}, another {sorted(preset)}"
            )
    unknown = preset - {p.name for p in knobs} - set(BUDGET_NAMES)
    missing = [p.name for p in knobs if p.default is p.empty and p.name not in preset]
    if unknown or missing:
        raise ValueError(
            f"the presets of {task.__name__} set unknown knobs {sorted(unknown)} and leave "
            f"out knobs without a default {missing}; expected {task.__name__}'s parameters "
            f"{[p.name for p in knobs]} and the budgets {list(BUDGET_NAMES)}"
        )
    knobs = [
        p.replace(kind=_KEYWORD, default=None, annotation=_optional(p.annotation))
        if p.name in preset
        else p.replace(kind=_KEYWORD)
        for p in knobs
    ]
    budgets = [
        inspect.Parameter(f.name, _KEYWORD, default=None, annotation=_optional(f.type))
        for f in dataclasses.fields(Budgets)
    ]
    return inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("difficulty", _KEYWORD, default=default_difficulty, annotation="str"),
            *knobs,
            *budgets,
            *env_options(),
        ]
    )


class TaskEnv(HierarchicalToolEnv):
    """A ``HierarchicalToolEnv`` over one task family, its arguments built by the core.

    A subclass names its env id, task class and presets as class keywords, and
    gets its ``__init__`` (arguments in the module docstring) and ``metadata``::

        class DensityEnv(TaskEnv, name="density_v0", task=DensityTask, difficulties=PRESETS):
            '''density_v0 (the env card).'''

    Class keywords:
        name: The env id, ``metadata["name"]``.
        task: The :class:`~mgrpo_envs.core.task.Task` class; the parameters of its
            ``__init__`` are the env's task knobs.
        difficulties: Difficulty name -> the value of each knob it sets (task knobs
            and budgets); every preset sets the same knobs.
        default_difficulty: The preset of ``difficulty``'s default (``"medium"``).

    A subclass of a task env that gives no class keywords keeps its parent's.

    Attributes:
        difficulty: The preset this env was built at.
    """

    task_class: ClassVar[type[Task]]
    difficulties: ClassVar[Mapping[str, Mapping[str, Any]]]
    #: The signature of the env's ``__init__``; ``self`` is its first parameter.
    arguments: ClassVar[inspect.Signature]

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        task: type[Task] | None = None,
        difficulties: Mapping[str, Mapping[str, Any]] | None = None,
        default_difficulty: str = "medium",
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is None and task is None and difficulties is None:
            return
        if not isinstance(name, str) or not (isinstance(task, type) and issubclass(task, Task)):
            raise TypeError(
                f"{cls.__name__} needs the class keywords name= (the env id, a str) and "
                f"task= (a Task class); got name={name!r}, task={task!r}"
            )
        if not isinstance(difficulties, Mapping):
            raise TypeError(
                f"{cls.__name__} needs difficulties= (preset name -> knob values), "
                f"got {difficulties!r}"
            )
        cls.task_class, cls.difficulties = task, difficulties
        cls.arguments = env_signature(task, difficulties, default_difficulty)
        base = HierarchicalToolEnv.metadata
        cls.metadata = {**base, "render_modes": list(base["render_modes"]), "name": name}

        # A function of its own per class, so that its signature (what make() checks
        # and inspect.signature(cls.__init__) shows) lists this env's arguments.
        def __init__(self: TaskEnv, **kwargs: Any) -> None:
            TaskEnv.__init__(self, **kwargs)

        __init__.__signature__ = cls.arguments  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__module__ = cls.__module__
        __init__.__doc__ = f"Builds {name}; the arguments are those of its env card."
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, **kwargs: Any) -> None:
        if not hasattr(type(self), "arguments"):
            raise TypeError(
                "TaskEnv is a base class: subclass it with the class keywords name=, task= "
                f"and difficulties=; got {type(self).__name__} without them"
            )
        params = type(self).arguments.parameters
        for key in kwargs:
            if key not in params or key == "self":
                raise TypeError(
                    f"{type(self).__init__.__qualname__}() got an unexpected keyword "
                    f"argument {key!r}"
                )
        args = {n: p.default for n, p in params.items() if n != "self"} | kwargs
        knobs = [p.name for p in task_knobs(self.task_class)]
        preset = next(iter(self.difficulties.values()))  # the knobs every preset sets
        given = {n: args[n] for n in (*[k for k in knobs if k in preset], *BUDGET_NAMES)}
        merged, budgets = difficulty_knobs(self.difficulties, args["difficulty"], given)
        self.difficulty = args["difficulty"]
        task = self.task_class(**{n: merged[n] if n in preset else args[n] for n in knobs})
        options = {p.name: args[p.name] for p in env_options()}
        super().__init__(task, budgets=budgets, **options)
