"""The tables of a spec file, each a typed dataclass validated where it is built.

``[[tasks]]`` -> `Task`, ``[[regimes]]`` -> `Regime`, ``[sft]`` -> `SFTBudget`,
``[train]`` -> `TrainBudget`, ``[eval]`` -> `EvalBudget`, ``[[runs]]`` -> `Runs`
(`mgrpo_algos.experiments.spec` reads a file into them). A bad value raises
``ValueError`` naming the setting, what was given and what is allowed; the types
are checked from the fields' annotations (`check_types`), the ranges by each class.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import mgrpo_envs
from mgrpo_algos.experiments.arms import ARMS

Size = Literal["micro", "small", "base"]
Loss = Literal["grpo", "dr_grpo", "dapo", "gspo"]
SubGroups = Literal["query", "subtask"]
RegimeName = Literal["saturated", "improvable"]
Split = Literal["val", "test"]

HANDICAPS: dict[str, float] = {"sub_temperature": 1.0, "sub_give_up": 0.0}
"""The sub-agent handicaps (Regime fields) and each one's value in the saturated regime."""


# --------------------------------------------------------------------------- type checks
def _describe(hint: Any) -> str:
    """``int`` -> ``"an int"``; ``Literal["a", "b"]`` -> ``"one of ['a', 'b']"``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none (left out)" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}"
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple and args[-1] is Ellipsis:
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if origin is tuple:
        return (
            isinstance(value, tuple) and len(value) == len(args) and all(map(_matches, value, args))
        )
    if hint is type(None):
        return value is None
    if hint in (int, float):  # a bool is no number here; an int is a float
        numbers = (int,) if hint is int else (int, float)
        return isinstance(value, numbers) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(obj: Any) -> None:
    """Raises ValueError naming the first field of dataclass ``obj`` with a wrong type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise ValueError(f"{f.name} must be {_describe(hints[f.name])}, got {value!r}")


def _at_least(obj: Any, bounds: Mapping[str, int]) -> None:
    for name, low in bounds.items():
        if getattr(obj, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(obj, name)}")


# --------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class Task:
    """An env and its arguments.

    Attributes:
        env: One of ``mgrpo_envs.list_envs()``.
        difficulty: The env's ``difficulty``.
        args: Every other env argument, as ``(name, value)`` pairs sorted by name.
    """

    env: str
    difficulty: str = "medium"
    args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_types(self)
        if self.env not in mgrpo_envs.list_envs():
            raise ValueError(f"env must be one of {mgrpo_envs.list_envs()}, got {self.env!r}")
        if "difficulty" in dict(self.args):
            raise ValueError("args must not hold difficulty: it is a field of its own")
        object.__setattr__(self, "args", tuple(sorted(self.args)))
        try:  # the env itself says which arguments and values it takes
            mgrpo_envs.make(self.env, **self.env_kwargs).close()
        except (TypeError, ValueError) as err:
            raise ValueError(f"env arguments {self.env_kwargs}: {err}") from err

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return {"difficulty": self.difficulty, **dict(self.args)}

    @property
    def name(self) -> str:
        """The difficulty, then ``+name=value`` for each other env argument."""
        return self.difficulty + "".join(f"+{k}={v}" for k, v in self.args)


@dataclass(frozen=True)
class Regime:
    """What the sub-agents are handicapped by: nothing (saturated), or a handicap.

    Attributes:
        name: ``saturated`` (no handicap) or ``improvable`` (at least one).
        sub_temperature: The sub-agents' sampling temperature in training, evaluation
            and the diagnosis (1: none); the same for every multi-agent arm.
        sub_give_up: Share of the sub-agents' demonstrated calls that give up in the
            multi-role warm starts' SFT (``SFTConfig.sub_give_up``; 0: none).
    """

    name: RegimeName
    sub_temperature: float = 1.0
    sub_give_up: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        if not self.sub_temperature > 0:
            raise ValueError(f"sub_temperature must be > 0, got {self.sub_temperature}")
        if not 0 <= self.sub_give_up < 1:
            raise ValueError(f"sub_give_up must be in [0, 1), got {self.sub_give_up}")
        if self.name == "saturated" and self.handicap:
            raise ValueError(
                f"a saturated regime has no sub-agent handicap, got {self.handicap}: "
                "drop it or name the regime improvable"
            )
        if self.name == "improvable" and not self.handicap:
            raise ValueError(
                "an improvable regime needs a sub-agent handicap: sub_temperature > 1 "
                "(e.g. 1.5) or sub_give_up in (0, 1)"
            )

    @property
    def handicap(self) -> dict[str, float]:
        """The handicaps that are on (empty in the saturated regime)."""
        return {k: getattr(self, k) for k, off in HANDICAPS.items() if getattr(self, k) != off}


