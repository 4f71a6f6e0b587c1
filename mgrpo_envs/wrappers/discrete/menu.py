"""The menu from the episode's ``admissible_calls`` hook, and what both menus share.

For an env built on the core whose episode implements
:meth:`~mgrpo_envs.core.task.Episode.admissible_calls`, the menu holds exactly
the calls the hook gives for every sub-agent role over the episode's events, with
main's ``calculate`` and ``answer`` calls from
:func:`~mgrpo_envs.core.env.main_admissible_calls`: no prompt text is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mgrpo_envs.core.codecs import ActionCodec, ToolCall
from mgrpo_envs.core.env import RETURN_TOOL, HierarchicalToolEnv, main_admissible_calls


@dataclass(frozen=True)
class Entry:
    """One filled menu slot: the call, its text, and the candidate values it uses."""

    call: ToolCall
    text: str
    values: tuple[str, ...]


def core_view(text_env: Any) -> Any | None:
    """The core's single-agent view under ``text_env``, or None for another text env.

    The view runs a core env (``hier``) and tells its tools (``tool_schemas``), the
    names it gives a role's tools (``view_name``) and the episode's events as a
    role's scripts read them (``role_events``).
    """
    view = getattr(text_env, "unwrapped", text_env)
    needed = ("tool_schemas", "view_name", "role_events")
    if isinstance(getattr(view, "hier", None), HierarchicalToolEnv) and all(
        hasattr(type(view), name) for name in needed
    ):
        return view
    return None


def core_calls(view: Any, computed: Sequence[str]) -> list[ToolCall] | None:
    """Every role's admissible calls (by the view's tool names), then main's; None when
    the episode has no hook.

    Main was given the values of the facts found: a fact is found when the
    expert's call for it is ``return`` (as the view's own expert reads it).

    Args:
        view: The core's single-agent view (:func:`core_view`), after ``reset``.
        computed: The calculator's results so far.
    """
    episode, roles = view.hier.episode, view.hier.task.roles
    assert episode is not None, "reset the env first"
    calls: list[ToolCall] = []
    for role in roles:
        mine = episode.admissible_calls(role, view.role_events(role))
        if mine is None:
            return None
        calls += [ToolCall(view.view_name(role, c.name), c.arguments) for c in mine]
    expert = (episode.sub_oracle(f.role, f, view.role_events(f.role)) for f in episode.facts)
    results = [c.args["result"] for c in expert if c.name == RETURN_TOOL]
    return calls + main_admissible_calls(episode, roles, results, computed)


def hook_menu(
    calls: Sequence[ToolCall],
    sections: dict[str, tuple[str, ...]],
    codec: ActionCodec,
    slots_per_tool: int,
) -> list[Entry | None]:
    """The menu of ``calls``: each section holds its tool's calls, padded with empty slots.

    A section keeps its tool's first ``slots_per_tool`` calls (the hook puts the
    expert's first) and orders them by their text, so that where a call sits tells
    nothing of whether it is the expert's. Calls of other tools, with other
    arguments, or that the codec cannot write are left out.
    """
    menu: list[Entry | None] = []
    for name, args in sections.items():
        entries: dict[str, Entry] = {}
        for call in calls:
            given = call.args
            if call.name != name or sorted(given) != sorted(args):
                continue
            values = tuple(given[a] for a in args)
            ordered = ToolCall(name, tuple(zip(args, values, strict=True)))
            try:
                text = codec.format(ordered)
            except ValueError:  # e.g. a value with a '|' in a multi-argument tool
                continue
            entries.setdefault(text, Entry(ordered, text, values))
            if len(entries) == slots_per_tool:
                break
        kept = sorted(entries.values(), key=lambda e: e.text)
        menu += [*kept, *[None] * (slots_per_tool - len(kept))]
    return menu
