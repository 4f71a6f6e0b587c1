"""Reading observations' text: tool lists, candidates, tables, labels and clauses.

These are the pieces the fallback menu (:mod:`mgrpo_envs.wrappers.discrete.text_menu`)
is built from; they know the core's tool-list format, tables (``a | b`` lines),
``Label: value`` lines and a few English words, and nothing of any task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

CALCULATE = "calculate"
ANSWER = "answer"

_TOOL_LINE = re.compile(
    r"^(?:<tool_call>(?P<json>.*?)</tool_call>|(?P<name>[A-Za-z_][\w.\-]*)\[(?P<args>[^\]\n]*)\])"
    r" - (?P<desc>.*)$",
    re.MULTILINE,
)
_PLACEHOLDER = re.compile(r"<([^<>|]+)>")
_TASK = re.compile(r"\b(?:Question|Task):\s*(.*)", re.DOTALL)
CANDIDATE = re.compile(
    r"(?P<id>(?<![\w/])[A-Za-z_][\w\-]*\d[\w\-]*)"
    r"|(?P<number>(?<![\w.])-?\d+(?:\.\d+)?(?!\w))"
    # a name's words are whole words: "Q" of "the Q3" starts none
    r"|(?P<phrase>[A-Z][A-Za-z'\-]*(?!\w)"
    r"(?: (?:(?:of|the|for|de|la|van|von) )?[A-Z][A-Za-z'\-]*(?!\w))*)"
)
WORD = re.compile(r"[a-z]+|\d+")
TOKEN = re.compile(r"[A-Za-z0-9]+")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# the operands of an expression: "609-546" uses 609 and 546 (not -546), and
# "round(2249/707, 2)" uses 2249 and 707 (2 is the number of decimals)
OPERAND = re.compile(r"(?<![\d.])(?<!, )\d+(?:\.\d+)?")
_LABEL_LINE = re.compile(r"^([A-Za-z][\w ]*): ([^:\n]+?)\.?$", re.MULTILINE)
JOINED = ", "  # between the keys of a table joined into one candidate, and joined answers
# where a question's clause ends: a label is never tied to a name past one
_CLAUSE = re.compile(r",| and ")
LOWER_WORD = re.compile(r"\b[a-z][a-z\-]{2,}\b")
MAX_JOINED = 4  # findings joined or paired at most
MAX_RESULTS = 4  # calculations over findings whose results the answer section offers
# a form of an argument in a description: "column=value", "Q3>number"
_FORM = re.compile(r"(?<![\w=<>])[A-Za-z]\w*(=|<|>)[A-Za-z]\w*(?![\w=<>])")
# a question that asks for the smallest rather than the largest
LEAST = re.compile(r"\b(?:lowest|least|smallest|fewest|minimum|min)\b", re.IGNORECASE)
_LISTED = re.compile(r"[\w.\-]+(?: [\w.\-]+)?")
# An argument named like an identifier (doc_id, url) takes identifier candidates first.
WANTS_ID = re.compile(r"(?:^|_)(?:id|url)s?$")
# Capitalised words that start sentences rather than names; dropped from a phrase's start.
_LEADING = frozenset(
    "A An The It Its In On Of At By For To And Or What Which Who Whom Whose When Where Why "
    "How This That These Those There Is Are Was Were Do Does Did You Your Question Task Tools "
    "Reply Error No Give Name List Tell Find".split()
)
NOT_CONTENT = ("error", "episode over")
COMMON = frozenset(
    "the and for with from this that its one all any are was were has have give gives "
    "returns return end ends stop".split()
)
# function words of questions: never column names
FUNCTION_WORDS = COMMON | frozenset(
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
    return unique(items)


def description_words(description: str) -> list[str]:
    """The values a tool description names: its enumeration, else its content words.

    Content words are lower-case words of three letters or more, without common
    ones: ``home`` in "open a page by url or id; the start page is home".
    """
    listed = listed_values(description)
    if listed:
        return listed
    return unique(w for w in re.findall(r"[a-z]{3,}", description) if w not in COMMON)


def task_text(intro: str) -> str:
    """The question (task) part of a conversation's opening message."""
    head = intro.split("\nTools:", 1)[0]
    match = _TASK.search(head)
    return (match.group(1) if match else head).strip()


