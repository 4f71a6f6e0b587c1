"""The coordination benchmark end to end on micro models, its result cells and their summary."""

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


TINY_RUN = ["--quick", "--jobs", "1", "--sft-episodes", "2", "--steps", "1", "--queries", "1"]
TINY_RUN += ["--group", "2", "--eval-episodes", "2"]
QUICK_TASK = "medium+episode_turns=12"  # the quick preset's task: its difficulty and turn budget


def test_every_arm_trains_the_same_episodes_and_writes_cells(
    bench, tmp_path, capsys, steady_code
) -> None:
    out = tmp_path / "out"
    argv = TINY_RUN + ["--out", str(out)]
    bench.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    arms = ["mgrpo", "main-only", "single"]
    assert sorted(result["success"]) == sorted(arms)
    cells = out / "cells"
    for arm in arms:
        assert set(result["success"][arm]) == {"0"}
        lo, hi = result["ci95"][arm]["0"]
        assert 0 <= lo <= result["success"][arm]["0"] <= hi <= 1
        name = f"research_v0-medium+episode_turns=12-saturated-{arm}-s0"
        metrics = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(m)["episodes"] for m in metrics] == [2]
        cell = json.loads((cells / f"{name}.json").read_text())
        assert cell["episodes"] == 2 and len(cell["curve"]) == 1
        assert cell["key"]["arm"] == arm and cell["key"]["env"] == "research_v0"
        assert {"start", "end", "wall_seconds", "machine", "provenance"} <= set(cell)
        assert cell["end"]["success_rate"] == result["success"][arm]["0"]
    assert sorted(result["cells"]["written"]) == sorted(
        f"research_v0-medium+episode_turns=12-saturated-{a}-s0" for a in arms
    )
    assert (out / "research_v0-medium+episode_turns=12-saturated.png").stat().st_size > 0
    assert "| mgrpo | 1 |" in (out / "summary.md").read_text()

    # the cached warm starts are reused under the same stamp, retrained otherwise
    assert '"provenance"' in lines[-1] and result["provenance"]["code"]
    s = bench.settings_from(bench.parse_args(argv))
    warm = out / "warm_start" / "research_v0-medium+episode_turns=12"
    assert (warm / "multi" / "stamp.json").is_file() and (warm / "single" / "stamp.json").is_file()
    assert bench.warm_starts_to_train(s, warm, "matching") == {"multi": False, "single": False}
    other = dataclasses.replace(s, sft_episodes=3)
    assert bench.warm_starts_to_train(other, warm, "matching") == {"multi": True, "single": True}
    assert "episodes 3 != 2" in capsys.readouterr().out
    assert bench.warm_starts_to_train(other, warm, "any") == {"multi": False, "single": False}
    assert bench.warm_starts_to_train(s, warm, "never") == {"multi": True, "single": True}
    with pytest.raises(ValueError, match="reuse must be 'matching', 'any' or 'never', got 'yes'"):
        bench.warm_starts_to_train(s, warm, "yes")
    webwalk = dataclasses.replace(s, env="webwalk_v0")
    with pytest.raises(ValueError, match="built for research_v0, this run is on webwalk_v0"):
        bench.warm_starts_to_train(webwalk, warm, "any")


def test_a_rerun_skips_finished_cells_and_reruns_changed_ones(
    bench, tmp_path, capsys, monkeypatch, steady_code
) -> None:
    out = tmp_path / "out"
    argv = TINY_RUN + ["--out", str(out), "--arms", "main-only"]
    bench.main(argv)
    path = out / "cells" / "research_v0-medium+episode_turns=12-saturated-main-only-s0.json"
    before = (path.stat().st_mtime_ns, path.read_text())
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(bench, "prepare_warm_start", no_training)
    monkeypatch.setattr(bench, "run_arm", no_training)
    bench.main(argv)
    printed = capsys.readouterr().out
    assert f"{path.name}: done earlier with the same settings, skipped" in printed
    result = json.loads(printed.strip().splitlines()[-1])
    assert result["cells"] == {
        "dir": str(out / "cells"),
        "written": [],
        "skipped": ["research_v0-medium+episode_turns=12-saturated-main-only-s0"],
    }
    assert (path.stat().st_mtime_ns, path.read_text()) == before
    assert result["success"]["main-only"]["0"] == json.loads(before[1])["end"]["success_rate"]

    # other settings: the cell is run again, and the old file moves to replaced/
    s = bench.settings_from(bench.parse_args(argv + ["--lr", "0.001"]))
    todo, done = bench.plan_cells(s, out / "cells", None)
    assert (todo, done) == ([("main-only", 0)], [])
    assert "under other settings (lr 0.001 != 0.0001): rerun" in capsys.readouterr().out
    old = json.loads(path.read_text())
    bench.cells.write_cell(path, {**old, "key": s.cell_key("main-only", 0, None)})
    assert json.loads(path.read_text())["key"]["lr"] == 0.001
    (aside,) = (out / "cells" / "replaced").iterdir()
    assert json.loads(aside.read_text()) == old


