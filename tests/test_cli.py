"""The ``mgrpo`` command: options from the configs, runs, resume, eval, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgrpo_algos.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--queries-per-step", "2", "--group-size", "2", "--max-new-tokens", "6"]
ENV = ["--env-arg", "main_turns=2", "--env-arg", "episode_turns=4"]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def cli(*args: str) -> subprocess.CompletedProcess:
    """``mgrpo ARGS`` in a fresh process, as a user types it."""
    code = "import sys; from mgrpo_algos.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_help_lists_the_commands_and_every_config_field(capsys) -> None:
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    for command in ("train", "eval", "sft", "demo"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--beta", "--epsilon-high", "--num-iterations", "--checkpoint-every"):
        assert flag in text  # every learner field is settable
    for flag in ("--temperature", "--scale-rewards", "--format-reward", "--deterministic"):
        assert flag in text


def test_grpo_train_writes_config_metrics_and_a_checkpoint_eval_reads(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--algo", "grpo", "--steps", "1", "--out", str(out), *SMALL, *ENV]) == 0
    first = rows(out)[0]
    for key in ("step", "success_rate", "reward/main/mean", "reward/sub/mean", "loss/main"):
        assert key in first
    assert "loss/sub" in first and "perf/tokens_per_s" in first and "tokens_per_s" not in first
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "grpo" and config["env_kwargs"]["main_turns"] == 2
    assert set(config["provenance"]["versions"]) >= {"torch", "transformers", "tokenizers"}
    ckpt = out / "ckpt-000001"
    assert json.loads((ckpt / "policies" / "roles.json").read_text()) == {"main": "main"}
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--episodes", "3", "--json"]) == 0
    result = last_json(capsys)
    assert result["n"] == 3 and result["ckpt"] == str(ckpt)
    lo, hi = result["ci95"]
    assert lo <= result["success_rate"] <= hi


def test_mgrpo_train_resume_extend_and_eval(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--algo", "mgrpo", "--steps", "2", "--out", str(out), *SMALL, *ENV]) == 0
    assert [r["step"] for r in rows(out)] == [1, 2]
    assert (out / "ckpt-000002" / "policies" / "searcher").is_dir()
    assert main(["train", "--resume", str(out)]) == 0  # nothing left: the run is complete
    assert [r["step"] for r in rows(out)] == [1, 2]
    assert main(["train", "--resume", str(out), "--steps", "3"]) == 0  # extends it
    assert [r["step"] for r in rows(out)] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["steps"] == 3
    with pytest.raises(SystemExit, match="below the 3 steps"):
        main(["train", "--resume", str(out), "--steps", "1"])
    with pytest.raises(SystemExit, match="only --steps may be given with it, got --lr"):
        main(["train", "--resume", str(out), "--lr", "0.1"])
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--episodes", "2", "--json"]) == 0
    assert last_json(capsys)["n"] == 2


def test_shared_runs_save_one_model_for_every_role(tmp_path) -> None:
    out = tmp_path / "shared"
    assert main(["train", "--algo", "shared", "--steps", "1", "--out", str(out), *SMALL, *ENV]) == 0
    roles = json.loads((out / "ckpt-000001" / "policies" / "roles.json").read_text())
    assert roles == {"main": "shared", "searcher": "shared"}


def test_config_file_gives_the_defaults_and_flags_override_them(tmp_path) -> None:
    first = tmp_path / "first"
    assert (
        main(["train", "--algo", "mgrpo", "--steps", "1", "--out", str(first), *SMALL, *ENV]) == 0
    )
    again = tmp_path / "again"
    args = ["--config", str(first / "config.json"), "--out", str(again), "--lr", "0.002"]
    assert main(["train", *args]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, again))
    assert b["lr"] == 0.002 and b["env_kwargs"] == a["env_kwargs"] and b["algo"] == "mgrpo"
    assert b["queries_per_step"] == 2 and b["max_new_tokens"] == 6


def test_an_existing_run_directory_is_refused_before_any_work(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=r"already holds a run \(metrics.jsonl\).*--resume"):
        main(["train", "--algo", "mgrpo", "--out", str(out), "--model", "missing-dir"])
    assert time.perf_counter() - t0 < 5  # refused before any model is built


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train"], "--out DIR is required"),
        (["train", "--out", "{tmp}/x", "--algo", "grpo", "--align", "fill"], "--align apply"),
        (["train", "--out", "{tmp}/x", "--model", "{tmp}/afile.txt"], "model must be 'tiny' or"),
        (["train", "--out", "{tmp}/x", "--env", "chess_v6"], "unknown env id 'chess_v6'"),
        (["train", "--out", "{tmp}/x", "--env-arg", "main_turns"], "--env-arg takes KEY=VALUE"),
        (["train", "--config", "{tmp}/none.json", "--out", "{tmp}/x"], "cannot read the config"),
        (["train", "--resume", "{tmp}"], "holds no complete checkpoint"),
        (["eval", "--ckpt", "{tmp}"], "holds no complete checkpoint"),
        (["eval", "--ckpt", "{tmp}/nowhere"], "no run directory"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ],
)
def test_user_mistakes_end_in_one_line(tmp_path, argv, match) -> None:
    (tmp_path / "afile.txt").write_text("not a model")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit, match=match):
        main(argv)


def test_damaged_files_are_named_in_one_line_from_the_shell(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--algo", "grpo", "--steps", "1", "--out", str(out), *SMALL, *ENV]) == 0
    weights = out / "ckpt-000001" / "policies" / "main" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    done = cli("eval", "--ckpt", str(out), "--episodes", "1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot load the policy in" in done.stderr and "policies/main" in done.stderr
    store = tmp_path / "store.sqlite"
    store.write_bytes(b"this is not a database" * 100)
    done = cli("train", "--algo", "mgrpo", "--out", str(tmp_path / "s"), "--store-path", str(store))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and str(store) in done.stderr


def test_a_torn_metrics_line_is_skipped_on_resume_with_a_warning(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--algo", "mgrpo", "--steps", "2", "--out", str(out), *SMALL, *ENV]) == 0
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "succ')  # the run was killed while writing step 3
    assert main(["train", "--resume", str(out), "--steps", "3"]) == 0
    assert "torn last line" in capsys.readouterr().err
    assert [r["step"] for r in rows(out)] == [1, 2, 3]


def test_a_plug_in_env_is_recorded_so_eval_needs_no_env_flag(tmp_path) -> None:
    out = tmp_path / "density"
    env = "examples/my_env.py:density_v0"  # relative to the working directory, ROOT
    args = ["--env", env, "--algo", "mgrpo", "--steps", "1", "--out", str(out), *SMALL]
    done = cli("train", *args)  # in its own process: registering leaves this one as it was
    assert done.returncode == 0, done.stderr
    recorded = json.loads((out / "config.json").read_text())["env"]
    assert recorded == f"{(ROOT / 'examples' / 'my_env.py').resolve()}:density_v0"
    done = cli("eval", "--ckpt", str(out), "--episodes", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["n"] == 2


def test_sft_saves_a_warm_start_that_train_starts_from(tmp_path, capsys) -> None:
    warm = tmp_path / "sft"
    args = ["--episodes", "4", "--epochs", "1", "--copy-steps", "2", "--lookup-steps", "2"]
    args += ["--eval-episodes", "2"]
    assert main(["sft", *args, *ENV, "--out", str(warm)]) == 0
    summary = last_json(capsys)
    assert summary["roles"] == ["main", "searcher"] and summary["success"]["n"] == 2
    assert json.loads((warm / "roles.json").read_text()) == {"main": "main", "searcher": "searcher"}
    with pytest.raises(SystemExit, match="already holds a warm start"):
        main(["sft", *args, "--out", str(warm)])
    out = tmp_path / "run"
    train = ["--algo", "mgrpo", "--model", str(warm), "--steps", "1", "--out", str(out)]
    assert main(["train", *train, *SMALL, *ENV]) == 0
    assert (out / "ckpt-000001" / "policies" / "searcher").is_dir()
