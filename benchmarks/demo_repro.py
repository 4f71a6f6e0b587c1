"""Does the main job reproduce? `mgrpo demo` on several seeds and torch thread counts.

Each (seed, threads) cell runs ``mgrpo demo --seed S`` in a fresh process with
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to the thread count: M-GRPO from the
published warm start, seeded by S. With ``--rebuild`` each cell runs
``mgrpo demo --seed S --sft-seed S --no-cache`` instead and builds its own warm start
first (SFT seeded by S, 20-40 minutes more per cell). A cell's summary is written
to ``OUT/cells/`` as soon as it finishes, and a rerun skips the cells already there
(``--fresh`` reruns them). The cells run one at a time: a cell's wall time is only
meaningful when it has the machine to itself.

The last line printed is one JSON object: per cell, success before and after
M-GRPO with their 95% intervals, whether the intervals are disjoint, the per-role
figures and the seconds; and the machine and package versions.

    python benchmarks/demo_repro.py                       # seeds 0 1 2, threads 1 2
    python benchmarks/demo_repro.py --rebuild --threads 1 # each warm start rebuilt
    python benchmarks/demo_repro.py --seeds 0 --threads 2 # one cell
    python benchmarks/demo_repro.py --quick               # seconds, tiny numbers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mgrpo_algos.metrics import machine
from mgrpo_algos.provenance import provenance


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="runs/demo_repro", help="cells and demo runs")
    parser.add_argument("--fresh", action="store_true", help="rerun finished cells")
    parser.add_argument("--quick", action="store_true", help="mgrpo demo --quick")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="each cell builds its warm start (SFT seeded by the cell's seed) before M-GRPO",
    )
    return parser.parse_args(argv)


def cell_name(seed: int, threads: int, quick: bool, rebuild: bool = False) -> str:
    return (
        f"seed{seed}-threads{threads}"
        + ("-rebuild" if rebuild else "")
        + ("-quick" if quick else "")
    )


def run_cell(
    seed: int, threads: int, out: Path, quick: bool, rebuild: bool = False
) -> dict[str, Any]:
    """One ``mgrpo demo`` in a child process; its summary, with the cell's settings."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    run_dir = out / "runs" / cell_name(seed, threads, quick, rebuild)
    cmd = [sys.executable, "-m", "mgrpo_algos.cli", "demo", "--seed", str(seed)]
    cmd += ["--out", str(run_dir)] + (["--quick"] if quick else [])
    if rebuild:
        cmd += ["--sft-seed", str(seed), "--no-cache"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"mgrpo demo --seed {seed} with {threads} thread(s) failed "
            f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "seed": seed,
        "threads": threads,
        "rebuild": rebuild,
        "warm_start": summary.get("warm_start"),
        "wall_seconds": time.perf_counter() - t0,
        "before": summary["before"],
        "after": summary["after"],
        "roles": summary.get("roles"),
        "disjoint": summary["after"]["ci95"][0] > summary["before"]["ci95"][1],
        "demo_seconds": summary["seconds"],
        "settings": summary["settings"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    cells = []
    for threads in args.threads:
        for seed in args.seeds:
            name = cell_name(seed, threads, args.quick, args.rebuild)
            path = out / "cells" / f"{name}.json"
            if path.is_file() and not args.fresh:
                print(f"{path.name}: finished earlier, skipped", flush=True)
                cells.append(json.loads(path.read_text()))
                continue
            print(f"running the demo, seed {seed}, {threads} thread(s) ...", flush=True)
            cell = run_cell(seed, threads, out, args.quick, args.rebuild)
            path.write_text(json.dumps(cell, indent=2))
            cells.append(cell)
            print(
                f"  seed {seed}, {threads} thread(s): {cell['before']['text']} -> "
                f"{cell['after']['text']}, disjoint {cell['disjoint']}, "
                f"{cell['demo_seconds']:.0f} s",
                flush=True,
            )
    result = {
        "benchmark": "demo_repro",
        "cells": cells,
        "all_disjoint": all(c["disjoint"] for c in cells),
        "max_demo_seconds": max(c["demo_seconds"] for c in cells),
        "machine": machine(),
        "provenance": provenance(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