@pytest.mark.parametrize("env_id", ["webwalk_v0", "ledger_v0"])
def test_quick_runs_on_the_other_tasks(bench, tmp_path, capsys, env_id) -> None:
    import mgrpo_envs

    out = tmp_path / "out"
    bench.main(TINY_RUN + ["--env", env_id, "--out", str(out), "--eval-episodes", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["env"] == env_id
    assert sorted(result["success"]) == ["main-only", "mgrpo", "single"]
    (sub,) = mgrpo_envs.make(env_id).possible_agents[1:]
    warm = out / "warm_start" / f"{env_id}-medium+episode_turns=12"
    assert (warm / "multi" / sub / "config.json").is_file()
    assert (warm / "single" / "config.json").is_file()
    for arm in ("mgrpo", "main-only", "single"):
        name = f"{env_id}-{QUICK_TASK}-saturated-{arm}-s0.json"
        cell = json.loads((out / "cells" / name).read_text())
        assert cell["env"] == env_id and cell["episodes"] == 2
        assert cell["warm_start"]["stamp"]["recipe"]["env"] == env_id
        assert list(cell["end"]["sub_calls"]) == ([] if arm == "single" else [sub])


def test_research_only_options_are_refused_on_other_tasks(bench) -> None:
    for env_id in ("webwalk_v0", "ledger_v0"):
        with pytest.raises(ValueError, match=f"--doc-ref is an option of .*{env_id} takes no"):
            bench.settings_from(
                bench.parse_args(["--quick", "--env", env_id, "--doc-ref", "title"])
            )
    with pytest.raises(ValueError, match="--arithmetic is an option of .*ledger_v0 takes no"):
        bench.settings_from(
            bench.parse_args(["--quick", "--env", "ledger_v0", "--arithmetic", "no"])
        )
    webwalk = bench.settings_from(
        bench.parse_args(["--quick", "--env", "webwalk_v0", "--arithmetic", "no"])
    )
    assert webwalk.env_kwargs == {"difficulty": "medium", "arithmetic": False, "episode_turns": 12}
    assert webwalk.sft_key()["env"] == "webwalk_v0" and "webwalk_v0" in webwalk.eval_key()
    assert webwalk.cell_name("mgrpo", 1) == (
        "webwalk_v0-medium+arithmetic=False+episode_turns=12-saturated-mgrpo-s1"
    )


def test_the_regime_option_sets_the_handicap(bench, capsys) -> None:
    improvable = bench.settings_from(bench.parse_args(["--quick", "--regime", "improvable"]))
    assert improvable.handicap == {"sub_temperature": 1.5} and improvable.regime == "improvable"
    assert improvable.arms == ("mgrpo", "main-only")
    assert "the improvable regime has no single arm" in capsys.readouterr().out
    warmer = bench.settings_from(bench.parse_args(["--quick", "--sub-temperature", "2"]))
    assert warmer.regime == "improvable" and warmer.handicap == {"sub_temperature": 2.0}
    assert warmer.cell_key("mgrpo", 0, None)["handicap"] == {"sub_temperature": 2.0}
    saturated = bench.settings_from(bench.parse_args(["--quick"]))
    assert saturated.regime == "saturated" and saturated.handicap == {}
    assert saturated.cell_name("main-only", 2) == f"research_v0-{QUICK_TASK}-saturated-main-only-s2"
    with pytest.raises(ValueError, match="--regime saturated runs without a sub-agent handicap"):
        bench.settings_from(
            bench.parse_args(["--quick", "--regime", "saturated", "--sub-temperature", "2"])
        )


def test_the_give_up_handicap_reaches_the_warm_start_and_its_directory(bench) -> None:
    args = bench.parse_args(
        ["--quick", "--sub-give-up", "0.6", "--sft-rehearsal", "0.5", "--sft-copy-digits", "0.5"]
    )
    s = bench.settings_from(args)
    assert s.regime == "improvable" and s.handicap == {"sub_give_up": 0.6}
    cfg = s.sft_config()
    assert (cfg.sub_give_up, cfg.rehearsal, cfg.copy_digits) == (0.6, 0.5, 0.5)
    assert s.sft_key()["sub_give_up"] == 0.6
    assert s.warm_start_suffix == "+give_up=0.6"
    saturated = bench.settings_from(bench.parse_args(["--quick"]))
    assert saturated.warm_start_suffix == "" and saturated.sft_config().sub_give_up == 0.0
    with pytest.raises(ValueError, match=r"sub_give_up must be in \[0, 1\), got 1.0"):
        bench.Settings(sub_give_up=1.0, arms=("mgrpo",))
    with pytest.raises(ValueError, match="the single arm"):
        bench.Settings(sub_give_up=0.5, arms=("single",))


def test_a_separate_warm_start_on_the_agents_tokens_has_its_own_directory_and_key(bench) -> None:
    argv = ["--quick", "--sub-give-up", "0.6", "--sft-separate", "--sft-context-weight", "0"]
    s = bench.settings_from(bench.parse_args(argv))
    assert s.sft_shared is False and s.sft_context_weight == 0.0
    assert s.sft_config().context_weight == 0.0
    assert s.sft_key()["shared"] is False and s.sft_key()["context_weight"] == 0.0
    assert s.warm_start_suffix == "+give_up=0.6+separate+cw=0"
    assert s.cell_key("mgrpo", 0, None)["sft_context_weight"] == 0.0
    default = bench.settings_from(bench.parse_args(["--quick", "--sub-give-up", "0.6"]))
    assert default.sft_shared is True and default.sft_config().context_weight == 1.0
    # unset, it stays out of the cell key, so cells written before it keep their keys
    assert "sft_context_weight" not in default.cell_key("mgrpo", 0, None)
    assert default.warm_start_suffix == "+give_up=0.6"
    with pytest.raises(ValueError, match="sft_context_weight must be >= 0, got -1"):
        bench.Settings(sft_context_weight=-1.0, arms=("mgrpo",))


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


def synthetic_cell(arm: str, seed: int, successes: int, **extra) -> dict:
    """A cell as the benchmark writes it, with made-up figures (n = 100 episodes)."""
    key = {"env": "ledger_v0", "env_kwargs": {"difficulty": "easy"}, "size": "micro"}
    key |= {"steps": 2, "queries": 2, "group": 4, "eval_episodes": 100, "arm": arm, "seed": seed}
    end = {"success_rate": successes / 100, "successes": successes, "n": 100}
    end["ci95"] = [max(0.0, successes / 100 - 0.1), min(1.0, successes / 100 + 0.1)]
    curve = [{"step": k, "episodes": 8 * k, "success_rate": successes / 100} for k in (1, 2)]
    start = {"success_rate": 0.3, "ci95": [0.2, 0.4], "successes": 30, "n": 100}
    start["roles"] = {"expert_subs": {"success_rate": 0.7}, "expert_main": {"success_rate": 0.9}}
    start["signal"] = {"main": {"calls": 10.0}, "analyst": {"subtask_groups_differing": 0.4}}
    return {
        "key": key,
        "env": "ledger_v0",
        "task": "easy",
        "regime": "improvable",
        "handicap": {"sub_temperature": 1.5},
        "arm": arm,
        "seed": seed,
        "start": start,
        "end": end,
        "evals": [{"step": 2, **end}],
        "curve": curve,
        "wall_seconds": 120.0,
        **extra,
    }


def test_the_summary_is_rebuilt_from_the_cells_alone(bench, tmp_path, capsys) -> None:
    directory = tmp_path / "results" / "cells"
    directory.mkdir(parents=True)
    # M-GRPO 40, 50, 60 of 100 per seed; main-only 30, 30, 30: differences 0.1, 0.2, 0.3,
    # mean 0.2, sd 0.1, t_{0.975, 2} = 4.3027: half-width 4.3027 * 0.1 / sqrt(3) = 0.2484
    for seed, wins in enumerate((40, 50, 60)):
        for arm, k in (("mgrpo", wins), ("main-only", 30)):
            cell = synthetic_cell(arm, seed, k)
            (directory / f"ledger_v0-easy-improvable-{arm}-s{seed}.json").write_text(
                json.dumps(cell)
            )
    (directory / "replaced").mkdir()  # files moved aside are not read
    (directory / "replaced" / "old.json").write_text("{}")
    bench.main(["--summary", "--cells", str(directory)])
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])
    group = result["groups"]["ledger_v0-easy-improvable"]
    mgrpo, main_only = group["arms"]["mgrpo"], group["arms"]["main-only"]
    assert (mgrpo["successes"], mgrpo["n"]) == (150, 300)
    assert mgrpo["ci95"] == pytest.approx(bench.cells.wilson_interval(150, 300))
    assert mgrpo["per_seed"] == {"0": 0.4, "1": 0.5, "2": 0.6}
    diff = mgrpo["minus_main_only"]
    assert diff["mean"] == pytest.approx(0.2) and diff["seeds"] == [0, 1, 2]
    assert diff["ci95"] == pytest.approx([0.2 - 0.24841, 0.2 + 0.24841], abs=1e-4)
    assert "minus_main_only" not in main_only and main_only["wall_minutes"] == 2.0
    d = group["diagnosis"]
    assert d["gap"] == pytest.approx(0.4) and d["expert_subs"] == 0.7 and d["differing"] == 0.4
    assert d["met"] == {"gap": True, "differing": False, "expert_subs": True}
    assert not d["all_met"]
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert summary in printed
    assert "| mgrpo | 3 | 0.500 [" in summary and "+0.200 [-0.048, +0.448]" in summary
    assert "| same-subtask sub-agent groups that differ | 0.400 | >= 0.50 | not met |" in summary
    assert "\n2 of 3 met.\n" in summary
    assert summary.index("| mgrpo |") < summary.index("| main-only |")
    assert (tmp_path / "results" / "ledger_v0-easy-improvable.png").stat().st_size > 0
    assert "sub-agents' SFT" not in summary
    for path in directory.glob("*.json"):  # a longer sub-agent budget is named in the header
        cell = json.loads(path.read_text())
        cell["key"] |= {"sft_sub_epochs": 12, "sft_sub_lr": 1e-3}
        path.write_text(json.dumps(cell))
    text = bench.cells.write_summary(directory)["text"]
    assert "handicap: sub_temperature 1.5; sub-agents' SFT 12 more epochs at 0.001;" in text


