"""What an episode's outputs told about its question (the fallback menu's memory).

See "Findings" and "Calculations" in the docstring of
:mod:`mgrpo_envs.wrappers.discrete.text_menu`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.wrappers.discrete.parsing import (
    CALCULATE,
    LEAST,
    MAX_JOINED,
    NUMBER,
    OPERAND,
    Table,
    clause_bounds,
    difference,
    extract_candidates,
    joined_keys,
    kind_of,
    label_ties,
    labelled_lines,
    name_spans,
    named_at,
    named_in,
    names_word,
    numbers_in,
    numeric_columns,
    pair_calculations,
    unique,
)


@dataclass(frozen=True)
class Finding:
    """A value found for what the question asks, and where the question asks for it
    (the place of the name it belongs to)."""

    value: str
    position: int


class Notes:
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
        self.findings: list[Finding] = []
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
            self.headers = unique([*self.headers, *table.header])
            if self.focus is not None:
                self.tables_of.setdefault(self.focus, []).append(table)
            if len(table.rows) >= 2:
                self.listing = table
                if self.focus is not None:  # naming these keys names the focus
                    self.aliases[joined_keys(table)] = self.focus
            for row in table.rows:
                name = next((cell for cell in row[1:] if kind_of(cell) == "phrase"), None)
                if name is not None and kind_of(row[0]) == "id":
                    self.aliases[row[0]], self.keys[name] = name, row[0]
        result = text.strip()
        if call is not None and call.name == CALCULATE and NUMBER.fullmatch(result):
            self.calc_results.insert(0, result)
            self.use_up(set(OPERAND.findall(call.arguments[0][1])), result)
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
        used: list[Finding] = []
        if operands and all(places):  # else over a row or a column, not over findings
            common = set.intersection(*places)
            for value in operands:
                mine = [f for f in self.findings if f.value == value]
                at = [f for f in mine if f.position == max(common)] if common else []
                used.append((at or mine)[-1])
        place = min((f.position for f in used), default=self.position())
        kept = [f for f in self.findings if all(f is not u for u in used)]
        self.findings = [*kept, Finding(result, place)]

    def found(self, text: str, tables: list[Table]) -> list[Finding]:
        """The values an output gives for labels the question names (see "Findings")."""
        found = self.tied_values(labelled_lines(text), None)
        for table in tables:
            if len(table.rows) == 1:
                cells = zip(table.header, table.rows[0], strict=True)
                numbers = [(label, cell) for label, cell in cells if kind_of(cell) == "number"]
                found += self.tied_values(numbers, self.table_name(table))
            else:
                found += self.extremes(table)
        return sorted(found, key=lambda f: f.position)

    def tied_values(self, pairs: list[tuple[str, str]], table: str | None) -> list[Finding]:
        """A finding for each place the question ties a label of ``pairs`` to."""
        value_of = dict(pairs)
        before, _ = self.ties(value_of, table)
        return [Finding(value_of[label], place) for label, place in before]

    def extremes(self, table: Table) -> list[Finding]:
        """For each numeric column a name asks which of its rows has the largest value of
        ("the company of the Retail sector with the highest Q2 revenue"), that row (the
        smallest if the question asks for the least), as the name in its row."""
        least = LEAST.search(self.question) is not None
        _, rows_of = self.ties(numeric_columns(table), self.table_name(table))
        found = []
        for label, position in rows_of:
            i = table.header.index(label)
            column = [float(row[i]) for row in table.rows]
            best = min(column) if least else max(column)
            if column.count(best) == 1:
                key = table.rows[column.index(best)][0]
                found.append(Finding(self.aliases.get(key, key), position))
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
        named = [x for x in unique(labels) if named_in(question, x)]
        place = self.cursor if place is None else place
        if place is None:
            return [(x, named_at(question, x)) for x in named], []
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
        keys = [joined_keys(t) for t in listings[-1:]]
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
            row = tuple(numbers_in(line))
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
        for label in numeric_columns(table):
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
                        out.append((label, (difference(earlier[row[0]], row[i]), (row[i],))))
        return out

    def recent(self, count: int, numbers: bool = False) -> list[str]:
        """The values of the latest ``count`` findings (numbers only, if asked), in the
        order the question asks for them."""
        found = [f for f in self.findings if not numbers or NUMBER.fullmatch(f.value)]
        return [f.value for f in sorted(found[-count:], key=lambda f: f.position)] if count else []

    def finding_expressions(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(expression, operands)`` over the latest numeric findings: ``a-b`` of two the
        question asks for at one place, the sums of the latest ``k`` (all of them down
        to two) in the question's order, then for each pair, newest first, ``a-b`` and
        ``round(a/b, 2)`` (larger first) and ``a+b``."""
        numeric = [f for f in self.findings if NUMBER.fullmatch(f.value)][-MAX_JOINED:]
        # two values asked for at one place make one ("the Q3 profit of A": revenue - cost)
        out = [
            (difference(x.value, y.value), (x.value, y.value))
            for j, y in enumerate(numeric)
            for x in numeric[:j]
            if x.position == y.position
        ]
        for k in range(len(numeric), 1, -1):
            recent = self.recent(k, numbers=True)
            out.append(("+".join(recent), tuple(recent)))
        for j in reversed(range(len(numeric))):
            for i in reversed(range(j)):
                out += pair_calculations(numeric[i].value, numeric[j].value)
        return out
