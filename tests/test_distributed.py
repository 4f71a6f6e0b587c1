"""The Ray backend: the same run as the embedded learner, faults, the store, resume.

One local Ray session serves the module; every torch process (this one and each
actor) uses one thread, so the Ray runs are bit-identical to the embedded ones
(whose weights, like the role actors', sit in 64-byte-aligned memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ray = pytest.importorskip("ray")

from mgrpo_algos.algorithms import load_run  # noqa: E402
from mgrpo_algos.algorithms.mgrpo import MGRPOConfig, MGRPOTrainer  # noqa: E402
from mgrpo_algos.buffer import Trajectory  # noqa: E402
from mgrpo_algos.cli import main  # noqa: E402
from mgrpo_algos.demo import PUBLISHED  # noqa: E402
from mgrpo_algos.distributed import RayMGRPOTrainer, RayStore, RoleActorLost  # noqa: E402
from mgrpo_algos.distributed.driver import fresh_samples  # noqa: E402
from mgrpo_algos.distributed.roles import RoleModel  # noqa: E402
from mgrpo_algos.distributed.rollout import (  # noqa: E402
    Pending,
    RayRollouts,
    RolloutSlice,
    WorkerRestart,
    query_slices,
    slice_generator_states,
)
from mgrpo_algos.distributed.store import RewardBook  # noqa: E402
from mgrpo_algos.policies import HFPolicy  # noqa: E402
from mgrpo_algos.store import MemoryStore, RolloutReward  # noqa: E402
from mgrpo_algos.training.checkpoints import export  # noqa: E402

ENV = {"difficulty": "easy", "main_turns": 3, "sub_turns": 2, "episode_turns": 12}
SMALL = dict(steps=2, queries_per_step=2, group_size=3, max_new_tokens=8, env_kwargs=ENV, lr=1e-2)
# Random tiny models earn no reward in such short episodes, so every advantage is 0;
# weight decay moves the weights in the first of two passes, and the KL term then
# gives the second pass a non-zero loss and gradient: the numbers compared are real.
KL = dict(beta=0.05, weight_decay=0.1, num_iterations=2)
CLI = ["--queries-per-step", "2", "--group-size", "3", "--max-new-tokens", "8", "--lr", "0.01"]
CLI += ["--steps", "2", "--checkpoint-every", "1", "--difficulty", "easy"]
CLI += ["--beta", "0.05", "--weight-decay", "0.1", "--num-iterations", "2"]
CLI += [f"--env-arg={k}={v}" for k, v in ENV.items() if k != "difficulty"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def strip(metrics: dict) -> dict:
    """The metrics a run's randomness and maths decide (not its timings), and the embedded
    learner logs too (``staleness/*`` and ``ray/*`` are the Ray learner's: 0 in a
    synchronous run without faults)."""
    ray_only = ("perf/", "staleness/", "ray/")
    return {k: v for k, v in metrics.items() if not k.startswith(ray_only)}


def weights(policies: dict) -> list[torch.Tensor]:
    return [p.detach().clone() for role in sorted(policies) for p in policies[role].parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def read_metrics(out) -> list[dict]:
    lines = [strip(json.loads(line)) for line in (out / "metrics.jsonl").open()]
    assert all(m.pop("metrics/nonfinite") == 0 for m in lines)
    return lines


@pytest.fixture(scope="module")
def mgrpo_runs(tmp_path_factory):
    """An embedded run and the same run through ``mgrpo train --backend ray``."""
    embedded = MGRPOTrainer(MGRPOConfig(**SMALL, **KL))
    history = [strip(embedded.train_step()) for _ in range(2)]
    out = tmp_path_factory.mktemp("ray") / "run"
    assert main(["train", "--algo", "mgrpo", "--backend", "ray", "--out", str(out), *CLI]) == 0
    return embedded, history, out


# --------------------------------------------------------------------------- equivalence
def test_ray_mgrpo_through_the_cli_repeats_the_embedded_run(mgrpo_runs) -> None:
    embedded, history, out = mgrpo_runs
    got = read_metrics(out)
    assert [m["step"] for m in got] == [1, 2]
    assert got == json.loads(json.dumps(history))  # rewards, samples, losses: bit for bit
    assert got[-1]["samples/main"] == 6 and got[-1]["kl/main"] > 0
    assert got[-1]["loss/main"] != 0 and got[-1]["optim/grad_norm/main"] > 0
    run = load_run(out)  # what `mgrpo eval` opens
    assert run.config.backend == "ray" and run.ckpt.name == "ckpt-000002"
    assert same(weights(run.policies), weights(embedded.policies))


WARM = PUBLISHED / "research_v0-easy-title-give_up0.6"  # SFT'd on the expert: it earns reward


@pytest.fixture(scope="module")
def deterministic_runs():
    """A 2-step ``--deterministic`` run from a warm start, embedded and on one rollout worker.

    The warm start calls its searcher and earns reward, so both models train on
    non-zero advantages, and its rollouts end at different lengths, so some decode
    steps run one sequence alone: the case whose rounding depends on where the
    weights sit in memory (`aligned_weights`).
    """
    env = {"difficulty": "easy", "doc_ref": "title"}
    small = {**SMALL, "max_new_tokens": 32, "lr": 1e-4, "env_kwargs": env}
    config = MGRPOConfig(**small, **KL, model=str(WARM), deterministic=True)
    try:
        embedded = MGRPOTrainer(config)  # loaded from files: HFPolicy.load aligns them
        want = [strip(embedded.train_step()) for _ in range(2)]
        with RayMGRPOTrainer(dataclasses.replace(config, backend="ray")) as learner:
            got = [strip(learner.train_step()) for _ in range(2)]
            pulled = weights(learner.pull_policies())
    finally:
        torch.use_deterministic_algorithms(False)  # make_deterministic() is process-wide
    return want, weights(embedded.policies), got, pulled


def test_a_deterministic_ray_run_repeats_the_embedded_run_bit_for_bit(deterministic_runs) -> None:
    want, want_weights, got, got_weights = deterministic_runs
    assert [m["step"] for m in got] == [1, 2]
    assert got == want  # rewards, advantages' effects, losses, KL, gradient norms: exactly
    assert same(got_weights, want_weights)
    assert any(m["reward/main/mean"] > 0 for m in got)  # real advantages, not all zero
    assert all(m["samples/searcher"] > 0 for m in got)  # both models train on both steps
    assert all(m["optim/grad_norm/main"] > 0 and m["optim/grad_norm/searcher"] > 0 for m in got)


@pytest.fixture(scope="module")
def main_only():
    """A ``main-only`` Ray learner with a pool of 2 rollout workers (one set of actors)."""
    config = MGRPOConfig(**SMALL, **KL, algo="main-only", backend="ray", rollout_workers=2)
    with RayMGRPOTrainer(config) as learner:
        yield learner


def test_ray_main_only_repeats_the_embedded_run_and_keeps_sub_agents_frozen(main_only) -> None:
    embedded = MGRPOTrainer(MGRPOConfig(**SMALL, **KL, algo="main-only", rollout_workers=2))
    start = weights(embedded.policies)
    want = [strip(embedded.train_step()) for _ in range(2)]
    learner, pool = main_only, main_only.engine
    assert learner.step_idx == 0 and sorted(learner.models) == ["main", "searcher"]
    learner.engine = RayRollouts(learner.workers[:1])  # one worker: the embedded draws
    try:
        got = [learner.train_step() for _ in range(2)]
    finally:
        learner.engine = pool
    assert all(m["perf/bytes_moved"] > 0 for m in got)
    assert [strip(m) for m in got] == want
    pulled = learner.pull_policies()
    assert same(weights(pulled), weights(embedded.policies))
    assert same(weights({"s": pulled["searcher"]}), start[len(start) // 2 :])  # frozen
    assert not same(weights({"m": pulled["main"]}), start[: len(start) // 2])


# --------------------------------------------------------------------------- faults
def kill_mid_slice(learner: RayMGRPOTrainer, worker: int, step: threading.Thread) -> None:
    """Starts ``step``, then kills ``worker`` once its slice has sent a request (or after 5 s).

    The worker's tag and request count are read before the step starts: while the
    worker plays its slice it answers no other call.
    """
    tag = ray.get(learner.workers[worker].whoami.remote())
    main = learner.models["main"]
    before = ray.get(main.requests.remote()).get(tag, 0)
    step.start()
    deadline = time.monotonic() + 5
    while ray.get(main.requests.remote()).get(tag, 0) == before and time.monotonic() < deadline:
        time.sleep(0.002)
    ray.kill(learner.workers[worker], no_restart=False)


def keys(result) -> list[tuple]:
    return [(t.agent, t.group_id, t.rollout_id, t.invocation) for t in result.trajectories]


def test_a_worker_killed_mid_step_is_restarted_and_its_slice_rerun(main_only, caplog) -> None:
    learner = main_only
    first = ray.get(learner.workers[1].whoami.remote())
    want = learner.collect()  # this step's rollouts on the pool of 2, undisturbed
    assert learner.engine.last_restarts == []
    done: dict = {}
    step = threading.Thread(target=lambda: done.update(learner.train_step()))
    with caplog.at_level(logging.WARNING, logger="mgrpo"):
        kill_mid_slice(learner, 1, step)
        step.join(timeout=900)  # a restarted worker imports torch again: slow on loaded cores
    assert not step.is_alive(), "the step did not finish within 900 s of the kill"
    assert done["ray/worker_restarts"] == 1  # in the step's metrics ...
    n = learner.step_idx
    said = [r.getMessage() for r in caplog.records if r.name == "mgrpo"]
    assert said == [  # ... and in the run's log
        f"rollout worker 1 was restarted (restart 1 of at most 3); its slice of step {n} "
        "(queries 1..1) came from the new process, played from the same seeds and generator "
        "state, so the step's rollouts are unchanged"
    ]
    got = learner.engine.last_slices
    again = ray.get(learner.workers[1].whoami.remote())
    assert done["step"] == learner.step_idx and done["samples/main"] == 6  # the step completed
    assert again != first and got[1].incarnation == again  # slice 1 ran on the new worker
    merged = [t for s in got for t in s.result.trajectories]
    assert [keys(s.result) for s in got] == [keys(r) for r in split(want)]
    assert len(set(keys(want))) == len(keys(want))  # nothing lost, nothing twice
    for a, b in zip(merged, want.trajectories, strict=True):
        assert (a.input_ids == b.input_ids).all() and (a.old_logprobs == b.old_logprobs).all()


def test_restarts_are_counted_per_worker_from_the_process_that_played_each_slice() -> None:
    pool = RayRollouts(["w0", "w1"], incarnations=["0:a", "1:a"])

    def gather(*tags: str) -> list[WorkerRestart]:
        calls = [([10], 2, 0, None), ([11, 12], 2, 1, None)]
        done = [RolloutSlice(None, tag, 0) for tag in tags]
        return pool._restarted(Pending(calls, [], 0.0), done)

    assert gather("0:a", "1:a") == []
    assert gather("0:a", "1:b") == [WorkerRestart(1, range(1, 3), 1)]
    assert gather("0:b", "1:c") == [
        WorkerRestart(0, range(0, 1), 1),
        WorkerRestart(1, range(1, 3), 2),
    ]
    assert gather("0:b", "1:c") == [] and pool.restarts == [1, 2]
    unknown = RayRollouts(["w0"])  # no tags given: the first slice's process is the known one
    assert (
        unknown._restarted(Pending([([1], 2, 0, None)], [], 0.0), [RolloutSlice(None, "0:x", 0)])
        == []
    )
    with pytest.raises(ValueError, match=r"one incarnation per worker \(2\), got 1"):
        RayRollouts(["w0", "w1"], incarnations=["0:a"])


def split(result) -> list:
    """``result``'s trajectories cut at the slices of 2 workers."""
    parts = query_slices(len({e.group_id for e in result.episodes}), 2)
    return [
        SimpleNamespace(trajectories=[t for t in result.trajectories if t.group_id in part])
        for part in parts
    ]


def test_slices_cover_every_query_once_and_slice_zero_keeps_the_step_stream() -> None:
    assert query_slices(5, 2) == [range(0, 2), range(2, 5)]
    assert query_slices(1, 3) == [range(0, 1)]
    assert [q for r in query_slices(7, 3) for q in r] == list(range(7))
    gen = torch.Generator().manual_seed(5)
    states = slice_generator_states(gen, 3)
    assert torch.equal(states[0], gen.get_state())  # untouched: slice 0 is the embedded stream
    assert not torch.equal(states[1], states[2])


# --------------------------------------------------------------------------- store
def rows(*keys: tuple[int, int]) -> list[RolloutReward]:
    return [RolloutReward(q, k, 0.5 + q, float(k % 2), k) for q, k in keys]


def test_a_query_with_a_missing_rollout_never_enters_a_group() -> None:
    store = RayStore()
    try:
        store.expect(3, queries=2, group_size=2)
        store.add_rewards(3, rows((0, 0), (1, 0), (1, 1)))
        assert store.ready_rewards(3) == rows((1, 0), (1, 1))  # query 0 waits for rollout 1
        with pytest.raises(TimeoutError, match=r"step 3 is still missing .* \[\(0, 1\)\]"):
            store.get_rewards(3, timeout=0.05)
        store.add_rewards(3, rows((1, 1)))  # a re-run slice sends the same row again: fine
        with pytest.raises(ValueError, match="query 1 rollout 1 arrived twice with different"):
            store.add_rewards(3, [RolloutReward(1, 1, 9.0, 0.0, 1)])
        store.add_rewards(3, [], excluded=[(0, 1)])  # arrived, scored non-finite: left out
        assert store.get_rewards(3) == rows((0, 0), (1, 0), (1, 1))
        with pytest.raises(ValueError, match=r"expects queries 0..1 x rollouts 0..1, got query 2"):
            store.add_rewards(3, rows((2, 0)))
        with pytest.raises(ValueError, match=r"needs expect\(4, queries, group_size\) first"):
            store.add_rewards(4, rows((0, 0)))
        with pytest.raises(TimeoutError, match="holds no rewards of step 9"):
            store.get_rewards(9, timeout=0.0)
    finally:
        store.close()


def test_a_whole_step_put_at_once_is_read_back_and_pruned() -> None:
    book = RewardBook()  # the actor's rules, without Ray
    book.put_rewards(0, rows((0, 1), (0, 0)))
    assert book.read_rewards(0) == rows((0, 0), (0, 1)) and book.missing(0) == []
    book.put_stat(0, "d", 2.0)
    book.prune(before=1)
    assert book.read_rewards(0) is None and book.read_stat(0, "d") is None


# --------------------------------------------------------------------------- resume
def test_a_resumed_ray_run_repeats_the_uninterrupted_one(mgrpo_runs, tmp_path) -> None:
    _, _, full = mgrpo_runs
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "ckpt-000002")  # the run stopped after step 2, before its checkpoint
    assert main(["train", "--resume", str(part)]) == 0
    assert read_metrics(part) == read_metrics(full)
    assert same(weights(load_run(part).policies), weights(load_run(full).policies))
    state = torch.load(part / "ckpt-000002" / "state.pt", weights_only=False)
    assert state["step"] == 2 and set(state["optimizers"]) == {"main", "searcher"}


def test_the_ray_learner_refuses_an_embedded_config_and_unknown_resources() -> None:
    with pytest.raises(ValueError, match="runs backend='ray', got backend='embedded'"):
        RayMGRPOTrainer(MGRPOConfig(**SMALL))
    with pytest.raises(ValueError, match=r"role_resources names \['critic'\]"):
        RayMGRPOTrainer(MGRPOConfig(**SMALL, backend="ray", role_resources={"critic": {}}))
    with pytest.raises(ValueError, match=r"role_resources\['main'\]\['num_gpus'\] must be"):
        MGRPOConfig(**SMALL, backend="ray", role_resources={"main": {"num_gpus": -1}})
    with pytest.raises(ValueError, match="rollout_workers must be an int >= 1, got 0"):
        MGRPOConfig(**SMALL, backend="ray", rollout_workers=0)


# --------------------------------------------------------------------------- asynchronous
class SlowStore(MemoryStore):
    """A store that takes a second to take main's rewards, as a remote one may."""

    def put_rewards(self, step, rows) -> None:
        time.sleep(1.0)
        super().put_rewards(step, rows)


def test_sync_off_trains_on_samples_at_most_max_staleness_updates_old(tmp_path) -> None:
    # the slow store holds each update back: the next step, collected ahead, is played
    # by the worker meanwhile, with the weights before that update
    config = MGRPOConfig(**{**SMALL, "steps": 3}, backend="ray", sync="off", max_staleness=1)
    with RayMGRPOTrainer(config, tmp_path / "run", store=SlowStore()) as learner:
        history = learner.train(progress=False)
        versions = dict(learner.versions)
    assert [m["staleness/dropped"] for m in history] == [0, 0, 0]
    assert history[0]["staleness/max"] == 0  # step 0 is played before any update
    assert [m["staleness/max"] for m in history[1:]] == [1, 1]
    assert all(0 < m["staleness/mean"] <= 1 for m in history[1:])
    # a model's version counts its updates; a step without its samples does not update it
    assert versions == {
        "main": 3,
        "searcher": sum(bool(m.get("samples/searcher")) for m in history),
    }
    state = torch.load(tmp_path / "run" / "ckpt-000003" / "state.pt", weights_only=False)
    assert state["learner"]["versions"] == versions


def test_samples_staler_than_the_limit_are_dropped() -> None:
    def sample(version):
        ids = torch.zeros(3, dtype=torch.int64).numpy()
        return Trajectory(
            "main", 0, 0, 0, ids, ids.astype("int8"), ids.astype("float32"), policy_version=version
        )

    trajs = [sample(5), sample(4), sample(2), sample(None)]
    kept, ages = fresh_samples(trajs, 5, limit=1)
    assert ages == [0, 1, 3, 0] and kept == [trajs[0], trajs[1], trajs[3]]
    assert fresh_samples(trajs, 5, limit=None)[0] == trajs


def test_sync_off_is_refused_without_ray_and_max_staleness_below_one() -> None:
    with pytest.raises(ValueError, match="sync='off' .* needs backend='ray'"):
        MGRPOConfig(**SMALL, sync="off")
    with pytest.raises(ValueError, match="max_staleness must be an int >= 1, got 0"):
        MGRPOConfig(**SMALL, backend="ray", sync="off", max_staleness=0)


def test_a_killed_role_actor_stops_the_run_with_a_message_and_resume_continues(tmp_path) -> None:
    out = tmp_path / "run"
    config = MGRPOConfig(**{**SMALL, "steps": 3}, backend="ray", checkpoint_every=1)
    with RayMGRPOTrainer(config, out) as learner:
        learner.train(progress=False, on_step=lambda lr, m: lr.step_idx == 1)
        ray.kill(learner.models["main"], no_restart=True)
        with pytest.raises(RoleActorLost, match=r"'main' died at step 1 .*--resume"):
            learner.train_step()
    assert main(["train", "--resume", str(out)]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]
    assert steps == [1, 2, 3]


# --------------------------------------------------------------------------- LoRA
def nudged_views(config: MGRPOConfig) -> dict:
    """The LoRA views a run of ``config`` starts from, each adapter moved off its start.

    A fresh adapter (B = 0) never moves when there is no reward (no gradient reaches it
    and weight decay keeps B at 0): KL and loss stay 0. Moved adapters shrink under
    weight decay in the first pass, so the KL term against the starting adapters
    (and the numbers compared) gets real values in the second.
    """
    # beta 0: no reference adapters yet (the learner given these views adds its own)
    views = MGRPOTrainer(dataclasses.replace(config, backend="embedded", beta=0.0)).policies
    for i, role in enumerate(sorted(views)):
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in views[role].parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return views


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """An embedded LoRA run and the same run on Ray, from the same moved adapters."""
    pytest.importorskip("peft")
    config = MGRPOConfig(**SMALL, **KL, lora_rank=4, checkpoint_every=1)
    embedded = MGRPOTrainer(config, policies=nudged_views(config))
    history = [strip(embedded.train_step()) for _ in range(2)]
    out = tmp_path_factory.mktemp("ray-lora") / "run"
    ray_config = dataclasses.replace(config, backend="ray")
    with RayMGRPOTrainer(ray_config, out, policies=nudged_views(config)) as learner:
        learner.train(progress=False)
        moved = dict(learner.weight_bytes)
        pulled = weights(learner.pull_policies())
    return embedded, history, out, moved, pulled


def test_ray_lora_repeats_the_embedded_lora_run(lora_runs) -> None:
    embedded, history, out, _, pulled = lora_runs
    got = read_metrics(out)
    assert [m["step"] for m in got] == [1, 2]
    # rewards, samples, losses, gradient norms and the mean ratio (which the sampling
    # log-probs decide: the actor's base, loaded from files, is moved to aligned memory)
    assert got == json.loads(json.dumps(history))
    assert got[-1]["kl/main"] > 0  # (random models never call the searcher: main trains)
    assert got[-1]["loss/main"] != 0 and got[-1]["optim/grad_norm/main"] > 0
    assert same(pulled, weights(embedded.policies))  # adapters pulled from the role actors
    run = load_run(out)  # what `mgrpo eval` opens: adapters on one base
    main_view, sub_view = run.policies["main"], run.policies["searcher"]
    assert main_view.model is sub_view.model and main_view.name == "main"
    assert same(weights(run.policies), weights(embedded.policies))
    base = embedded.policies["main"].adapters.parameters(None)
    assert same([p.detach() for p in main_view.adapters.parameters(None)], base)


def test_a_ray_lora_checkpoint_holds_adapters_and_one_base(lora_runs, tmp_path) -> None:
    _, _, out, moved, _ = lora_runs
    ckpt = out / "ckpt-000002"
    listing = ["base", "config.json", "policies", "refs", "state.pt"]
    assert sorted(p.name for p in ckpt.iterdir()) == listing
    policies = ckpt / "policies"
    assert sorted(p.name for p in policies.iterdir()) == [
        "lora.json",
        "main",
        "roles.json",
        "searcher",
    ]
    base_size = (ckpt / "base" / "model.safetensors").stat().st_size
    for folder in (policies, ckpt / "refs"):  # the adapters and the KL references' adapters
        for name in ("main", "searcher"):
            files = sorted(p.name for p in (folder / name).iterdir())
            assert files == ["adapter_config.json", "adapter_model.safetensors"]
            assert (folder / name / "adapter_model.safetensors").stat().st_size < base_size / 10
    # two checkpoints of two models each came back from the actors: adapters, no model
    assert 0 < moved["exported"] < base_size
    assert base_size < moved["start"] < 1.5 * base_size  # the base sent once, not per actor
    run = load_run(out)
    saved = export(out, tmp_path / "merged")  # `mgrpo export` on a Ray checkpoint
    ids = torch.randint(8, run.policies["main"].vocab_size, (2, 10), generator=torch.Generator())
    for role in ("main", "searcher"):
        merged = HFPolicy.load(saved[role])
        with torch.no_grad():
            want = run.policies[role].logprobs(ids, torch.ones_like(ids))
            got = merged.logprobs(ids, torch.ones_like(ids))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_resumed_ray_lora_run_repeats_the_uninterrupted_one(lora_runs, tmp_path) -> None:
    _, _, full, _, _ = lora_runs
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "ckpt-000002")  # the run stopped after step 2, before its checkpoint
    assert main(["train", "--resume", str(part)]) == 0
    assert read_metrics(part) == read_metrics(full)
    assert same(weights(load_run(part).policies), weights(load_run(full).policies))
    assert (part / "ckpt-000002" / "policies" / "lora.json").is_file()
    for name in ("main", "searcher"):  # the KL reference: the run's initial adapter, kept
        ref = Path("ckpt-000002", "refs", name, "adapter_model.safetensors")
        assert (part / ref).read_bytes() == (full / ref).read_bytes()


def test_a_role_actor_given_an_adapter_needs_its_base() -> None:
    pytest.importorskip("peft")
    config = MGRPOConfig(**SMALL, lora_rank=4, backend="ray")
    state = nudged_views(config)["main"].adapters.state("main")
    with pytest.raises(ValueError, match="the adapter of 'main' needs its base model's files"):
        RoleModel("main", ["main"], state, config, trained=True)
