"""The shared statistics store: in memory, and SQLite across processes."""

from __future__ import annotations

import multiprocessing
import pickle
import sqlite3
import threading
import time

import pytest

from mgrpo_algos.store import MemoryStore, RolloutReward, SQLiteStore, StatsStore, StoreError

ROWS = [RolloutReward(1, 0, 0.9, 1.0, 2), RolloutReward(0, 1, 0.0, 0.0, 0), (0, 0, 0.1, 0.0, 3)]


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> StatsStore:
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


def test_rewards_round_trip_sorted_and_a_rewrite_replaces_the_step(store) -> None:
    store.put_rewards(3, ROWS)
    got = store.get_rewards(3)
    assert [(r.query, r.rollout) for r in got] == [(0, 0), (0, 1), (1, 0)]
    assert got[0] == RolloutReward(0, 0, 0.1, 0.0, 3) and isinstance(got[0].num_invocations, int)
    store.put_rewards(3, [RolloutReward(5, 5, 1.0, 1.0, 1)])  # a resumed run repeats step 3
    assert store.get_rewards(3) == [RolloutReward(5, 5, 1.0, 1.0, 1)]
    store.put_rewards(4, [])  # a step may be written empty, and is then not missing
    assert store.get_rewards(4) == []


def test_statistics_missing_steps_and_pruning(store) -> None:
    store.put_stat(2, "d", 3)
    assert store.get_stat(2, "d") == 3.0
    with pytest.raises(TimeoutError, match=r"no 'd' of step 5 after waiting 0 s"):
        store.get_stat(5, "d")
    with pytest.raises(TimeoutError, match="no rewards of step 7 after waiting 0.05 s"):
        store.get_rewards(7, timeout=0.05)
    store.put_rewards(1, ROWS)
    store.put_rewards(2, ROWS)
    store.prune(before=2)
    with pytest.raises(TimeoutError):
        store.get_rewards(1)
    assert len(store.get_rewards(2)) == 3 and store.get_stat(2, "d") == 3.0


def test_bad_rows_are_refused(store) -> None:
    with pytest.raises(ValueError, match=r"each \(query, rollout\) may appear once per step"):
        store.put_rewards(0, [ROWS[0], ROWS[0]])
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        store.put_rewards(-1, ROWS)
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        store.get_rewards(0, timeout=-1)


# --------------------------------------------------------------------------- processes


def _write_later(store: SQLiteStore, steps: int, delay: float) -> None:
    time.sleep(delay)  # the reader is already waiting
    for step in range(steps):
        store.put_rewards(
            step, [RolloutReward(q, k, q + k / 10, k % 2, q) for q in range(3) for k in range(2)]
        )
        store.put_stat(step, "d", step + 1)


def _read_waiting(path: str, steps: int, out: multiprocessing.Queue) -> None:
    store = SQLiteStore(path)
    out.put(
        [
            (store.get_rewards(s, timeout=60), store.get_stat(s, "d", timeout=60))
            for s in range(steps)
        ]
    )


def test_one_process_writes_and_another_waits_for_it(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "shared" / "store.db"
    writer_store = SQLiteStore(path)
    queue = ctx.Queue()
    reader = ctx.Process(target=_read_waiting, args=(str(path), 3, queue))
    reader.start()
    # the writer runs in a second process too, and gets the store by pickling
    writer = ctx.Process(target=_write_later, args=(writer_store, 3, 0.3))
    writer.start()
    got = queue.get(timeout=120)
    writer.join(60)
    reader.join(60)
    assert writer.exitcode == 0 and reader.exitcode == 0
    assert [d for _, d in got] == [1.0, 2.0, 3.0]
    rows = got[2][0]
    assert len(rows) == 6 and rows[3] == RolloutReward(1, 1, 1.1, 1.0, 1)
    assert writer_store.get_rewards(2) == rows  # and this process sees the same rows


def test_a_store_pickles_as_its_settings(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=0.5, retries=2, backoff=0.02)
    store.put_rewards(0, ROWS)
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.path, copy.busy_timeout, copy.retries, copy.backoff) == (store.path, 0.5, 2, 0.02)
    assert copy.get_rewards(0) == store.get_rewards(0)


# --------------------------------------------------------------------------- failures


def _hold_write_lock(path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_locked_database_is_retried_with_backoff(tmp_path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout=0, retries=10, backoff=0.01)
    holder = _hold_write_lock(path)
    threading.Timer(0.1, holder.rollback).start()  # released during the retries
    t0 = time.monotonic()
    store.put_rewards(0, ROWS)
    assert time.monotonic() - t0 >= 0.1
    assert len(store.get_rewards(0)) == 3
    holder.close()


def test_a_database_that_stays_locked_is_named(tmp_path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout=0, retries=2, backoff=0.001)
    holder = _hold_write_lock(path)
    with pytest.raises(StoreError, match=r"s\.db' stayed locked through 2 retries"):
        store.put_rewards(0, ROWS)
    holder.rollback()
    store.put_rewards(0, ROWS)  # nothing was left half-done
    assert len(store.get_rewards(0)) == 3
    holder.close()


def test_a_corrupt_file_is_named(tmp_path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"corrupt\.db' is not a readable SQLite database"):
        SQLiteStore(path)


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_an_unwritable_path_is_named(tmp_path, where) -> None:
    (tmp_path / "plain").write_text("a file, not a directory")
    path = tmp_path / "plain" / "s.db" if where == "under_a_file" else tmp_path
    with pytest.raises(StoreError, match=str(path).replace(".", r"\.")):
        SQLiteStore(path)


def test_bad_settings_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="retries an int >= 0"):
        SQLiteStore(tmp_path / "s.db", retries=-1)
