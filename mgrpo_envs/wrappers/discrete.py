"""The discrete view: ``Discrete(n)`` actions over a menu of admissible tool calls.

Classic RL learners (stable-baselines3's PPO and A2C, for example) need a finite
action space and a fixed-size numeric observation. This view wraps the single-agent
view of any env built on the core (one agent, every tool, no delegation) and, at
every step, builds a bounded *menu* of tool calls from what the agent has seen; the
action is an index into it.

Menu (``n = tools * slots_per_tool``)
    One section of ``slots_per_tool`` slots per tool, in the order of the tool list
    of the first observation; the section of a tool always holds calls of that tool.
    The tools and their argument names are read from that tool list (as every env
    built on the core prints it, in either codec), and arguments are filled with
    *candidates* read from the text seen so far: identifiers with a digit
    (``d12``), numbers, and capitalised phrases (``Silver Harbor``, ``Department
    of Physics``), taken from the question (the task text of the first
    observation) and from every tool output that was not an error. Candidates are
    ranked: those of the latest tool output in reading order, then those of the
    question, then older ones (those seen in one-line outputs before those seen
    only in listings, most recent first).

    * a one-argument tool gets the ranked candidates, identifiers first when the
      argument's name asks for one (``doc_id``, ``url``), else phrases first; its
      last slots (at most a quarter) hold words of its description that no
      observation wrote (``home`` in "the start page is home");
    * a tool with ``k`` arguments gets the product of the first ``m`` candidates
      for each argument, with ``m ** k <= slots_per_tool``; when its description
      enumerates values ("tables: companies, costs"), those fill the first argument;
    * ``calculate`` (the core's calculator) gets the sum of each row of the latest
      output (a line with three numbers or more), then ``a-b`` (larger minus
      smaller) for pairs of the ranked numbers (every pair within the first two,
      then within the first three, ...), then ``a+b`` for the same pairs;
    * ``answer`` (the core's final answer) gets the calculator's results, newest
      first, then the ranked candidates.

    Calls already made in the episode move behind new ones in their section.

    Nothing task-specific is read: only the observations, the tool list and the
    public ``infos`` keys. The menu is finite, so an optimal discrete policy can be
    worse than an optimal text policy: when the expert's call is not in the menu
    (a value never written in any observation, an answer that joins several
    values, a calculation over more than two numbers, a link far down a long
    page), ``oracle_index()`` returns None. For ``research_v0`` the expert's call
    is in the menu at every step (``tests/test_discrete.py``).

Empty slots
    A section with fewer candidates than slots is padded with empty slots. Choosing
    one sends an empty text to the env, which answers with an error message and
    counts the turn (and the malformed output in ``r_format``), as for any bad text
    action; it never raises. ``action_masks()`` (also ``info["action_mask"]``)
    marks the filled slots, for learners that mask actions.

Observation (``Box(0, 1, float32)``)
    ``hash_dims`` hashed bag-of-words bits of the question, ``hash_dims`` of the
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

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from mgrpo_envs.core.codecs import ActionCodec, ParseError, ToolCall, make_codec

CALCULATE = "calculate"
ANSWER = "answer"
SLOT_FEATURES = ("filled", "in_latest", "in_task", "in_record", "taken")
SCALARS = ("turn_used", "context_used", "error", "listing")

_TOOL_LINE = re.compile(
    r"^(?:<tool_call>(?P<json>.*?)</tool_call>|(?P<name>[A-Za-z_][\w.\-]*)\[(?P<args>[^\]\n]*)\])"
    r" - (?P<desc>.*)$",
    re.MULTILINE,
)
_PLACEHOLDER = re.compile(r"<([^<>|]+)>")
_TASK = re.compile(r"\b(?:Question|Task):\s*(.*)", re.DOTALL)
_CANDIDATE = re.compile(
    r"(?P<id>(?<![\w/])[A-Za-z_][\w\-]*\d[\w\-]*)"
    r"|(?P<number>(?<![\w.])-?\d+(?:\.\d+)?(?!\w))"
    r"|(?P<phrase>[A-Z][A-Za-z'\-]*(?: (?:(?:of|the|for|de|la|van|von) )?[A-Z][A-Za-z'\-]*)*)"
)
_WORD = re.compile(r"[a-z]+|\d+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LISTED = re.compile(r"[\w.\-]+(?: [\w.\-]+)?")
# An argument named like an identifier (doc_id, url) takes identifier candidates first.
_WANTS_ID = re.compile(r"(?:^|_)(?:id|url)s?$")
# Capitalised words that start sentences rather than names; dropped from a phrase's start.
_LEADING = frozenset(
    "A An The It Its In On Of At By For To And Or What Which Who Whom Whose When Where Why "
    "How This That These Those There Is Are Was Were Do Does Did You Your Question Task Tools "
    "Reply Error No Give Name List Tell Find".split()
)
_NOT_CONTENT = ("error", "episode over")
_COMMON = frozenset(
    "the and for with from this that its one all any are was were has have give gives "
    "returns return end ends stop".split()
)


def parse_tool_list(text: str) -> tuple[str, dict[str, tuple[str, ...]], dict[str, str]]:
    """Reads the tool list of a core prompt: codec name, arguments and descriptions.

    Args:
        text: An observation that lists tools one per line, as the core writes them
            (``search[<query>] - find documents`` or the ``<tool_call>`` form).

    Returns:
        ``(codec name, {tool: argument names}, {tool: description})``; the mappings
        are empty when ``text`` lists no tools.
    """
    tools: dict[str, tuple[str, ...]] = {}
    descriptions: dict[str, str] = {}
    codec = "compact"
    for match in _TOOL_LINE.finditer(text):
        if match.group("json") is not None:
            try:
                payload = json.loads(match.group("json"))
                name, args = str(payload["name"]), tuple(str(a) for a in payload["arguments"])
            except (ValueError, KeyError, TypeError):
                continue
            codec = "json"
        else:
            name, args = match.group("name"), tuple(_PLACEHOLDER.findall(match.group("args")))
        tools[name], descriptions[name] = args, match.group("desc")
    return codec, tools, descriptions


def listed_values(description: str) -> list[str]:
    """The values a description enumerates after its last colon ("tables: a, b, c")."""
    head, sep, tail = description.rpartition(":")
    items = [item.strip() for item in tail.split(",")]
    if not sep or not head or len(items) < 2 or not all(_LISTED.fullmatch(i) for i in items):
        return []
    return _unique(items)


def description_words(description: str) -> list[str]:
    """The values a tool description names: its enumeration, else its content words.

    Content words are lower-case words of three letters or more, without common
    ones: ``home`` in "open a page by url or id; the start page is home".
    """
    listed = listed_values(description)
    if listed:
        return listed
    return _unique(w for w in re.findall(r"[a-z]{3,}", description) if w not in _COMMON)


def task_text(intro: str) -> str:
    """The question (task) part of a conversation's opening message."""
    head = intro.split("\nTools:", 1)[0]
    match = _TASK.search(head)
    return (match.group(1) if match else head).strip()


