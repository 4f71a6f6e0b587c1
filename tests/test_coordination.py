"""The coordination grid through the experiments library: micro runs end to end, cells, summary."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from mgrpo_algos.experiments import cells as store
from mgrpo_algos.experiments import diagnosis, runner, warm_starts
from mgrpo_algos.experiments.arms import ARMS
from mgrpo_algos.experiments.cache import write_stamp
from mgrpo_algos.experiments.spec import Plan, Spec, spec_from_dict, tomllib
from mgrpo_algos.experiments.statistics import paired_difference, t_quantile_975
from mgrpo_algos.experiments.summary import write_summary
from mgrpo_algos.experiments.tables import Regime, Runs, SFTBudget, Task, TrainBudget
from mgrpo_algos.metrics import wilson_interval

TINY_TOML = """
[[tasks]]
env = "research_v0"
difficulty = "medium"
args = { episode_turns = 12 }

[[regimes]]
name = "saturated"

[sft]
size = "micro"
episodes = 2
epochs = 1
copy_steps = 4
lookup_steps = 4

[train]
steps = 1
queries = 1
group = 2
max_new_tokens = 8

[eval]
episodes = 2

[[runs]]
arms = ["mgrpo", "main-only", "single"]
seeds = [0]
"""
"""The quick spec (benchmarks/coordination_quick.toml) with fewer episodes: seconds a cell."""
QUICK_TASK = "medium+episode_turns=12"  # its task: its difficulty and turn budget
TASK = {"env": "research_v0", "difficulty": "medium", "args": {"episode_turns": 12}}


def tiny(**tables) -> Spec:
    """``TINY_TOML`` with tables replaced (a list) or updated (a table's settings)."""
    data = tomllib.loads(TINY_TOML)
    for name, value in tables.items():
        data[name] = {**data[name], **value} if isinstance(value, dict) else copy.deepcopy(value)
    return spec_from_dict(data, name="tiny")


def plan_of(spec: Spec, i: int = 0) -> Plan:
    return spec.plans()[i]


def improvable(**handicap) -> list[dict]:
    return [{"name": "improvable", **handicap}]


def options(out: Path, cells: Path | None = None) -> runner.RunOptions:
    return runner.RunOptions(out=out, cells=cells, jobs=1)


@pytest.fixture
def steady_code(monkeypatch):
    """The library's code version held fixed (the working tree may change under a test)."""
    from mgrpo_algos import provenance

    monkeypatch.setattr(provenance, "code_version", lambda: "0123456789ab")


def test_settings_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="arms must be distinct names of .* got \\['grpo'\\]"):
        Runs(arms=("grpo",), seeds=(0,))
    with pytest.raises(ValueError, match="group must be >= 2"):
        TrainBudget(group=1)


def test_arithmetic_reaches_the_env_and_the_keys() -> None:
    default = plan_of(tiny(tasks=[{"env": "research_v0"}]))
    plain = plan_of(tiny(tasks=[{"env": "research_v0", "args": {"arithmetic": False}}]))
    assert default.env_kwargs == {"difficulty": "medium"}
    assert plain.env_kwargs == {"difficulty": "medium", "arithmetic": False}
    assert plain.eval_key("test") != default.eval_key("test")
    assert warm_starts.sft_key(plain) != warm_starts.sft_key(default)
    assert plain.cell_key("mgrpo", 0)["arithmetic"] is False
    env = warm_starts.warm_env_fn("multi", plain)()
    for seed in range(20):
        env.reset(seed=seed)
        assert env.unwrapped.episode.calculation is None


