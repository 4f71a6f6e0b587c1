"""benchmarks/lora_memory.py --quick: its JSON line has the figures, and they hold together."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lora_memory.py"


def test_quick_run_reports_memory_params_and_step_times() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "lora_memory"
    assert result["settings"]["roles"] == ["main", "chemist", "pricer"]
    assert result["settings"]["max_batch_tokens"] == 512
    for key in ("memory", "params", "optimizer_state_bytes", "step_s", "lora_vs_full", "machine"):
        assert key in result, key
    for name in ("full", "lora"):
        mem = result["memory"][name]
        for ratio in ("vs_one_model", "vs_one_model_above_imports"):
            assert math.isfinite(mem[ratio]) and mem[ratio] > 0, (name, ratio, mem[ratio])
        # a training process holds at least what loading one model alone held
        assert mem["peak_bytes"] >= result["memory"]["one_model"]["imports_bytes"]
        assert result["step_s"][name] > 0
        # every role acted and was trained on at the last step (the env routes main's turns)
        assert all(n > 0 for n in result["samples_last_step"][name].values())
    params = result["params"]
    # LoRA trains adapters only, on one base: fewer trainable and fewer total bytes
    assert 0 < params["lora_trainable_bytes"] < params["full_trainable_bytes"]
    assert params["lora_total_bytes"] < params["full_total_bytes"]
    assert params["full_total_bytes"] == 3 * params["one_model_bytes"]
    assert params["full_trainable_bytes"] == params["full_total_bytes"]
    # AdamW keeps two moments per trainable parameter
    opt = result["optimizer_state_bytes"]
    assert opt["lora"] >= 2 * params["lora_trainable_bytes"]
    assert opt["full"] >= 2 * params["full_trainable_bytes"]
    assert result["lora_vs_full"]["trainable_params"] < 1
