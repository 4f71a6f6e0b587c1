"""The discrete view's observation: a fixed-size vector in ``[0, 1]``.

``hash_dims`` hashed bag-of-words bits of the question and ``hash_dims`` of the
latest observation, the :data:`SCALARS`, a one-hot of the section of the previous
action, and the :data:`SLOT_FEATURES` of every slot.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from typing import Any

import numpy as np

from mgrpo_envs.wrappers.discrete.menu import Entry
from mgrpo_envs.wrappers.discrete.text_menu import TextMenu

#: Per slot: filled, uses a candidate of the latest output, of the question, of a
#: one-line output, and was already chosen this episode.
SLOT_FEATURES = ("filled", "in_latest", "in_task", "in_record", "taken")
#: Turn and context budget used, the latest observation is an error, it is a listing.
SCALARS = ("turn_used", "context_used", "error", "listing")
_WORD = re.compile(r"[a-z]+|\d+")


def hash_words(text: str, dims: int) -> np.ndarray:
    """Hashed bag-of-words presence bits (crc32: the same in every process)."""
    out = np.zeros(dims, dtype=np.float32)
    for word in set(_WORD.findall(text.lower())):
        out[zlib.crc32(word.encode()) % dims] = 1.0
    return out


def slot_features(menu: list[Entry | None], reader: TextMenu, taken: Counter[str]) -> np.ndarray:
    """The :data:`SLOT_FEATURES` of every slot, flattened: ``(slots * 5,)``."""
    latest, task, record = reader.value_sets()
    empty = (0.0,) * len(SLOT_FEATURES)
    rows = [
        empty
        if entry is None
        else (
            1.0,
            not latest.isdisjoint(entry.values),
            not task.isdisjoint(entry.values),
            not record.isdisjoint(entry.values),
            taken[entry.text] > 0,
        )
        for entry in menu
    ]
    return np.array(rows, dtype=np.float32).reshape(-1)


def budget_used(info: dict[str, Any], key: str, budget: str) -> float:
    """The share of a budget used (``info[key] / info[budget]``, clipped to [0, 1])."""
    total = info.get(budget) or 0
    return float(np.clip(info.get(key, 0) / total, 0.0, 1.0)) if total else 0.0


def observation_vector(
    info: dict[str, Any],
    reader: TextMenu,
    menu: list[Entry | None],
    taken: Counter[str],
    last_section: int | None,
    sections: int,
    hash_dims: int,
) -> np.ndarray:
    """The whole observation (see the module docstring).

    Args:
        info: The wrapped view's info (turn and context budgets).
        reader: What the observations' text said.
        menu: The menu now.
        taken: How often each call text was sent this episode.
        last_section: The section of the previous action (None before the first).
        sections: The number of sections.
        hash_dims: Hashed bag-of-words size.
    """
    last = np.zeros(sections, dtype=np.float32)
    if last_section is not None:
        last[last_section] = 1.0
    scalars = np.array(
        [
            budget_used(info, "turn", "turn_budget"),
            budget_used(info, "context_chars", "context_budget"),
            float(reader.error),
            float("\n" in reader.latest_text.strip()),
        ],
        dtype=np.float32,
    )
    return np.concatenate(
        [
            hash_words(reader.task_text, hash_dims),
            hash_words(reader.latest_text, hash_dims),
            scalars,
            last,
            slot_features(menu, reader, taken),
        ]
    )
