"""The statistics store as a Ray actor: main writes rewards, the sub-agent side reads them.

:class:`RewardBook` keeps, per step, the rows the main side published (``R_M``,
``r_correct``, ``d_k`` of each rollout; arXiv 2511.13288, sec. 3, "decoupled
training"); :class:`RayStore` is the :class:`~mgrpo_algos.store.StatsStore` a learner
holds, each call a message to one ``RewardBook`` actor, so main and sub-agent sides
in different processes or machines exchange the same rows.

A step is written in one of two ways:

- ``put_rewards(step, rows)``: the whole step at once (the ``StatsStore`` contract;
  what the learners' ``main_side`` does). A rollout left out of ``rows`` (the main
  side scored it non-finite) is out of every group.
- ``expect(step, queries, group_size)`` then ``add_rewards(step, rows, excluded)``
  piece by piece (e.g. one rollout worker's slice at a time). A query enters the
  sub-agent groups only when all K of its rollouts have arrived (or been excluded):
  ``get_rewards`` waits for the whole step and its timeout names the step and the
  missing ``(query, rollout)`` pairs; ``ready_rewards`` returns the complete queries
  so far. A piece sent twice (a slice re-run on a restarted worker) is accepted when
  its rows are the same, and refused when they differ.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import ray

from mgrpo_algos.store import RolloutReward, StatsStore, _checked_rows

Key = tuple[int, int]


class RewardBook:
    """Rows of every step kept in memory: the body of the store actor.

    Plain Python (no Ray inside), so its rules are testable without a cluster.
    """

    def __init__(self) -> None:
        self._rows: dict[int, dict[Key, RolloutReward]] = {}
        self._expected: dict[int, tuple[int, int]] = {}
        self._excluded: dict[int, set[Key]] = {}
        self._stats: dict[tuple[int, str], float] = {}

    # -------------------------------------------------------------- writes
    def put_rewards(self, step: int, rows: list[RolloutReward]) -> None:
        """The whole step (replaces it; no rollout is awaited afterwards)."""
        checked = _checked_rows(step, rows)
        self._rows[step] = {(r.query, r.rollout): r for r in checked}
        self._expected.pop(step, None)
        self._excluded.pop(step, None)

    def expect(self, step: int, queries: int, group_size: int) -> None:
        """Opens ``step`` for pieces: ``queries`` x ``group_size`` rollouts will arrive."""
        _checked_rows(step, [])
        for name, value in (("queries", queries), ("group_size", group_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self._expected[step] = (queries, group_size)
        self._rows[step] = {}
        self._excluded[step] = set()

    def add_rewards(
        self, step: int, rows: list[RolloutReward], excluded: Iterable[Key] = ()
    ) -> None:
        """Adds a piece of an expected step: rows, and rollouts that arrived without one.

        Raises:
            ValueError: The step was not opened with ``expect``, a rollout is outside
                it, or a rollout arrives again with other values.
        """
        if step not in self._expected:
            raise ValueError(
                f"add_rewards(step={step}) needs expect({step}, queries, group_size) first; "
                f"steps open for pieces: {sorted(self._expected)}"
            )
        known = self._rows[step]
        for row in _checked_rows(step, rows):
            key = (row.query, row.rollout)
            self._check_key(step, key)
            if key in known and known[key] != row:
                raise ValueError(
                    f"step {step} query {key[0]} rollout {key[1]} arrived twice with different "
                    f"rewards: {known[key]} then {row}"
                )
            known[key] = row
        for q, k in excluded:
            self._check_key(step, (int(q), int(k)))
            self._excluded[step].add((int(q), int(k)))

    def _check_key(self, step: int, key: Key) -> None:
        queries, group_size = self._expected[step]
        if not (0 <= key[0] < queries and 0 <= key[1] < group_size):
            raise ValueError(
                f"step {step} expects queries 0..{queries - 1} x rollouts 0..{group_size - 1}, "
                f"got query {key[0]} rollout {key[1]}"
            )

    def put_stat(self, step: int, name: str, value: float) -> None:
        self._stats[(step, str(name))] = float(value)

    def prune(self, before: int) -> None:
        for table in (self._rows, self._expected, self._excluded):
            for step in [s for s in table if s < before]:
                del table[step]
        self._stats = {k: v for k, v in self._stats.items() if k[0] >= before}

    # -------------------------------------------------------------- reads
    def missing(self, step: int) -> list[Key] | None:
        """The awaited ``(query, rollout)`` pairs of ``step`` (None: never written)."""
        if step not in self._rows:
            return None
        if step not in self._expected:
            return []
        queries, group_size = self._expected[step]
        arrived = set(self._rows[step]) | self._excluded[step]
        return [(q, k) for q in range(queries) for k in range(group_size) if (q, k) not in arrived]

    def read_rewards(self, step: int) -> list[RolloutReward] | None:
        """Every row of ``step`` once none is awaited, else None."""
        if self.missing(step) != []:
            return None
        return sorted(self._rows[step].values())

    def ready_rewards(self, step: int) -> list[RolloutReward]:
        """The rows of the queries of ``step`` none of whose rollouts is awaited."""
        waiting = {q for q, _ in self.missing(step) or []}
        return sorted(r for r in self._rows.get(step, {}).values() if r.query not in waiting)

    def read_stat(self, step: int, name: str) -> float | None:
        return self._stats.get((step, name))


StoreActor = ray.remote(num_cpus=0)(RewardBook)


class RayStore(StatsStore):
    """A :class:`~mgrpo_algos.store.StatsStore` whose rows live in a ``RewardBook`` actor.

    Args:
        actor: A running store actor to share (another learner's); None starts one,
            which :meth:`close` ends.

    Attributes:
        bytes_moved: Serialized bytes of the rows and statistics sent and received.
    """

    def __init__(self, actor: Any = None) -> None:
        self._owned = actor is None
        self.actor = StoreActor.remote() if actor is None else actor
        self.bytes_moved = 0

    def __repr__(self) -> str:
        return f"RayStore({self.actor!r})"

    def _call(self, method: str, *args: Any) -> Any:
        self.bytes_moved += len(pickle.dumps(args, protocol=5))
        out = ray.get(getattr(self.actor, method).remote(*args))
        self.bytes_moved += len(pickle.dumps(out, protocol=5))
        return out

    def put_rewards(self, step: int, rows: Iterable[RolloutReward]) -> None:
        self._call("put_rewards", step, list(rows))

    def expect(self, step: int, queries: int, group_size: int) -> None:
        """Opens ``step`` for pieces (see the module docstring)."""
        self._call("expect", step, queries, group_size)

    def add_rewards(
        self, step: int, rows: Iterable[RolloutReward], excluded: Iterable[Key] = ()
    ) -> None:
        """Adds a piece of an expected step (see :meth:`RewardBook.add_rewards`)."""
        self._call("add_rewards", step, list(rows), [tuple(k) for k in excluded])

    def ready_rewards(self, step: int) -> list[RolloutReward]:
        """The rows of the queries of ``step`` that no rollout is missing from."""
        return self._call("ready_rewards", step)

    def _read_rewards(self, step: int) -> list[RolloutReward] | None:
        return self._call("read_rewards", step)

    def get_rewards(self, step: int, timeout: float = 0.0) -> list[RolloutReward]:
        """The rows of ``step``, once every expected rollout has arrived.

        Raises:
            TimeoutError: After ``timeout`` seconds, naming the step and the missing
                ``(query, rollout)`` pairs (or saying the step was never written).
        """
        try:
            return super().get_rewards(step, timeout)
        except TimeoutError:
            missing = self._call("missing", step)
            if not missing:
                raise
            queries = sorted({q for q, _ in missing})
            raise TimeoutError(
                f"step {step} is still missing rollouts (query, rollout) {missing} after "
                f"waiting {timeout:g} s; queries {queries} stay out of the sub-agent groups "
                "until all their rollouts arrive"
            ) from None

    def put_stat(self, step: int, name: str, value: float) -> None:
        self._call("put_stat", step, name, value)

    def _read_stat(self, step: int, name: str) -> float | None:
        return self._call("read_stat", step, name)

    def prune(self, before: int) -> None:
        self._call("prune", before)

    def close(self) -> None:
        """Ends the store actor if this client started it."""
        if self._owned:
            ray.kill(self.actor)
            self._owned = False