def extract_candidates(text: str) -> list[tuple[str, str]]:
    """``(kind, value)`` pairs in reading order; kind is ``id``, ``number`` or ``phrase``."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for match in CANDIDATE.finditer(text):
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
    return word_pattern(label).search(text) is not None


def named_at(text: str, label: str) -> int:
    """Where ``text`` first names ``label`` (its length if nowhere)."""
    match = word_pattern(label).search(text)
    return match.start() if match else len(text)


def name_spans(question: str, names: Iterable[str]) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of every place the question names one of ``names``, in order;
    a place inside a longer name's place is not one."""
    spans = {(m.start(), m.end(), n) for n in names for m in word_pattern(n).finditer(question)}
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
        for t in (t.lower() for t in TOKEN.findall(text))
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
    before = [(m.end(), x) for x in labels for m in word_pattern(x).finditer(question, left, start)]
    after = [
        (-m.start(), x) for x in labels for m in word_pattern(x).finditer(question, end, right)
    ]
    return (max(before)[1] if before else None, max(after)[1] if after else None)


def by_distance(question: str, focus: str | None, words: Iterable[str]) -> list[str]:
    """``words`` by their distance in words from ``focus`` in the question, nearest first.

    Words the question does not name come last, in their given order; so do all
    words when there is no focus or the question does not name it.
    """
    tokens = [t.lower() for t in TOKEN.findall(question)]
    anchors: list[tuple[int, int]] = []
    if focus:
        parts = [t.lower() for t in TOKEN.findall(focus)]
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

    return sorted(unique(words), key=distance)


def condition_operators(description: str) -> list[str]:
    """The comparison operators of the ``name=value`` forms a description shows, in order.

    ``"rows where column=value or Q3>number"`` gives ``["=", ">"]``.
    """
    return unique(m.group(1) for m in _FORM.finditer(description))


def numeric_columns(table: Table) -> list[str]:
    """The headers of a table's columns of numbers, but the first (the rows' keys)."""
    return [
        label
        for i, label in enumerate(table.header[1:], 1)
        if all(kind_of(row[i]) == "number" for row in table.rows)
    ]


def joined_keys(table: Table) -> str:
    """The keys of a table (its first column), joined by ", " (``c1, c4, c7``)."""
    return JOINED.join(row[0] for row in table.rows)


def numbers_in(text: str) -> list[str]:
    """The numbers of a text in reading order, repeats kept (``c8 | 5 | 5`` -> 5, 5)."""
    return [m.group("number") for m in CANDIDATE.finditer(text) if m.lastgroup == "number"]


def pair_calculations(x: str, y: str) -> list[tuple[str, tuple[str, ...]]]:
    """``a-b`` and ``round(a/b, 2)`` (the larger first; no ratio over zero) and ``x+y``."""
    hi, lo = (x, y) if float(x) >= float(y) else (y, x)
    ratio = [(f"round({hi}/{lo}, 2)", (x, y))] if float(lo) != 0 else []
    return [(f"{hi}-{lo}", (x, y)), *ratio, (f"{x}+{y}", (x, y))]


def difference(x: str, y: str) -> str:
    """``a-b``: the larger of two numbers minus the smaller."""
    hi, lo = (x, y) if float(x) >= float(y) else (y, x)
    return f"{hi}-{lo}"


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


@lru_cache(maxsize=4096)
def word_pattern(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)", re.IGNORECASE)


def kind_of(value: str) -> str | None:
    """The candidate kind of a value that is exactly one candidate, else None."""
    found = extract_candidates(value)
    return found[0][0] if len(found) == 1 and found[0][1] == value else None
