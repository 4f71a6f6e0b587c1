"""The discrete view: ``Discrete(n)`` actions over a menu of admissible tool calls.

Classic RL learners (stable-baselines3's PPO and A2C, for example) need a finite
action space and a fixed-size numeric observation. This view wraps the single-agent
view of any env built on the core (one agent, every tool, no delegation) and, at
every step, builds a bounded *menu* of tool calls from what the agent has seen; the
action is an index into it.

Menu (``n = tools * slots_per_tool``)
    One section of ``slots_per_tool`` slots per tool, in the order of the tool list
    of the first observation; the section of a tool always holds calls of that tool.
    The tools, their argument names and descriptions are read from that tool list
    (as every env built on the core prints it, in either codec), and arguments are
    filled from what the text seen so far says (below). Calls already made in the
    episode move behind new ones in their section.

Candidates
    Identifiers with a digit (``d12``), numbers and capitalised phrases (``Silver
    Harbor``, ``Department of Physics``), taken from the question (the task text of
    the first observation) and from every tool output that was not an error; also
    the keys of the rows of a table of several rows, joined by ``", "`` (``c1, c4,
    c7``). A *table* is a run of lines whose cells are separated by ``" | "``: a
    header, then rows whose first cell is the row's *key*; its *caption* is the
    line above the header. The
    question's phrases are its *names*; the *focus* is the name a call named last,
    by itself or by a key that a table row gave it (``c3`` in ``c3 | Orion Foods |
    s2``, or the joined keys of a table seen while it was the focus). The *next
    names* are the focus, if the question names it again next, and the next other
    name the question names. Candidates are ranked:

    1. the joined keys of the tables of several rows of the latest output with
       tables;
    2. each next name: itself until it has been the focus, then the joined keys of
       the latest table of several rows seen on it and its key;
    3. the latest output's: its tables' joined keys, those on lines that hold one of
       the question's names, its tables' keys, then the rest in reading order;
    4. the question's, then older ones (those seen in one-line outputs before those
       seen only in listings, most recent first).

Findings
    Values the outputs gave for what the question asks. A *label* is the text
    before ``": "`` on a line ``Label: value`` whose value is one candidate
    (``Member count: 23``), or a table's column header. A label is *tied before* a
    place where the question names a name when it is the nearest label before that
    place in its clause, and *tied after* it when it is the nearest after it; a
    clause ends at another name, a comma or " and " ("the member count of the Ocean
    Lab"; "the company of the Retail sector with the highest Q2 revenue"). An
    output gives a finding for each label tied before the focus's place or a later
    place of the focus (each label the question names, without a focus): the
    line's value, or the cell of a one-row table. A table whose caption names a
    value that a description enumerates (``costs: 1 row(s)``; "tables: ...,
    costs") counts only at places whose clause names that value or none of them.
    A table of several rows gives, for each numeric column tied after such a place,
    its row with the largest value (the smallest when the question says lowest,
    least, smallest, fewest or minimum) as the name in that row (or in another row
    with its key). A calculation whose operands are all findings uses one finding
    per operand up (at a place they share, if any) and its result is a finding at
    their first place; any other result is a finding at the focus's place.
    Findings are ordered by their place in the question.

Sections
    * a one-argument tool gets the ranked candidates, identifiers first when the
      argument's name asks for one (``doc_id``, ``url``), else phrases first; its
      last slots (at most a quarter) hold words of its description that no
      observation wrote (``home`` in "the start page is home");
    * a tool with several arguments gets the product of their candidate lists,
      each cut to ``m`` values with ``m ** free <= slots_per_tool / (product of the
      enumerations' sizes)``. An argument takes the values a description enumerates
      for it ("tables: companies, costs" for its tool's first argument, and for
      every argument of that name in other tools); a *free* argument takes the
      ranked candidates, the last one after *conditions* when its description shows
      forms like "column=value" or "Q3>number": ``column<op>value`` for each
      operator shown, columns being the table headers seen and the question's
      lower-case words (nearest the focus in the question first), values the
      latest output's first two identifiers or names (``=``) or numbers (``<``,
      ``>``);
    * ``calculate`` (the core's calculator) gets, in order: for the numeric columns
      tied to the focus (or to a next name), the column's sum over the latest table
      of several rows (and over the latest such table seen on a next name) and
      ``a-b`` (larger minus smaller) of a one-row table's cell and the cell of the
      same column and key in the one-row table of the output with tables before;
      the sums of rows (lines with three numbers or more, every number kept) of the
      latest output, of the latest two outputs with tables and of one-row tables
      seen on a next name (here if at most two, else after the next item); over the
      latest four numeric findings, ``a-b`` of two at one place, the sums of the
      latest ``k`` (all down to two) in the question's order, then for each pair,
      newest first, ``a-b`` and ``round(a/b, 2)`` (larger first) and ``a+b``; the
      other columns' sums and differences; then ``a-b`` and ``a+b`` for pairs of
      the ranked numbers (every pair within the first two, then the first three,
      ...);
    * ``answer`` (the core's final answer) gets the latest four, three and two
      findings joined by ``", "`` in the question's order, the findings (newest
      first), the results of the first four calculations over findings, the
      calculator's results (newest first), then the ranked candidates.

    Nothing task-specific is read: only the observations, the tool list (names,
    arguments, descriptions) and the public ``infos`` keys; the rules above know
    tables, ``Label: value`` lines, clauses and a few English words, not any task.
    The menu is finite, so an optimal discrete policy can be worse than an optimal
    text policy: when the expert's call is not in the menu (a value never written
    in any observation, a combination the rules above do not build),
    ``oracle_index()`` returns None. For every registered env, at every
    difficulty and in both codecs, the expert's call was in the menu at every step
    of 1,000 to 3,000 episodes per setting, so the expert played through the menu
    solves what it solves in text (``tests/test_discrete.py`` checks a few seeds).

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
from functools import lru_cache
from itertools import product
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from mgrpo_envs.core.calculator import CalculatorError, calculate, format_number
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
    # a name's words are whole words: "Q" of "the Q3" starts none
    r"|(?P<phrase>[A-Z][A-Za-z'\-]*(?!\w)"
    r"(?: (?:(?:of|the|for|de|la|van|von) )?[A-Z][A-Za-z'\-]*(?!\w))*)"
)
_WORD = re.compile(r"[a-z]+|\d+")
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# the operands of an expression: "609-546" uses 609 and 546 (not -546), and
# "round(2249/707, 2)" uses 2249 and 707 (2 is the number of decimals)
_OPERAND = re.compile(r"(?<![\d.])(?<!, )\d+(?:\.\d+)?")
_LABEL_LINE = re.compile(r"^([A-Za-z][\w ]*): ([^:\n]+?)\.?$", re.MULTILINE)
_JOINED = ", "  # between the keys of a table joined into one candidate, and joined answers
# where a question's clause ends: a label is never tied to a name past one
_CLAUSE = re.compile(r",| and ")
_LOWER_WORD = re.compile(r"\b[a-z][a-z\-]{2,}\b")
_MAX_JOINED = 4  # findings joined or paired at most
_MAX_RESULTS = 4  # calculations over findings whose results the answer section offers
# a form of an argument in a description: "column=value", "Q3>number"
_FORM = re.compile(r"(?<![\w=<>])[A-Za-z]\w*(=|<|>)[A-Za-z]\w*(?![\w=<>])")
# a question that asks for the smallest rather than the largest
_LEAST = re.compile(r"\b(?:lowest|least|smallest|fewest|minimum|min)\b", re.IGNORECASE)
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
# function words of questions: never column names
_FUNCTION_WORDS = _COMMON | frozenset(
    "what which who how much many did does had than into over under about each per "
    "rounded decimals order".split()
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


@dataclass(frozen=True)
class Table:
    """A table of an observation: its header cells, its rows of cells, and the line
    above its header (``costs: 1 row(s)``)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


