"""benchmarks/demo_repro.py: one quick cell, written on completion and skipped on a rerun."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_repro.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("demo_repro", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_cell_is_written_once_and_reused(tmp_path, capsys) -> None:
    bench = load_bench()
    argv = ["--quick", "--seeds", "0", "--threads", "1", "--out", str(tmp_path)]
    first = bench.main(argv)
    (cell,) = first["cells"]
    assert (cell["seed"], cell["threads"]) == (0, 1)
    assert cell["settings"]["seed"] == 0 and cell["before"]["n"] == 4
    assert cell["disjoint"] == (cell["after"]["ci95"][0] > cell["before"]["ci95"][1])
    assert set(cell["roles"]) == {"before", "after"}
    path = tmp_path / "cells" / "seed0-threads1-quick.json"
    assert json.loads(path.read_text()) == cell
    capsys.readouterr()
    again = bench.main(argv)  # finished cells are read back, not rerun
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert again["cells"] == [cell]