def extract_candidates(text: str) -> list[tuple[str, str]]:
    """``(kind, value)`` pairs in reading order; kind is ``id``, ``number`` or ``phrase``."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for match in _CANDIDATE.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "phrase":
            words = value.split(" ")
            while words and words[0] in _LEADING:
                words.pop(0)
            value = " ".join(words)
        if value and value not in seen:
            seen.add(value)
            found.append((kind, value))
    return found


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _hash_words(text: str, dims: int) -> np.ndarray:
    """Hashed bag-of-words presence bits (crc32: the same in every process)."""
    out = np.zeros(dims, dtype=np.float32)
    for word in set(_WORD.findall(text.lower())):
        out[zlib.crc32(word.encode()) % dims] = 1.0
    return out


@dataclass
class _Seen:
    """Where a candidate value has been seen in this episode."""

    kind: str
    order: int
    last: int
    in_record: bool
    times: int = 1


@dataclass(frozen=True)
class _Entry:
    """One filled menu slot: the call, its text, and the candidate values it uses."""

    call: ToolCall
    text: str
    values: tuple[str, ...]


class DiscreteToolEnv(gymnasium.Env):
    """A finite menu of tool calls over a single-agent text env (see the module docstring).

    Args:
        env_id: The hierarchical env whose single-agent view to wrap (ignored when
            ``text_env`` is given).
        slots_per_tool: Menu slots per tool (the action space is ``Discrete(tools * slots)``).
        hash_dims: Hashed bag-of-words size of the question and of the latest observation.
        text_env: A single-agent text env to wrap instead of building one; it must
            print its tool list in its first observation, as the core does.
        render_mode: None or ``"ansi"`` (the transcript of the wrapped view).
        **env_kwargs: Arguments of the single-agent view and its env (difficulty, ...).

    Raises:
        ValueError: A bad ``slots_per_tool``, ``hash_dims`` or ``render_mode``, or a
            first observation without a tool list.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        env_id: str = "research_v0",
        *,
        slots_per_tool: int = 16,
        hash_dims: int = 128,
        text_env: gymnasium.Env | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        limits = (("slots_per_tool", slots_per_tool, 1), ("hash_dims", hash_dims, 8))
        for name, value, low in limits:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if text_env is None:
            from mgrpo_envs.wrappers.single_agent import SingleAgentToolEnv

            text_env = SingleAgentToolEnv(env_id, render_mode=render_mode, **env_kwargs)
        self.text_env = text_env
        self.render_mode = render_mode
        self.slots_per_tool = slots_per_tool
        self.hash_dims = hash_dims
        first, _ = text_env.reset(seed=0)  # the tool list fixes the menu's sections
        _, tools, _ = parse_tool_list(str(first))
        if not tools:
            raise ValueError(
                "the first observation lists no tools (lines like 'search[<query>] - ...'); "
                f"got {str(first)[:120]!r}"
            )
        self.tools: dict[str, tuple[str, ...]] = tools
        sections = len(tools)
        self.n_actions = sections * slots_per_tool
        size = 2 * hash_dims + len(SCALARS) + sections + self.n_actions * len(SLOT_FEATURES)
        self.action_space = spaces.Discrete(self.n_actions)
        self.observation_space = spaces.Box(0.0, 1.0, (size,), dtype=np.float32)
        self._menu: list[_Entry | None] = [None] * self.n_actions

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.text_env.reset(seed=seed, options=options)
        codec_name, tools, descriptions = parse_tool_list(str(obs))
        usable = {n: a for n, a in tools.items() if self.tools.get(n) == a}
        self._usable = usable
        self._descriptions = descriptions
        self._hints = {n: description_words(d) for n, d in descriptions.items()}
        self._codec: ActionCodec | None = make_codec(codec_name, usable) if usable else None
        self._task_text = task_text(str(obs))
        self._task = extract_candidates(self._task_text)
        self._seen: dict[str, _Seen] = {}
        self._obs_count = 0
        self._calc_results: list[str] = []
        self._taken: Counter[str] = Counter()
        self._texts: dict[tuple[str, tuple[str, ...]], tuple[ToolCall, str] | None] = {}
        self._last_section: int | None = None
        self._take_in(str(obs), tool=None, intro=True)
        return self._vector(info), self._info(info, "")

    def step(self, action: Any):
        index = int(action)
        if not 0 <= index < self.n_actions:
            raise ValueError(f"action must be an int in [0, {self.n_actions}), got {action!r}")
        entry = self._menu[index]
        text = entry.text if entry is not None else ""
        obs, reward, terminated, truncated, info = self.text_env.step(text)
        if entry is not None:
            self._taken[text] += 1
        self._last_section = index // self.slots_per_tool
        self._take_in(str(obs), tool=entry.call.name if entry else None)
        return self._vector(info), float(reward), terminated, truncated, self._info(info, text)

    def render(self) -> str | None:
        return self.text_env.render() if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.text_env.close()

    # ----------------------------------------------------------------- menu access
    def action_masks(self) -> np.ndarray:
        """True for the filled slots (the convention of maskable PPO implementations)."""
        return np.array([e is not None for e in self._menu], dtype=bool)

    def menu(self) -> list[str | None]:
        """The text each slot sends now (None: an empty slot)."""
        return [e.text if e is not None else None for e in self._menu]

    def oracle_index(self) -> int | None:
        """The slot of the scripted expert's next call, or None when the menu lacks it."""
        text = self.text_env.unwrapped.oracle_action()
        if self._codec is None:
            return None
        try:
            call = self._codec.parse(text)
        except ParseError:
            return None
        for i, entry in enumerate(self._menu):
            if entry is not None and entry.call == call:
                return i
        return None

    # ----------------------------------------------------------------- internals
    def _take_in(self, text: str, *, tool: str | None, intro: bool = False) -> None:
        """Records the candidates of a new observation and rebuilds the menu."""
        self._obs_count += 1
        self._latest_text = text
        self._error = text.lower().startswith(_NOT_CONTENT)
        if intro:
            self._latest = list(self._task)
        elif self._error:
            self._latest = []
        else:
            self._latest = extract_candidates(text)
            if tool == CALCULATE and _NUMBER.fullmatch(text.strip()):
                self._calc_results.insert(0, text.strip())
        record = "\n" not in text.strip()
        for kind, value in self._latest:
            seen = self._seen.get(value)
            if seen is None:
                self._seen[value] = _Seen(kind, len(self._seen), self._obs_count, record)
            else:
                seen.last, seen.in_record = self._obs_count, seen.in_record or record
                seen.times += 1
        self._build_menu()

    def _ranked(self) -> list[str]:
        older = sorted(
            self._seen.items(), key=lambda kv: (not kv[1].in_record, -kv[1].last, kv[1].order)
        )
        latest = [v for _, v in self._latest]
        return _unique([*latest, *(v for _, v in self._task), *(v for v, _ in older)])

    def _build_menu(self) -> None:
        self._menu = [None] * self.n_actions
        if self._codec is None:
            return
        ranked = self._ranked()
        kinds = {v: self._seen[v].kind for v in ranked if v in self._seen}
        first = {  # stable re-orders with one kind first
            kind: sorted(ranked, key=lambda v, k=kind: kinds.get(v) != k)
            for kind in ("id", "phrase")
        }
        for section, (name, args) in enumerate(self.tools.items()):
            if name not in self._usable:
                continue
            entries = self._entries(name, args, ranked, first)
            start = section * self.slots_per_tool
            for i, entry in enumerate(entries[: self.slots_per_tool]):
                self._menu[start + i] = entry

    def _entries(
        self, name: str, args: tuple[str, ...], ranked: list[str], first: dict[str, list[str]]
    ) -> list[_Entry]:
        """The calls of one section, best first (at most ``slots_per_tool``)."""
        width = self.slots_per_tool
        tail: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        if name == CALCULATE and len(args) == 1:
            options = self._expressions(ranked)
        elif len(args) == 1:
            if name == ANSWER:
                values = _unique([*self._calc_results, *ranked])
            else:  # identifiers first for an id argument, else phrases first
                values = first["id" if _WANTS_ID.search(args[0]) else "phrase"]
                # last, a value only the description names: "the start page is home"
                words = [w for w in self._hints.get(name, ()) if w not in (name, *args)]
                tail = [((w,), ()) for w in words if w not in values][: width // 4]
            # enough for a full section even if every call already made comes first
            options = [((v,), (v,)) for v in values[: width + len(self._taken)]]
        else:
            options = self._combinations(name, args, ranked)
        limit = width - len(tail)
        fresh, repeated = self._format(name, args, options, limit)
        # calls already made go after new ones: they rarely tell anything new
        return (fresh + repeated)[:limit] + sum(self._format(name, args, tail, width), [])

    def _combinations(
        self, name: str, args: tuple[str, ...], ranked: list[str]
    ) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Argument tuples of a tool with several arguments (or none), at most a section's worth.

        The first argument takes the values its description enumerates, if any
        ("tables: companies, costs"); the other arguments take the ranked candidates.
        """
        width = self.slots_per_tool
        if not args:
            return [((), ())]
        listed = listed_values(self._descriptions.get(name, ""))[: max(1, width // 2)]
        lists = [listed] if listed else []
        room = width // max(len(listed), 1)
        free = len(args) - len(lists)
        per_arg = 1  # the most candidates per argument with per_arg ** free <= room
        while (per_arg + 1) ** free <= room:
            per_arg += 1
        lists += [ranked[:per_arg]] * free
        return [(combo, combo) for combo in product(*lists)]

    def _format(
        self, name: str, args: tuple[str, ...], options: Iterable, limit: int
    ) -> tuple[list[_Entry], list[_Entry]]:
        """Formatted calls, split into new ones (at most ``limit``) and ones already made."""
        fresh: list[_Entry] = []
        repeated: list[_Entry] = []
        texts: set[str] = set()
        for arg_values, used in options:
            formatted = self._formatted(name, args, arg_values)
            if formatted is None:
                continue
            call, text = formatted
            if text not in texts:
                texts.add(text)
                (repeated if self._taken[text] else fresh).append(_Entry(call, text, used))
            if len(fresh) >= limit:
                break
        return fresh, repeated

    def _formatted(
        self, name: str, args: tuple[str, ...], values: tuple[str, ...]
    ) -> tuple[ToolCall, str] | None:
        """The call and its text (cached for the episode); None when it cannot be written."""
        key = (name, values)
        if key not in self._texts:
            call = ToolCall(name, tuple(zip(args, values, strict=True)))
            try:
                self._texts[key] = (call, self._codec.format(call))  # type: ignore[union-attr]
            except ValueError:  # e.g. a value with a '|' in a multi-argument tool
                self._texts[key] = None
        return self._texts[key]

    def _expressions(self, ranked: list[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Sums of the rows of the latest output, then ``a-b`` and ``a+b`` for pairs.

        A row is a line with three numbers or more (``c6 | 213 | 435 | 853``). Pairs
        come in the order of the ranked numbers: every pair within the first two,
        then within the first three, and so on; ``a-b`` is the larger minus the
        smaller. A number pairs with itself only when it was seen in two
        observations (two facts may share a value).
        """
        options = []
        for line in [] if self._error else self._latest_text.splitlines():
            row = tuple(v for kind, v in extract_candidates(line) if kind == "number")
            if len(row) >= 3:
                options.append((("+".join(row),), row))
        # the first width + 1 numbers already give more than width pairs
        numbers = [v for v in ranked if self._is_number(v)][: self.slots_per_tool + 1]
        pairs = [
            (x, y)
            for j, y in enumerate(numbers)
            for x in numbers[: j + 1]
            if x != y or self._times(x) > 1
        ]
        for x, y in pairs:
            hi, lo = (x, y) if float(x) >= float(y) else (y, x)
            options.append(((f"{hi}-{lo}",), (x, y)))
        return options + [((f"{x}+{y}",), (x, y)) for x, y in pairs]

    def _times(self, value: str) -> int:
        seen = self._seen.get(value)
        return seen.times if seen is not None else 1

    def _is_number(self, value: str) -> bool:
        return self._is_kind(value, "number") or value in self._calc_results

    def _is_kind(self, value: str, kind: str) -> bool:
        seen = self._seen.get(value)
        return seen is not None and seen.kind == kind

    def _slot_features(self) -> np.ndarray:
        latest = {v for _, v in self._latest}
        task = {v for _, v in self._task}
        record = {v for v, seen in self._seen.items() if seen.in_record}
        empty = (0.0,) * len(SLOT_FEATURES)
        rows = [
            empty
            if entry is None
            else (
                1.0,
                not latest.isdisjoint(entry.values),
                not task.isdisjoint(entry.values),
                not record.isdisjoint(entry.values),
                self._taken[entry.text] > 0,
            )
            for entry in self._menu
        ]
        return np.array(rows, dtype=np.float32).reshape(-1)

    def _vector(self, info: dict[str, Any]) -> np.ndarray:
        def used(key: str, budget: str) -> float:
            total = info.get(budget) or 0
            return float(np.clip(info.get(key, 0) / total, 0.0, 1.0)) if total else 0.0

        last = np.zeros(len(self.tools), dtype=np.float32)
        if self._last_section is not None:
            last[self._last_section] = 1.0
        scalars = np.array(
            [
                used("turn", "turn_budget"),
                used("context_chars", "context_budget"),
                float(self._error),
                float("\n" in self._latest_text.strip()),
            ],
            dtype=np.float32,
        )
        return np.concatenate(
            [
                _hash_words(self._task_text, self.hash_dims),
                _hash_words(self._latest_text, self.hash_dims),
                scalars,
                last,
                self._slot_features(),
            ]
        )

    def _info(self, info: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            **info,
            "action_text": text,
            "observation_text": self._latest_text,
            "action_mask": self.action_masks(),
        }
