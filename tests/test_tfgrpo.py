"""Training-Free GRPO: operations, libraries, the reflector's inputs, prompts, checkpoints, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mgrpo_algos.algorithms import load_run
from mgrpo_algos.algorithms.tfgrpo import (
    TRAIN_SET_SEED0,
    Experience,
    ExperienceLibrary,
    ExperiencePolicy,
    Operation,
    Reflector,
    TFGRPOConfig,
    TFGRPOTrainer,
    parse_operations,
    relative_groups,
)
from mgrpo_algos.buffer import Trajectory, subtask_key
from mgrpo_algos.cli import config_of, main, parse_train
from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.rollout import EpisodeRecord, RolloutConfig, RolloutEngine, RolloutResult

# short budgets keep random-policy episodes (and their contexts) small
ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}
SMALL = ["--queries-per-step", "2", "--group-size", "2", "--max-new-tokens", "6"]
CLI_ENV = ["--env-arg", "main_turns=2", "--env-arg", "episode_turns=4"]


def small(**kw) -> TFGRPOConfig:
    base = dict(
        steps=2,
        queries_per_step=2,
        group_size=4,
        max_new_tokens=8,
        env_kwargs=ENV,
        checkpoint_every=1,
        single_agent=True,
    )
    return TFGRPOConfig(**{**base, **kw})


class Scripted:
    """A reflector that records its prompts and answers each stage with fixed text."""

    def __init__(self, operations: list[str] | None = None) -> None:
        self.prompts: list[str] = []
        self.operations = list(operations or ["NONE"])

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if prompt.startswith("You keep the experience library"):
            return self.operations.pop(0) if len(self.operations) > 1 else self.operations[0]
        if prompt.startswith("Several attempts"):
            return "- search before answering"
        return "The agent searched, then answered."

    def stage(self, start: str) -> list[str]:
        return [p for p in self.prompts if p.startswith(start)]


def rig_rewards(trainer: TFGRPOTrainer, monkeypatch) -> list[RolloutResult]:
    """Every outcome valid; query 0's odd rollouts correct (rewards differ), query 1 all wrong.

    Returns the list the rigged collections are appended to.
    """
    real = trainer.engine.collect
    seen: list[RolloutResult] = []

    def collect(*a, **kw):
        res = real(*a, **kw)
        for ep in res.episodes:
            outcome = ep.infos["main"]["outcome"]
            correct = ep.group_id == 0 and ep.rollout_id % 2 == 1
            outcome.update(format_ok=True, correct=correct, r_format=1.0)
            outcome.pop("outputs", None)
        seen.append(res)
        return res

    monkeypatch.setattr(trainer.engine, "collect", collect)
    return seen


def params(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


# --------------------------------------------------------------------------- parsing, library
def test_operations_are_parsed_from_free_text_and_malformed_lines_counted() -> None:
    text = "\n".join(
        [
            "Here are my changes:",  # commentary: skipped, not malformed
            "ADD: Search before you answer.",
            "- **UPDATE 3**: Visit the top result.",
            "2. DELETE [2]: redundant",
            "NONE",
            "ADD search twice",  # no colon
            "UPDATE: no id",
            "DELETE two",
            "None of these work",
            "ADD:   ",
            "add: lower case works",
        ]
    )
    ops, malformed = parse_operations(text)
    assert ops == [
        Operation("add", None, "Search before you answer."),
        Operation("update", 3, "Visit the top result."),
        Operation("delete", 2, ""),
        Operation("none", None, ""),
        Operation("add", None, "lower case works"),
    ]
    assert malformed == 5
    assert parse_operations("") == ([], 0)


def test_library_operations_ids_limits_render_and_round_trip() -> None:
    lib = ExperienceLibrary(max_size=2)
    assert lib.render() == "" and len(lib) == 0
    counts = lib.apply(
        [
            Operation("add", None, "search first"),
            Operation("add", None, "SEARCH FIRST"),  # already there
            Operation("add", None, "answer with the number"),
            Operation("add", None, "a third one"),  # full
            Operation("update", 1, "search the exact name first"),
            Operation("update", 7, "no such entry"),
            Operation("delete", 2, ""),
            Operation("delete", 2, ""),  # gone already
            Operation("none", None, ""),
        ]
    )
    assert dict(counts) == {"add": 2, "update": 1, "delete": 1, "none": 1, "rejected": 4}
    assert lib.entries == [Experience(1, "search the exact name first")]
    assert lib.add("visit the page") == 3  # ids are never reused
    lines = lib.render().splitlines()
    assert lines[1:] == ["[1] search the exact name first", "[3] visit the page"]
    assert ExperienceLibrary.from_dict(json.loads(json.dumps(lib.to_dict()))) == lib
    assert lib.update(1, "y" * 1000) and len(lib.entries[0].text) == 300  # cut to the maximum


# --------------------------------------------------------------------------- the step
def test_only_groups_whose_rewards_differ_reach_the_reflector(monkeypatch) -> None:
    reflector = Scripted()
    trainer = TFGRPOTrainer(small(steps=1), reflector=reflector)
    rig_rewards(trainer, monkeypatch)
    m = trainer.train_step()
    assert m["groups/total"] == 2 and m["groups/kept"] == 1 and m["groups/kept/main"] == 1
    summaries = reflector.stage("You review one attempt")
    assert len(summaries) == 4  # query 0's K rollouts; query 1's (all equal) never sent
    assert all("reward 0.100" in p or "reward 1.000" in p for p in summaries)
    (advantage,) = reflector.stage("Several attempts")
    assert [line.split(":")[0] for line in advantage.splitlines()[1:5]] == [
        f"Attempt {i} (reward {r})" for i, r in enumerate(["0.100", "1.000"] * 2, 1)
    ]
    (operations,) = reflector.stage("You keep the experience library")
    assert "- search before answering" in operations
    assert m["ops/none"] == 1 and m["library/size/main"] == 0


def test_no_group_with_differing_rewards_means_no_reflection() -> None:
    reflector = Scripted(["ADD: never applied"])
    trainer = TFGRPOTrainer(small(steps=1), reflector=reflector)
    m = trainer.train_step()  # a random tiny model: every reward 0
    assert m["groups/total"] == 2 and m["groups/kept"] == 0 and reflector.prompts == []
    assert m["ops/add"] == 0 and m["library/size/main"] == 0


def test_operations_edit_the_library_step_by_step(monkeypatch) -> None:
    reflector = Scripted(
        [
            "ADD: search first\nADD: answer briefly\nADD missing colon\nUPDATE 9: ghost\nNONE",
            "Sure!\nUPDATE 1: search the exact name first\nDELETE 2\nDELETE x",
        ]
    )
    trainer = TFGRPOTrainer(small(), reflector=reflector)
    rig_rewards(trainer, monkeypatch)
    first, second = trainer.train(progress=False)
    assert (first["ops/add"], first["ops/none"], first["ops/rejected"]) == (2, 1, 1)
    assert first["ops/malformed"] == 1 and first["library/size/main"] == 2
    assert (second["ops/update"], second["ops/delete"], second["ops/malformed"]) == (1, 1, 1)
    assert trainer.libraries["main"].entries == [Experience(1, "search the exact name first")]
    # the library the reflector edits is shown to it with its ids
    assert "[2] answer briefly" in reflector.stage("You keep the experience library")[1]


def test_the_library_opens_the_roles_prompt_of_the_next_collection(monkeypatch) -> None:
    trainer = TFGRPOTrainer(small(steps=1), reflector=Scripted(["ADD: search first"]))
    rig_rewards(trainer, monkeypatch)
    policy = trainer.policies["main"]
    trainer.train_step()
    text = trainer.libraries["main"].render()
    assert text.endswith("[1] search first")
    system = policy.encode_chat([{"role": "system", "content": text}], add_generation_prompt=False)
    before = trainer.collect()  # step 1's prompts, collected before the library grew
    assert all(t.input_ids[: len(system)].tolist() != system for t in before.trajectories)
    seen = []
    real = trainer.engine.collect

    def collect(*a, **kw):
        seen.append(real(*a, **kw))
        return seen[-1]

    monkeypatch.setattr(trainer.engine, "collect", collect)
    trainer.train_step()
    trajs = seen[0].trajectories
    assert trajs and all(t.input_ids[: len(system)].tolist() == system for t in trajs)
    assert "search first" in policy.decode(trajs[0].input_ids.tolist())


def test_evaluation_plays_the_prompt_that_training_plays() -> None:
    trainer = TFGRPOTrainer(small(single_agent=False))
    policy = trainer.policies["main"]
    text = "Experiences:\n[1] search first"
    collected = []
    for policies, prompts in (
        (trainer.policies, {"main": text, "searcher": text}),  # training: system_prompts
        ({r: ExperiencePolicy(policy, text) for r in trainer.roles}, {}),  # evaluation
    ):
        engine = RolloutEngine(
            trainer.env_fn, policies, RolloutConfig(max_new_tokens=8, system_prompts=prompts)
        )
        res = engine.collect([5, 6], 1, generator=torch.Generator().manual_seed(0))
        collected.append([t.input_ids.tolist() for t in res.trajectories])
    assert collected[0] == collected[1]
    # the prompted policy is the policy: same tokenizer, same weights
    assert ExperiencePolicy(policy, "").encode_chat([{"role": "user", "content": "hi"}]) == (
        policy.encode_chat([{"role": "user", "content": "hi"}])
    )


def test_the_weights_never_change(monkeypatch) -> None:
    trainer = TFGRPOTrainer(small(single_agent=False), reflector=Scripted(["ADD: search first"]))
    rig_rewards(trainer, monkeypatch)
    before = {r: params(p) for r, p in trainer.policies.items()}
    history = trainer.train(progress=False)
    assert history[-1]["library/size/main"] == 1  # something was learned ...
    for role, policy in trainer.policies.items():  # ... and no parameter moved
        assert all(torch.equal(a, b) for a, b in zip(before[role], params(policy), strict=True))
        assert not any(p.requires_grad for p in policy.parameters())
    assert trainer.optimizers == {} and history[-1]["loss/main"] is None


def test_the_default_reflector_is_the_policy_itself(monkeypatch) -> None:
    trainer = TFGRPOTrainer(small(steps=1, reflect_max_new_tokens=6, reflect_temperature=0.0))
    rig_rewards(trainer, monkeypatch)
    assert trainer.reflectors["main"].backend is trainer.policies["main"]
    m = trainer.train_step()  # a random model writes garbage: nothing may break
    assert m["groups/kept"] == 1 and m["ops/malformed"] >= 0
    long = Reflector(trainer.policies["main"], max_new_tokens=6, temperature=0.0)
    (answer,) = long.complete(["search " * 5000], None)  # cut to fit the model's context
    assert isinstance(answer, str)
    with pytest.raises(TypeError, match="must be a Policy"):
        Reflector(42, max_new_tokens=4, temperature=0.0)


# --------------------------------------------------------------------------- vs the paper
# docs/training.md, "tf-grpo vs the paper": (a) ground truth, (b) a fixed training set
# in epochs, (c) a sub-agent group holds calls at one subtask, (d) temperature 0.7.
@pytest.mark.parametrize("shown", [True, False])
def test_the_reflector_is_given_the_gold_answer_unless_turned_off(monkeypatch, shown) -> None:
    reflector = Scripted()
    trainer = TFGRPOTrainer(small(steps=1, reflect_ground_truth=shown), reflector=reflector)
    seen = rig_rewards(trainer, monkeypatch)
    m = trainer.train_step()
    assert m["groups/kept"] == 1  # query 0
    (gold,) = {ep.infos["main"]["outcome"]["gold"] for ep in seen[0].episodes if ep.group_id == 0}
    line = f"Ground truth: the correct final answer is {gold}"
    summaries = reflector.stage("You review one attempt")
    (advantage,) = reflector.stage("Several attempts")
    assert len(summaries) == 4
    if shown:
        assert all(line in p for p in summaries) and line in advantage
    else:
        assert not any("Ground truth" in p for p in reflector.prompts)


def test_a_fixed_training_set_is_visited_in_epochs_each_in_its_own_order(monkeypatch) -> None:
    def queries(**kw) -> list[list[int]]:
        trainer = TFGRPOTrainer(small(steps=6, queries_per_step=2, **kw))
        seen: list[list[int]] = []
        monkeypatch.setattr(trainer.engine, "collect", lambda seeds, *a, **k: seen.append(seeds))
        for step in range(6):
            trainer.step_idx = step
            trainer.collect()  # the learner's path to the engine
        return seen

    block = set(range(TRAIN_SET_SEED0, TRAIN_SET_SEED0 + 4))
    steps = queries(train_queries=4)  # 2 steps an epoch: 3 epochs
    epochs = [steps[0] + steps[1], steps[2] + steps[3], steps[4] + steps[5]]
    assert all(sorted(e) == sorted(block) for e in epochs)  # the same set, every epoch
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # shuffled per epoch
    assert queries(train_queries=4) == steps  # fixed by the seed (a resume repeats it)
    odd = queries(train_queries=3)  # 2 steps an epoch, the second wraps round
    for first, second in zip(odd[::2], odd[1::2], strict=True):
        assert set(first + second) == {TRAIN_SET_SEED0 + i for i in range(3)}
        assert len(set(second)) == 2
    fresh = queries(train_queries=None)  # ours: fresh queries every step
    assert len({q for step in fresh for q in step}) == 12 and not block & set(fresh[0])


def test_a_sub_agent_group_holds_calls_at_one_subtask() -> None:
    reflector = Scripted()
    trainer = TFGRPOTrainer(small(single_agent=False), reflector=reflector)
    assert trainer.roles == ["main", "searcher"]
    # (rollout, subtask as main wrote it, reward, gold value in the call's record)
    calls = [
        [("Population of Avon?", 0.9, "120"), ("capital of Bree", 0.1, None)],
        [("population of  avon", 0.2, "120"), ("Capital of Bree.", 0.8, None)],
        [("height of Tor", 0.3, None)],
    ]
    ids = np.array([5, 6, 7, 8])
    mask, logps = np.array([0, 0, 1, 1], dtype=np.int8), np.zeros(4, dtype=np.float32)
    trajs, episodes = [], []
    for r, rollout in enumerate(calls):
        records = [
            {"subtask": sub, "format_ok": True, "expert": float(rew > 0.5), "gold": gold}
            for sub, rew, gold in rollout
        ]
        outcome = {"correct": r == 1, "format_ok": True, "gold": "Avon"}
        infos = {"main": {"outcome": outcome}, "searcher": {"calls": records}}
        episodes.append(
            EpisodeRecord(0, r, 7, r == 1, float(r == 1), len(rollout), "answer", 3, infos)
        )
        trajs.append(Trajectory("main", 0, r, 0, ids, mask, logps, reward=float(r == 1)))
        trajs += [
            Trajectory("searcher", 0, r, i, ids, mask, logps, reward=rew, subtask=sub)
            for i, (sub, rew, _) in enumerate(rollout)
        ]
    result = RolloutResult(trajs, episodes, 0, 0.0, 0.0, 1.0)
    groups = trainer.groups_of(result, trajs, {})
    subtask_of = {rew: sub for rollout in calls for sub, rew, _ in rollout}
    subs = [g for g in groups if g.role == "searcher"]
    for g in subs:  # every sample of a group was given the group's subtask
        assert {subtask_key(subtask_of[s.reward]) for s in g.samples} == {subtask_key(g.subtask)}
    assert sorted((subtask_key(g.subtask), len(g.samples)) for g in subs) == [
        ("capital of bree", 2),
        ("height of tor", 1),
        ("population of avon", 2),
    ]
    kept = relative_groups(groups)  # the lone call has no group to be compared in
    assert sorted(len(g.samples) for g in kept if g.role == "searcher") == [2, 2]
    trainer.reflect(kept)
    advantages = reflector.stage("Several attempts")
    assert any('searcher" at the same subtask "Population of Avon?"' in p for p in advantages)
    truth = "Ground truth: the value the subtask asks for is 120"
    assert sum(truth in p for p in reflector.stage("You review one attempt")) == 2


def test_rollouts_sample_at_the_papers_temperature_by_default() -> None:
    assert TFGRPOConfig().temperature == 0.7
    trainer = TFGRPOTrainer(small(steps=1))
    result = trainer.collect()
    assert result.trajectories and all(t.temperature == 0.7 for t in result.trajectories)
    train = ["--out", "x", "--queries-per-step", "2"]
    args = [["--algo", "tf-grpo"], ["--algo", "tf-grpo", "--temperature", "1.0"], []]
    temps = [config_of(parse_train([*train, *a])[0]).temperature for a in args]
    assert temps == [0.7, 1.0, 1.0]  # tf-grpo's default; given; another algo's default


# --------------------------------------------------------------------------- checkpoints
def test_resume_restores_the_libraries_and_repeats_the_run(tmp_path, monkeypatch) -> None:
    answers = ["ADD: search first", "ADD: answer briefly\nDELETE 1"]
    full = TFGRPOTrainer(small(), tmp_path / "full", reflector=Scripted(answers))
    rig_rewards(full, monkeypatch)
    full.train(progress=False)
    part = TFGRPOTrainer(small(steps=1), tmp_path / "part", reflector=Scripted(answers))
    rig_rewards(part, monkeypatch)
    part.train(progress=False)
    saved = json.loads((tmp_path / "part" / "ckpt-000001" / "experiences.json").read_text())
    assert [e["text"] for e in saved["main"]["entries"]] == ["search first"]
    resumed = TFGRPOTrainer.resume(tmp_path / "part", steps=2, reflector=Scripted(answers[1:]))
    assert resumed.step_idx == 1 and resumed.libraries == part.libraries
    rig_rewards(resumed, monkeypatch)
    resumed.train(progress=False)
    assert resumed.libraries == full.libraries
    assert [e.text for e in resumed.libraries["main"]] == ["answer briefly"]
    assert (tmp_path / "part" / "ckpt-000002" / "policies" / "main" / "config.json").is_file()


def test_a_run_recorded_before_the_paper_options_resumes_as_it_ran(tmp_path) -> None:
    TFGRPOTrainer(small(steps=1), tmp_path / "run", reflector=Scripted()).train(progress=False)
    path = tmp_path / "run" / "ckpt-000001" / "config.json"
    recorded = json.loads(path.read_text())
    assert (recorded["train_queries"], recorded["reflect_ground_truth"]) == (100, True)
    for key in ("train_queries", "reflect_ground_truth"):
        del recorded[key]
    path.write_text(json.dumps(recorded))
    resumed = TFGRPOTrainer.resume(tmp_path / "run", steps=2, reflector=Scripted())
    assert (resumed.config.train_queries, resumed.config.reflect_ground_truth) == (None, False)


def test_a_model_directory_is_referenced_and_eval_uses_the_libraries(tmp_path, monkeypatch) -> None:
    probe = TFGRPOTrainer(small()).env_fn()
    HFPolicy.tiny(probe, size="micro", seed=3).save(tmp_path / "model")
    config = small(steps=1, model=str(tmp_path / "model"))
    trainer = TFGRPOTrainer(config, tmp_path / "run", reflector=Scripted(["ADD: search first"]))
    rig_rewards(trainer, monkeypatch)
    trainer.train(progress=False)
    policies = tmp_path / "run" / "ckpt-000001" / "policies"
    assert json.loads((policies / "reference.json").read_text()) == {
        "model": str((tmp_path / "model").resolve())
    }
    assert not (policies / "main").exists()  # the weights are not copied
    run = load_run(tmp_path / "run")
    assert run.config.algo == "tf-grpo"
    assert run.policies["main"].system == trainer.libraries["main"].render() != ""
    loaded, used = run.policies["main"].parameters(), trainer.policies["main"].parameters()
    assert all(torch.equal(a, b) for a, b in zip(loaded, used, strict=True))


# --------------------------------------------------------------------------- config, CLI
@pytest.mark.parametrize(
    "kw,match",
    [
        ({"max_experiences": 0}, "max_experiences must be an int >= 1, got 0"),
        ({"reflect_max_new_tokens": 2.5}, "reflect_max_new_tokens must be an int >= 1"),
        ({"reflect_temperature": -1.0}, "reflect_temperature must be a finite number >= 0"),
        ({"reflector": "gpt"}, r"reflector must be one of \['policy', 'smollm2'\] or a saved"),
        ({"model": "nowhere/at/all"}, r"model must be one of \['tiny', 'smollm2'\]"),
        ({"lora_rank": 4}, "tf-grpo updates no weights and runs embedded: lora_rank must be 0"),
        ({"single_agent": "yes"}, "single_agent must be True or False"),
        ({"reflect_ground_truth": 1}, "reflect_ground_truth must be True or False"),
        ({"train_queries": 0}, "train_queries must be None or an int >= 1, got 0"),
        ({"train_queries": 4}, r"train_queries \(4\) must be >= queries_per_step \(8\)"),
        ({"sub_weights": (1.0,)}, "sub_weights must be 3 finite numbers"),
        ({"algo": "grpo"}, r"algo must be one of \['tf-grpo'\]"),
        ({"group_size": 1}, "group_size must be >= 2"),
    ],
)
def test_config_is_validated(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        TFGRPOConfig(**kw)


def test_cli_trains_resumes_and_evaluates_a_tf_grpo_run(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--algo", "tf-grpo", "--steps", "1", "--out", str(out), *SMALL, *CLI_ENV]
    assert main([*argv, "--max-experiences", "5"]) == 0
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("success_rate", "groups/kept", "ops/add", "ops/malformed", "library/size/main"):
        assert key in row
    assert row["library/size/searcher"] == 0 and row["loss/main"] is None
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "tf-grpo" and config["max_experiences"] == 5
    paper = {"temperature": 0.7, "train_queries": 100, "reflect_ground_truth": True}
    assert {k: config[k] for k in paper} == paper  # the defaults follow the paper
    assert row["epoch"] == 0 and row["groups/single"] == 0
    assert (out / "ckpt-000001" / "experiences.json").is_file()
    assert main(["train", "--resume", str(out), "--steps", "2"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 2 and result["ckpt"] == str(out / "ckpt-000002")


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--algo", "grpo", "--max-experiences", "3"], "--max-experiences: not a setting of"),
        (["--algo", "tf-grpo", "--align", "truncate"], "--align: not a setting of --algo tf"),
        (["--algo", "tf-grpo", "--reflector", "nowhere"], "reflector must be one of"),
    ],
)
def test_cli_refuses_options_of_other_algos(tmp_path, argv, match) -> None:
    with pytest.raises(SystemExit, match=match):
        main(["train", "--out", str(tmp_path / "run"), *argv, *SMALL, *CLI_ENV])
    assert not (tmp_path / "run").exists()
