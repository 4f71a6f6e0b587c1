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
        (["train", "--out", "{tmp}/x", "--algo", "grpo", "--align", "fill"], "--align: not a"),
        # refused whatever its value, the default included
        (
            ["train", "--out", "{tmp}/x", "--algo", "grpo", "--align", "duplicate_drop"],
            "--align: not",
        ),
        (
            ["train", "--out", "{tmp}/x", "--algo", "mgrpo", "--no-reflect-ground-truth"],
            "--no-refl",
        ),
        (["train", "--out", "{tmp}/x", "--model", "{tmp}/afile.txt"], "model must be 'tiny' or"),
        (["train", "--out", "{tmp}/x", "--env", "chess_v6"], "unknown env id 'chess_v6'"),
        (["train", "--out", "{tmp}/x", "--env-arg", "main_turns"], "--env-arg takes KEY=VALUE"),
        (["train", "--config", "{tmp}/none.json", "--out", "{tmp}/x"], "cannot read the config"),
        (["train", "--resume", "{tmp}"], "holds no complete checkpoint"),
        (["train", "--out", "{tmp}/x", "--group-size", "1"], "group_size must be >= 2 for"),
        (["train", "--out", "{tmp}/x", "--group-size", "0"], "group_size must be >= 2 for"),
        (["eval", "--ckpt", "{tmp}"], r"holds no policy: expected a run directory, a ckpt-\*"),
        (["eval", "--ckpt", "{tmp}/nowhere"], "--ckpt '.*nowhere': no such directory"),
        (["eval", "--ckpt", "{tmp}/run"], "holds no complete checkpoint"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ],
)
def test_user_mistakes_end_in_one_line(tmp_path, argv, match) -> None:
    (tmp_path / "afile.txt").write_text("not a model")
    (tmp_path / "run" / "ckpt-000001").mkdir(parents=True)  # killed before its first
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit, match=match) as done:
        main(argv)
    assert done.value.code == 2  # a usage error, as tyro's


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


# --------------------------------------------------------------------------- issue 33
@pytest.mark.parametrize(
    "argv,names",
    [
        (["--env", "some.txt:foo"], ["--env 'some.txt:foo'", "no module 'some.txt'", "FILE.py"]),
        (["--env-arg", "foo=1"], ["unknown argument(s) ['foo']", "expected some of ['difficulty'"]),
        (["--env", "{tmp}/none.py:my_v0"], ["none.py:my_v0'", "no such file"]),
        (["--env", "examples/my_env.py:nope_v0"], ["did not register 'nope_v0'", "density_v0"]),
        (["--env-arg", "=1"], ["--env-arg takes KEY=VALUE", "got '=1'"]),
        (["--env-arg", "difficulty=impossible"], ["difficulty", "impossible"]),
    ],
)
def test_a_bad_env_is_one_line_with_status_2_and_no_learner_import(tmp_path, argv, names) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = (
        "import sys\nfrom mgrpo_algos.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n"
    )
    args = ["train", "--out", str(tmp_path / "run"), *argv]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.stdout.split() == ["2", "False"], done.stderr  # refused before torch loads
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    for name in names:
        assert name in done.stderr
    assert not (tmp_path / "run").exists()


def test_eval_and_sft_refuse_a_bad_env_in_one_line(tmp_path) -> None:
    warm = tmp_path / "warm"
    warm.mkdir()
    for argv, match in [
        (["eval", "--ckpt", str(warm), "--env-arg", "foo=1"], r"unknown argument\(s\) \['foo'\]"),
        (["eval", "--ckpt", str(warm), "--env", "x.txt:a_v0"], "no module 'x.txt'"),
        (["sft", "--out", str(tmp_path / "s"), "--env", "x.txt:a_v0"], "no module 'x.txt'"),
        (["sft", "--out", str(tmp_path / "s"), "--env-arg", "hops"], "takes KEY=VALUE"),
    ]:
        with pytest.raises(SystemExit, match=match) as done:
            main(argv)
        assert done.value.code == 2


