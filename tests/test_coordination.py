"""The coordination benchmark end to end on micro models (one step, two eval episodes)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "coordination.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("coordination", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_settings_name_the_bad_value(bench) -> None:
    with pytest.raises(ValueError, match="arms must be some of .* got \\['grpo'\\]"):
        bench.Settings(arms=("grpo",))
    with pytest.raises(ValueError, match="group must be >= 2"):
        bench.Settings(group=1)


def test_every_arm_trains_the_same_episodes_and_reports(bench, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--quick", "--jobs", "1", "--out", str(out), "--sft-episodes", "2"]
    argv += ["--steps", "1", "--queries", "1", "--group", "2", "--eval-episodes", "2"]
    bench.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    arms = ["mgrpo", "main-only", "single"]
    assert sorted(result["success"]) == sorted(arms)
    for arm in arms:
        assert set(result["success"][arm]) == {"0"}
        lo, hi = result["ci95"][arm]["0"]
        assert 0 <= lo <= result["success"][arm]["0"] <= hi <= 1
        metrics = (out / arm / "seed0" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(m)["episodes"] for m in metrics] == [2]
    saved = json.loads((out / "results.json").read_text())
    assert sorted(r["episodes"] for r in saved["runs"]) == [2, 2, 2]
    assert all(len(r["curve"]) == 1 and "start" in r for r in saved["runs"])
    assert (out / "coordination.png").stat().st_size > 0

    # the cached warm starts are reused with the same SFT settings, retrained otherwise
    s = bench.settings_from(bench.parse_args(argv))
    warm = out / "warm_start"
    assert bench.warm_starts_to_train(s, warm, cache=True) == {"multi": False, "single": False}
    other = dataclasses.replace(s, sft_episodes=3)
    assert bench.warm_starts_to_train(other, warm, cache=True) == {"multi": True, "single": True}
    assert bench.warm_starts_to_train(other, warm, cache=False) == {"multi": False, "single": False}