def parse_tables(text: str) -> list[Table]:
    """Tables of a text: runs of lines whose cells are separated by ``" | "``.

    The first line of a run is the header; the rows that follow have as many cells.
    A run without a row is not a table. The caption is the line above the header.
    """
    tables: list[Table] = []
    block: list[tuple[str, ...]] = []
    caption = above = ""
    for line in [*text.splitlines(), ""]:
        cells = tuple(c.strip() for c in line.split("|")) if " | " in line else ()
        if cells and block and len(cells) == len(block[0]):
            block.append(cells)
            continue
        if len(block) >= 2:
            tables.append(Table(block[0], tuple(block[1:]), caption))
        block, caption = ([cells], above) if cells else ([], "")
        above = line.strip()
    return tables


def labelled_lines(text: str) -> list[tuple[str, str]]:
    """``(label, value)`` of the lines ``Label: value`` whose value is one candidate.

    ``Head: Mara Quill`` and ``Member count: 23`` count; a sentence after the colon
    (``d3 Ada Holm: Ada Holm was born in 1901.``) does not.
    """
    pairs = []
    for match in _LABEL_LINE.finditer(text):
        label, value = match.group(1).strip(), match.group(2).strip()
        if [v for _, v in extract_candidates(value)] == [value]:
            pairs.append((label, value))
    return pairs


