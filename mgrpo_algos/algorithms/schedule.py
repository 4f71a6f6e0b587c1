"""Which models an M-GRPO run trains, and when: ``algo`` and ``schedule``.

``trained_groups`` maps ``algo`` to optimisers and the roles each trains on;
``scheduled_groups`` says which of them step at a given step under ``schedule``
(``joint``: all, the paper's; ``alternate:N``: main's for N steps, then the others'
for N steps, and so on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from mgrpo_algos.buffer import MAIN

Algo = Literal["mgrpo", "main-only", "shared"]
ALGOS: tuple[str, ...] = get_args(Algo)


def alternation(schedule: str) -> int:
    """N of ``alternate:N`` (0 for ``joint``).

    Raises:
        ValueError: For any other schedule, naming the two forms.
    """
    if schedule == "joint":
        return 0
    kind, _, n = str(schedule).partition(":")
    if kind == "alternate" and n.isdigit() and int(n) >= 1:
        return int(n)
    raise ValueError(f"schedule must be 'joint' or 'alternate:N' with N >= 1, got {schedule!r}")


def scheduled_groups(schedule: str, step: int, groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The optimisers that step at ``step`` (0-based) under ``schedule``.

    ``alternate:N``: steps ``0 .. N-1`` train the models that play main, steps
    ``N .. 2N-1`` the others, and so on.
    """
    n = alternation(schedule)
    if not n:
        return list(groups)
    main_phase = (step // n) % 2 == 0
    return [name for name, roles in groups.items() if (MAIN in roles) == main_phase]


def trained_groups(algo: str, roles: Sequence[str]) -> dict[str, list[str]]:
    """Optimiser name -> the roles whose samples it trains on.

    ``mgrpo``: one optimiser per role; ``main-only``: main's alone (the sub-agents
    are frozen); ``shared``: one optimiser, every role.
    """
    if algo == "mgrpo":
        return {role: [role] for role in roles}
    elif algo == "main-only":
        return {MAIN: [MAIN]}
    elif algo == "shared":
        return {"shared": list(roles)}
    else:
        raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")
