"""The trajectory records and the rollout buffer, with hand-built trajectories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrpo_algos.buffer import RolloutBuffer, Trajectory, collate, minibatches, subtask_key


def traj(
    agent="main",
    group=0,
    rollout=0,
    invocation=0,
    ids=(5, 6, 7),
    mask=(0, 1, 1),
    lp=(0.0, -1.0, -2.0),
    reward=1.0,
    advantage=0.0,
) -> Trajectory:
    return Trajectory(
        agent=agent,
        group_id=group,
        rollout_id=rollout,
        invocation=invocation,
        input_ids=np.array(ids, dtype=np.int64),
        action_mask=np.array(mask, dtype=np.int8),
        old_logprobs=np.array(lp, dtype=np.float32),
        reward=reward,
        advantage=advantage,
    )


def test_collate_pads_right_and_shifts_to_next_token_layout() -> None:
    a = traj(ids=(5, 6, 7), mask=(0, 1, 1), lp=(0.0, -1.0, -2.0), advantage=0.5)
    b = traj(ids=(8, 9), mask=(0, 1), lp=(0.0, -3.0), reward=0.0, advantage=-0.5)
    batch = collate([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    # position t of the (B, T-1) tensors predicts token t + 1
    assert batch.action_mask.tolist() == [[1, 1], [1, 0]]
    assert batch.old_logprobs.tolist() == [[-1.0, -2.0], [-3.0, 0.0]]
    assert batch.ref_logprobs is None
    assert batch.advantages.tolist() == [0.5, -0.5]
    assert batch.rewards.tolist() == [1.0, 0.0]
    assert batch.input_ids.dtype == torch.int64


def test_collate_carries_reference_logprobs_when_every_record_has_them() -> None:
    a = traj().replace(ref_logprobs=np.array([0.0, -1.5, -2.5], dtype=np.float32))
    assert collate([a], 0).ref_logprobs.tolist() == [[-1.5, -2.5]]
    assert collate([a, traj()], 0).ref_logprobs is None


def test_records_are_validated_and_immutable() -> None:
    with pytest.raises(ValueError, match="action_mask has length 2, expected 3"):
        traj(mask=(0, 1))
    t = traj()
    u = t.replace(advantage=2.0)
    assert t.advantage == 0.0 and u.advantage == 2.0
    with pytest.raises(AttributeError):
        t.advantage = 1.0  # type: ignore[misc]
    assert t.num_tokens == 3 and t.num_generated == 2


def test_buffer_groups_by_query_and_agent() -> None:
    buf = RolloutBuffer()
    buf.extend(
        [
            traj("main", 0, 0),
            traj("searcher", 0, 0, 0),
            traj("searcher", 0, 0, 1),
            traj("main", 1, 0),
            traj("main", 0, 1),
            traj("searcher", 1, 0, 0),
        ]
    )
    assert len(buf) == 6 and buf.agents == ["main", "searcher"]
    groups = buf.groups("searcher")
    assert list(groups) == [("searcher", 0), ("searcher", 1)]
    assert [t.invocation for t in groups[("searcher", 0)]] == [0, 1]
    assert [t.rollout_id for t in buf.groups("main")[("main", 0)]] == [0, 1]
    assert list(buf.groups()) == [("main", 0), ("searcher", 0), ("main", 1), ("searcher", 1)]
    assert buf.group_index().tolist() == [0, 1, 1, 2, 0, 3]
    assert buf.collate("main", 0).input_ids.shape == (3, 3)
    with pytest.raises(TypeError, match="add\\(\\) takes a Trajectory, got dict"):
        buf.add({})  # type: ignore[arg-type]
    buf.reset()
    assert len(buf) == 0


def test_minibatches_respect_the_token_budget() -> None:
    ts = [traj(ids=(1,) * n, mask=(1,) * n, lp=(0.0,) * n) for n in (2, 2, 3, 5, 5)]
    chunks = list(minibatches(ts, max_tokens=6))
    assert [[t.num_tokens for t in c] for c in chunks] == [[2, 2], [3], [5], [5]]
    assert all(max(t.num_tokens for t in c) * len(c) <= 6 for c in chunks)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        list(minibatches(ts, 0))


def test_groups_by_subtask_split_a_sub_agent_s_query_group_never_main_s() -> None:
    calls = [("Capital of Bree.", 1.0), ("capital of  bree", 0.0), ("height of Tor", 0.5)]
    subs = [
        traj("searcher", 0, k, 0, reward=r).replace(subtask=sub) for k, (sub, r) in enumerate(calls)
    ]
    mains = [traj("main", 0, k, reward=float(k)).replace(subtask="ignored") for k in range(2)]
    buf = RolloutBuffer([*mains, *subs])
    assert list(buf.groups(by="subtask")) == [
        ("main", 0),
        ("searcher", 0, "capital of bree"),
        ("searcher", 0, "height of tor"),
    ]
    assert subtask_key("  Capital, of BREE! ") == "capital of bree"
    by_query = buf.with_advantages("group")
    by_subtask = buf.with_advantages("group", by="subtask")
    # searcher/q0 by query: (1, 0, 0.5) -> z (1.2247, -1.2247, 0); by subtask: (1, 0) -> (1, -1)
    assert [t.advantage for t in by_query.get("searcher")] == pytest.approx(
        [1.2247449, -1.2247449, 0.0]
    )
    assert [t.advantage for t in by_subtask.get("searcher")] == pytest.approx([1.0, -1.0, 0.0])
    assert [t.advantage for t in by_subtask.get("main")] == pytest.approx([-1.0, 1.0])
    assert all(t.advantage == 0.0 for t in buf)  # the buffer itself is never edited
    assert buf.all_equal_groups() == 0 and buf.all_equal_groups(by="subtask") == 1
    with pytest.raises(ValueError, match=r"by must be one of \['query', 'subtask'\], got 'role'"):
        buf.groups(by="role")  # type: ignore[arg-type]