def named_in(text: str, label: str) -> bool:
    """Whether ``text`` names ``label`` as whole words, case-insensitively."""
    return _word_pattern(label).search(text) is not None


def _named_at(text: str, label: str) -> int:
    """Where ``text`` first names ``label`` (its length if nowhere)."""
    match = _word_pattern(label).search(text)
    return match.start() if match else len(text)


def name_spans(question: str, names: Iterable[str]) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of every place the question names one of ``names``, in order;
    a place inside a longer name's place is not one."""
    spans = {(m.start(), m.end(), n) for n in names for m in _word_pattern(n).finditer(question)}
    return sorted(
        (a, b, n)
        for a, b, n in spans
        if not any(c <= a and b <= d and (c, d) != (a, b) for c, d, _ in spans)
    )


def clause_bounds(question: str, span: tuple[int, int], spans: Iterable[tuple]) -> tuple[int, int]:
    """Where the clause around the name at ``span`` starts and ends: at the nearest other
    name's place (``spans``), comma or "and" on either side."""
    start, end = span
    stops = [m.span() for m in _CLAUSE.finditer(question)]
    places = [(a, b) for a, b, *_ in spans] + stops
    left = max((b for _, b in places if b <= start), default=0)
    right = min((a for a, _ in places if a >= end), default=len(question))
    return left, right


def names_word(text: str, word: str) -> bool:
    """Whether ``text`` has ``word`` or a word of four letters or more that starts it or
    that it starts, case-insensitively ("the Q4 cost" names ``costs``)."""
    word = word.lower()
    return any(
        t == word or (min(len(t), len(word)) >= 4 and (t.startswith(word) or word.startswith(t)))
        for t in (t.lower() for t in _TOKEN.findall(text))
    )


def label_ties(
    question: str, span: tuple[int, int], labels: Iterable[str], spans: Iterable[tuple]
) -> tuple[str | None, str | None]:
    """The labels the question ties to the name at ``span``: the nearest before it and
    the nearest after it, neither past another name's place (``spans``), a comma or "and".

    In "the Q3 revenue of A and the company of B with the highest Q1 cost", A has
    ``("Q3", None)`` and B ``(None, "Q1")``: "the Q3 revenue of A" asks for a value of
    A's, "B with the highest Q1 cost" asks which of B's rows.
    """
    start, end = span
    left, right = clause_bounds(question, span, spans)
    before = [
        (m.end(), x) for x in labels for m in _word_pattern(x).finditer(question, left, start)
    ]
    after = [
        (-m.start(), x) for x in labels for m in _word_pattern(x).finditer(question, end, right)
    ]
    return (max(before)[1] if before else None, max(after)[1] if after else None)


def by_distance(question: str, focus: str | None, words: Iterable[str]) -> list[str]:
    """``words`` by their distance in words from ``focus`` in the question, nearest first.

    Words the question does not name come last, in their given order; so do all
    words when there is no focus or the question does not name it.
    """
    tokens = [t.lower() for t in _TOKEN.findall(question)]
    anchors: list[tuple[int, int]] = []
    if focus:
        parts = [t.lower() for t in _TOKEN.findall(focus)]
        n = len(parts)
        anchors = [
            (i, i + n - 1) for i in range(len(tokens)) if parts and tokens[i : i + n] == parts
        ]

    def distance(word: str) -> float:
        places = [i for i, t in enumerate(tokens) if t == word.lower()]
        if not places:
            return float("inf")
        if not anchors:
            return float(len(tokens))
        return min(max(a - i, i - b) for i in places for a, b in anchors)

    return sorted(_unique(words), key=distance)


def condition_operators(description: str) -> list[str]:
    """The comparison operators of the ``name=value`` forms a description shows, in order.

    ``"rows where column=value or Q3>number"`` gives ``["=", ">"]``.
    """
    return _unique(m.group(1) for m in _FORM.finditer(description))


