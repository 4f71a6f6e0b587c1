"""`mgrpo demo --quick`: the main job's every stage runs and reports what it measured."""

from __future__ import annotations

import json

from mgrpo_algos import provenance
from mgrpo_algos.cli import main


def test_quick_demo_runs_every_stage_and_reuses_its_warm_start(
    tmp_path, capsys, monkeypatch
) -> None:
    # the working tree may change under a test: hold the code version fixed
    monkeypatch.setattr(provenance, "code_version", lambda: "0123456789ab")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    assert "building the warm start" in printed and "(no stamp)" in printed
    assert summary["expert"]["success_rate"] == 1.0
    for stage in ("before", "after"):
        lo, hi = summary[stage]["ci95"]
        assert lo <= summary[stage]["success_rate"] <= hi
        assert summary[stage]["n"] == summary["settings"]["eval_episodes"]
    for stage in ("before", "after"):  # each agent on its own, the other side scripted
        roles = summary["roles"][stage]
        assert roles["main"]["scripted"] == ["searcher"] and roles["main"]["n"] == 4
        assert roles["searcher"] == summary[stage]["sub_calls"]["searcher"]
    assert "main with expert sub-agents" in printed
    assert "searcher calls right" in printed
    assert summary["provenance"] == provenance.provenance()
    lines = (out / "mgrpo" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1]
    assert (out / "warm_start" / "searcher" / "config.json").is_file()
    assert (out / "warm_start" / "stamp.json").is_file()

    assert main(["demo", "--quick", "--out", str(out)]) == 0  # a second run replaces the first
    assert "using the cached warm start" in capsys.readouterr().out
    assert len((out / "mgrpo" / "metrics.jsonl").read_text().splitlines()) == 1