def test_every_arm_trains_the_same_episodes_and_writes_cells(tmp_path, capsys, steady_code) -> None:
    from mgrpo_algos import cli

    out, spec_file = tmp_path / "out", tmp_path / "tiny.toml"
    spec_file.write_text(TINY_TOML)
    assert cli.main(["experiment", "run", str(spec_file), "--jobs", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    group = result["groups"][f"research_v0-{QUICK_TASK}-saturated"]
    arms = ["mgrpo", "main-only", "single"]
    assert sorted(group["success"]) == sorted(arms) and result["experiment"] == "tiny"
    cells = out / "cells"
    for arm in arms:
        assert set(group["success"][arm]) == {"0"}
        lo, hi = group["ci95"][arm]["0"]
        assert 0 <= lo <= group["success"][arm]["0"] <= hi <= 1
        name = f"research_v0-{QUICK_TASK}-saturated-{arm}-s0"
        metrics = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(m)["episodes"] for m in metrics] == [2]
        cell = json.loads((cells / f"{name}.json").read_text())
        assert cell["episodes"] == 2 and len(cell["curve"]) == 1
        assert cell["key"]["arm"] == arm and cell["key"]["env"] == "research_v0"
        assert {"start", "end", "wall_seconds", "machine", "provenance"} <= set(cell)
        assert cell["end"]["success_rate"] == group["success"][arm]["0"]
        assert cell["end"]["split"] == "test" and "split" not in cell["key"]
    assert sorted(result["cells"]["written"]) == sorted(
        f"research_v0-{QUICK_TASK}-saturated-{a}-s0" for a in arms
    )
    assert (out / f"research_v0-{QUICK_TASK}-saturated.png").stat().st_size > 0
    assert "| mgrpo | 1 |" in (out / "summary.md").read_text()

    # the cached warm starts are reused under the same stamp, retrained otherwise
    assert '"provenance"' in lines[-1] and result["provenance"]["code"]
    plan = plan_of(tiny())
    warm = out / "warm_start" / f"research_v0-{QUICK_TASK}"
    assert (warm / "multi" / "stamp.json").is_file() and (warm / "single" / "stamp.json").is_file()
    to_train = warm_starts.warm_starts_to_train
    assert to_train(plan, warm, "matching") == {"multi": False, "single": False}
    other = dataclasses.replace(plan, sft=dataclasses.replace(plan.sft, episodes=3))
    assert to_train(other, warm, "matching") == {"multi": True, "single": True}
    assert "episodes 3 != 2" in capsys.readouterr().out
    assert to_train(other, warm, "any") == {"multi": False, "single": False}
    assert to_train(plan, warm, "never") == {"multi": True, "single": True}
    with pytest.raises(ValueError, match="reuse must be 'matching', 'any' or 'never', got 'yes'"):
        to_train(plan, warm, "yes")
    webwalk = dataclasses.replace(plan, task=Task("webwalk_v0", "medium"))
    with pytest.raises(ValueError, match="built for research_v0, this run is on webwalk_v0"):
        to_train(webwalk, warm, "any")


def test_a_rerun_skips_finished_cells_and_reruns_changed_ones(
    tmp_path, capsys, monkeypatch, steady_code
) -> None:
    out = tmp_path / "out"
    spec = tiny(runs=[{"arms": ["main-only"], "seeds": [0]}])
    runner.run_spec(spec, options(out))
    path = out / "cells" / f"research_v0-{QUICK_TASK}-saturated-main-only-s0.json"
    before = (path.stat().st_mtime_ns, path.read_text())
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(runner, "prepare_warm_start", no_training)
    monkeypatch.setattr(runner, "run_arm", no_training)
    result = runner.run_spec(spec, options(out))
    printed = capsys.readouterr().out
    assert f"{path.name}: done earlier with the same settings, skipped" in printed
    assert result["cells"] == {
        "dir": str(out / "cells"),
        "written": [],
        "skipped": [f"research_v0-{QUICK_TASK}-saturated-main-only-s0"],
    }
    assert (path.stat().st_mtime_ns, path.read_text()) == before
    group = result["groups"][f"research_v0-{QUICK_TASK}-saturated"]
    assert group["success"]["main-only"]["0"] == json.loads(before[1])["end"]["success_rate"]

    # other settings: the cell is run again, and the old file moves to replaced/
    plan = plan_of(tiny(runs=[{"arms": ["main-only"], "seeds": [0]}], train={"lr": 0.001}))
    todo, done = store.plan_cells(plan, out / "cells")
    assert (todo, done) == ([("main-only", 0)], [])
    assert "under other settings (lr 0.001 != 0.0001): rerun" in capsys.readouterr().out
    old = json.loads(path.read_text())
    store.write_cell(path, {**old, "key": plan.cell_key("main-only", 0)})
    assert json.loads(path.read_text())["key"]["lr"] == 0.001
    (aside,) = (out / "cells" / "replaced").iterdir()
    assert json.loads(aside.read_text()) == old


@pytest.mark.parametrize("env_id", ["webwalk_v0", "ledger_v0"])
def test_quick_runs_on_the_other_tasks(tmp_path, env_id) -> None:
    import mgrpo_envs

    out = tmp_path / "out"
    spec = tiny(tasks=[{**TASK, "env": env_id}], eval={"episodes": 1})
    result = runner.run_spec(spec, options(out))
    (group,) = result["groups"].values()
    assert group["env"] == env_id
    assert sorted(group["success"]) == ["main-only", "mgrpo", "single"]
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


def test_research_only_options_are_refused_on_other_tasks() -> None:
    for env_id in ("webwalk_v0", "ledger_v0"):
        with pytest.raises(ValueError, match=f"unknown argument.*'doc_ref'.* for {env_id}"):
            Task(env_id, args=(("doc_ref", "title"),))
    with pytest.raises(ValueError, match="unknown argument.*'arithmetic'.* for ledger_v0"):
        Task("ledger_v0", args=(("arithmetic", False),))
    with pytest.raises(ValueError, match=r"\[\[tasks\]\] #1: env arguments .* for ledger_v0"):
        tiny(tasks=[{"env": "ledger_v0", "args": {"doc_ref": "title"}}])
    task = {"env": "webwalk_v0", "args": {"arithmetic": False, "episode_turns": 12}}
    webwalk = plan_of(tiny(tasks=[task]))
    assert webwalk.env_kwargs == {"difficulty": "medium", "arithmetic": False, "episode_turns": 12}
    assert warm_starts.sft_key(webwalk)["env"] == "webwalk_v0"
    assert "webwalk_v0" in webwalk.eval_key("test")
    assert webwalk.cell_name("mgrpo", 1) == (
        "webwalk_v0-medium+arithmetic=False+episode_turns=12-saturated-mgrpo-s1"
    )


def test_the_regime_option_sets_the_handicap() -> None:
    with pytest.raises(ValueError, match="improvable regime needs a sub-agent handicap.*1.5"):
        Regime("improvable")
    both = tiny(regimes=[{"name": "saturated"}, *improvable(sub_temperature=1.5)])
    saturated, warmer = both.plans()
    assert warmer.handicap == {"sub_temperature": 1.5} and warmer.regime.name == "improvable"
    assert warmer.arms == ("mgrpo", "main-only") and "single" in saturated.arms
    assert "the improvable regime has no single arm" in " ".join(both.notes())
    hotter = plan_of(
        tiny(regimes=improvable(sub_temperature=2), runs=[{"arms": ["mgrpo"], "seeds": [0]}])
    )
    assert hotter.regime.name == "improvable" and hotter.handicap == {"sub_temperature": 2.0}
    assert hotter.cell_key("mgrpo", 0)["handicap"] == {"sub_temperature": 2.0}
    assert saturated.regime.name == "saturated" and saturated.handicap == {}
    assert saturated.cell_name("main-only", 2) == f"research_v0-{QUICK_TASK}-saturated-main-only-s2"
    with pytest.raises(ValueError, match="a saturated regime has no sub-agent handicap"):
        Regime("saturated", sub_temperature=2.0)


def test_the_give_up_handicap_reaches_the_warm_start_and_its_directory() -> None:
    spec = tiny(
        regimes=improvable(sub_give_up=0.6),
        sft={"rehearsal": 0.5, "copy_digits": 0.5},
        runs=[{"arms": ["mgrpo"], "seeds": [0]}],
    )
    plan = plan_of(spec)
    assert plan.regime.name == "improvable" and plan.handicap == {"sub_give_up": 0.6}
    cfg = warm_starts.sft_config(plan)
    assert (cfg.sub_give_up, cfg.rehearsal, cfg.copy_digits) == (0.6, 0.5, 0.5)
    assert warm_starts.sft_key(plan)["sub_give_up"] == 0.6
    assert plan.warm_start_suffix == "+give_up=0.6"
    saturated = plan_of(tiny())
    assert saturated.warm_start_suffix == "" and warm_starts.sft_config(saturated).sub_give_up == 0
    with pytest.raises(ValueError, match=r"sub_give_up must be in \[0, 1\), got 1.0"):
        Regime("improvable", sub_give_up=1.0)
    with pytest.raises(ValueError, match="the single arm"):
        tiny(regimes=improvable(sub_give_up=0.5), runs=[{"arms": ["single"], "seeds": [0]}])
    with pytest.raises(ValueError, match="the single arm"):
        Plan(Task("research_v0"), Regime("improvable", sub_give_up=0.5), ("single",), (0,))


def test_a_separate_warm_start_on_the_agents_tokens_has_its_own_directory_and_key() -> None:
    give_up = {"regimes": improvable(sub_give_up=0.6), "runs": [{"arms": ["mgrpo"], "seeds": [0]}]}
    plan = plan_of(tiny(sft={"shared": False, "context_weight": 0}, **give_up))
    assert plan.sft.shared is False and plan.sft.context_weight == 0.0
    assert warm_starts.sft_config(plan).context_weight == 0.0
    key = warm_starts.sft_key(plan)
    assert key["shared"] is False and key["context_weight"] == 0.0
    assert plan.warm_start_suffix == "+give_up=0.6+separate+cw=0"
    assert plan.cell_key("mgrpo", 0)["sft_context_weight"] == 0.0
    default = plan_of(tiny(**give_up))
    assert default.sft.shared is True and warm_starts.sft_config(default).context_weight == 1.0
    # unset, it stays out of the cell key, so cells written before it keep their keys
    assert "sft_context_weight" not in default.cell_key("mgrpo", 0)
    assert default.warm_start_suffix == "+give_up=0.6"
    with pytest.raises(ValueError, match="context_weight must be >= 0, got -1"):
        SFTBudget(context_weight=-1.0)


def test_a_new_package_version_retrains_the_cached_warm_start(
    tmp_path, monkeypatch, steady_code
) -> None:
    from mgrpo_algos import provenance

    plan = plan_of(tiny(runs=[{"arms": ["single"], "seeds": [0]}]))
    path = tmp_path / "single"
    path.mkdir()
    (path / "config.json").write_text("{}")  # stands in for a saved model
    write_stamp(path, provenance.cache_stamp(warm_starts.sft_key(plan)))
    assert warm_starts.warm_starts_to_train(plan, tmp_path, "matching") == {"single": False}
    versions = {**provenance.package_versions(), "transformers": "0.0.1"}
    monkeypatch.setattr(provenance, "package_versions", lambda *a: versions)
    assert warm_starts.warm_starts_to_train(plan, tmp_path, "matching") == {"single": True}


def test_diagnosis_scripts_each_role_in_turn(tmp_path, capsys) -> None:
    spec = tiny(
        tasks=[{**TASK, "difficulty": "easy"}],
        eval={"episodes": 3, "diagnose": True},
        runs=[{"arms": ["mgrpo"], "seeds": [0]}],
    )
    result = runner.run_spec(spec, options(tmp_path / "out"))
    printed = capsys.readouterr().out
    (group,) = result["groups"].values()
    assert "which role limits success" in printed
    start, end = group["diagnosis"]["mgrpo"]["start"], group["diagnosis"]["mgrpo"]["0"]
    for d in (start, end):
        assert set(d) >= {"as_played", "expert_subs", "expert_main", "searcher_accuracy"}
        assert 0 <= d["searcher_accuracy"] <= 1
        assert d["main_calls"] > 0 and d["main_nll_per_token"] >= 0
    assert "share of R_S's variance between subtasks" in printed
    # an untrained main (one SFT step) never answers right, even with an expert searcher
    assert start["expert_subs"] == 0.0


def test_subtask_signal_splits_the_variance_by_hand() -> None:
    # query 0: subtask A rewards 1, 1 (experts 1, 1); subtask B rewards 0, 0.5 (experts 0, 1)
    # R_S: mean 0.625, var ((0.375^2)*2 + 0.625^2 + 0.125^2) / 4 = 0.171875
    # subtask means 1, 1, 0.25, 0.25: var 0.375^2 = 0.140625
    # query 1: one call, no variance, no group of two
    calls = [(0, "Find  A", 1.0, 1.0), (0, "find a", 1.0, 1.0), (0, "B", 0.0, 0.0)]
    calls += [(0, "B", 1.0, 0.5), (1, "C", 1.0, 0.6)]
    out = diagnosis.subtask_signal(calls)
    assert out["between_subtask_share"] == pytest.approx(0.140625 / 0.171875)
    assert out["subtask_groups_differing"] == pytest.approx(0.5)  # B differs, A does not
    assert diagnosis.subtask_signal([(0, "A", 1.0, 0.3)]) == {
        "between_subtask_share": 0.0,
        "subtask_groups_differing": 0.0,
    }


def save_tiny(env, warm: Path, kinds=("multi",)) -> None:
    """Untrained micro policies where the warm starts of ``kinds`` would be saved."""
    from mgrpo_algos.policies import HFPolicy

    one = HFPolicy.tiny(env, size="micro")
    for role in env.possible_agents if "multi" in kinds else ():
        one.save(warm / "multi" / role)
    if "shared" in kinds:
        one.save(warm / "shared")


def test_the_m_grpo_variant_arms_set_their_options(tmp_path) -> None:
    import mgrpo_envs

    warm = tmp_path / "warm"
    save_tiny(mgrpo_envs.make("research_v0", difficulty="medium"), warm)
    plan = plan_of(tiny(tasks=[{"env": "research_v0"}], train={"steps": 2, "alternate": 3}))
    want = {
        "mgrpo": ("mgrpo", "query", "duplicate_drop", "joint"),
        "main-only": ("main-only", "query", "duplicate_drop", "joint"),
        "mgrpo-subtask": ("mgrpo", "subtask", "duplicate_drop", "joint"),
        "mgrpo-alternate": ("mgrpo", "query", "duplicate_drop", "alternate:3"),
        "no-sync": ("mgrpo", "query", "none", "joint"),
    }
    for arm, expected in want.items():
        c = runner.trainer_for(arm, 0, plan, warm, tmp_path / arm).config
        assert (c.algo, c.sub_groups, c.align, c.schedule) == expected, arm
    assert set(want) | {"single", "shared"} == set(ARMS)
    assert {a.warm_start for a in ARMS.values()} == {"multi", "single", "shared"}


def test_the_improvable_sub_agent_regime_reaches_env_keys_and_every_multi_arm(tmp_path) -> None:
    import mgrpo_envs

    task = {"env": "research_v0", "args": {"doc_ref": "title"}}
    runs = [{"arms": ["mgrpo", "main-only"], "seeds": [0]}]
    plan = plan_of(tiny(tasks=[task], regimes=improvable(sub_temperature=1.5), runs=runs))
    base = plan_of(tiny(tasks=[{"env": "research_v0"}]))
    assert plan.env_kwargs == {"difficulty": "medium", "doc_ref": "title"}
    assert plan.role_temperature(["main", "searcher"]) == {"searcher": 1.5}
    assert plan.eval_key("test") != base.eval_key("test")
    assert plan.eval_key("test").endswith("/sub_T1.5")
    assert plan.eval_key("val").endswith("/sub_T1.5/val")
    assert base.role_temperature(["main", "searcher"]) == {}
    with pytest.raises(ValueError, match="sub_temperature applies to sub-agents"):
        dataclasses.replace(plan, arms=("mgrpo", "single"))
    warm = tmp_path / "warm"
    save_tiny(mgrpo_envs.make("research_v0", difficulty="medium", doc_ref="title"), warm)
    for arm in ("mgrpo", "main-only", "no-sync"):
        c = runner.trainer_for(arm, 0, plan, warm, tmp_path / arm).config
        assert c.role_temperature == {"searcher": 1.5} and c.env_kwargs["doc_ref"] == "title"


def synthetic_cell(arm: str, seed: int, successes: int, **extra) -> dict:
    """A cell as the runner writes it, with made-up figures (n = 100 episodes)."""
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


def test_the_summary_is_rebuilt_from_the_cells_alone(tmp_path, capsys) -> None:
    from mgrpo_algos import cli

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
    assert cli.main(["experiment", "summary", "--cells", str(directory)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["summaries"][0]["summary"] == str(tmp_path / "results" / "summary.md")
    summary = (tmp_path / "results" / "summary.md").read_text()
    result = write_summary(directory)
    assert result["text"] == summary
    group = result["groups"]["ledger_v0-easy-improvable"]
    mgrpo, main_only = group["arms"]["mgrpo"], group["arms"]["main-only"]
    assert (mgrpo["successes"], mgrpo["n"]) == (150, 300)
    assert mgrpo["ci95"] == pytest.approx(wilson_interval(150, 300))
    assert mgrpo["per_seed"] == {"0": 0.4, "1": 0.5, "2": 0.6}
    diff = mgrpo["minus_main_only"]
    assert diff["mean"] == pytest.approx(0.2) and diff["seeds"] == [0, 1, 2]
    assert diff["ci95"] == pytest.approx([0.2 - 0.24841, 0.2 + 0.24841], abs=1e-4)
    assert "minus_main_only" not in main_only and main_only["wall_minutes"] == 2.0
    d = group["diagnosis"]
    assert d["gap"] == pytest.approx(0.4) and d["expert_subs"] == 0.7 and d["differing"] == 0.4
    assert d["met"] == {"gap": True, "differing": False, "expert_subs": True}
    assert not d["all_met"]
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
    text = write_summary(directory)["text"]
    assert "handicap: sub_temperature 1.5; sub-agents' SFT 12 more epochs at 0.001;" in text


def test_the_summary_says_what_it_cannot_compute(tmp_path) -> None:
    directory = tmp_path / "cells"
    directory.mkdir()
    cell = synthetic_cell("mgrpo", 0, 50)
    del cell["start"]["roles"]
    (directory / "a.json").write_text(json.dumps(cell))
    (directory / "b.json").write_text(json.dumps(synthetic_cell("main-only", 0, 40, task="hard")))
    result = write_summary(directory)
    easy = result["groups"]["ledger_v0-easy-improvable"]
    assert easy["diagnosis"] is None and "minus_main_only" not in easy["arms"]["mgrpo"]
    assert "not measured (run with `diagnose = true` in the spec's [eval]" in result["text"]
    one_seed = paired_difference({0: 0.5}, {0: 0.25})
    assert one_seed == {"mean": 0.25, "ci95": None, "seeds": [0]}
    (directory / "c.json").write_text(json.dumps({"env": "ledger_v0"}))
    with pytest.raises(ValueError, match="c.json is not a result cell: it lacks"):
        write_summary(directory)
    with pytest.raises(ValueError, match="no cells directory at"):
        write_summary(tmp_path / "nowhere")


def test_t_quantiles_match_the_tables() -> None:
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert t_quantile_975(df) == pytest.approx(t, abs=1e-3)
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="df must be >= 1, got 0"):
        t_quantile_975(0)


def test_sub_lr_sets_the_sub_agents_learning_rate_where_they_train(tmp_path) -> None:
    import mgrpo_envs

    plan = plan_of(tiny(train={"sub_lr": 3e-4, "lr": 2e-5}))
    assert plan.train.sub_lr == 3e-4 and plan.cell_key("mgrpo", 0)["sub_lr"] == 3e-4
    warm = tmp_path / "warm"
    save_tiny(mgrpo_envs.make("research_v0", **plan.env_kwargs), warm, ("multi", "shared"))
    wanted = {
        "mgrpo": {"main": 2e-5, "searcher": 3e-4},
        "main-only": {"main": 2e-5},  # the searcher is frozen
        "shared": {"shared": 2e-5},  # one model, one learning rate
    }
    for arm, rates in wanted.items():
        trainer = runner.trainer_for(arm, 0, plan, warm, tmp_path / arm)
        peak = {n: o.param_groups[0]["initial_lr"] for n, o in trainer.optimizers.items()}
        assert peak == pytest.approx(rates)


def test_diagnose_only_measures_the_regime_and_the_summary_shows_it(
    tmp_path, capsys, steady_code
) -> None:
    out, cells_dir = tmp_path / "out", tmp_path / "results" / "cells"
    spec = tiny(
        tasks=[{**TASK, "difficulty": "easy"}],
        regimes=improvable(sub_give_up=0.5),
        eval={"episodes": 3},
        runs=[{"arms": ["mgrpo"], "seeds": [0]}],
    )
    (record,) = runner.diagnose_spec(spec, options(out, cells_dir))
    printed = capsys.readouterr().out
    assert "the preconditions of the improvable regime" in printed
    name = "research_v0-easy+episode_turns=12-improvable"
    path = cells_dir / "diagnoses" / f"{name}.json"
    assert record["file"] == str(path)
    record = json.loads(path.read_text())
    assert record["key"]["handicap"] == {"sub_give_up": 0.5} and "arm" not in record["key"]
    assert record["key"]["sft_episodes"] == 2 and "steps" not in record["key"]
    # it chooses a regime: measured on the val split, never on the test split
    assert record["split"] == "val" and record["warm_start"]["start"]["split"] == "val"
    assert record["warm_start"]["start"]["roles"]["expert_subs"]["split"] == "val"
    d = record["preconditions"]
    assert d["gap"] == pytest.approx(d["expert_subs"] - d["warm_sub"])
    # an untrained main seldom delegates twice the same subtask: no groups, None
    assert d["differing"] is None or 0 <= d["differing"] <= 1
    assert set(d["met"]) == {"gap", "differing", "expert_subs"}
    assert not list(cells_dir.glob("*.json"))  # no RL, no cells
    text = write_summary(cells_dir)["text"]
    assert f"## {name}" in text and "No cells: the regime is diagnosed" in text
    # cells run without the diagnosis take the record whose key is a subset of theirs
    plan = plan_of(spec)
    cell = synthetic_cell("mgrpo", 0, 50, env="research_v0", task=record["task"])
    del cell["start"]["roles"]
    cell["key"] = {**plan.cell_key("mgrpo", 0), "diagnose": False, "steps": 24}
    (cells_dir / f"{name}-mgrpo-s0.json").write_text(json.dumps(cell))
    result = write_summary(cells_dir)
    got = result["groups"][name]["diagnosis"]
    assert got["gap"] == d["gap"] and got["file"] == f"diagnoses/{name}.json"
    assert f"(`diagnoses/{name}.json`, by `--diagnose-only`, on the val split)" in result["text"]
    assert "No cells" not in result["text"]
    cell["key"]["sft_epochs"] += 1  # another warm start: the record is not theirs
    (cells_dir / f"{name}-mgrpo-s0.json").write_text(json.dumps(cell))
    result = write_summary(cells_dir)
    assert result["groups"][name]["diagnosis"] is None
    # ... shown apart, with the settings that tell the two warm starts apart
    other = result["groups"][name]["other_diagnosis"]
    assert other["gap"] == d["gap"] and other["file"] == f"diagnoses/{name}.json"
    epochs = cell["key"]["sft_epochs"]
    assert other["differs"] == f"sft_epochs {epochs - 1} != {epochs}"
    assert "Another warm start of this regime was diagnosed" in result["text"]
    assert "No cells" not in result["text"]


def test_a_longer_sub_agent_budget_continues_the_saved_warm_start(
    tmp_path, capsys, steady_code
) -> None:
    import torch

    from mgrpo_algos.experiments.cache import read_stamp
    from mgrpo_algos.policies import HFPolicy

    out = tmp_path / "out"
    common = {
        "regimes": improvable(sub_temperature=1.5),
        "eval": {"episodes": 2},
        "runs": [{"arms": ["mgrpo"], "seeds": [0]}],
    }
    runner.diagnose_spec(tiny(**common), options(out))  # the warm start the longer budget continues
    longer = tiny(sft={"sub_epochs": 2, "sub_lr": 1e-3}, **common)
    plan = plan_of(longer)
    assert plan.warm_start_suffix == "+sub=2@0.001"
    key = warm_starts.sft_key(plan)
    assert (key["sub_epochs"], key["sub_lr"]) == (2, 1e-3)
    assert plan.cell_key("mgrpo", 0)["sft_sub_epochs"] == 2
    assert plan.diagnosis_key()["sft_sub_epochs"] == 2
    # off, it stays out of every key, so cells and warm starts built before it keep theirs
    plain = plan_of(tiny(**common))
    assert "sub_epochs" not in warm_starts.sft_key(plain) and plain.warm_start_suffix == ""
    assert "sft_sub_epochs" not in plain.cell_key("mgrpo", 0)
    capsys.readouterr()
    runner.diagnose_spec(longer, options(out))
    printed = capsys.readouterr().out
    base = out / "warm_start" / f"research_v0-{QUICK_TASK}" / "multi"
    assert f"continuing the saved {base}" in printed
    path = out / "warm_start" / f"research_v0-{QUICK_TASK}+sub=2@0.001"
    meta = json.loads((path / "multi.json").read_text())
    assert meta["continued"] == str(base) and "searcher+sub" in meta["final_loss"]
    assert read_stamp(path / "multi")["recipe"]["sub_epochs"] == 2

    def weights(p):
        return torch.cat([w.flatten() for w in HFPolicy.load(p).parameters()])

    # main keeps the weights it had; the searcher trained on
    assert torch.equal(weights(base / "main"), weights(path / "multi" / "main"))
    assert not torch.equal(weights(base / "searcher"), weights(path / "multi" / "searcher"))
    with pytest.raises(ValueError, match="sub_epochs must be >= 0"):
        SFTBudget(sub_epochs=-1)


def test_calibration_probes_outside_the_held_out_block(tmp_path, monkeypatch) -> None:
    from mgrpo_algos.evaluate import is_eval_seed
    from mgrpo_algos.rollout import RolloutEngine

    played = []
    engine_collect = RolloutEngine.collect

    def collect(self, seeds, *args, **kwargs):
        played.extend(seeds)
        return engine_collect(self, seeds, *args, **kwargs)

    def held_out_episode(*args, **kwargs):
        pytest.fail("a held-out episode")

    monkeypatch.setattr(RolloutEngine, "collect", collect)
    monkeypatch.setattr(diagnosis, "CALIBRATION_QUERIES", 3)
    monkeypatch.setattr(diagnosis, "evaluate", held_out_episode)
    monkeypatch.setattr(diagnosis, "held_out_rollouts", held_out_episode)
    cells_dir = tmp_path / "cells"
    spec = tiny(
        regimes=improvable(sub_temperature=1.5),
        train={"group": 2},
        runs=[{"arms": ["mgrpo"], "seeds": [0]}],
    )
    (record,) = runner.calibrate_spec(spec, options(tmp_path / "out", cells_dir))
    calibration = list(range(diagnosis.CALIBRATION_SEED0, diagnosis.CALIBRATION_SEED0 + 3))
    assert played[-3:] == calibration  # after the warm start's demonstrations
    assert not any(is_eval_seed(seed) for seed in played)
    name = f"research_v0-{QUICK_TASK}-improvable-T1.5"
    saved = json.loads((cells_dir / "calibrations" / f"{name}.json").read_text())
    assert saved["seeds"] == [calibration[0], calibration[-1]] and saved["group"] == 2
    main = saved["signal"]["main"]
    assert 0 <= main["success"] <= 1 and record["calibration"] == name
    assert "start" not in saved["warm_start"]
    assert not list(cells_dir.glob("*.json"))  # no cells, no diagnosis