def _numeric_columns(table: Table) -> list[str]:
    """The headers of a table's columns of numbers, but the first (the rows' keys)."""
    return [
        label
        for i, label in enumerate(table.header[1:], 1)
        if all(_kind(row[i]) == "number" for row in table.rows)
    ]


def _joined_keys(table: Table) -> str:
    """The keys of a table (its first column), joined by ", " (``c1, c4, c7``)."""
    return _JOINED.join(row[0] for row in table.rows)


def _numbers_in(text: str) -> list[str]:
    """The numbers of a text in reading order, repeats kept (``c8 | 5 | 5`` -> 5, 5)."""
    return [m.group("number") for m in _CANDIDATE.finditer(text) if m.lastgroup == "number"]


def _pair_calculations(x: str, y: str) -> list[tuple[str, tuple[str, ...]]]:
    """``a-b`` and ``round(a/b, 2)`` (the larger first; no ratio over zero) and ``x+y``."""
    hi, lo = (x, y) if float(x) >= float(y) else (y, x)
    ratio = [(f"round({hi}/{lo}, 2)", (x, y))] if float(lo) != 0 else []
    return [(f"{hi}-{lo}", (x, y)), *ratio, (f"{x}+{y}", (x, y))]


def _difference(x: str, y: str) -> str:
    """``a-b``: the larger of two numbers minus the smaller."""
    hi, lo = (x, y) if float(x) >= float(y) else (y, x)
    return f"{hi}-{lo}"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


@lru_cache(maxsize=4096)
def _word_pattern(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)", re.IGNORECASE)


def _kind(value: str) -> str | None:
    """The candidate kind of a value that is exactly one candidate, else None."""
    found = extract_candidates(value)
    return found[0][0] if len(found) == 1 and found[0][1] == value else None


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
class _Finding:
    """A value found for what the question asks, and where the question asks for it
    (the place of the name it belongs to)."""

    value: str
    position: int


@dataclass(frozen=True)
class _Entry:
    """One filled menu slot: the call, its text, and the candidate values it uses."""

    call: ToolCall
    text: str
    values: tuple[str, ...]


