"""The discrete view: ``Discrete(n)`` actions over a menu of admissible tool calls.

Classic RL learners (stable-baselines3's PPO and A2C, for example) need a finite
action space and a fixed-size numeric observation. This view wraps the single-agent
view of any env built on the core (one agent, every tool, no delegation) and, at
every step, builds a bounded *menu* of tool calls; the action is an index into it.

Menu (``n = tools * slots_per_tool``)
    One section of ``slots_per_tool`` slots per tool of the single-agent view (every
    role's tools, then ``calculate`` and ``answer``); the section of a tool always
    holds calls of that tool.

    When the episode implements the task hook
    :meth:`~mgrpo_envs.core.task.Episode.admissible_calls` (every built-in task
    does), the menu holds the calls it gives for each role over the episode's
    events, with main's calculations and answers from
    :func:`~mgrpo_envs.core.env.main_admissible_calls` (the episode's calculation
    once every fact is found, answers made of the values found), each section in
    the order of its calls' texts (:mod:`.menu`). No prompt text is read, and the
    expert's call is in the menu at every step by the hook's contract.

    When the hook returns None (an episode without it), or the wrapped env is not
    built on the core, the menu falls back to text heuristics that read candidate
    calls from the observations (:mod:`.text_menu`, with :mod:`.parsing` and
    :mod:`.notes`); there ``oracle_index()`` may be None (the expert's call is not
    in the menu).

Empty slots
    A section with fewer calls than slots is padded with empty slots. Choosing one
    sends an empty text to the env, which answers with an error message and counts
    the turn (and the malformed output in ``r_format``), as for any bad text action;
    it never raises. ``action_masks()`` (also ``info["action_mask"]``) marks the
    filled slots, for learners that mask actions.

Observation (``Box(0, 1, float32)``, :mod:`.features`)
    ``hash_dims`` hashed bag-of-words bits of the question and ``hash_dims`` of the
    latest observation, four scalars (turn and context budget used, the latest
    observation is an error, it is a listing of several lines), a one-hot of the
    section of the previous action, and five features per slot: filled, uses a
    candidate of the latest output, of the question, of a one-line output, and
    already chosen this episode.

Rewards, episode end and seeding are those of the wrapped view: ``reset(seed=s)``
plays the same episode as the single-agent view's ``reset(seed=s)``.
``info["action_text"]`` is the text that was sent, ``info["observation_text"]`` the
text that came back.
"""

from mgrpo_envs.wrappers.discrete.features import SCALARS, SLOT_FEATURES
from mgrpo_envs.wrappers.discrete.menu import Entry, hook_menu
from mgrpo_envs.wrappers.discrete.parsing import (
    ANSWER,
    CALCULATE,
    Table,
    by_distance,
    clause_bounds,
    condition_operators,
    description_words,
    extract_candidates,
    label_ties,
    labelled_lines,
    listed_values,
    name_spans,
    named_in,
    names_word,
    parse_tables,
    parse_tool_list,
    task_text,
)
from mgrpo_envs.wrappers.discrete.text_menu import TextMenu
from mgrpo_envs.wrappers.discrete.view import DiscreteToolEnv

__all__ = [
    "ANSWER",
    "CALCULATE",
    "SCALARS",
    "SLOT_FEATURES",
    "DiscreteToolEnv",
    "Entry",
    "Table",
    "TextMenu",
    "by_distance",
    "clause_bounds",
    "condition_operators",
    "description_words",
    "extract_candidates",
    "hook_menu",
    "label_ties",
    "labelled_lines",
    "listed_values",
    "name_spans",
    "named_in",
    "names_word",
    "parse_tables",
    "parse_tool_list",
    "task_text",
]