def test_the_summary_says_what_it_cannot_compute(bench, tmp_path) -> None:
    directory = tmp_path / "cells"
    directory.mkdir()
    cell = synthetic_cell("mgrpo", 0, 50)
    del cell["start"]["roles"]
    (directory / "a.json").write_text(json.dumps(cell))
    (directory / "b.json").write_text(json.dumps(synthetic_cell("main-only", 0, 40, task="hard")))
    result = bench.cells.write_summary(directory)
    easy = result["groups"]["ledger_v0-easy-improvable"]
    assert easy["diagnosis"] is None and "minus_main_only" not in easy["arms"]["mgrpo"]
    assert "not measured (run with `--diagnose`, or the same command" in result["text"]
    one_seed = bench.cells.paired_difference({0: 0.5}, {0: 0.25})
    assert one_seed == {"mean": 0.25, "ci95": None, "seeds": [0]}
    (directory / "c.json").write_text(json.dumps({"env": "ledger_v0"}))
    with pytest.raises(ValueError, match="c.json is not a coordination cell: it lacks"):
        bench.cells.write_summary(directory)
    with pytest.raises(ValueError, match="no cells directory at"):
        bench.cells.write_summary(tmp_path / "nowhere")


def test_t_quantiles_match_the_tables(bench) -> None:
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert bench.cells.t_quantile_975(df) == pytest.approx(t, abs=1e-3)
    assert bench.cells.t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="df must be >= 1, got 0"):
        bench.cells.t_quantile_975(0)


