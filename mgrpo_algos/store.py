"""The shared statistics store: how the main and sub-agent sides exchange rewards.

M-GRPO trains each agent on its own (arXiv 2511.13288, sec. 3, "decoupled
training"): only rewards and a few statistics pass between the agents' learners.
The main side writes, for every rollout of a step, its reward ``R_M``, its
correctness (copied into every sub-call's ``R_S`` as ``r_correct_main``) and its
number of sub-agent calls ``d_k``; the sub-agent side reads them, computes its own
rewards and advantages, and updates. The same exchange runs in one process
(:class:`MemoryStore`) and across processes or machines sharing a file
(:class:`SQLiteStore`).

Writes are per step and atomic: a reader sees all of a step's rows or none, and
writing a step again (a resumed run repeating it) replaces its rows.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class RolloutReward(NamedTuple):
    """What the main side publishes about one rollout.

    Attributes:
        query: The query (``group_id``) within the step.
        rollout: Which of the query's K rollouts.
        reward: ``R_M`` of the rollout.
        correct: ``r_correct`` of the main agent (0 or 1), the ``b2`` term of ``R_S``.
        num_invocations: ``d_k``, the sub-agent calls main made in the rollout.
    """

    query: int
    rollout: int
    reward: float
    correct: float
    num_invocations: int


class StoreError(RuntimeError):
    """A store's backing file cannot be used (corrupt, unwritable, or always locked)."""


class StatsStore(ABC):
    """Rewards keyed by (step, query, rollout), plus named per-step statistics.

    ``put_*`` calls replace what a step held before; ``get_*`` calls wait up to
    ``timeout`` seconds for a step another process has not written yet, then raise
    ``TimeoutError`` (``timeout=0``: look once).
    """

    poll_seconds: float = 0.01

    @abstractmethod
    def put_rewards(self, step: int, rows: Iterable[RolloutReward]) -> None:
        """Publishes the rewards of every rollout of ``step`` (replacing earlier ones)."""

    @abstractmethod
    def _read_rewards(self, step: int) -> list[RolloutReward] | None:
        """The rows of ``step`` sorted by (query, rollout), or None if it was never written."""

    @abstractmethod
    def put_stat(self, step: int, name: str, value: float) -> None:
        """Publishes one named statistic of ``step`` (e.g. the alignment width ``d``)."""

    @abstractmethod
    def _read_stat(self, step: int, name: str) -> float | None:
        """The statistic, or None if it was never written."""

    @abstractmethod
    def prune(self, before: int) -> None:
        """Forgets every step ``< before`` (the readers are done with them)."""

    @abstractmethod
    def close(self) -> None:
        """Releases the store's resources."""

    def get_rewards(self, step: int, timeout: float = 0.0) -> list[RolloutReward]:
        """The rows of ``step`` sorted by (query, rollout), waiting for them if needed."""
        return self._wait(lambda: self._read_rewards(step), timeout, f"rewards of step {step}")

    def get_stat(self, step: int, name: str, timeout: float = 0.0) -> float:
        """The statistic ``name`` of ``step``, waiting for it if needed."""
        return self._wait(lambda: self._read_stat(step, name), timeout, f"{name!r} of step {step}")

    def _wait(self, read: Callable[[], T | None], timeout: float, what: str) -> T:
        if not (isinstance(timeout, (int, float)) and timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        deadline = time.monotonic() + timeout
        while True:
            value = read()
            if value is not None:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self!r} holds no {what} after waiting {timeout:g} s; "
                    "has the main side written it (put_rewards / put_stat)?"
                )
            time.sleep(self.poll_seconds)

    def __enter__(self) -> StatsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _checked_rows(step: int, rows: Iterable[RolloutReward]) -> list[RolloutReward]:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    out = [RolloutReward(int(q), int(k), float(r), float(c), int(d)) for q, k, r, c, d in rows]
    keys = [(r.query, r.rollout) for r in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"each (query, rollout) may appear once per step, got {keys}")
    return sorted(out)


class MemoryStore(StatsStore):
    """The store of the embedded default: every agent's learner in one process."""

    def __init__(self) -> None:
        self._rewards: dict[int, list[RolloutReward]] = {}
        self._stats: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "MemoryStore()"

    def put_rewards(self, step: int, rows: Iterable[RolloutReward]) -> None:
        checked = _checked_rows(step, rows)
        with self._lock:
            self._rewards[step] = checked

    def _read_rewards(self, step: int) -> list[RolloutReward] | None:
        with self._lock:
            rows = self._rewards.get(step)
        return None if rows is None else list(rows)

    def put_stat(self, step: int, name: str, value: float) -> None:
        with self._lock:
            self._stats[(step, str(name))] = float(value)

    def _read_stat(self, step: int, name: str) -> float | None:
        with self._lock:
            return self._stats.get((step, name))

    def prune(self, before: int) -> None:
        with self._lock:
            self._rewards = {s: r for s, r in self._rewards.items() if s >= before}
            self._stats = {k: v for k, v in self._stats.items() if k[0] >= before}

    def close(self) -> None:
        """Nothing to release: the store lives as long as the object."""


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS rewards (step INTEGER, query INTEGER, rollout INTEGER, "
    "reward REAL, correct REAL, num_invocations INTEGER, PRIMARY KEY (step, query, rollout))",
    "CREATE TABLE IF NOT EXISTS stats (step INTEGER, name TEXT, value REAL, "
    "PRIMARY KEY (step, name))",
)


