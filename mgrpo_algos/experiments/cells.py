"""The cell store: one JSON file per finished (task, regime, arm, seed) run, skipped on rerun.

A cell is written as soon as its run ends, as ``<cells>/<env>-<task>-<regime>-<arm>-
s<seed>.json`` (`mgrpo_algos.experiments.spec.Plan.cell_name`). It holds ``key``
(every setting the run's figures depend on: `Plan.cell_key`), the full settings, the
warm start it started from and that warm start's held-out evaluation (``start``),
the training curve, the evaluations (``end`` with its 95% Wilson interval), the wall
and CPU seconds, the machine and the provenance (package versions, code version).

A rerun skips a cell whose file holds the same ``key``; a file with another key is
moved to ``replaced/`` when the cell is written again, so a grid can be stopped and
resumed at any point, and a half-written file never looks finished. The regime's
diagnoses (``diagnoses/``) and calibrations (``calibrations/``) are kept beside the
cells the same way.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mgrpo_algos.experiments.spec import Plan
from mgrpo_algos.metrics import machine
from mgrpo_algos.provenance import provenance

DIAGNOSES = "diagnoses"
"""The subdirectory of a cells directory that holds ``--diagnose-only`` records."""
CALIBRATIONS = "calibrations"
"""The subdirectory of a cells directory that holds ``--calibrate`` records."""
CELL_FIELDS = ("env", "task", "regime", "arm", "seed", "end")
"""What every cell holds at least (the summary reads these)."""


def canonical(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples as lists)."""
    return json.loads(json.dumps(obj))


def key_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"steps 4 != 2, lr ..."``: the settings of ``new`` that differ from ``old``."""
    old, new = canonical(old), canonical(new)
    diffs = [
        f"{k} {new.get(k)} != {old.get(k)}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return ", ".join(diffs) or "none"


def now() -> str:
    """The time a record is finished, UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- writing
def cell_done(path: Path, key: dict[str, Any]) -> bool:
    """Whether ``path`` holds a finished cell with this ``key``; prints which and why."""
    if not path.is_file():
        return False
    old = json.loads(path.read_text()).get("key", {})
    if old == canonical(key):
        print(f"{path.name}: done earlier with the same settings, skipped", flush=True)
        return True
    print(f"{path.name}: done earlier under other settings ({key_difference(old, key)}): rerun")
    return False


def write_cell(path: Path, record: dict[str, Any]) -> None:
    """Writes one cell; a file there with another key moves to ``replaced/`` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") != canonical(record["key"]):
            aside = path.parent / "replaced"
            aside.mkdir(exist_ok=True)
            stamp = str(old.get("finished", "earlier")).replace(":", "")
            path.rename(aside / f"{path.stem}-{stamp}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)  # a half-written file never looks like a finished cell


def plan_cells(plan: Plan, directory: Path) -> tuple[list[tuple[str, int]], list[dict]]:
    """The (arm, seed) cells of ``plan`` to run, and the finished ones read back (skipped)."""
    todo, done = [], []
    for seed in plan.seeds:
        for arm in plan.arms:
            path = directory / f"{plan.cell_name(arm, seed)}.json"
            if cell_done(path, plan.cell_key(arm, seed)):
                done.append(json.loads(path.read_text()))
            else:
                todo.append((arm, seed))
    return todo, done


def cell_record(plan: Plan, run: dict, warm: dict) -> dict:
    """One finished run as a result cell: settings, warm start, figures, provenance."""
    arm, seed = run["arm"], run["seed"]
    warm_start = {k: v for k, v in warm.items() if k not in ("evals", "start", "evals_provenance")}
    return {
        "benchmark": "coordination",  # what every cell has said since the first grid
        "cell": plan.cell_name(arm, seed),
        "key": plan.cell_key(arm, seed),
        "env": plan.env,
        "task": plan.task.name,
        "regime": plan.regime.name,
        "handicap": plan.handicap,
        "settings": plan.settings(),
        "warm_start": warm_start,
        "start": warm["start"],
        **run,
        "finished": now(),
        "machine": machine(),
        "provenance": provenance(),
    }


def write_diagnosis(cells_dir: Path, record: dict[str, Any]) -> Path:
    """Writes a regime's diagnosis as ``diagnoses/<name>.json`` (another key: replaced)."""
    path = cells_dir / DIAGNOSES / f"{record['diagnosis']}.json"
    write_cell(path, record)
    return path


def write_calibration(cells_dir: Path, record: dict[str, Any]) -> Path:
    """Writes a regime's calibration as ``calibrations/<name>.json``."""
    path = cells_dir / CALIBRATIONS / f"{record['calibration']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- reading
def read_cells(directory: Path) -> list[dict[str, Any]]:
    """Every cell in ``directory`` (not its ``replaced/``), by file name."""
    if not directory.is_dir():
        raise ValueError(f"no cells directory at {directory}; run the experiment first")
    cells = []
    for path in sorted(directory.glob("*.json")):
        cell = json.loads(path.read_text())
        missing = [k for k in CELL_FIELDS if k not in cell]
        if missing:
            raise ValueError(f"{path} is not a result cell: it lacks {missing}")
        cells.append({**cell, "file": path.name})
    return cells


def read_diagnoses(cells_dir: Path) -> dict[str, dict[str, Any]]:
    """``"<env>-<task>-<regime>"`` -> its ``--diagnose-only`` record, when there is one."""
    directory = cells_dir / DIAGNOSES
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    out = {}
    for path in paths:
        record = json.loads(path.read_text())
        if "preconditions" not in record or "key" not in record:
            raise ValueError(f"{path} is not a regime diagnosis: it lacks preconditions or key")
        out[record["diagnosis"]] = {**record, "file": f"{DIAGNOSES}/{path.name}"}
    return out


def diagnosis_fits(record: dict[str, Any], cells: Iterable[dict[str, Any]]) -> bool:
    """Whether a diagnosis was measured on the warm start (and evaluation) of ``cells``."""
    return all(c.get("key", {}).get(k) == v for c in cells for k, v in record["key"].items())


def other_diagnosis(record: dict[str, Any], cell_key: dict[str, Any]) -> dict[str, Any]:
    """A diagnosis of another warm start than a group's cells', and how its settings differ."""
    theirs = {k: cell_key.get(k) for k in record["key"]}
    return {
        **record["preconditions"],
        "file": record["file"],
        "differs": key_difference(theirs, record["key"]),
    }