def test_sub_lr_sets_the_sub_agents_learning_rate_where_they_train(bench, tmp_path) -> None:
    s = bench.settings_from(bench.parse_args(["--quick", "--sub-lr", "3e-4", "--lr", "2e-5"]))
    assert s.sub_lr == 3e-4 and s.cell_key("mgrpo", 0, None)["sub_lr"] == 3e-4
    env = bench.warm_env_fn("multi", s)()
    one = bench.tiny_policies(env, size="micro", seed=0, shared=True)["main"]
    warm = tmp_path / "warm"
    for role in env.possible_agents:
        one.save(warm / "multi" / role)
    one.save(warm / "shared")
    wanted = {
        "mgrpo": {"main": 2e-5, "searcher": 3e-4},
        "main-only": {"main": 2e-5},  # the searcher is frozen
        "shared": {"shared": 2e-5},  # one model, one learning rate
    }
    for arm, rates in wanted.items():
        trainer = bench.make_trainer(arm, 0, s, warm, tmp_path / arm)
        peak = {n: o.param_groups[0]["initial_lr"] for n, o in trainer.optimizers.items()}
        assert peak == pytest.approx(rates)


def test_diagnose_only_measures_the_regime_and_the_summary_shows_it(
    bench, tmp_path, capsys, steady_code
) -> None:
    out, cells_dir = tmp_path / "out", tmp_path / "results" / "cells"
    argv = ["--quick", "--out", str(out), "--cells", str(cells_dir), "--sft-episodes", "2"]
    argv += ["--eval-episodes", "3", "--difficulty", "easy", "--arms", "mgrpo"]
    argv += ["--sub-give-up", "0.5", "--diagnose-only"]
    bench.main(argv)
    printed = capsys.readouterr().out
    assert "the preconditions of the improvable regime" in printed
    name = "research_v0-easy+episode_turns=12-improvable"
    path = cells_dir / "diagnoses" / f"{name}.json"
    record = json.loads(path.read_text())
    assert json.loads(printed.strip().splitlines()[-1])["file"] == str(path)
    assert record["key"]["handicap"] == {"sub_give_up": 0.5} and "arm" not in record["key"]
    assert record["key"]["sft_episodes"] == 2 and "steps" not in record["key"]
    d = record["preconditions"]
    assert d["gap"] == pytest.approx(d["expert_subs"] - d["warm_sub"])
    # an untrained main seldom delegates twice the same subtask: no groups, None
    assert d["differing"] is None or 0 <= d["differing"] <= 1
    assert set(d["met"]) == {"gap", "differing", "expert_subs"}
    assert not list(cells_dir.glob("*.json"))  # no RL, no cells
    text = bench.cells.write_summary(cells_dir)["text"]
    assert f"## {name}" in text and "No cells: the regime is diagnosed" in text
    # cells run without --diagnose take the record whose key is a subset of theirs
    s = bench.settings_from(bench.parse_args(argv))
    cell = synthetic_cell("mgrpo", 0, 50, env="research_v0", task=record["task"])
    del cell["start"]["roles"]
    cell["key"] = {**s.cell_key("mgrpo", 0, None), "diagnose": False, "steps": 24}
    (cells_dir / f"{name}-mgrpo-s0.json").write_text(json.dumps(cell))
    result = bench.cells.write_summary(cells_dir)
    got = result["groups"][name]["diagnosis"]
    assert got["gap"] == d["gap"] and got["file"] == f"diagnoses/{name}.json"
    assert f"(`diagnoses/{name}.json`, by `--diagnose-only`)" in result["text"]
    assert "No cells" not in result["text"]
    cell["key"]["sft_epochs"] += 1  # another warm start: the record is not theirs
    (cells_dir / f"{name}-mgrpo-s0.json").write_text(json.dumps(cell))
    result = bench.cells.write_summary(cells_dir)
    assert result["groups"][name]["diagnosis"] is None
    # ... shown apart, with the settings that tell the two warm starts apart
    other = result["groups"][name]["other_diagnosis"]
    assert other["gap"] == d["gap"] and other["file"] == f"diagnoses/{name}.json"
    epochs = cell["key"]["sft_epochs"]
    assert other["differs"] == f"sft_epochs {epochs - 1} != {epochs}"
    assert "Another warm start of this regime was diagnosed" in result["text"]
    assert "No cells" not in result["text"]