def test_a_wrong_flag_is_reported_without_importing_torch() -> None:
    code = (
        "import sys\nimport mgrpo_algos.cli as cli\n"
        "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))\n"
        "try:\n    cli.main(['train', '--no-such-flag'])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.stdout.split("\n")[:2] == ["[]", "2 False"], done.stderr
    assert "--no-such-flag" in done.stderr and "Traceback" not in done.stderr


def test_the_options_read_from_source_equal_the_configs() -> None:
    """``config_reader`` reads what importing the modules gives: fields, types, defaults, docs."""
    import dataclasses
    import inspect
    import typing

    from mgrpo_algos import cli, config_reader
    from mgrpo_algos.algorithms.grpo import GRPOConfig
    from mgrpo_algos.algorithms.mgrpo import MGRPOConfig
    from mgrpo_algos.algorithms.tfgrpo import TFGRPOConfig
    from mgrpo_algos.lora import LORA_TARGETS
    from mgrpo_algos.sft import PRETRAINED_RECIPE, RECIPE, SFTConfig

    def default(f: dataclasses.Field):
        factory = f.default_factory
        return f.default if factory is dataclasses.MISSING else factory()

    pairs = [
        (cli.GRPOOptions, GRPOConfig),
        (cli.MGRPOOptions, MGRPOConfig),
        (cli.TFGRPOOptions, TFGRPOConfig),
        (cli.SFTOptions, SFTConfig),
    ]
    for read, real in pairs:
        assert read.__module__ == config_reader.__name__  # read, not imported
        assert [f.name for f in dataclasses.fields(read)] == [
            f.name for f in dataclasses.fields(real)
        ]
        assert typing.get_type_hints(read) == typing.get_type_hints(real)
        assert [default(f) for f in dataclasses.fields(read)] == [
            default(f) for f in dataclasses.fields(real)
        ]
        for cls_read, cls_real in zip(read.__mro__[:-1], real.__mro__[:-1], strict=True):
            assert inspect.cleandoc(cls_read.__doc__) == inspect.cleandoc(cls_real.__doc__)
    assert dataclasses.asdict(cli.RECIPE) == dataclasses.asdict(RECIPE)
    assert dataclasses.asdict(cli.PRETRAINED_RECIPE) == dataclasses.asdict(PRETRAINED_RECIPE)
    assert cli.LORA_TARGETS == LORA_TARGETS


def test_the_reader_refuses_what_it_cannot_read_without_running_it(tmp_path, monkeypatch) -> None:
    from mgrpo_algos import config_reader

    pkg = tmp_path / "mgrpo_algos_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "conf.py").write_text(
        "from dataclasses import dataclass, field\n"
        "import os\n"
        "N = len('abc')\n"
        "HOME = os.getcwd()\n"
        "@dataclass\nclass A:\n    '''Doc.'''\n    x: int = 1\n"
        "    y: dict[str, int] = field(default_factory=lambda: {'a': -1})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(config_reader, "PACKAGES", ("mgrpo_algos_probe",))
    read = config_reader.read_value("mgrpo_algos_probe.conf", "A")
    assert read().y == {"a": -1} and read().y is not read().y and read.__doc__ == "Doc."
    with pytest.raises(config_reader.SourceReadError, match="the name 'len' is not bound"):
        config_reader.read_value("mgrpo_algos_probe.conf", "N")
    with pytest.raises(config_reader.SourceReadError, match="cannot call 'os.getcwd'"):
        config_reader.read_value("mgrpo_algos_probe.conf", "HOME")
    with pytest.raises(config_reader.SourceReadError, match="binds no 'M'"):
        config_reader.read_value("mgrpo_algos_probe.conf", "M")
    assert config_reader.read_or_import("mgrpo_algos_probe.conf", "N") == 3  # imported instead


def test_help_into_a_closed_pipe_exits_quietly() -> None:
    command = f"{sys.executable} -m mgrpo_algos.cli train --help | head -n 1"
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.stdout.startswith("usage: mgrpo train")
    assert done.stderr == "" and done.returncode in (0, 141)  # 141: 128 + SIGPIPE


def test_resuming_a_finished_run_says_so_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    import mgrpo_algos.algorithms

    out = tmp_path / "run"
    assert main(["train", "--algo", "grpo", "--steps", "1", "--out", str(out), *SMALL, *ENV]) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run started a trainer")

    monkeypatch.setattr(mgrpo_algos.algorithms, "resume_trainer", refuse)
    capsys.readouterr()
    for extra in ([], ["--steps", "1"]):
        assert main(["train", "--resume", str(out), *extra]) == 0
        err = capsys.readouterr().err
        assert "nothing to do" in err and "all its 1 steps" in err
        assert f"--resume {out} --steps N (N > 1)" in err


def test_eval_reads_every_policy_directory_the_library_writes(tmp_path, capsys) -> None:
    import shutil

    warm = tmp_path / "sft"
    sft = ["--episodes", "2", "--epochs", "1", "--copy-steps", "1", "--eval-episodes", "0"]
    assert main(["sft", *sft, *ENV, "--out", str(warm)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--algo", "grpo", "--steps", "1", "--out", str(run), *SMALL, *ENV]) == 0
    exported = tmp_path / "main-only"  # the layout of `mgrpo export`: roles.json, OUT/<role>/
    shutil.copytree(run / "ckpt-000001" / "policies", exported)
    env = ["--difficulty", "medium", "--env-arg", "main_turns=3", "--max-new-tokens", "5"]
    capsys.readouterr()
    seen = {}
    for name, path in [
        ("sft", warm),
        ("run", run),
        ("ckpt", run / "ckpt-000001"),
        ("export", exported),
        ("policy", exported / "main"),
    ]:
        assert main(["eval", "--ckpt", str(path), "--episodes", "2", *env, "--json"]) == 0
        seen[name] = last_json(capsys)
    for result in seen.values():
        assert result["n"] == 2 and result["env_kwargs"]["difficulty"] == "medium"
        assert result["env_kwargs"]["main_turns"] == 3
    assert seen["run"]["ckpt"] == seen["ckpt"]["ckpt"] == str(run / "ckpt-000001")
    assert seen["run"]["env_kwargs"]["episode_turns"] == 4  # the recorded arguments stay
    assert set(seen["sft"]["sub_calls"]) == {"searcher"}  # the multi-agent env
    assert seen["export"]["sub_calls"] == {}  # main alone: the single-agent view, as GRPO
    assert set(seen["policy"]["sub_calls"]) == {"searcher"}  # one policy plays every role
    for path in (run, warm):
        with pytest.raises(SystemExit, match="--env 'x.txt:a_v0': no module 'x.txt'"):
            main(["eval", "--ckpt", str(path), "--env", "x.txt:a_v0"])


def test_the_cli_options_of_each_algo_are_its_configs_fields() -> None:
    """`options_of` (read without torch) agrees with the algorithm table's config classes."""
    import dataclasses

    from mgrpo_algos.algorithms import ALGORITHMS
    from mgrpo_algos.cli import TrainArgs, options_of

    train_fields = {f.name for f in dataclasses.fields(TrainArgs)}
    for name, algo in ALGORITHMS.items():
        fields = [f.name for f in dataclasses.fields(algo.config)]
        assert [f.name for f in dataclasses.fields(options_of(name))] == fields, name
        assert set(fields) <= train_fields, name  # every setting has its flag
