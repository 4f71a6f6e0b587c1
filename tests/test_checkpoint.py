"""Checkpoints: atomic writes (a run killed while writing), the newest complete one, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mgrpo_algos.algorithms import load_run
from mgrpo_algos.algorithms import resume_trainer as resume_run
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.training.checkpoints import CheckpointWarning, latest_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}
SMALL = dict(steps=2, queries_per_step=2, group_size=2, max_new_tokens=6, env_kwargs=ENV)

# A run that writes ckpt-000001, then rewrites ckpt-000002 for as long as it lives.
WRITER = """
import sys, torch
torch.set_num_threads(1)
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer
config = MGRPOConfig(checkpoint_every=1, **{small})
trainer = MGRPOTrainer(config, sys.argv[1])
trainer.writer.write(trainer.train_step())
trainer.save_checkpoint()
trainer.writer.write(trainer.train_step())
print("writing", flush=True)
while True:
    trainer.save_checkpoint()
"""


def killed_while_writing(out: Path, delay: float) -> None:
    """Starts the writer, waits until it writes ckpt-000002, kills it ``delay`` s later."""
    code = WRITER.format(small=repr(SMALL))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_killed_while_writing_a_checkpoint_resumes_from_a_complete_one(
    tmp_path, seed
) -> None:
    out = tmp_path / "run"
    delay = float(np.random.default_rng(seed).uniform(0.0, 0.6))  # a random point in writing
    killed_while_writing(out, delay)
    with warnings.catch_warnings():  # a warning or none: it depends on where the kill fell
        warnings.simplefilter("ignore", CheckpointWarning)
        ckpt = latest_checkpoint(out)
    assert ckpt.name in ("ckpt-000001", "ckpt-000002")
    run = load_run(out)  # every file of the chosen checkpoint is there and loads
    assert set(run.policies) == {"main", "searcher"}
    trainer = resume_run(out)
    assert trainer.step_idx == int(ckpt.name.split("-")[1])
    trainer.train(progress=False)
    assert latest_checkpoint(out).name == "ckpt-000002"
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [1, 2]


def test_an_incomplete_checkpoint_is_skipped_with_a_warning(tmp_path) -> None:
    trainer = MGRPOTrainer(MGRPOConfig(**{**SMALL, "steps": 1}), tmp_path)
    trainer.train(progress=False)
    partial = tmp_path / "ckpt-000002"  # as an older version could leave it
    (partial / "policies").mkdir(parents=True)
    (partial / "state.pt").write_bytes(b"")
    with pytest.warns(CheckpointWarning, match="skipping the incomplete checkpoint .*ckpt-000002"):
        assert latest_checkpoint(tmp_path).name == "ckpt-000001"
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        latest_checkpoint(tmp_path / "ckpt-000001" / "policies")


def final_weights(out: Path, **kw) -> list[torch.Tensor]:
    trainer = MGRPOTrainer(MGRPOConfig(**{**SMALL, "steps": 2, **kw}), out)
    trainer.train(progress=False)
    return [p.detach().clone() for policy in trainer.policies.values() for p in policy.parameters()]


def test_deterministic_runs_are_bit_identical(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        a = final_weights(tmp_path / "a", deterministic=True, lr=1e-2)
        b = final_weights(tmp_path / "b", deterministic=True, lr=1e-2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_runs_on_several_threads_agree_to_rounding(tmp_path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = final_weights(tmp_path / "a", lr=1e-2)
        b = final_weights(tmp_path / "b", lr=1e-2)
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(a, b, strict=True):  # bit-identical is not promised here, rounding is
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
