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


def test_arithmetic_reaches_the_env_and_the_keys(bench) -> None:
    default = bench.settings_from(bench.parse_args(["--preset", "cpu-small"]))
    plain = bench.settings_from(bench.parse_args(["--preset", "cpu-small", "--arithmetic", "no"]))
    assert default.env_kwargs == {"difficulty": "medium"}
    assert plain.env_kwargs == {"difficulty": "medium", "arithmetic": False}
    assert plain.eval_key() != default.eval_key() and plain.sft_key() != default.sft_key()
    env = bench.warm_env_fn("multi", plain)()
    for seed in range(20):
        env.reset(seed=seed)
        assert env.unwrapped.episode.calculation is None


@pytest.fixture
def steady_code(monkeypatch):
    """The library's code version held fixed (the working tree may change under a test)."""
    from mgrpo_algos import provenance

    monkeypatch.setattr(provenance, "code_version", lambda: "0123456789ab")


def test_every_arm_trains_the_same_episodes_and_reports(
    bench, tmp_path, capsys, steady_code
) -> None:
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

    # the cached warm starts are reused under the same stamp, retrained otherwise
    assert '"provenance"' in lines[-1] and result["provenance"]["code"]
    s = bench.settings_from(bench.parse_args(argv))
    warm = out / "warm_start"
    assert (warm / "multi" / "stamp.json").is_file() and (warm / "single" / "stamp.json").is_file()
    assert bench.warm_starts_to_train(s, warm, "matching") == {"multi": False, "single": False}
    other = dataclasses.replace(s, sft_episodes=3)
    assert bench.warm_starts_to_train(other, warm, "matching") == {"multi": True, "single": True}
    assert "episodes 3 != 2" in capsys.readouterr().out
    assert bench.warm_starts_to_train(other, warm, "any") == {"multi": False, "single": False}
    assert bench.warm_starts_to_train(s, warm, "never") == {"multi": True, "single": True}
    with pytest.raises(ValueError, match="reuse must be 'matching', 'any' or 'never', got 'yes'"):
        bench.warm_starts_to_train(s, warm, "yes")


def test_a_new_package_version_retrains_the_cached_warm_start(
    bench, tmp_path, monkeypatch, steady_code
) -> None:
    from mgrpo_algos import provenance

    s = bench.settings_from(bench.parse_args(["--quick", "--arms", "single"]))
    path = tmp_path / "single"
    path.mkdir()
    (path / "config.json").write_text("{}")  # stands in for a saved model
    bench.write_stamp(path, provenance.cache_stamp(s.sft_key()))
    assert bench.warm_starts_to_train(s, tmp_path, "matching") == {"single": False}
    versions = {**provenance.package_versions(), "transformers": "0.0.1"}
    monkeypatch.setattr(provenance, "package_versions", lambda *a: versions)
    assert bench.warm_starts_to_train(s, tmp_path, "matching") == {"single": True}


def test_diagnosis_scripts_each_role_in_turn(bench, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--quick", "--jobs", "1", "--out", str(out), "--sft-episodes", "2", "--diagnose"]
    argv += ["--arms", "mgrpo", "--steps", "1", "--queries", "1", "--group", "2"]
    argv += ["--eval-episodes", "3", "--difficulty", "easy"]
    bench.main(argv)
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])
    assert "which role limits success" in printed
    start, end = result["diagnosis"]["mgrpo"]["start"], result["diagnosis"]["mgrpo"]["0"]
    for d in (start, end):
        assert set(d) >= {"as_played", "expert_subs", "expert_main", "searcher_accuracy"}
        assert 0 <= d["searcher_accuracy"] <= 1
        assert d["main_calls"] > 0 and d["main_nll_per_token"] >= 0
    assert "share of R_S's variance between subtasks" in printed
    # an untrained main (one SFT step) never answers right, even with an expert searcher
    assert start["expert_subs"] == 0.0


