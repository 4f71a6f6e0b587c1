"""Experiment specs: a TOML file naming tasks, regimes, arms, seeds and budgets, validated.

A spec is data. It is read with :func:`load_spec` into typed, frozen dataclasses,
each validated where it is built; a mistake is a ``ValueError`` naming the file,
the table, what was given and what is allowed::

    name = "ledger-improvable"                # optional; default: the file's stem
    cells = "../cells"                        # result cells, relative to this file
                                              # (default: OUT/cells of the run)
    # warm_start_dir = "DIR"                  # warm starts used as they are (see below)

    [[tasks]]                                 # one or more
    env = "ledger_v0"
    difficulty = "easy"
    args = { episode_turns = 12 }             # any other env argument

    [[regimes]]                               # one or more
    name = "improvable"                       # or "saturated" (no handicap)
    sub_give_up = 0.3                         # and/or sub_temperature = 1.5

    [sft]                                     # every warm start's recipe
    size = "micro"
    episodes = 1500

    [train]                                   # every arm's RL budget
    steps = 24
    lr = 2e-5
    sub_lr = 2e-4

    [eval]                                    # the held-out evaluation
    episodes = 200
    diagnose = true

    [[runs]]                                  # arms x seeds; one or more blocks
    arms = ["mgrpo", "main-only", "shared"]
    seeds = [0, 1, 2]

The grid is every (task, regime) x every block's (arm, seed); a cell is one of
them, named ``<env>-<task>-<regime>-<arm>-s<seed>`` (``task``: the difficulty, then
``+name=value`` per other env argument, by name). The single arm has no sub-agent:
it runs in saturated regimes only. A block may set ``diagnose`` for its arms alone.

Settings are chosen on the ``val`` split and figures reported on ``test``
(`mgrpo_algos.evaluate.SPLITS`): ``[eval] split`` (default ``test``) is the cells'
split, ``[eval] diagnosis_split`` (default ``val``) that of ``mgrpo experiment run
--diagnose-only``, the diagnosis that chooses a regime.

``warm_start_dir`` names a directory whose warm starts (``multi/<role>/``,
``single/``, ``shared/``) are used as they are, whatever they were built with
(the missing ones are trained there); it is relative to the working directory, and
recorded in every cell's key as written.

Each cell's ``key`` (:meth:`Plan.cell_key`) holds every setting its figures depend
on, under the flat names the cells of ``benchmarks/coordination.py`` were written
with, so that those cells stay valid: a rerun finds them done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgrpo_algos.experiments.tables import (
    EvalBudget,
    Regime,
    Runs,
    SFTBudget,
    Split,
    Task,
    TrainBudget,
    check_types,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from the tomli package
    import tomli as tomllib  # type: ignore[no-redef]

DIAGNOSIS_FIELDS = frozenset(
    "env difficulty arithmetic doc_ref env_kwargs handicap size sub_temperature sub_give_up "
    "sft_episodes sft_epochs sft_copy_steps sft_lookup_steps sft_shared sft_rehearsal "
    "sft_copy_digits sft_context_weight sft_sub_epochs sft_sub_lr max_new_tokens eval_episodes "
    "warm_start_dir".split()
)
"""Cell-key settings that a warm start and its held-out diagnosis depend on."""


# --------------------------------------------------------------------------- one block's plan
@dataclass(frozen=True)
class Plan:
    """One (task, regime) and one block of arms and seeds, with the spec's budgets.

    What the runner plays and the cells are keyed by. ``warm_start_dir``: the
    spec's (a directory used as it is), or None.
    """

    task: Task
    regime: Regime
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    sft: SFTBudget = field(default_factory=SFTBudget)
    train: TrainBudget = field(default_factory=TrainBudget)
    eval: EvalBudget = field(default_factory=EvalBudget)
    diagnose: bool = False
    warm_start_dir: str | None = None

    def __post_init__(self) -> None:
        Runs(self.arms, self.seeds)  # the same checks as a block's
        if self.handicap and "single" in self.arms:
            raise ValueError(
                f"{', '.join(self.handicap)} applies to sub-agents, which the single arm has "
                "none of; run the single arm in a saturated regime"
            )

    @property
    def env(self) -> str:
        return self.task.env

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return self.task.env_kwargs

    @property
    def handicap(self) -> dict[str, float]:
        return self.regime.handicap

    @property
    def name(self) -> str:
        """``<env>-<task>-<regime>``: the group of cells in tables and plots."""
        return f"{self.env}-{self.task.name}-{self.regime.name}"

    def cell_name(self, arm: str, seed: int) -> str:
        return f"{self.name}-{arm}-s{seed}"

    @property
    def episodes_per_run(self) -> int:
        """Environment episodes every arm trains on (the equal budget)."""
        return self.train.steps * self.train.queries * self.train.group

    def role_temperature(self, roles: Iterable[str]) -> dict[str, float]:
        """Each sub-agent's sampling temperature, when it is not 1."""
        t = self.regime.sub_temperature
        return {} if t == 1.0 else {r: t for r in roles if r != "main"}

    @property
    def warm_start_suffix(self) -> str:
        """Tells apart warm starts whose SFT differs from the default recipe's.

        ``+give_up=p`` (the handicap ``sub_give_up``), ``+separate`` (one model per
        role), ``+cw=w`` (``context_weight``), ``+sub=e@lr`` (``sub_epochs`` at ``sub_lr``).
        """
        sft = self.sft
        out = f"+give_up={self.regime.sub_give_up:g}" if self.regime.sub_give_up else ""
        out += "" if sft.shared else "+separate"
        out += "" if sft.context_weight is None else f"+cw={sft.context_weight:g}"
        out += f"+sub={sft.sub_epochs}@{sft.sub_lr:g}" if sft.sub_epochs else ""
        return out

    def settings(self) -> dict[str, Any]:
        """Every setting by the flat name a cell's key holds it under (arms and seeds too)."""
        sft, train, ev, args = self.sft, self.train, self.eval, dict(self.task.args)
        return {
            "env": self.env,
            "difficulty": self.task.difficulty,
            "arithmetic": args.get("arithmetic"),  # repeated from env_kwargs, as keys hold it
            "size": sft.size,
            "sft_episodes": sft.episodes,
            "sft_epochs": sft.epochs,
            "sft_copy_steps": sft.copy_steps,
            "sft_lookup_steps": sft.lookup_steps,
            "sft_shared": sft.shared,
            "steps": train.steps,
            "queries": train.queries,
            "group": train.group,
            "lr": train.lr,
            "sub_lr": train.sub_lr,
            "loss": train.loss,
            "sub_groups": train.sub_groups,
            "alternate": train.alternate,
            "max_new_tokens": train.max_new_tokens,
            "eval_episodes": ev.episodes,
            "eval_every": ev.every,
            "seeds": list(self.seeds),
            "arms": list(self.arms),
            "diagnose": self.diagnose,
            "doc_ref": args.get("doc_ref", "id"),  # repeated from env_kwargs, as keys hold it
            "sub_temperature": self.regime.sub_temperature,
            "sub_give_up": self.regime.sub_give_up,
            "sft_rehearsal": sft.rehearsal,
            "sft_copy_digits": sft.copy_digits,
            "sft_context_weight": sft.context_weight,
            "sft_sub_epochs": sft.sub_epochs,
            "sft_sub_lr": sft.sub_lr,
            "split": ev.split,
        }

    def cell_key(self, arm: str, seed: int) -> dict[str, Any]:
        """Every setting the figures of one (arm, seed) cell depend on.

        A setting at its "off" value that was added after cells were written
        (``sft_context_weight``, ``sft_sub_epochs``, the ``test`` split) is left out,
        so that those cells keep their keys; ``alternate`` is only the
        ``mgrpo-alternate`` arm's.
        """
        key = {k: v for k, v in self.settings().items() if k not in ("arms", "seeds")}
        if self.sft.context_weight is None:
            del key["sft_context_weight"]
        if not self.sft.sub_epochs:
            del key["sft_sub_epochs"], key["sft_sub_lr"]
        if arm != "mgrpo-alternate":
            del key["alternate"]
        if self.eval.split == "test":
            del key["split"]
        key.update(env_kwargs=self.env_kwargs, handicap=self.handicap, arm=arm, seed=seed)
        if self.warm_start_dir is not None:  # a warm start the user named, used as it is
            key["warm_start_dir"] = self.warm_start_dir
        return json.loads(json.dumps(key))  # as it reads back from a file

    def diagnosis_key(self) -> dict[str, Any]:
        """The settings a regime's diagnosis depends on: its warm start and its evaluation.

        A subset of every cell key of the same task, regime and warm start, so the
        summary can tell which cells a diagnosis (``--diagnose-only``) belongs to.
        """
        key = self.cell_key(self.arms[0], self.seeds[0])
        return {k: v for k, v in key.items() if k in DIAGNOSIS_FIELDS}

    def eval_key(self, split: Split) -> str:
        """Names a warm start's held-out evaluation (its cache entry) on ``split``."""
        task = "/".join(f"{k}={v}" for k, v in self.task.args)
        where = f"{self.env}/{self.task.difficulty}" + (f"/{task}" if task else "")
        t = self.regime.sub_temperature
        temperature = f"/sub_T{t:g}" if t != 1.0 else ""
        tail = "" if split == "test" else f"/{split}"  # test: as the keys written before splits
        return f"{where}/n{self.eval.episodes}/t{self.train.max_new_tokens}{temperature}{tail}"


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Spec:
    """A grid: every (task, regime) x every block's (arm, seed), with one set of budgets.

    Attributes:
        name: The experiment's name (default: the spec file's stem).
        tasks: The envs and their arguments.
        regimes: The sub-agent regimes.
        runs: The blocks of arms and seeds.
        sft: Every warm start's recipe.
        train: Every arm's RL budget.
        eval: The held-out evaluation.
        cells: Where the result cells go (None: the run's ``OUT/cells``).
        warm_start_dir: Warm starts used as they are (module docstring); None: built
            and cached in the run's ``OUT/warm_start``.
        description: Free text.
    """

    name: str
    tasks: tuple[Task, ...]
    regimes: tuple[Regime, ...]
    runs: tuple[Runs, ...]
    sft: SFTBudget = field(default_factory=SFTBudget)
    train: TrainBudget = field(default_factory=TrainBudget)
    eval: EvalBudget = field(default_factory=EvalBudget)
    cells: Path | None = None
    warm_start_dir: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for part in ("tasks", "regimes", "runs"):
            if not getattr(self, part):
                raise ValueError(f"{part} must hold at least one entry, got none")
        wants_single = any("single" in block.arms for block in self.runs)
        if wants_single and all(r.handicap for r in self.regimes):
            handicaps = sorted({h for r in self.regimes for h in r.handicap})
            raise ValueError(
                f"{', '.join(handicaps)} applies to sub-agents, which the single arm has none "
                "of; run the single arm in a saturated regime (add one, or drop single)"
            )
        names = [p.cell_name(a, s) for p in self.plans() for a in p.arms for s in p.seeds]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"runs name these cells more than once: {twice}")

    def notes(self) -> list[str]:
        """What the spec asks for that its plans leave out, and why."""
        single = any("single" in block.arms for block in self.runs)
        if single and any(r.handicap for r in self.regimes):
            return ["the improvable regime has no single arm (it has no sub-agent)"]
        return []

    def plans(self) -> list[Plan]:
        """One plan per (task, regime, block); the single arm only in saturated regimes."""
        out = []
        for task in self.tasks:
            for regime in self.regimes:
                for block in self.runs:
                    arms = tuple(a for a in block.arms if not (regime.handicap and a == "single"))
                    if not arms:
                        continue
                    diagnose = self.eval.diagnose if block.diagnose is None else block.diagnose
                    out.append(
                        Plan(
                            task,
                            regime,
                            arms,
                            block.seeds,
                            self.sft,
                            self.train,
                            self.eval,
                            diagnose,
                            self.warm_start_dir,
                        )
                    )
        return out