@dataclass(frozen=True)
class SFTBudget:
    """Every warm start's SFT (the rest of the recipe: ``mgrpo_algos.sft.RECIPE``).

    Attributes:
        size: Tiny model size.
        episodes: Expert episodes demonstrated.
        epochs: Passes over them.
        copy_steps: Synthetic copying steps first.
        lookup_steps: Synthetic lookup steps, interleaved with the copying.
        shared: Train the ``multi`` warm start as one model on every role's
            demonstrations, one copy per role (False: one model per role).
        rehearsal: ``SFTConfig.rehearsal``.
        copy_digits: ``SFTConfig.copy_digits``.
        context_weight: ``SFTConfig.context_weight`` (none: the recipe's 1).
        sub_epochs: More epochs for each sub-agent's model on its own calls (0: none).
        sub_lr: Their peak learning rate.
    """

    size: Size = "small"
    episodes: int = 2000
    epochs: int = 3
    copy_steps: int = 400
    lookup_steps: int = 0
    shared: bool = True
    rehearsal: float = 0.0
    copy_digits: float = 0.0
    context_weight: float | None = None
    sub_epochs: int = 0
    sub_lr: float = 5e-4

    def __post_init__(self) -> None:
        check_types(self)
        _at_least(self, {"episodes": 1, "epochs": 1, "copy_steps": 0, "lookup_steps": 0})
        if self.context_weight is not None and not self.context_weight >= 0:
            raise ValueError(f"context_weight must be >= 0, got {self.context_weight}")
        if self.sub_epochs < 0 or not self.sub_lr > 0:
            raise ValueError(
                f"sub_epochs must be >= 0 and sub_lr > 0, got {self.sub_epochs}, {self.sub_lr}"
            )


@dataclass(frozen=True)
class TrainBudget:
    """Every arm's RL: the same episodes (steps x queries x group) for each.

    Attributes:
        steps: RL steps.
        queries: Queries per step.
        group: Rollouts per query.
        lr: Learning rate (of main, and of every role in the shared and single arms).
        sub_lr: The sub-agents' rate in the arms that train them as models of their
            own (none: lr); main-only keeps them frozen.
        loss: ``loss_type``.
        sub_groups: M-GRPO's ``sub_groups``.
        alternate: N of the ``mgrpo-alternate`` arm's ``schedule="alternate:N"``.
        max_new_tokens: Tokens per agent turn, in training and evaluation.
    """

    steps: int = 30
    queries: int = 8
    group: int = 8
    lr: float = 1e-4
    sub_lr: float | None = None
    loss: Loss = "dapo"
    sub_groups: SubGroups = "query"
    alternate: int = 6
    max_new_tokens: int = 40

    def __post_init__(self) -> None:
        check_types(self)
        _at_least(self, {"steps": 1, "queries": 1, "group": 2, "alternate": 1})
        _at_least(self, {"max_new_tokens": 1})
        for name in ("lr", "sub_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class EvalBudget:
    """The held-out evaluation (`mgrpo_algos.evaluate.evaluate`).

    Attributes:
        episodes: Held-out episodes per evaluation.
        every: Steps between evaluations during training (0: start and end only).
        split: The cells' held-out split (``test``: reported figures).
        diagnose: Also evaluate with the sub-agents, then main, played by the
            scripted expert, and probe the groups' learning signal.
        diagnosis_split: The split of ``--diagnose-only`` (``val``: it chooses a regime).
    """

    episodes: int = 200
    every: int = 0
    split: Split = "test"
    diagnose: bool = False
    diagnosis_split: Split = "val"

    def __post_init__(self) -> None:
        check_types(self)
        _at_least(self, {"episodes": 1, "every": 0})


@dataclass(frozen=True)
class Runs:
    """A block of the grid: these arms, each with these seeds.

    Attributes:
        arms: Names of `mgrpo_algos.experiments.arms.ARMS`.
        seeds: Training seeds (seed k draws the same training queries in every arm).
        diagnose: This block's ``[eval] diagnose`` (none: the spec's).
    """

    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    diagnose: bool | None = None

    def __post_init__(self) -> None:
        check_types(self)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must be distinct names of {list(ARMS)}, got {list(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