def test_subtask_signal_splits_the_variance_by_hand(bench) -> None:
    # query 0: subtask A rewards 1, 1 (experts 1, 1); subtask B rewards 0, 0.5 (experts 0, 1)
    # R_S: mean 0.625, var ((0.375^2)*2 + 0.625^2 + 0.125^2) / 4 = 0.171875
    # subtask means 1, 1, 0.25, 0.25: var 0.375^2 = 0.140625
    # query 1: one call, no variance, no group of two
    calls = [(0, "Find  A", 1.0, 1.0), (0, "find a", 1.0, 1.0), (0, "B", 0.0, 0.0)]
    calls += [(0, "B", 1.0, 0.5), (1, "C", 1.0, 0.6)]
    out = bench.subtask_signal(calls)
    assert out["between_subtask_share"] == pytest.approx(0.140625 / 0.171875)
    assert out["subtask_groups_differing"] == pytest.approx(0.5)  # B differs, A does not
    assert bench.subtask_signal([(0, "A", 1.0, 0.3)]) == {
        "between_subtask_share": 0.0,
        "subtask_groups_differing": 0.0,
    }


def test_the_m_grpo_variant_arms_set_their_options(bench, tmp_path) -> None:
    import mgrpo_envs
    from mgrpo_algos.policies import HFPolicy

    warm = tmp_path / "warm"
    env = mgrpo_envs.make("research_v0", difficulty="easy")
    for role in env.possible_agents:
        HFPolicy.tiny(env, size="micro").save(warm / "multi" / role)
    s = bench.Settings(size="micro", steps=2, queries=1, group=2, alternate=3)
    want = {
        "mgrpo": ("mgrpo", "query", "duplicate_drop", "joint"),
        "main-only": ("main-only", "query", "duplicate_drop", "joint"),
        "mgrpo-subtask": ("mgrpo", "subtask", "duplicate_drop", "joint"),
        "mgrpo-alternate": ("mgrpo", "query", "duplicate_drop", "alternate:3"),
        "no-sync": ("mgrpo", "query", "none", "joint"),
    }
    for arm, options in want.items():
        c = bench.make_trainer(arm, 0, s, warm, tmp_path / arm).config
        assert (c.algo, c.sub_groups, c.align, c.schedule) == options, arm
    assert set(want) | {"single", "shared"} == set(bench.ARMS) == set(bench.WARM_START_OF)


def test_the_improvable_sub_agent_regime_reaches_env_keys_and_every_multi_arm(
    bench, tmp_path
) -> None:
    import mgrpo_envs
    from mgrpo_algos.policies import HFPolicy

    args = ["--preset", "cpu-small", "--doc-ref", "title", "--sub-temperature", "1.5"]
    args += ["--arms", "mgrpo", "main-only"]
    s = bench.settings_from(bench.parse_args(args))
    base = bench.settings_from(bench.parse_args(["--preset", "cpu-small"]))
    assert s.env_kwargs == {"difficulty": "medium", "doc_ref": "title"}
    assert s.role_temperature(["main", "searcher"]) == {"searcher": 1.5}
    assert s.eval_key() != base.eval_key() and s.eval_key().endswith("/sub_T1.5")
    assert base.role_temperature(["main", "searcher"]) == {}
    with pytest.raises(ValueError, match="sub_temperature applies to sub-agents"):
        dataclasses.replace(s, arms=("mgrpo", "single"))
    warm = tmp_path / "warm"
    env = mgrpo_envs.make("research_v0", difficulty="medium", doc_ref="title")
    for role in env.possible_agents:
        HFPolicy.tiny(env, size="micro").save(warm / "multi" / role)
    for arm in ("mgrpo", "main-only", "no-sync"):
        c = bench.make_trainer(arm, 0, dataclasses.replace(s, steps=1), warm, tmp_path / arm).config
        assert c.role_temperature == {"searcher": 1.5} and c.env_kwargs["doc_ref"] == "title"