class _Notes:
    """What an episode's outputs told about its question: the focus, the findings, the
    tables and the keys of names (see "Findings" and "Calculations" in the module
    docstring). Everything here reads only the question, the outputs, the calls made
    and the tool descriptions' enumerations.
    """

    def __init__(self, question: str, enumerated: dict[str, list[str]]) -> None:
        self.question = question
        self.enumerated = enumerated  # argument -> the values a description lists for it
        self.phrases = [v for kind, v in extract_candidates(question) if kind == "phrase"]
        self.spans = name_spans(question, self.phrases)
        self.cursor: int | None = None  # the place (in spans) of the name worked on
        self.findings: list[_Finding] = []
        self.calc_results: list[str] = []  # newest first
        self.tables: list[Table] = []  # of the latest output with tables
        self.previous_tables: list[Table] = []  # of the one with tables before
        self.listing: Table | None = None  # the latest table of several rows
        self.headers: list[str] = []
        self.aliases: dict[str, str] = {}  # row key -> a name in its row ("c3" -> "Orion Foods")
        self.keys: dict[str, str] = {}  # and back
        self.tables_of: dict[str, list[Table]] = {}  # name -> the tables seen on it
        self.visited: set[str] = set()  # the question's names that were the focus

    @property
    def focus(self) -> str | None:
        """The question's name worked on: the one a call named last (or named by its key)."""
        return self.spans[self.cursor][2] if self.cursor is not None else None

    def position(self) -> int:
        """Where the question names the focus (its length without one)."""
        return self.spans[self.cursor][0] if self.cursor is not None else len(self.question)

    def take(self, call: ToolCall | None, text: str, tables: list[Table]) -> None:
        """Updates the focus, tables, aliases and findings from an output that was not an error."""
        for _, value in call.arguments if call is not None else ():
            self.move_focus(value if value in self.phrases else self.aliases.get(value))
        if tables:  # a calculation's result leaves the tables it works on in view
            self.previous_tables, self.tables = self.tables, tables
        for table in tables:
            self.headers = _unique([*self.headers, *table.header])
            if self.focus is not None:
                self.tables_of.setdefault(self.focus, []).append(table)
            if len(table.rows) >= 2:
                self.listing = table
                if self.focus is not None:  # naming these keys names the focus
                    self.aliases[_joined_keys(table)] = self.focus
            for row in table.rows:
                name = next((cell for cell in row[1:] if _kind(cell) == "phrase"), None)
                if name is not None and _kind(row[0]) == "id":
                    self.aliases[row[0]], self.keys[name] = name, row[0]
        result = text.strip()
        if call is not None and call.name == CALCULATE and _NUMBER.fullmatch(result):
            self.calc_results.insert(0, result)
            self.use_up(set(_OPERAND.findall(call.arguments[0][1])), result)
        else:
            self.findings += self.found(text, tables)

    def move_focus(self, name: str | None) -> None:
        """Moves the focus to the next place the question names ``name``, if another name."""
        if name is None or name == self.focus or name not in self.phrases:
            return
        places = [i for i, (_, _, n) in enumerate(self.spans) if n == name]
        later = [i for i in places if self.cursor is None or i > self.cursor]
        self.cursor = (later or places)[0]
        self.visited.add(name)

    def use_up(self, operands: set[str], result: str) -> None:
        """A calculation over findings only replaces them by its result, at their place.

        Each operand uses up one finding of its value: one at a place every operand has
        a finding at, if there is one, else the latest found.
        """
        places = [{f.position for f in self.findings if f.value == v} for v in operands]
        used: list[_Finding] = []
        if operands and all(places):  # else over a row or a column, not over findings
            common = set.intersection(*places)
            for value in operands:
                mine = [f for f in self.findings if f.value == value]
                at = [f for f in mine if f.position == max(common)] if common else []
                used.append((at or mine)[-1])
        place = min((f.position for f in used), default=self.position())
        kept = [f for f in self.findings if all(f is not u for u in used)]
        self.findings = [*kept, _Finding(result, place)]

    def found(self, text: str, tables: list[Table]) -> list[_Finding]:
        """The values an output gives for labels the question names (see "Findings")."""
        found = self.tied_values(labelled_lines(text), None)
        for table in tables:
            if len(table.rows) == 1:
                cells = zip(table.header, table.rows[0], strict=True)
                numbers = [(label, cell) for label, cell in cells if _kind(cell) == "number"]
                found += self.tied_values(numbers, self.table_name(table))
            else:
                found += self.extremes(table)
        return sorted(found, key=lambda f: f.position)

    def tied_values(self, pairs: list[tuple[str, str]], table: str | None) -> list[_Finding]:
        """A finding for each place the question ties a label of ``pairs`` to."""
        value_of = dict(pairs)
        before, _ = self.ties(value_of, table)
        return [_Finding(value_of[label], place) for label, place in before]

    def extremes(self, table: Table) -> list[_Finding]:
        """For each numeric column a name asks which of its rows has the largest value of
        ("the company of the Retail sector with the highest Q2 revenue"), that row (the
        smallest if the question asks for the least), as the name in its row."""
        least = _LEAST.search(self.question) is not None
        _, rows_of = self.ties(_numeric_columns(table), self.table_name(table))
        found = []
        for label, position in rows_of:
            i = table.header.index(label)
            column = [float(row[i]) for row in table.rows]
            best = min(column) if least else max(column)
            if column.count(best) == 1:
                key = table.rows[column.index(best)][0]
                found.append(_Finding(self.aliases.get(key, key), position))
        return found

    def table_name(self, table: Table) -> str | None:
        """The listed value (a table's name) that a table's caption names, if any."""
        listed = (v for values in self.enumerated.values() for v in values)
        return next((v for v in listed if names_word(table.caption, v)), None)

    def ties(
        self, labels: Iterable[str], table: str | None, place: int | None = None
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Labels the question ties to a name at its place (default: the focus's) or a
        later one: ``([(label before it, place)], [(label after it, place)])``. A place
        whose clause names a listed value but not ``table`` (the labels' table) is
        skipped. Without a focus, every label the question names is a label before, at
        its own place."""
        question = self.question
        named = [x for x in _unique(labels) if named_in(question, x)]
        place = self.cursor if place is None else place
        if place is None:
            return [(x, _named_at(question, x)) for x in named], []
        focus = self.spans[place][2]
        before: list[tuple[str, int]] = []
        after: list[tuple[str, int]] = []
        for start, end, name in self.spans[place:]:
            left, right = clause_bounds(question, (start, end), self.spans)
            if name != focus or not self.may_be_about(question[left:right], table):
                continue
            tied = label_ties(question, (start, end), named, self.spans)
            before += [(tied[0], start)] if tied[0] is not None else []
            after += [(tied[1], start)] if tied[1] is not None else []
        return before, after

    def may_be_about(self, clause: str, table: str | None) -> bool:
        """Whether a clause may be about ``table`` (a listed value): it names it, or no
        other listed value ("the Q4 profit of A" may be about revenue and costs)."""
        if table is None or names_word(clause, table):
            return True
        listed = (v for values in self.enumerated.values() for v in values)
        return not any(names_word(clause, v) for v in listed)

    def next_places(self) -> list[int]:
        """The places (indices in ``spans``) the question names next: the next one if it
        names the focus again, and the next that names another name."""
        after = 0 if self.cursor is None else self.cursor + 1
        later = range(after, len(self.spans))
        again = [i for i in later[:1] if self.spans[i][2] == self.focus]
        other = [i for i in later if self.spans[i][2] != self.focus][:1]
        return again + other

    def names_of(self, name: str) -> list[str]:
        """How to name a question's name in a call: by itself, or once a table gave its
        key, by the keys of the rows it led to and by its key."""
        if name not in self.keys or name not in self.visited:
            return [name]
        listings = [t for t in self.tables_of.get(name, []) if len(t.rows) >= 2]
        keys = [_joined_keys(t) for t in listings[-1:]]
        return [*keys, self.keys[name]]

    def table_sources(self) -> list[tuple[Table, bool, int | None]]:
        """``(table, whether to pair its row with the one-row tables before, place of the
        name it is about)``: the latest tables, the latest of several rows, and the latest
        of several rows seen on each name the question names next."""
        sources = [(t, len(t.rows) == 1, self.cursor) for t in self.tables]
        sources += [(self.listing, False, self.cursor)] if self.listing else []
        for place in self.next_places():
            tables = self.tables_of.get(self.spans[place][2], [])
            sources += [(t, False, place) for t in tables if len(t.rows) >= 2][-1:]
        unique: list[tuple[Table, bool, int | None]] = []
        for source in sources:
            if all(source[0] is not t for t, _, _ in unique):
                unique.append(source)
        return unique

    def row_sums(self, lines: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        """Sums of the rows (lines with three numbers or more) of ``lines`` (the latest
        output's), of the latest tables and those before, and of the one-row tables seen
        on the names the question names next."""
        tables = [*self.tables, *self.previous_tables]
        for place in self.next_places():
            tables += [t for t in self.tables_of.get(self.spans[place][2], []) if len(t.rows) == 1]
        lines = [*lines, *(" | ".join(row) for table in tables for row in table.rows)]
        sums: dict[str, tuple[str, ...]] = {}
        for line in lines:
            row = tuple(_numbers_in(line))
            if len(row) >= 3:
                sums.setdefault("+".join(row), row)
        return list(sums.items())

    def column_expressions(
        self, table: Table, diffs: bool
    ) -> list[tuple[str, tuple[str, tuple[str, ...]]]]:
        """``(column, (expression, operands))``: each numeric column's sum over a table of
        several rows, and if ``diffs``, ``a-b`` of its cells in rows with the same key in a
        table with the same header in the output with tables before."""
        out = []
        for label in _numeric_columns(table):
            i = table.header.index(label)
            if len(table.rows) >= 2:
                cells = tuple(row[i] for row in table.rows)
                out.append((label, ("+".join(cells), cells)))
            for before in self.previous_tables if diffs else []:
                if before.header != table.header or len(before.rows) != 1:
                    continue
                earlier = {row[0]: row[i] for row in before.rows}
                for row in table.rows:
                    if row[0] in earlier:
                        out.append((label, (_difference(earlier[row[0]], row[i]), (row[i],))))
        return out

    def recent(self, count: int, numbers: bool = False) -> list[str]:
        """The values of the latest ``count`` findings (numbers only, if asked), in the
        order the question asks for them."""
        found = [f for f in self.findings if not numbers or _NUMBER.fullmatch(f.value)]
        return [f.value for f in sorted(found[-count:], key=lambda f: f.position)] if count else []

    def finding_expressions(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(expression, operands)`` over the latest numeric findings: ``a-b`` of two the
        question asks for at one place, the sums of the latest ``k`` (all of them down
        to two) in the question's order, then for each pair, newest first, ``a-b`` and
        ``round(a/b, 2)`` (larger first) and ``a+b``."""
        numeric = [f for f in self.findings if _NUMBER.fullmatch(f.value)][-_MAX_JOINED:]
        # two values asked for at one place make one ("the Q3 profit of A": revenue - cost)
        out = [
            (_difference(x.value, y.value), (x.value, y.value))
            for j, y in enumerate(numeric)
            for x in numeric[:j]
            if x.position == y.position
        ]
        for k in range(len(numeric), 1, -1):
            recent = self.recent(k, numbers=True)
            out.append(("+".join(recent), tuple(recent)))
        for j in reversed(range(len(numeric))):
            for i in reversed(range(j)):
                out += _pair_calculations(numeric[i].value, numeric[j].value)
        return out


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
        enumerated: dict[str, list[str]] = {}  # argument -> the values a description lists
        for tool, description in descriptions.items():
            listed = listed_values(description)
            if listed and tools.get(tool):
                enumerated.setdefault(tools[tool][0], listed)
        self._notes = _Notes(self._task_text, enumerated)
        self._seen: dict[str, _Seen] = {}
        self._obs_count = 0
        self._taken: Counter[str] = Counter()
        self._texts: dict[tuple[str, tuple[str, ...]], tuple[ToolCall, str] | None] = {}
        self._last_section: int | None = None
        self._take_in(str(obs), call=None, intro=True)
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
        self._take_in(str(obs), call=entry.call if entry else None)
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
    def _take_in(self, text: str, *, call: ToolCall | None, intro: bool = False) -> None:
        """Records the candidates of a new observation and rebuilds the menu."""
        self._obs_count += 1
        self._latest_text = text
        self._error = text.lower().startswith(_NOT_CONTENT)
        if intro:
            self._latest = list(self._task)
        elif self._error:
            self._latest = []
        else:
            tables = parse_tables(text)
            self._notes.take(call, text, tables)
            self._latest = self._latest_candidates(text, tables)
        record = "\n" not in text.strip()
        for kind, value in self._latest:
            seen = self._seen.get(value)
            if seen is None:
                self._seen[value] = _Seen(kind, len(self._seen), self._obs_count, record)
            else:
                seen.last, seen.in_record = self._obs_count, seen.in_record or record
                seen.times += 1
        self._build_menu()

    def _latest_candidates(self, text: str, tables: list[Table]) -> list[tuple[str, str]]:
        """The candidates of an output: the keys of each table of several rows joined by
        ", ", then those on lines that name a question's name, then the tables' keys,
        then the rest in reading order."""
        joined: list[tuple[str, str]] = []
        keys: list[tuple[str, str]] = []
        for table in tables:
            column = [row[0] for row in table.rows]
            kind = _kind(column[0])
            if kind is None:
                continue
            if len(column) >= 2:
                joined.append((kind, _joined_keys(table)))
            keys += [(kind, key) for key in column]
        hot = [line for line in text.splitlines() if any(p in line for p in self._notes.phrases)]
        found = [*joined, *extract_candidates("\n".join(hot)), *keys, *extract_candidates(text)]
        firsts: dict[str, str] = {}
        for kind, value in found:
            firsts.setdefault(value, kind)
        return [(kind, value) for value, kind in firsts.items()]

    def _ranked(self) -> list[str]:
        """Every candidate seen, best first (see "Candidates" in the module docstring)."""
        older = sorted(
            self._seen.items(), key=lambda kv: (not kv[1].in_record, -kv[1].last, kv[1].order)
        )
        latest = [v for _, v in self._latest]
        # the joined keys of the latest tables of several rows: what to look up next
        several = [t for t in self._notes.tables if len(t.rows) >= 2]
        joined = [v for v in map(_joined_keys, several) if v in self._seen]
        nexts = [self._notes.spans[i][2] for i in self._notes.next_places()]
        fresh = [v for name in nexts for v in self._notes.names_of(name)]
        task = [v for _, v in self._task]
        return _unique([*joined, *fresh, *latest, *task, *(v for v, _ in older)])

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
                values = self._answers(ranked)
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

    def _answers(self, ranked: list[str]) -> list[str]:
        """Joins of the latest findings, the findings, the calculator's results, the ranked."""
        count = min(_MAX_JOINED, len(self._notes.findings))
        joins = [_JOINED.join(self._notes.recent(k)) for k in range(count, 1, -1)]
        found = [f.value for f in self._notes.findings[::-1]][:_MAX_JOINED]
        results = []  # what the first calculations over the findings would give
        for expression, _ in self._notes.finding_expressions()[:_MAX_RESULTS]:
            try:
                results.append(format_number(calculate(expression)))
            except CalculatorError:
                continue
        return _unique([*joins, *found, *results, *self._notes.calc_results, *ranked])

    def _combinations(
        self, name: str, args: tuple[str, ...], ranked: list[str]
    ) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Argument tuples of a tool with several arguments (or none), at most a section's worth.

        An argument takes the values a description enumerates for it, if any
        ("tables: companies, costs" for the first argument, in any tool with an
        argument of that name); the others take the ranked candidates, the last one
        after the conditions its description shows ("column=value").
        """
        width = self.slots_per_tool
        if not args:
            return [((), ())]
        own = listed_values(self._descriptions.get(name, ""))
        lists: list[list[str]] = []
        for i, arg in enumerate(args):
            listed = own if i == 0 and own else self._notes.enumerated.get(arg, [])
            lists.append(listed[: max(1, width // 2)])
        room = width // max(1, int(np.prod([len(v) for v in lists if v])))
        free = sum(not v for v in lists)
        per_arg = 1  # the most candidates per argument with per_arg ** free <= room
        while (per_arg + 1) ** free <= room:
            per_arg += 1
        operators = condition_operators(self._descriptions.get(name, ""))
        last_free = max((i for i, v in enumerate(lists) if not v), default=-1)
        for i, values in enumerate(lists):
            if not values:
                conditions = self._conditions(operators) if i == last_free else []
                lists[i] = _unique([*conditions, *ranked])[:per_arg]
        return [(combo, combo) for combo in product(*lists)]

    def _conditions(self, operators: list[str]) -> list[str]:
        """``column<op>value`` for each operator: columns are the table headers seen and the
        question's words, nearest the focus first; values of ``=`` are the latest output's
        names and identifiers, values of ``<`` and ``>`` its numbers."""
        words = [w for w in _LOWER_WORD.findall(self._task_text) if w not in _FUNCTION_WORDS]
        columns = by_distance(self._task_text, self._notes.focus, [*self._notes.headers, *words])
        latest = [(kind, v) for kind, v in self._latest if _JOINED not in v]
        names = sorted(
            (v for kind, v in latest if kind != "number"), key=lambda v: _kind(v) != "id"
        )
        numbers = [v for kind, v in latest if kind == "number"]
        conditions = []
        for op in operators:
            values = (names if op == "=" else numbers)[:2]
            conditions += [f"{column}{op}{value}" for column in columns for value in values]
        return conditions

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
        """Calculations over tables and rows, over the findings, then ``a-b`` and ``a+b``
        for pairs of the ranked numbers (see the module docstring)."""
        near: list[tuple[str, tuple[str, ...]]] = []
        far: list[tuple[str, tuple[str, ...]]] = []
        for table, diffs, place in self._notes.table_sources():
            ties = self._notes.ties(_numeric_columns(table), None, place)
            tied = {label for side in ties for label, _ in side}
            for label, option in self._notes.column_expressions(table, diffs):
                (near if label in tied else far).append(option)
        rows = self._notes.row_sums([] if self._error else self._latest_text.splitlines())
        found = self._notes.finding_expressions()
        # a few rows' sums before the findings' calculations, many after
        ordered = [*near, *rows, *found] if len(rows) <= 2 else [*near, *found, *rows]
        options: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for text, used in [*ordered, *far]:
            options.setdefault(text, ((text,), used))
        return [*options.values(), *self._pair_expressions(ranked)]

    def _pair_expressions(self, ranked: list[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """``a-b`` (larger minus smaller) then ``a+b`` for pairs of the ranked numbers.

        Pairs come in the order of the ranked numbers: every pair within the first two,
        then within the first three, and so on. A number pairs with itself only when
        it was seen in two observations (two facts may share a value).
        """
        # the first width + 1 numbers already give more than width pairs
        numbers = [v for v in ranked if self._is_number(v)][: self.slots_per_tool + 1]
        pairs = [
            (x, y)
            for j, y in enumerate(numbers)
            for x in numbers[: j + 1]
            if x != y or self._times(x) > 1
        ]
        options = [((_difference(x, y),), (x, y)) for x, y in pairs]
        return options + [((f"{x}+{y}",), (x, y)) for x, y in pairs]

    def _times(self, value: str) -> int:
        seen = self._seen.get(value)
        return seen.times if seen is not None else 1

    def _is_number(self, value: str) -> bool:
        return self._is_kind(value, "number") or value in self._notes.calc_results

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