# --------------------------------------------------------------------------- reading a file
SECTIONS: dict[str, type] = {"sft": SFTBudget, "train": TrainBudget, "eval": EvalBudget}
LISTS: dict[str, type] = {"tasks": Task, "regimes": Regime, "runs": Runs}
TOP_LEVEL = ("name", "description", "cells", "warm_start_dir")


def load_spec(path: str | Path) -> Spec:
    """Reads and validates the spec in ``path`` (TOML).

    Raises:
        ValueError: The file cannot be read, is not TOML, or holds a setting that
            is unknown, missing, of the wrong type or out of range (named, with
            what is allowed).
    """
    path = Path(path)
    return spec_from_dict(read_toml(path), where=str(path), base=path.parent, name=path.stem)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``; a file that cannot be read or parsed is a ValueError."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"cannot read the spec {str(path)!r}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not a TOML file: {err}") from err


def spec_from_dict(
    data: Mapping[str, Any],
    *,
    where: str = "the spec",
    base: Path | None = None,
    name: str = "experiment",
) -> Spec:
    """The spec ``data`` (a TOML document's tables) describes.

    Args:
        data: The document.
        where: Names the document in errors.
        base: The directory ``cells`` is relative to (None: the working directory).
        name: The name when ``data`` gives none.
    """
    known = (*TOP_LEVEL, *SECTIONS, *LISTS)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown table(s) or key(s) {unknown}; allowed: {list(known)}")
    parts: dict[str, Any] = {}
    for key, cls in SECTIONS.items():
        parts[key] = _build(cls, data.get(key, {}), f"{where}: [{key}]")
    for key, cls in LISTS.items():
        items = data.get(key, [])
        if not isinstance(items, list):
            raise ValueError(
                f"{where}: {key} must be an array of tables ([[{key}]]), got {items!r}"
            )
        parts[key] = tuple(
            _build(cls, t, f"{where}: [[{key}]] #{i + 1}") for i, t in enumerate(items)
        )
    top = _build(_TopLevel, {k: data[k] for k in TOP_LEVEL if k in data}, where)
    cells = None if top.cells is None else Path(os.path.normpath((base or Path()) / top.cells))
    try:
        return Spec(
            top.name or name,
            **parts,
            cells=cells,
            warm_start_dir=top.warm_start_dir,
            description=top.description,
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


@dataclass(frozen=True)
class _TopLevel:
    name: str | None = None
    description: str = ""
    cells: str | None = None
    warm_start_dir: str | None = None

    def __post_init__(self) -> None:
        check_types(self)


def _build(cls: type, table: Any, where: str) -> Any:
    """``cls(**table)``: unknown or missing keys, and bad values, named with ``where``."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of settings, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; allowed: {list(fields)}")
    missing = [
        n
        for n, f in fields.items()
        if n not in table
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: {', '.join(missing)} must be given")
    hints = typing.get_type_hints(cls)
    values = {k: _from_toml(v, hints[k]) for k, v in table.items()}
    try:
        return cls(**values)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _from_toml(value: Any, hint: Any) -> Any:
    """TOML's arrays as tuples, an inline table as sorted pairs, an int where a float goes."""
    if isinstance(value, dict) and typing.get_origin(hint) is tuple:
        return tuple(sorted(value.items()))
    if isinstance(value, list):
        return tuple(value)
    floats = hint is float or (
        typing.get_origin(hint) is types.UnionType and float in typing.get_args(hint)
    )
    if floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
