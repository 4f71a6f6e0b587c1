"""LoRA per agent: one base model, one adapter per trained model and frozen role.

Most runs use ``FakeEngine`` (tests/test_mgrpo.py): rollouts drawn from the seeds,
scored by the policies, so both roles get samples and every step is fast. The env is
played for real through the CLI (train, eval, export) and in the generation check.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import mgrpo_envs
from mgrpo_algos import MGRPOConfig, MGRPOTrainer
from mgrpo_algos.algorithms import load_run
from mgrpo_algos.algorithms.grpo import GRPOConfig, GRPOTrainer
from mgrpo_algos.cli import main
from mgrpo_algos.lora import LORA_TARGETS, LoRAPolicy
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.training.checkpoints import export
from tests.test_mgrpo import ENV, SUB, FakeEngine, small, strip

pytest.importorskip("peft")


def lora_trainer(out_dir=None, **kw) -> MGRPOTrainer:
    trainer = MGRPOTrainer(small(lora_rank=4, **kw), out_dir)
    trainer.engine = FakeEngine(trainer.policies)
    return trainer


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before, params) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def base_params(trainer) -> list[torch.nn.Parameter]:
    return trainer.policies["main"].adapters.parameters(None)


def batch(policy, seed: int = 0, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, policy.vocab_size, (3, length), generator=gen)
    return ids, torch.ones_like(ids)


def nudge(policy: LoRAPolicy, seed: int, scale: float = 0.5) -> None:
    """Moves an adapter's weights off their start (B = 0 leaves the base unchanged)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kw,match",
    [
        ({"lora_rank": -1}, r"lora_rank must be an int >= 0 \(0: full fine-tuning.*got -1"),
        ({"lora_rank": 2.5}, r"lora_rank must be an int >= 0 .*got 2.5"),
        ({"lora_alpha": 0.0}, r"lora_alpha must be a finite number > 0, got 0.0"),
        ({"lora_alpha": float("nan")}, r"lora_alpha must be a finite number > 0, got nan"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be a number in \[0, 1\), got 1.0"),
        ({"lora_target_modules": ()}, r"lora_target_modules must be a non-empty list .*got \(\)"),
        ({"lora_target_modules": ("q_proj", "")}, r"lora_target_modules must be a non-empty"),
    ],
)
def test_config_is_validated(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        MGRPOConfig(**kw)
    with pytest.raises(ValueError, match=match):  # every learner's config has the fields
        GRPOConfig(**kw)


def test_config_defaults_and_json_form() -> None:
    cfg = MGRPOConfig(lora_rank=4, lora_target_modules=["q_proj", "v_proj"])
    assert cfg.lora_target_modules == ("q_proj", "v_proj")
    again = MGRPOConfig(**json.loads(json.dumps(cfg.__dict__)))
    assert again == cfg
    default = MGRPOConfig()
    assert default.lora_rank == 0 and default.lora_target_modules == LORA_TARGETS
    assert MGRPOConfig(lora_rank=4, backend="ray").lora_rank == 4  # every backend


# --------------------------------------------------------------------------- training
def test_adapters_alone_are_trained_on_one_base() -> None:
    trainer = lora_trainer(beta=0.05)
    main, sub = trainer.policies["main"], trainer.policies[SUB]
    assert isinstance(main, LoRAPolicy) and main.name == "main" and sub.name == SUB
    assert main.model is sub.model  # one model in memory
    base = base_params(trainer)
    plain = HFPolicy.tiny(mgrpo_envs.make("research_v0", **ENV), size="micro")
    assert sum(p.numel() for p in base) == sum(p.numel() for p in plain.parameters())
    every = {id(p) for p in main.model.parameters()}
    refs = [p for ref in trainer.refs.values() for p in ref.parameters()]  # beta > 0
    assert every == {id(p) for p in [*base, *main.parameters(), *sub.parameters(), *refs]}
    for name, params in trainer.params.items():  # each optimiser: its adapter alone
        held = {id(p) for group in trainer.optimizers[name].param_groups for p in group["params"]}
        assert held == {id(p) for p in trainer.policies[name].parameters()} == set(map(id, params))
    before_base = snapshot(base)
    before = {role: snapshot(trainer.policies[role].parameters()) for role in ("main", SUB)}
    for _ in range(2):
        metrics = trainer.train_step()
        assert all(v is None or torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert not changed(before_base, base)
    for role in ("main", SUB):
        assert changed(before[role], trainer.policies[role].parameters()), role


def test_main_only_keeps_the_frozen_adapter_out_of_every_optimiser() -> None:
    trainer = lora_trainer(algo="main-only", weight_decay=0.1)
    sub = trainer.policies[SUB]
    nudge(sub, 1)  # a frozen adapter that is not the identity, so decay would move it
    frozen = list(sub.parameters())
    held = {id(p) for o in trainer.optimizers.values() for g in o.param_groups for p in g["params"]}
    assert list(trainer.optimizers) == ["main"] and not held & set(map(id, frozen))
    assert all(not p.requires_grad for p in frozen)
    before, before_main = snapshot(frozen), snapshot(trainer.policies["main"].parameters())
    trainer.train_step()
    trainer.train_step()
    assert not changed(before, frozen)
    assert all(not p.requires_grad for p in frozen)  # switching adapters kept the flags
    assert changed(before_main, trainer.policies["main"].parameters())


def test_shared_trains_one_adapter_for_every_role() -> None:
    trainer = lora_trainer(algo="shared")
    assert trainer.policies["main"] is trainer.policies[SUB]
    assert trainer.policies["main"].adapters.names == ["shared"]
    before = snapshot(trainer.policies["main"].parameters())
    trainer.train_step()
    assert changed(before, trainer.policies["main"].parameters())


def test_the_reference_is_the_initial_adapter_in_the_same_model() -> None:
    trainer = lora_trainer(beta=0.1)
    env = mgrpo_envs.make("research_v0", **ENV)
    plain = HFPolicy.tiny(env, size="micro", seed=trainer.config.seed)  # the run's base
    trainer.train_step()
    main = trainer.policies["main"]
    for name in ("main", SUB):  # one reference per trained model, none trainable
        ref = trainer.refs[name]
        assert ref.model is main.model and not any(p.requires_grad for p in ref.parameters())
    ref = trainer.refs["main"]
    ids, mask = batch(main)
    with torch.no_grad():  # a fresh adapter (B = 0) leaves the base's outputs as they are
        assert torch.equal(ref.logprobs(ids, mask), plain.logprobs(ids, mask))
        assert not torch.allclose(main.logprobs(ids, mask), plain.logprobs(ids, mask))


def test_a_lora_warm_start_is_its_own_kl_reference(tmp_path) -> None:
    """Starting from trained adapters, the reference is them (KL 0 at step 0), not the base."""
    warm = lora_trainer(tmp_path / "warm")
    nudge(warm.policies["main"], 2, scale=0.05)
    nudge(warm.policies[SUB], 3, scale=0.05)
    ckpt = warm.save_checkpoint()
    trainer = MGRPOTrainer(small(lora_rank=4, beta=0.1, model=str(ckpt)))
    trainer.engine = FakeEngine(trainer.policies)
    ids, mask = batch(trainer.policies["main"])
    base = HFPolicy.load(ckpt / "base")
    with torch.no_grad():
        for name in ("main", SUB):
            ref = trainer.refs[name].logprobs(ids, mask)
            assert torch.equal(ref, trainer.policies[name].logprobs(ids, mask))
            assert not torch.allclose(ref, base.logprobs(ids, mask))
    m = trainer.train_step()
    assert abs(m["kl/main"]) < 1e-6 and abs(m[f"kl/{SUB}"]) < 1e-6


def test_each_role_generates_with_its_own_adapter() -> None:
    trainer = MGRPOTrainer(small(lora_rank=4))
    main, sub = trainer.policies["main"], trainer.policies[SUB]
    nudge(main, 2)
    nudge(sub, 3)
    prompt = [main.encode_chat([{"role": "user", "content": "find the year"}])]
    for policy, other in ((main, sub), (sub, main)):
        out = policy.generate(prompt, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
        ids = torch.tensor([prompt[0] + out.completion_ids[0]])
        with torch.no_grad():
            mine = policy.logprobs(ids, torch.ones_like(ids))[0, len(prompt[0]) - 1 :]
            theirs = other.logprobs(ids, torch.ones_like(ids))[0, len(prompt[0]) - 1 :]
        torch.testing.assert_close(mine, torch.tensor(out.logprobs[0]), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(mine, theirs, atol=1e-3)
        policy.generate(prompt, max_new_tokens=2, sessions=["conversation"])
        assert policy.cache_tokens == 0  # no keys and values kept, so none shared across adapters
    metrics = trainer.train_step()  # the real env, played by the views
    assert metrics["perf/tokens_per_s"] > 0


def test_dropout_applies_in_the_loss_only() -> None:
    trainer = lora_trainer(lora_dropout=0.5)
    main = trainer.policies["main"]
    nudge(main, 4)
    ids, mask = batch(main)
    with torch.no_grad():
        a, b = main.logprobs(ids, mask), main.logprobs(ids, mask)
    assert torch.equal(a, b)  # sampling and stored log-probs: no dropout
    torch.manual_seed(0)
    assert not torch.allclose(main.logprobs(ids, mask).detach(), a)  # the loss: dropout


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_holds_the_adapters_and_one_base(tmp_path) -> None:
    trainer = lora_trainer(tmp_path, beta=0.05)
    trainer.train_step()
    ckpt = trainer.save_checkpoint()
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "base",
        "config.json",
        "policies",
        "refs",
        "state.pt",
    ]  # refs/<name>/: the reference adapters
    assert sorted(p.name for p in (ckpt / "refs").iterdir()) == ["main", SUB]
    policies = ckpt / "policies"
    assert sorted(p.name for p in policies.iterdir()) == ["lora.json", "main", "roles.json", SUB]
    for role in ("main", SUB):
        files = sorted(p.name for p in (policies / role).iterdir())
        assert files == ["adapter_config.json", "adapter_model.safetensors"]
        size = (policies / role / "adapter_model.safetensors").stat().st_size
        numel = sum(p.numel() for p in trainer.policies[role].parameters())
        assert size < 4 * numel + 20_000  # float32 adapter weights and a header, no model
    base = HFPolicy.load(ckpt / "base")
    ids, mask = batch(base)
    with torch.no_grad():  # the reference is the fresh adapter, equal to the base
        assert torch.equal(base.logprobs(ids, mask), trainer.refs["main"].logprobs(ids, mask))
    run = load_run(tmp_path)  # what mgrpo eval opens
    assert run.policies["main"].model is run.policies[SUB].model
    for role in ("main", SUB):
        with torch.no_grad():
            got = run.policies[role].logprobs(ids, mask)
            assert torch.equal(got, trainer.policies[role].logprobs(ids, mask))


@pytest.mark.parametrize("kw", [{"beta": 0.05}, {"algo": "main-only", "num_iterations": 2}])
def test_resume_is_bit_exact(tmp_path, kw) -> None:
    threads = torch.get_num_threads()
    try:
        full = lora_trainer(tmp_path / "full", steps=4, deterministic=True, **kw)
        full.train(progress=False)
        part = lora_trainer(tmp_path / "part", steps=4, deterministic=True, **kw)
        part.train(progress=False, on_step=lambda learner, m: learner.step_idx == 2)
        resumed = MGRPOTrainer.resume(tmp_path / "part")
        resumed.engine = FakeEngine(resumed.policies)
        assert resumed.step_idx == 2
        resumed.train(progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    got, want = strip(resumed.writer.read()), strip(full.writer.read())
    assert [m["step"] for m in got] == [1, 2, 3, 4] and got == want
    for role in ("main", SUB):
        a, b = full.policies[role], resumed.policies[role]
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not changed(base_params(full), base_params(resumed))


def test_a_lora_checkpoint_starts_a_new_run(tmp_path) -> None:
    trainer = lora_trainer(tmp_path / "a", algo="shared")
    trainer.train_step()
    ckpt = trainer.save_checkpoint()
    again = MGRPOTrainer(small(lora_rank=4, model=str(ckpt)))  # every role from "shared"
    for role in ("main", SUB):
        assert again.policies[role].name == role
        for x, y in zip(
            again.policies[role].parameters(), trainer.policies["main"].parameters(), strict=True
        ):
            assert torch.equal(x, y)
    with pytest.raises(ValueError, match=r"has LoRA settings .* pass --lora-rank 4"):
        MGRPOTrainer(small(lora_rank=8, model=str(ckpt)))
    with pytest.raises(ValueError, match=r"holds LoRA adapters .*--lora-rank R .*mgrpo export"):
        MGRPOTrainer(small(model=str(ckpt)))


def test_plain_policies_of_different_models_are_refused() -> None:
    env = mgrpo_envs.make("research_v0", **ENV)
    given = {role: HFPolicy.tiny(env, size="micro", seed=i) for i, role in enumerate(["main", SUB])}
    with pytest.raises(ValueError, match=r"one base model, but the policy given for 'searcher'"):
        MGRPOTrainer(small(lora_rank=4), policies=given)


# --------------------------------------------------------------------------- export
def test_export_merges_each_adapter_into_a_standalone_model(tmp_path) -> None:
    trainer = lora_trainer(tmp_path / "run")
    trainer.train_step()
    nudge(trainer.policies["main"], 5, scale=0.2)  # adapters well away from the base
    nudge(trainer.policies[SUB], 6, scale=0.2)
    trainer.save_checkpoint()
    saved = export(tmp_path / "run", tmp_path / "out")
    assert sorted(saved) == ["main", SUB]
    assert json.loads((tmp_path / "out" / "roles.json").read_text()) == {"main": "main", SUB: SUB}
    for role in ("main", SUB):
        merged = HFPolicy.load(tmp_path / "out" / role)
        view = trainer.policies[role]
        ids, mask = batch(view, seed=7)
        with torch.no_grad():
            want = view.logprobs(ids, mask)
            torch.testing.assert_close(merged.logprobs(ids, mask), want, rtol=1e-5, atol=1e-5)
            base = view.adapters.reference().logprobs(ids, mask)
        assert not torch.allclose(want, base, atol=1e-3)  # the merge changed the weights
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / role)
        assert not any("lora" in name for name, _ in hf.named_parameters())
    with pytest.raises(ValueError, match="is not an empty directory; pass a new --out"):
        export(tmp_path / "run", tmp_path / "out")


def test_cli_train_eval_export(tmp_path, capsys) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    args = ["--steps", "1", "--queries-per-step", "2", "--group-size", "2"]
    args += ["--max-new-tokens", "6", "--env-arg", "main_turns=3", "--env-arg", "sub_turns=2"]
    assert main(["train", "--algo", "main-only", "--lora-rank", "4", "--out", str(run), *args]) == 0
    assert main(["eval", "--ckpt", str(run), "--episodes", "2", "--json"]) == 0
    assert main(["export", "--ckpt", str(run), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-2])["n"] == 2
    assert sorted(json.loads(lines[-1])["roles"]) == ["main", SUB]
    assert HFPolicy.load(out / "main").vocab_size > 0
    full = tmp_path / "full"
    assert main(["train", "--algo", "grpo", "--out", str(full), *args[:8]]) == 0
    with pytest.raises(SystemExit, match=r"^mgrpo export: .* holds no LoRA adapters"):
        main(["export", "--ckpt", str(full), "--out", str(tmp_path / "x")])


def test_grpo_trains_an_adapter() -> None:
    cfg = GRPOConfig(
        lora_rank=2, steps=1, queries_per_step=2, group_size=2, max_new_tokens=6, env_kwargs=ENV
    )
    trainer = GRPOTrainer(cfg)
    assert isinstance(trainer.policy, LoRAPolicy) and trainer.policy.adapters.names == ["main"]
    held = [p for g in trainer.optimizers["main"].param_groups for p in g["params"]]
    assert set(map(id, held)) == set(map(id, trainer.policy.parameters()))
    metrics = trainer.train_step()  # the single-agent view, played by the adapter
    assert metrics["loss/main"] is not None and torch.isfinite(torch.tensor(metrics["loss/main"]))
