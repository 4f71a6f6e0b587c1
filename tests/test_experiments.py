"""Experiment specs as data: validation, the committed grid's specs and cells, the command."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from mgrpo_algos.experiments.cells import plan_cells, read_cells
from mgrpo_algos.experiments.spec import load_spec, spec_from_dict
from mgrpo_algos.experiments.summary import write_summary

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "docs" / "results" / "coordination"
SPECS = sorted((GRID / "specs").glob("*.toml"))
MINIMAL = """
[[tasks]]
env = "ledger_v0"

[[regimes]]
name = "saturated"

[[runs]]
arms = ["mgrpo", "main-only"]
seeds = [0]
"""


def written(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the format
def test_a_minimal_spec_takes_the_defaults_and_names_its_cells(tmp_path) -> None:
    spec = load_spec(written(tmp_path, MINIMAL))
    assert spec.name == "spec" and spec.cells is None
    (plan,) = spec.plans()
    assert plan.name == "ledger_v0-medium-saturated" and plan.arms == ("mgrpo", "main-only")
    assert (plan.train.steps, plan.sft.size, plan.eval.split) == (30, "small", "test")
    spec = load_spec(written(tmp_path, 'cells = "results/cells"\n' + MINIMAL))
    assert spec.cells == tmp_path / "results" / "cells"  # relative to the spec file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trian]\nsteps = 2\n", r"unknown table\(s\) or key\(s\) \['trian'\]; allowed: \['name'"),
        (
            "[train]\nstepz = 2\n",
            r"\[train\]: unknown setting\(s\) \['stepz'\]; allowed: \['steps'",
        ),
        ("[train]\nsteps = 0\n", r"\[train\]: steps must be >= 1, got 0"),
        ('[train]\nsteps = "24"\n', r"\[train\]: steps must be an int, got '24'"),
        ("[train]\nlr = true\n", r"\[train\]: lr must be a number, got True"),
        ('[train]\nloss = "ppo"\n', r"loss must be one of \['grpo', 'dr_grpo', 'dapo', 'gspo'\]"),
        ('[eval]\nsplit = "dev"\n', r"\[eval\]: split must be one of \['val', 'test'\], got 'dev'"),
        ('[sft]\nsize = "huge"\n', r"size must be one of \['micro', 'small', 'base'\]"),
        ("[[tasks]]\ndifficulty = 'easy'\n", r"\[\[tasks\]\] #2: env must be given"),
        ("[[tasks]]\nenv = 'chess_v0'\n", r"env must be one of \['ledger_v0', .*got 'chess_v0'"),
        (
            "[[regimes]]\nname = 'improvable'\n",
            r"#2: an improvable regime needs a sub-agent handicap",
        ),
        ("[[runs]]\narms = ['mgrpo']\nseeds = [0]\n", r"runs name these cells more than once"),
        ("[[runs]]\narms = ['ppo']\nseeds = [1]\n", r"arms must be distinct names of \['mgrpo'"),
        ("[[runs]]\narms = ['mgrpo']\nseeds = []\n", r"seeds must be distinct and at least one"),
    ],
)
def test_a_bad_spec_names_the_setting_and_what_is_allowed(tmp_path, text, message) -> None:
    path = written(tmp_path, MINIMAL + text)
    with pytest.raises(ValueError, match=f"^{path}: .*{message}"):
        load_spec(path)


def test_a_spec_must_be_toml_and_hold_its_lists(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a TOML file"):
        load_spec(written(tmp_path, "[[tasks]\nenv = 1\n"))
    with pytest.raises(ValueError, match="cannot read the spec"):
        load_spec(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="tasks must hold at least one entry, got none"):
        spec_from_dict(
            {"regimes": [{"name": "saturated"}], "runs": [{"arms": ["mgrpo"], "seeds": [0]}]}
        )
    with pytest.raises(ValueError, match=r"the spec: \[train\] must be a table of settings, got 3"):
        spec_from_dict({"train": 3})
    with pytest.raises(ValueError, match=r"runs must be an array of tables \(\[\[runs\]\]\)"):
        spec_from_dict({"runs": {"arms": ["mgrpo"]}})


def test_a_grid_is_every_task_and_regime_times_every_block(tmp_path) -> None:
    text = MINIMAL + "[[tasks]]\nenv = 'research_v0'\nargs = { doc_ref = 'title' }\n"
    text += "[[regimes]]\nname = 'improvable'\nsub_temperature = 1.5\n"
    text += "[[runs]]\narms = ['single', 'shared']\nseeds = [3]\ndiagnose = true\n"
    plans = load_spec(written(tmp_path, text)).plans()
    names = [(p.name, p.arms, p.seeds, p.diagnose) for p in plans]
    assert names == [
        ("ledger_v0-medium-saturated", ("mgrpo", "main-only"), (0,), False),
        ("ledger_v0-medium-saturated", ("single", "shared"), (3,), True),
        ("ledger_v0-medium-improvable", ("mgrpo", "main-only"), (0,), False),
        ("ledger_v0-medium-improvable", ("shared",), (3,), True),  # no single arm there
        ("research_v0-medium+doc_ref=title-saturated", ("mgrpo", "main-only"), (0,), False),
        ("research_v0-medium+doc_ref=title-saturated", ("single", "shared"), (3,), True),
        ("research_v0-medium+doc_ref=title-improvable", ("mgrpo", "main-only"), (0,), False),
        ("research_v0-medium+doc_ref=title-improvable", ("shared",), (3,), True),
    ]
    assert plans[2].role_temperature(["main", "analyst"]) == {"analyst": 1.5}


# --------------------------------------------------------------------------- the committed grid
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_the_grid_specs_find_their_committed_cells_done(path) -> None:
    spec = load_spec(path)
    assert spec.cells == GRID / "cells"
    with redirect_stdout(io.StringIO()):
        plans = [plan_cells(plan, spec.cells) for plan in spec.plans()]
    assert [todo for todo, _ in plans] == [[]] * len(plans)


def test_every_committed_cell_belongs_to_a_spec() -> None:
    names = {
        plan.cell_name(arm, seed)
        for path in SPECS
        for plan in load_spec(path).plans()
        for arm in plan.arms
        for seed in plan.seeds
    }
    assert names == {Path(c["file"]).stem for c in read_cells(GRID / "cells")}
    assert len(names) == 141


def test_the_summary_rebuilt_from_the_committed_cells_is_the_committed_one(tmp_path) -> None:
    out = tmp_path / "coordination"
    result = write_summary(GRID / "cells", out)
    assert (out / "summary.md").read_bytes() == (GRID / "summary.md").read_bytes()
    assert len(result["plots"]) == 6 and all(Path(p).stat().st_size for p in result["plots"])


# --------------------------------------------------------------------------- the command
def test_the_command_refuses_a_bad_spec_in_one_line(tmp_path, capsys) -> None:
    from mgrpo_algos import cli

    path = written(tmp_path, MINIMAL + "[train]\nsteps = 0\n")
    with pytest.raises(cli.CommandExit, match=r"mgrpo experiment: .*steps must be >= 1") as exit:
        cli.main(["experiment", "run", str(path)])
    assert exit.value.code == cli.USAGE_ERROR
    assert capsys.readouterr().err.count("\n") == 1
    for argv, message in (
        (["experiment", "plot"], "unknown experiment command 'plot'; expected one of"),
        (["experiment", "summary"], "give the spec files to summarise, or --cells DIR"),
        (["experiment", "summary", str(written(tmp_path, MINIMAL, "a.toml"))], "names no cells"),
        (["experiment", "run", str(path), "--diagnose-only", "--calibrate"], "give one of"),
    ):
        with pytest.raises(cli.CommandExit, match=message):
            cli.main(argv)


def test_the_summary_command_writes_one_summary_per_cells_directory(tmp_path, capsys) -> None:
    from mgrpo_algos import cli

    cells = tmp_path / "grid" / "cells"
    cells.mkdir(parents=True)
    (cells / "x.json").write_text((GRID / "cells" / f"{SPECS[0].stem}-mgrpo-s0.json").read_text())
    a = written(tmp_path, 'cells = "grid/cells"\n' + MINIMAL, "a.toml")
    b = written(tmp_path, 'cells = "grid/cells"\n' + MINIMAL, "b.toml")
    assert cli.main(["experiment", "summary", str(a), str(b), "--cells", str(cells)]) == 0
    (only,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summaries"]
    assert only["summary"] == str(tmp_path / "grid" / "summary.md")
    assert "from 1 cells" in (tmp_path / "grid" / "summary.md").read_text()


# --------------------------------------------------------------------------- the benchmark
@pytest.fixture(scope="module")
def bench():
    path = REPO / "benchmarks" / "coordination.py"
    spec = importlib.util.spec_from_file_location("coordination", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_benchmark_quick_spec_is_micro_and_takes_another_task(bench) -> None:
    (plan,) = bench.quick_spec(None).plans()
    assert (plan.sft.size, plan.train.steps, plan.seeds) == ("micro", 2, (0,))
    assert plan.episodes_per_run == 16 and plan.env_kwargs["episode_turns"] == 12
    (webwalk,) = bench.quick_spec("webwalk_v0").plans()
    assert webwalk.name == "webwalk_v0-medium+episode_turns=12-saturated"
    with pytest.raises(SystemExit):
        bench.parse_args(["--env", "webwalk_v0"])  # --env is --quick's alone
