"""Warm-start caches are reused only under the stamp they were built with."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import mgrpo_envs
from mgrpo_algos import provenance
from mgrpo_algos.demo import DemoSettings, warm_start_dir
from mgrpo_algos.experiments.cache import (
    STAMP_FILE,
    cache_usable,
    read_stamp,
    stamp_difference,
    write_stamp,
)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = DemoSettings(
    sft_episodes=2, sft_epochs=1, sft_copy_steps=1, sft_lookup_steps=1, eval_episodes=2
)


@pytest.fixture(autouse=True)
def steady_code(monkeypatch):
    """The library's code version held fixed (the working tree may change under a test)."""
    monkeypatch.setattr(provenance, "code_version", lambda: "0123456789ab")


def new_versions(monkeypatch, **changed: str) -> None:
    versions = {**provenance.package_versions(), **changed}
    monkeypatch.setattr(provenance, "package_versions", lambda *a: versions)


def stamp(recipe: dict, transformers: str = "5.17.0", code: str = "aaa") -> dict:
    return {
        "recipe": recipe,
        "versions": {"torch": "2.9", "transformers": transformers},
        "code": code,
    }


def test_stamp_difference_names_what_changed() -> None:
    old = stamp({"size": "micro", "epochs": 3})
    assert stamp_difference(None, old) == "no stamp"
    assert stamp_difference(old, stamp({"size": "micro", "epochs": 3})) is None
    new = stamp({"size": "micro", "epochs": 2}, transformers="5.24.0", code="bbb")
    assert stamp_difference(old, new) == (
        "now != cached: epochs 2 != 3, transformers 5.24.0 != 5.17.0, code bbb != aaa"
    )
    # a stored stamp went through JSON: tuples in the recipe compare as lists
    stored = json.loads(json.dumps(stamp({"seeds": (0, 1)})))
    assert stamp_difference(stored, stamp({"seeds": (0, 1)})) is None


def test_cache_usable_reads_the_stamp_next_to_the_cache(tmp_path, capsys) -> None:
    wanted = provenance.cache_stamp({"size": "micro"})
    assert not cache_usable(tmp_path, wanted, what="model")
    assert "building the model in" in capsys.readouterr().out
    write_stamp(tmp_path, wanted)
    assert read_stamp(tmp_path) == json.loads((tmp_path / STAMP_FILE).read_text())
    assert cache_usable(tmp_path, wanted, what="model")
    assert "using the cached model" in capsys.readouterr().out
    assert not cache_usable(tmp_path, wanted, cache=False, what="model")
    assert "the cache is turned off" in capsys.readouterr().out


def build(out: Path, capsys, settings: DemoSettings = TINY, cache: bool = True) -> str:
    """Runs ``warm_start_dir``; returns the line it printed about the cache."""
    (out / "warm_start").mkdir(parents=True, exist_ok=True)
    (out / "warm_start" / "marker").touch()  # survives only a reuse

    def env_fn():
        return mgrpo_envs.make(settings.env, difficulty=settings.difficulty)

    path = warm_start_dir(settings, out, env_fn, cache=cache)
    assert (path / "searcher" / "config.json").is_file()
    assert read_stamp(path) == json.loads(
        json.dumps(provenance.cache_stamp(settings.warm_start_recipe()))
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if "warm start in" in x)
    reused = (path / "marker").exists()
    assert reused == line.startswith("using the cached warm start"), line
    return line


def test_demo_warm_start_is_rebuilt_when_its_stamp_changes(tmp_path, capsys, monkeypatch) -> None:
    assert "(no stamp)" in build(tmp_path, capsys)
    assert "using the cached" in build(tmp_path, capsys)
    longer = dataclasses.replace(TINY, sft_epochs=2)
    assert "epochs 2 != 1" in build(tmp_path, capsys, longer)
    assert "using the cached" in build(tmp_path, capsys, longer)
    assert "the cache is turned off" in build(tmp_path, capsys, cache=False)
    new_versions(monkeypatch, transformers="0.0.1")
    assert "transformers 0.0.1 != " in build(tmp_path, capsys)
    assert "using the cached" in build(tmp_path, capsys)


@pytest.fixture(scope="module")
def grpo_learning():
    spec = importlib.util.spec_from_file_location("grpo_learning", BENCHMARKS / "grpo_learning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_grpo_learning_warm_start_is_cached_by_its_stamp(
    grpo_learning, tmp_path, capsys, monkeypatch
) -> None:
    args = argparse.Namespace(quick=True, difficulty="easy", size="micro", out=str(tmp_path))
    args.cache = True
    recipe = grpo_learning.warm_start_recipe(args)
    recipe["sft"] |= {"episodes": 2, "copy_steps": 1, "lookup_steps": 1}  # seconds, no use
    monkeypatch.setattr(grpo_learning, "warm_start_recipe", lambda a: recipe)

    def env_fn():
        return mgrpo_envs.make("research_v0", difficulty="easy")

    path = grpo_learning.train_warm_start(env_fn, args)
    assert (path / "config.json").is_file() and (path / STAMP_FILE).is_file()
    (path / "marker").touch()
    assert grpo_learning.train_warm_start(env_fn, args) == path and (path / "marker").exists()
    assert "using the cached warm start" in capsys.readouterr().out
    args.cache = False
    grpo_learning.train_warm_start(env_fn, args)
    assert not (path / "marker").exists()
    assert "the cache is turned off" in capsys.readouterr().out