def test_a_longer_sub_agent_budget_continues_the_saved_warm_start(
    bench, tmp_path, capsys, steady_code
) -> None:
    import torch

    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--sft-episodes", "2", "--eval-episodes", "2"]
    argv += ["--arms", "mgrpo", "--sub-temperature", "1.5", "--diagnose-only"]
    bench.main(argv)  # the warm start the longer budget continues
    longer = [*argv, "--sft-sub-epochs", "2", "--sft-sub-lr", "1e-3"]
    s = bench.settings_from(bench.parse_args(longer))
    assert s.warm_start_suffix == "+sub=2@0.001"
    assert (s.sft_key()["sub_epochs"], s.sft_key()["sub_lr"]) == (2, 1e-3)
    assert s.cell_key("mgrpo", 0, None)["sft_sub_epochs"] == 2
    assert s.diagnosis_key(None)["sft_sub_epochs"] == 2
    # off, it stays out of every key, so cells and warm starts built before it keep theirs
    plain = dataclasses.replace(s, sft_sub_epochs=0)
    assert "sub_epochs" not in plain.sft_key() and plain.warm_start_suffix == ""
    assert "sft_sub_epochs" not in plain.cell_key("mgrpo", 0, None)
    capsys.readouterr()
    bench.main(longer)
    printed = capsys.readouterr().out
    base = out / "warm_start" / f"research_v0-{QUICK_TASK}" / "multi"
    assert f"continuing the saved {base}" in printed
    path = out / "warm_start" / f"research_v0-{QUICK_TASK}+sub=2@0.001"
    meta = json.loads((path / "multi.json").read_text())
    assert meta["continued"] == str(base) and "searcher+sub" in meta["final_loss"]
    assert bench.read_stamp(path / "multi")["recipe"]["sub_epochs"] == 2

    def weights(p):
        return torch.cat([w.flatten() for w in bench.HFPolicy.load(p).parameters()])

    # main keeps the weights it had; the searcher trained on
    assert torch.equal(weights(base / "main"), weights(path / "multi" / "main"))
    assert not torch.equal(weights(base / "searcher"), weights(path / "multi" / "searcher"))
    with pytest.raises(ValueError, match="sft_sub_epochs must be >= 0"):
        bench.Settings(sft_sub_epochs=-1, arms=("mgrpo",))


