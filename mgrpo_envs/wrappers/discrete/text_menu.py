"""The fallback menu: candidate calls read from the text of the observations.

Used for an episode that has no ``admissible_calls`` hook (it returns None) and for
any text env that is not built on the core. Each tool's section is filled from
what the text seen so far says; calls already made in the episode move behind new
ones in their section. Nothing task-specific is read: only the observations, the
tool list of the first observation (names, arguments, descriptions, as every env
built on the core prints it, in either codec) and the calls made; the rules below
know tables, ``Label: value`` lines, clauses and a few English words, not any task.

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

    The menu is finite: when the expert's call is not in it (a value never written
    in any observation, a combination the rules above do not build), the view's
    ``oracle_index()`` returns None. Before the built-in tasks had their hook, the
    expert's call was in this menu at every step of 1,000 to 3,000 episodes per env,
    difficulty and codec (``tests/test_discrete.py`` still checks it on a few seeds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product

import numpy as np

from mgrpo_envs.core.calculator import CalculatorError, calculate, format_number
from mgrpo_envs.core.codecs import ActionCodec, ToolCall, make_codec
from mgrpo_envs.wrappers.discrete.menu import Entry
from mgrpo_envs.wrappers.discrete.notes import Notes
from mgrpo_envs.wrappers.discrete.parsing import (
    ANSWER,
    CALCULATE,
    FUNCTION_WORDS,
    JOINED,
    LOWER_WORD,
    MAX_JOINED,
    MAX_RESULTS,
    NOT_CONTENT,
    WANTS_ID,
    Table,
    by_distance,
    condition_operators,
    description_words,
    difference,
    extract_candidates,
    joined_keys,
    kind_of,
    listed_values,
    numeric_columns,
    parse_tables,
    parse_tool_list,
    task_text,
    unique,
)

Option = tuple[tuple[str, ...], tuple[str, ...]]  # (argument values, candidates used)


@dataclass
class Seen:
    """Where a candidate value has been seen in this episode."""

    kind: str
    order: int
    last: int
    in_record: bool
    times: int = 1


class TextMenu:
    """Reads an episode's observations and builds the fallback menu from them.

    Args:
        intro: The episode's first observation (the question and the tool list).
        sections: Tool name -> argument names of the menu's sections, in order.
        slots_per_tool: Slots per section.
        taken: How often each call text was sent this episode (kept by the caller).
    """

    def __init__(
        self,
        intro: str,
        sections: dict[str, tuple[str, ...]],
        slots_per_tool: int,
        taken: Counter[str],
    ) -> None:
        codec_name, tools, descriptions = parse_tool_list(intro)
        self.tools = sections
        self.slots_per_tool = slots_per_tool
        self._taken = taken
        self._usable = {n: a for n, a in tools.items() if sections.get(n) == a}
        self._descriptions = descriptions
        self._hints = {n: description_words(d) for n, d in descriptions.items()}
        self._codec = make_codec(codec_name, self._usable) if self._usable else None
        self.task_text = task_text(intro)
        self._task = extract_candidates(self.task_text)
        enumerated: dict[str, list[str]] = {}  # argument -> the values a description lists
        for tool, description in descriptions.items():
            listed = listed_values(description)
            if listed and tools.get(tool):
                enumerated.setdefault(tools[tool][0], listed)
        self._notes = Notes(self.task_text, enumerated)
        self._seen: dict[str, Seen] = {}
        self._obs_count = 0
        self._texts: dict[tuple[str, tuple[str, ...]], tuple[ToolCall, str] | None] = {}
        self.take_in(intro, call=None, intro=True)

    # ----------------------------------------------------------------- what was seen
    def take_in(self, text: str, *, call: ToolCall | None, intro: bool = False) -> None:
        """Records the candidates of a new observation (and what it tells the notes)."""
        self._obs_count += 1
        self.latest_text = text
        self.error = text.lower().startswith(NOT_CONTENT)
        if intro:
            self._latest = list(self._task)
        elif self.error:
            self._latest = []
        else:
            tables = parse_tables(text)
            self._notes.take(call, text, tables)
            self._latest = self._latest_candidates(text, tables)
        record = "\n" not in text.strip()
        for kind, value in self._latest:
            seen = self._seen.get(value)
            if seen is None:
                self._seen[value] = Seen(kind, len(self._seen), self._obs_count, record)
            else:
                seen.last, seen.in_record = self._obs_count, seen.in_record or record
                seen.times += 1

    @property
    def codec(self) -> ActionCodec | None:
        """The codec of the tool list read (None when it lists none of the sections' tools)."""
        return self._codec

    def value_sets(self) -> tuple[set[str], set[str], set[str]]:
        """The candidates of the latest observation, of the question, and of one-line ones."""
        latest = {v for _, v in self._latest}
        task = {v for _, v in self._task}
        record = {v for v, seen in self._seen.items() if seen.in_record}
        return latest, task, record

    # ----------------------------------------------------------------- the menu
    def build(self) -> list[Entry | None]:
        """The menu: each section's calls, best first, padded with empty slots."""
        width = self.slots_per_tool
        menu: list[Entry | None] = [None] * (len(self.tools) * width)
        if self._codec is None:
            return menu
        ranked = self._ranked()
        kinds = {v: self._seen[v].kind for v in ranked if v in self._seen}
        first = {  # stable re-orders with one kind first
            kind: sorted(ranked, key=lambda v, k=kind: kinds.get(v) != k)
            for kind in ("id", "phrase")
        }
        for section, (name, args) in enumerate(self.tools.items()):
            if name in self._usable:
                entries = self._entries(name, args, ranked, first)[:width]
                menu[section * width : section * width + len(entries)] = entries
        return menu

    def _latest_candidates(self, text: str, tables: list[Table]) -> list[tuple[str, str]]:
        """The candidates of an output: the keys of each table of several rows joined by
        ", ", then those on lines that name a question's name, then the tables' keys,
        then the rest in reading order."""
        joined: list[tuple[str, str]] = []
        keys: list[tuple[str, str]] = []
        for table in tables:
            column = [row[0] for row in table.rows]
            kind = kind_of(column[0])
            if kind is None:
                continue
            if len(column) >= 2:
                joined.append((kind, joined_keys(table)))
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
        joined = [v for v in map(joined_keys, several) if v in self._seen]
        nexts = [self._notes.spans[i][2] for i in self._notes.next_places()]
        fresh = [v for name in nexts for v in self._notes.names_of(name)]
        task = [v for _, v in self._task]
        return unique([*joined, *fresh, *latest, *task, *(v for v, _ in older)])

    def _entries(
        self, name: str, args: tuple[str, ...], ranked: list[str], first: dict[str, list[str]]
    ) -> list[Entry]:
        """The calls of one section, best first (at most ``slots_per_tool``)."""
        width = self.slots_per_tool
        tail: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        if name == CALCULATE and len(args) == 1:
            options = self._expressions(ranked)
        elif len(args) == 1:
            if name == ANSWER:
                values = self._answers(ranked)
            else:  # identifiers first for an id argument, else phrases first
                values = first["id" if WANTS_ID.search(args[0]) else "phrase"]
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
        count = min(MAX_JOINED, len(self._notes.findings))
        joins = [JOINED.join(self._notes.recent(k)) for k in range(count, 1, -1)]
        found = [f.value for f in self._notes.findings[::-1]][:MAX_JOINED]
        results = []  # what the first calculations over the findings would give
        for expression, _ in self._notes.finding_expressions()[:MAX_RESULTS]:
            try:
                results.append(format_number(calculate(expression)))
            except CalculatorError:
                continue
        return unique([*joins, *found, *results, *self._notes.calc_results, *ranked])

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
                lists[i] = unique([*conditions, *ranked])[:per_arg]
        return [(combo, combo) for combo in product(*lists)]

    def _conditions(self, operators: list[str]) -> list[str]:
        """``column<op>value`` for each operator: columns are the table headers seen and the
        question's words, nearest the focus first; values of ``=`` are the latest output's
        names and identifiers, values of ``<`` and ``>`` its numbers."""
        words = [w for w in LOWER_WORD.findall(self.task_text) if w not in FUNCTION_WORDS]
        columns = by_distance(self.task_text, self._notes.focus, [*self._notes.headers, *words])
        latest = [(kind, v) for kind, v in self._latest if JOINED not in v]
        names = sorted(
            (v for kind, v in latest if kind != "number"), key=lambda v: kind_of(v) != "id"
        )
        numbers = [v for kind, v in latest if kind == "number"]
        conditions = []
        for op in operators:
            values = (names if op == "=" else numbers)[:2]
            conditions += [f"{column}{op}{value}" for column in columns for value in values]
        return conditions

    def _format(
        self, name: str, args: tuple[str, ...], options: Iterable, limit: int
    ) -> tuple[list[Entry], list[Entry]]:
        """Formatted calls, split into new ones (at most ``limit``) and ones already made."""
        fresh: list[Entry] = []
        repeated: list[Entry] = []
        texts: set[str] = set()
        for arg_values, used in options:
            formatted = self._formatted(name, args, arg_values)
            if formatted is None:
                continue
            call, text = formatted
            if text not in texts:
                texts.add(text)
                (repeated if self._taken[text] else fresh).append(Entry(call, text, used))
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
            ties = self._notes.ties(numeric_columns(table), None, place)
            tied = {label for side in ties for label, _ in side}
            for label, option in self._notes.column_expressions(table, diffs):
                (near if label in tied else far).append(option)
        rows = self._notes.row_sums([] if self.error else self.latest_text.splitlines())
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
        options = [((difference(x, y),), (x, y)) for x, y in pairs]
        return options + [((f"{x}+{y}",), (x, y)) for x, y in pairs]

    def _times(self, value: str) -> int:
        seen = self._seen.get(value)
        return seen.times if seen is not None else 1

    def _is_number(self, value: str) -> bool:
        return self._is_kind(value, "number") or value in self._notes.calc_results

    def _is_kind(self, value: str, kind: str) -> bool:
        seen = self._seen.get(value)
        return seen is not None and seen.kind == kind
