"""Coordination: M-GRPO vs main-only vs single-agent GRPO, per task, regime and seed.

The comparison of arXiv 2511.13288 (sec. 4) at tiny scale on the built-in tasks. The
grid is data: one spec per (task, regime) in ``docs/results/coordination/specs/``,
played by the library (``mgrpo experiment run SPEC``; docs/experiments.md) into the
result cells of ``docs/results/coordination/cells/`` and summarised in
``docs/results/coordination/summary.md``. This script runs them as a benchmark:

    python benchmarks/coordination.py                  # every spec of the grid: hours on
                                                       # 2 cores (finished cells skipped)
    python benchmarks/coordination.py SPEC [SPEC ...]  # those specs
    python benchmarks/coordination.py --quick          # coordination_quick.toml: under a minute
    python benchmarks/coordination.py --quick --env webwalk_v0   # the same on another task
    python benchmarks/coordination.py --summary        # summary.md and PNGs from the cells

``--quick`` writes its cells, summary and plots under ``--out`` (default
``runs/coordination-quick``); the grid's go to ``docs/results/coordination/``. The
last line of output is one JSON object: per (task, regime) the success and 95%
interval of every arm and seed, the mean and pooled interval per arm, the cells
written and skipped, the machine and the provenance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mgrpo_algos.experiments.runner import RunOptions, run_spec
from mgrpo_algos.experiments.spec import Spec, load_spec, read_toml, spec_from_dict
from mgrpo_algos.experiments.summary import write_summary
from mgrpo_algos.metrics import emit

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "docs" / "results" / "coordination"
QUICK = Path(__file__).resolve().parent / "coordination_quick.toml"


def quick_spec(env: str | None) -> Spec:
    """``coordination_quick.toml``, on ``env`` when given."""
    data = read_toml(QUICK)
    if env is not None:
        data["tasks"] = [{**task, "env": env} for task in data["tasks"]]
    return spec_from_dict(data, where=str(QUICK), base=QUICK.parent, name=QUICK.stem)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*", help="spec files (default: every one of the grid)")
    p.add_argument("--quick", action="store_true", help="the micro spec: under a minute")
    p.add_argument("--env", help="with --quick: the task (default: the quick spec's)")
    p.add_argument("--summary", action="store_true", help="rebuild the summary alone")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, in spawned processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", help="scratch (default: runs/coordination(-quick))")
    p.add_argument("--cells", help="the cells directory (default: the spec's)")
    p.add_argument("--no-cache", action="store_true", help="retrain the warm starts")
    args = p.parse_args(argv)
    if args.env is not None and not args.quick:
        p.error("--env picks the task of --quick; the grid's tasks are in its specs")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.summary:
        result = write_summary(Path(args.cells) if args.cells else GRID / "cells")
        print(result.pop("text"))
        emit({"benchmark": "coordination-summary", **result})
        return result
    out = Path(args.out or ("runs/coordination-quick" if args.quick else "runs/coordination"))
    cells = Path(args.cells) if args.cells else None
    options = RunOptions(out, cells, args.jobs, args.threads, args.no_cache)
    if args.quick:
        specs = [quick_spec(args.env)]
    else:
        paths = args.specs or sorted((GRID / "specs").glob("*.toml"))
        specs = [load_spec(path) for path in paths]
    results = [run_spec(spec, options) for spec in specs]
    preset = "quick" if args.quick else "grid"
    result = {"benchmark": "coordination", "preset": preset, **merge(results)}
    emit(result)
    return result


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One record of several specs' results: every group, every cell written or skipped."""
    out = json.loads(json.dumps(results[-1]))  # the last spec's timings and summary
    out["experiment"] = [r["experiment"] for r in results]
    out["groups"] = {name: g for r in results for name, g in r["groups"].items()}
    for kind in ("written", "skipped"):
        out["cells"][kind] = [c for r in results for c in r["cells"][kind]]
    out["seconds"] = sum(r["seconds"] for r in results)
    return out


if __name__ == "__main__":
    main()