def _is_busy(err: sqlite3.Error) -> bool:
    text = str(err).lower()
    return isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class SQLiteStore(StatsStore):
    """A store in one SQLite file, safe to share between processes on one file system.

    The file is in WAL mode (readers never block the writer). A statement that meets
    a locked database is retried with exponential backoff (``retries`` times,
    starting at ``backoff`` seconds) on top of SQLite's own ``busy_timeout``. A
    store pickles as its settings, so a worker process opens its own connection.

    Args:
        path: The database file (created, with its parent directory, if missing).
        busy_timeout: Seconds SQLite itself waits on a lock per statement.
        retries: Further tries of a statement that still found the database locked.
        backoff: First wait between tries (doubled each time).

    Raises:
        StoreError: The file is not a SQLite database (corrupt, or another kind of
            file), or it cannot be created or written; the message names the path.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        retries: int = 8,
        backoff: float = 0.01,
    ) -> None:
        if not (busy_timeout >= 0 and backoff > 0 and isinstance(retries, int) and retries >= 0):
            raise ValueError(
                "busy_timeout must be >= 0, backoff > 0 and retries an int >= 0; got "
                f"{busy_timeout!r}, {backoff!r}, {retries!r}"
            )
        self.path = Path(path)
        self.busy_timeout, self.retries, self.backoff = busy_timeout, retries, backoff
        self._lock = threading.Lock()
        self._conn = self._open()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _reopen,
            (str(self.path), self.busy_timeout, self.retries, self.backoff),
        )

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the directory of the store {str(self.path)!r}: {err}; "
                "give a path in a writable directory"
            ) from err
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit; transactions are explicit below
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise self._error(err) from err
        self._conn = conn
        try:
            self._run(self._init_schema)
        except StoreError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _init_schema(cur: sqlite3.Cursor) -> None:
        mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"WAL journal mode is not available (got {mode!r})")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            cur.execute(statement)
        cur.execute("COMMIT")

    def _error(self, err: sqlite3.Error) -> StoreError:
        text = str(err).lower()
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return StoreError(
                f"the store {str(self.path)!r} is not a readable SQLite database "
                f"(corrupt, or another kind of file): {err}; delete it or give another path"
            )
        if "readonly" in text or "unable to open" in text or "disk i/o" in text:
            return StoreError(
                f"the store {str(self.path)!r} cannot be opened for writing: {err}; "
                "give a path to a writable file"
            )
        if _is_busy(err):
            return StoreError(
                f"the store {str(self.path)!r} stayed locked through {self.retries} retries: "
                f"{err}; another process holds a write transaction open"
            )
        return StoreError(f"the store {str(self.path)!r} failed: {err}")

    def _run(self, body: Callable[[sqlite3.Cursor], T]) -> T:
        """Runs ``body`` on a cursor, retrying with backoff while the database is locked."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            with self._lock:
                cur = self._conn.cursor()
                try:
                    return body(cur)
                except sqlite3.Error as err:
                    if self._conn.in_transaction:
                        self._conn.rollback()
                    if not _is_busy(err) or attempt == self.retries:
                        raise self._error(err) from err
                finally:
                    cur.close()
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    def put_rewards(self, step: int, rows: Iterable[RolloutReward]) -> None:
        checked = _checked_rows(step, rows)

        def write(cur: sqlite3.Cursor) -> None:
            cur.execute("BEGIN IMMEDIATE")
            cur.execute("DELETE FROM rewards WHERE step = ?", (step,))
            cur.executemany(
                "INSERT INTO rewards VALUES (?, ?, ?, ?, ?, ?)",
                [(step, *row) for row in checked],
            )
            cur.execute("INSERT OR REPLACE INTO steps VALUES (?)", (step,))
            cur.execute("COMMIT")

        self._run(write)

    def _read_rewards(self, step: int) -> list[RolloutReward] | None:
        def read(cur: sqlite3.Cursor) -> list[RolloutReward] | None:
            cur.execute("BEGIN")  # one snapshot for both reads
            written = cur.execute("SELECT 1 FROM steps WHERE step = ?", (step,)).fetchone()
            rows = cur.execute(
                "SELECT query, rollout, reward, correct, num_invocations FROM rewards "
                "WHERE step = ? ORDER BY query, rollout",
                (step,),
            ).fetchall()
            cur.execute("COMMIT")
            return [RolloutReward(*r) for r in rows] if written else None

        return self._run(read)

    def put_stat(self, step: int, name: str, value: float) -> None:
        self._run(
            lambda cur: cur.execute(
                "INSERT OR REPLACE INTO stats VALUES (?, ?, ?)", (step, str(name), float(value))
            )
        )

    def _read_stat(self, step: int, name: str) -> float | None:
        row = self._run(
            lambda cur: cur.execute(
                "SELECT value FROM stats WHERE step = ? AND name = ?", (step, name)
            ).fetchone()
        )
        return None if row is None else float(row[0])

    def prune(self, before: int) -> None:
        def delete(cur: sqlite3.Cursor) -> None:
            cur.execute("BEGIN IMMEDIATE")
            for table in ("steps", "rewards", "stats"):
                cur.execute(f"DELETE FROM {table} WHERE step < ?", (before,))
            cur.execute("COMMIT")

        self._run(delete)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _reopen(path: str, busy_timeout: float, retries: int, backoff: float) -> SQLiteStore:
    return SQLiteStore(path, busy_timeout=busy_timeout, retries=retries, backoff=backoff)