def test_calibration_probes_outside_the_held_out_block(bench, tmp_path, monkeypatch) -> None:
    from mgrpo_algos.evaluate import is_eval_seed

    played = []
    engine_collect = bench.RolloutEngine.collect

    def collect(self, seeds, *args, **kwargs):
        played.extend(seeds)
        return engine_collect(self, seeds, *args, **kwargs)

    monkeypatch.setattr(bench.RolloutEngine, "collect", collect)
    monkeypatch.setattr(bench, "CALIBRATION_QUERIES", 3)
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: pytest.fail("a held-out episode"))
    cells_dir = tmp_path / "cells"
    argv = ["--quick", "--out", str(tmp_path / "out"), "--cells", str(cells_dir)]
    argv += ["--sft-episodes", "2", "--group", "2", "--arms", "mgrpo", "--sub-temperature", "1.5"]
    record = bench.main([*argv, "--calibrate"])
    calibration = list(range(bench.CALIBRATION_SEED0, bench.CALIBRATION_SEED0 + 3))
    assert played[-3:] == calibration  # after the warm start's demonstrations
    assert not any(is_eval_seed(seed) for seed in played)
    name = f"research_v0-{QUICK_TASK}-improvable-T1.5"
    saved = json.loads((cells_dir / "calibrations" / f"{name}.json").read_text())
    assert saved["seeds"] == [calibration[0], calibration[-1]] and saved["group"] == 2
    main = saved["signal"]["main"]
    assert 0 <= main["success"] <= 1 and record["calibration"] == name
    assert "start" not in saved["warm_start"]
    assert not list(cells_dir.glob("*.json"))  # no cells, no diagnosis
