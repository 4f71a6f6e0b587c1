"""The plug-in example: a user's env registered, checked and trained with ``mgrpo train``."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import gymnasium
import pytest
from pettingzoo.test import api_test
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mgrpo_envs
from mgrpo_envs import registry
from mgrpo_envs.testing import check_tool_env

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_env.py"
SPEC = f"{EXAMPLE}:density_v0"


@pytest.fixture
def density(monkeypatch: pytest.MonkeyPatch):
    """Loads the example; afterwards every registry is as it was."""
    monkeypatch.setattr(registry, "_ENVS", dict(registry._ENVS))
    gym_before = set(gymnasium.registry)
    yield mgrpo_envs.load_env(SPEC)
    for gym_id in set(gymnasium.registry) - gym_before:
        del gymnasium.registry[gym_id]
    sys.modules.pop("my_env", None)


def test_loading_the_file_registers_the_env_and_its_views(density: str) -> None:
    assert density == "density_v0"
    assert "density_v0" in mgrpo_envs.list_envs()
    assert registry.gym_ids()["mgrpo_envs/Density-v0"] == "density_v0"
    assert "mgrpo_envs/DensityDiscrete-v0" in gymnasium.registry
    assert mgrpo_envs.load_env(SPEC) == "density_v0"  # a second load changes nothing
    mgrpo_envs.register("density_v0", "my_env:DensityEnv")  # the same entry point again


def test_example_passes_the_conformance_checks(density: str) -> None:
    report = check_tool_env(lambda: mgrpo_envs.make(density), episodes=4)
    assert report["expert_success"] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api_test(mgrpo_envs.make(density), num_cycles=50)
    with pytest.raises(TypeError, match="unknown argument"):
        mgrpo_envs.make(density, hops=3)


def test_example_gets_a_discrete_view_that_sb3_accepts(density: str) -> None:
    env = gymnasium.make("mgrpo_envs/DensityDiscrete-v0").unwrapped
    sb3_check_env(env, warn=False)
    env.reset(seed=0)
    assert env.menu()[env.oracle_index()] == env.text_env.oracle_action()


def test_mgrpo_train_and_eval_run_on_the_example(density: str, tmp_path: Path, capsys) -> None:
    from mgrpo_algos.cli import main

    out = tmp_path / "run"
    args = ["--queries-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--seed", "1"]
    assert (
        main(["train", "--env", SPEC, "--algo", "grpo", "--steps", "2", "--out", str(out), *args])
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["success_rate"] <= 1.0 for r in rows)
    assert sorted(p.name for p in out.glob("ckpt-*"))
    capsys.readouterr()
    assert main(["eval", "--env", SPEC, "--ckpt", str(out), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 2


def test_registration_errors_name_what_was_expected(density: str) -> None:
    with pytest.raises(ValueError, match="version suffix like 'units_v0', got 'Density'"):
        mgrpo_envs.register("Density", "my_env:DensityEnv")
    with pytest.raises(ValueError, match="already registered"):
        mgrpo_envs.register("density_v0", "other_module:OtherEnv")
    with pytest.raises(ValueError, match="already belongs to 'density_v0'"):
        mgrpo_envs.register("density_v1", "my_env:DensityEnv", gym_id="mgrpo_envs/Density-v0")
    with pytest.raises(ValueError, match="'package.module:ClassName', got 'my_env'"):
        mgrpo_envs.register("density_v2", "my_env")
    with pytest.raises(ValueError, match="module-level env class"):
        mgrpo_envs.register("density_v2", dict)
    with pytest.raises(ValueError, match="unknown env id 'nope_v0'"):
        mgrpo_envs.load_env("nope_v0")
    with pytest.raises(ValueError, match="no such file"):
        mgrpo_envs.load_env("missing/file.py:x_v0")
    with pytest.raises(ValueError, match="did not register 'other_v0'"):
        mgrpo_envs.load_env(f"{EXAMPLE}:other_v0")
