"""ledger_v0: numeric questions answered from generated financial tables.

Env card
========

A table-analysis task generated offline. Every episode draws a fresh ledger of
small related tables: companies, each in a sector and a region (foreign keys), and
their quarterly revenue and costs. Questions need several look-ups, joins through
the keys and arithmetic; companies with near-duplicate names (``Orion Foods`` next
to ``Orion Freight``) sit in the same tables.

Tables
    ``sectors`` (id, name), ``regions`` (id, name), ``companies`` (id, name,
    sector, region; sector and region hold ids such as ``s2`` and ``r1``),
    ``revenue`` and ``costs`` (company, Q1, Q2, Q3, Q4; company holds a company id
    such as ``c3``). Amounts are whole numbers.

Roles
    ``main`` plans, delegates, calculates and answers. ``analyst`` computes one
    figure per call from the tables.

Tools
    main: ``delegate[task]`` (start an analyst call), ``calculate[expression]``
    (arithmetic through a whitelisted AST), ``answer[text]`` (ends the episode).
    analyst: ``lookup[table | keys]`` (the rows with these keys: ids, or names in
    the tables that have names; several keys separated by commas),
    ``filter[table | condition]`` (the rows where ``column=value``, ``column>number``
    or ``column<number``, at most 12 shown), ``calculate[expression]`` (the same
    calculator as main's), ``return[result]`` (ends the call; main sees the result).

Questions
    Built from one to three figures, each one analyst call: a company's revenue or
    cost in a quarter, its full-year revenue or cost, its profit in a quarter, the
    total revenue or cost of a sector or region in a quarter, or the company of a
    sector with the highest revenue or cost in a quarter. Figures are combined by
    difference ("By how much did the Q3 revenue of Orion Foods exceed the Q3 cost of
    Kestrel Mills?"), sum, ratio ("..., rounded to two decimals") or, at hard, a
    list in the order asked ("Give ..., in that order." -> ``Orion Foods, 412``).
    A one-figure question asks for the figure itself.

Answers and tolerance
    Numbers match when within a relative ``tolerance`` (default 1%) of the gold
    value; names match after lower-casing and dropping punctuation and articles.
    A list matches when it has as many comma-separated items as the gold list and
    each item matches in order. That is main's check; an analyst's result is judged
    by the figure's value anywhere in it (below).

Observation and action
    ``Text`` spaces (printable ASCII, ``max_observation_chars`` long). The observation
    is the new message for the acting agent; the action is the agent's text, in which
    the first tool call counts (``codec="compact"``: ``lookup[companies | Orion Foods]``;
    ``codec="json"``: ``<tool_call>{"name": "lookup", "arguments": {...}}</tool_call>``).

Rewards (paid at the end; see :mod:`mgrpo_envs.core.rewards`)
    ``main``: 0 without a well-formed answer, else ``0.1 * r_format + 0.9 * correct``.
    ``analyst``: mean over its calls of 0 (no ``return``) or
    ``0.1 * r_format + 0.4 * correct_main + 0.5 * expert``; ``expert`` is 1 when the
    returned text states the gold value of the figure the subtask asks for anywhere
    in it, within ``tolerance`` (``412``, ``412 dollars``, ``Orion Foods: 412``,
    ``The top company is Orion Foods.``), and no conflicting value: beside an
    amount no other number (``412 or 380``, and the working ``600-188=412``, score
    0; ``Q3`` is a word, not a number), beside a company no other company name
    (``Orion Foods or Orion Freight`` scores 0); see ``Episode.check_fact``, the
    rule of ``mgrpo_envs.core.rewards.fact_in_answer``. A subtask asks for a figure
    when it equals the figure's canonical subtask, the one the scripted main agent
    delegates, up to case, whitespace and punctuation (``Episode.match_fact``).

Episode end
    ``main`` answers (terminated), or a budget runs out (truncated): main turns,
    total turns, or main's context characters. An analyst call that runs out of
    turns or context ends without a result and main is told so.

Arguments
    ``difficulty`` (``easy``, ``medium``, ``hard``) sets the defaults of: ``parts``
    (range of figures per question), ``figures`` (which kinds of figure are drawn:
    ``cell``, ``total``, ``profit``, ``group``, ``top``), ``companies``, ``sectors``,
    ``regions`` (table sizes), ``decoys`` (near-duplicate company names per company
    in the question), and the turn budgets ``main_turns``, ``sub_turns``,
    ``episode_turns``, ``context_chars``; each may be given explicitly. Also
    ``tolerance``, ``codec``, ``reward_weights``, ``max_observation_chars``,
    ``render_mode``.

Version history
    v0: first release. Change within v0: a subtask is matched to its fact exactly
    (normalised text equal) rather than by word overlap, which took "fare from A to
    B" for "fare from B to A"; word-overlap matching is opt-in
    (``Episode.fact_matching = "fuzzy"``). Change within v0 (issue 33): ``expert``
    judges the figure by its value anywhere in the analyst's result (``Orion Foods:
    412`` now scores as ``412`` did; a conflicting value scores 0), where only the
    bare value (or list) scored before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pettingzoo import AECEnv

from mgrpo_envs.core.calculator import format_number
from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.rewards import answers_match
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent, pool_of
from mgrpo_envs.core.task_env import TaskEnv, wrap
from mgrpo_envs.core.tools import Tool, ToolError

ROLE = "analyst"
NAME_FIRST = (
    "Orion Kestrel Juniper Cobalt Maple Granite Falcon Willow Beacon Ember Quartz Cedar "
    "Atlas Nimbus Vesper Tundra Sable Lumen Polar Crest Aster Boreal Pioneer Harbor"
).split()
NAME_SECOND = (
    "Foods Freight Systems Motors Mills Works Logistics Supplies Partners Holdings "
    "Dynamics Goods Trading Instruments"
).split()
#: Every company name: the rivals of a company gold (r_expert of a "top" figure).
COMPANY_NAMES = tuple(f"{a} {b}" for a in NAME_FIRST for b in NAME_SECOND)
SECTOR_NAMES = "Retail Energy Transport Health Media Farming Mining Software".split()
REGION_NAMES = "North South East West Coast Highlands".split()
QUARTERS = ("Q1", "Q2", "Q3", "Q4")
METRICS = {"revenue": "revenue", "cost": "costs"}  # metric word -> table
FIGURES = ("cell", "total", "profit", "group", "top")
TABLES: dict[str, tuple[str, ...]] = {
    "companies": ("id", "name", "sector", "region"),
    "sectors": ("id", "name"),
    "regions": ("id", "name"),
    "revenue": ("company", *QUARTERS),
    "costs": ("company", *QUARTERS),
}
#: column -> the table whose ids it holds
FOREIGN_KEYS = {"sector": "sectors", "region": "regions", "company": "companies"}
MAX_ROWS = 12
MAX_KEYS = 12

DIFFICULTIES: dict[str, dict] = {
    "easy": dict(
        parts=(1, 2),
        figures=("cell", "total"),
        companies=6,
        sectors=3,
        regions=2,
        decoys=1,
        main_turns=6,
        sub_turns=6,
        episode_turns=30,
        context_chars=6000,
    ),
    "medium": dict(
        parts=(2, 2),
        figures=("cell", "total", "profit", "group"),
        companies=12,
        sectors=4,
        regions=3,
        decoys=2,
        main_turns=8,
        sub_turns=8,
        episode_turns=40,
        context_chars=8000,
    ),
    "hard": dict(
        parts=(2, 3),
        figures=FIGURES,
        companies=24,
        sectors=6,
        regions=4,
        decoys=3,
        main_turns=10,
        sub_turns=10,
        episode_turns=60,
        context_chars=10000,
    ),
}
_CONDITION = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(=|<|>)\s*(.*?)\s*$")
_SPACES = re.compile(r"\s+")
_LIST_SPLIT = re.compile(r"\s*[,;]\s*")


def env(**kwargs) -> AECEnv:
    """The PettingZoo AEC env: :func:`raw_env` in the core's wrappers (``wrap``)."""
    return wrap(raw_env(**kwargs))


def raw_env(**kwargs) -> LedgerEnv:
    """The unwrapped env; keyword arguments as in the env card."""
    return LedgerEnv(**kwargs)


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower())


def list_match(given: str, gold: str, rel_tol: float) -> bool:
    """Item-wise answer check for comma-separated lists; a single value as ``answers_match``.

    Args:
        given: The agent's answer.
        gold: The gold answer; with a comma it is a list of values in order.
        rel_tol: Relative tolerance for numeric items.

    Returns:
        True when ``given`` has the same number of items and each matches in order.
    """
    if answers_match(given, gold, rel_tol=rel_tol):
        return True
    gold_items = _LIST_SPLIT.split(gold.strip())
    if len(gold_items) < 2:
        return False
    given_items = _LIST_SPLIT.split(given.strip().strip("."))
    return len(given_items) == len(gold_items) and all(
        answers_match(a, b, rel_tol=rel_tol) for a, b in zip(given_items, gold_items, strict=True)
    )


@dataclass
class Ledger:
    """The tables of one episode: rows of strings, keyed by their first column."""

    tables: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)

    def rows(self, table: str) -> list[tuple[str, ...]]:
        """Every row of ``table``, ordered by id."""
        return self.tables[table]

    def find(self, table: str, key: str) -> tuple[str, ...] | None:
        """The row whose id (or, in a table with names, name) is ``key``, case-insensitively."""
        k = _norm(key)
        named = "name" in TABLES[table]
        for r in self.tables[table]:
            if r[0].lower() == k or (named and _norm(r[1]) == k):
                return r
        return None

    def render(self, table: str, rows: Sequence[tuple[str, ...]], head: str | None = None) -> str:
        """A header line, the column names and one line per row, fields separated by ``|``."""
        lines = [head or f"{table}: {len(rows)} row(s)", " | ".join(TABLES[table])]
        lines += [" | ".join(r) for r in rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Figure:
    """One figure a question needs: what it is, its gold value, and the expert's calls."""

    subtask: str
    phrase: str
    answer: str
    numeric: bool
    plan: tuple[ToolCall, ...]


class LedgerEpisode(Episode):
    """One ledger and one question over it."""

    def __init__(
        self,
        ledger: Ledger,
        question: str,
        gold: str,
        figures: list[Figure],
        calculation: str | None,
        tolerance: float,
    ) -> None:
        self.ledger = ledger
        self.question = question
        self.gold = gold
        self.facts = tuple(Fact(ROLE, f.subtask, f.answer) for f in figures)
        self.calculation = calculation
        self.rel_tol = tolerance
        self.plans = {f.subtask: f.plan for f in figures}

    def check(self, given: str, gold: str) -> bool:
        """Main's answer: numbers within ``rel_tol``; lists item by item (see the env card).

        An analyst's result is judged by the default :meth:`check_fact` (a figure is
        one value, never a list), with :meth:`rivals` for a company gold.
        """
        return list_match(given, gold, self.rel_tol)

    def rivals(self, fact: Fact) -> Sequence[str]:
        """Every company name, when the gold is one (a "top" figure); else none."""
        return pool_of(fact.answer, (COMPANY_NAMES,))

    def tools(self, role: str) -> list[Tool]:
        if role != ROLE:
            raise ValueError(f"ledger_v0 has the role {ROLE!r}, got {role!r}")
        names = ", ".join(TABLES)
        return [
            Tool("lookup", ("table", "keys"), f"rows by id or name; tables: {names}", self._lookup),
            Tool(
                "filter",
                ("table", "condition"),
                "rows where column=value or Q3>number",
                self._filter,
            ),
        ]

    def _table(self, table: str) -> str:
        name = _norm(table)
        if name not in TABLES:
            raise ToolError(f"no table {table.strip()[:40]!r}; tables are {', '.join(TABLES)}")
        return name

    def _lookup(self, table: str, keys: str) -> str:
        name = self._table(table)
        wanted = [k for k in _LIST_SPLIT.split(keys.strip()) if k]
        if not wanted:
            raise ToolError(f"no keys given; write ids such as c3 (or names) after {name} |")
        rows: list[tuple[str, ...]] = []
        for key in wanted:
            row = self.ledger.find(name, key)
            if row is not None:
                rows.append(row)
                continue
            parts = [self.ledger.find(name, k) for k in key.split()]
            if len(parts) < 2 or any(p is None for p in parts):
                raise ToolError(self._no_row(name, key))
            rows.extend(p for p in parts if p is not None)
        if len(rows) > MAX_KEYS:
            raise ToolError(f"too many keys ({len(rows)}); look up at most {MAX_KEYS} at a time")
        return self.ledger.render(name, rows)

    @staticmethod
    def _no_row(table: str, key: str) -> str:
        hint = {
            "companies": "ids like c3 or company names",
            "sectors": "ids like s2 or sector names",
            "regions": "ids like r1 or region names",
        }.get(table, "company ids like c3 (the companies table gives them)")
        return f"no row {key.strip()[:40]!r} in {table}; keys are {hint}"

    def _filter(self, table: str, condition: str) -> str:
        name = self._table(table)
        m = _CONDITION.match(condition)
        columns = TABLES[name]
        if m is None:
            raise ToolError(
                f"bad condition {condition.strip()[:40]!r}; write column=value or column>number"
            )
        column, op, value = m.group(1).lower(), m.group(2), m.group(3)
        lowered = [c.lower() for c in columns]
        if column not in lowered:
            raise ToolError(
                f"{name} has no column {m.group(1)!r}; its columns are {', '.join(columns)}"
            )
        i = lowered.index(column)
        rows = self._matching(name, i, op, value)
        head = f"{name} where {columns[i]} {op} {value[:40]}: {len(rows)} row(s)"
        if not rows:
            hint = ""
            if columns[i] in FOREIGN_KEYS:
                hint = f"; {columns[i]} holds ids from the {FOREIGN_KEYS[columns[i]]} table"
            return f"no rows of {name} where {columns[i]} {op} {value[:40]!r}{hint}"
        if len(rows) > MAX_ROWS:
            head += f", the first {MAX_ROWS} shown"
        return self.ledger.render(name, rows[:MAX_ROWS], head=head)

    def _matching(self, table: str, i: int, op: str, value: str) -> list[tuple[str, ...]]:
        rows = self.ledger.rows(table)
        if op == "=":
            return [r for r in rows if _norm(r[i]) == _norm(value)]
        try:
            bound = float(value)
        except ValueError:
            raise ToolError(f"{op} needs a number, got {value[:40]!r}") from None
        if not math.isfinite(bound) or not TABLES[table][i].startswith("Q"):
            raise ToolError(f"{op} compares amounts: use it on Q1..Q4 of revenue or costs")
        sign = 1 if op == ">" else -1
        return [r for r in rows if sign * (float(r[i]) - bound) > 0]

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        """The first call of the figure's plan not yet made successfully (``return`` last)."""
        if fact is None:
            return ToolCall.make("return", result="unknown")
        done = {ev.call for ev in history if ev.ok and ev.call is not None}
        return next(call for call in self.plans[fact.subtask] if call not in done)

    def admissible_calls(self, role: str, history: Sequence[ToolEvent]) -> list[ToolCall]:
        """The expert's calls for every figure, then near misses of each (``_variants``)."""
        if role != ROLE:
            raise ValueError(f"ledger_v0 has the role {ROLE!r}, got {role!r}")
        calls = self.expert_calls(role, history)
        for call in list(calls):
            calls += self._variants(call)
        return list(dict.fromkeys(calls))

    def _variants(self, call: ToolCall) -> list[ToolCall]:
        """Near misses of a call: the other amounts table, a near-duplicate company (or
        another sector or region) by name, another group's filter, another arithmetic."""
        args = call.args
        table = args.get("table", "")
        if call.name == "lookup" and table in METRICS.values():
            other = "costs" if table == "revenue" else "revenue"
            return [ToolCall.make("lookup", table=other, keys=args["keys"])]
        if call.name == "lookup":  # a look-up by name: companies, sectors or regions
            first = args["keys"].split()[0]
            rows = [r for r in self.ledger.rows(table) if _norm(r[1]) != _norm(args["keys"])]
            near = [r for r in rows if table != "companies" or r[1].split()[0] == first]
            return [ToolCall.make("lookup", table=table, keys=r[1]) for r in near[:3]]
        if call.name == "filter":
            column, _, value = args["condition"].partition("=")
            rows = self.ledger.rows(FOREIGN_KEYS.get(column, "sectors"))
            others = [r[0] for r in rows if r[0] != value][:3]
            return [ToolCall.make("filter", table=table, condition=f"{column}={v}") for v in others]
        if call.name == "calculate":
            expression = args["expression"]
            operands = re.split(r"[+-]", expression)
            shorter = "+".join(operands[:-1]) if len(operands) > 2 else "+".join(operands)
            return [ToolCall.make("calculate", expression=shorter)]
        return []


class LedgerBuilder:
    """Draws the tables of one episode and the figures questions are made of."""

    def __init__(
        self, rng: np.random.Generator, companies: int, sectors: int, regions: int
    ) -> None:
        self.rng = rng
        self.sectors = [SECTOR_NAMES[int(i)] for i in rng.permutation(len(SECTOR_NAMES))[:sectors]]
        self.regions = [REGION_NAMES[int(i)] for i in rng.permutation(len(REGION_NAMES))[:regions]]
        #: company name -> [sector name, region name]
        self.companies: dict[str, tuple[str, str]] = {}
        self.amounts: dict[str, dict[str, list[int]]] = {"revenue": {}, "costs": {}}
        for _ in range(companies):
            self.add_company()

    def _pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def add_company(self, like: str | None = None) -> str | None:
        """A new company with a unique name (sharing the first word of ``like``); None if full."""
        firsts = [like.split(" ")[0]] if like else NAME_FIRST
        free = [f"{a} {b}" for a in firsts for b in NAME_SECOND if f"{a} {b}" not in self.companies]
        if not free:
            if like:
                return None
            raise ValueError("the company name pool is exhausted; lower companies")
        name = self._pick(free)
        self.companies[name] = (self._pick(self.sectors), self._pick(self.regions))
        revenue = self.rng.integers(100, 1000, size=4)
        costs = np.rint(revenue * self.rng.uniform(0.5, 0.95, size=4)).astype(int)
        self.amounts["revenue"][name] = [int(v) for v in revenue]
        self.amounts["costs"][name] = [int(v) for v in costs]
        return name

    def ledger(self) -> tuple[Ledger, dict[str, str]]:
        """The tables, with ids drawn at random; also name -> id for every entity."""
        ids: dict[str, str] = {}
        for prefix, names in (
            ("s", self.sectors),
            ("r", self.regions),
            ("c", list(self.companies)),
        ):
            for i, idx in enumerate(self.rng.permutation(len(names))):
                ids[names[int(idx)]] = f"{prefix}{i + 1}"

        def by_id(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
            return sorted(rows, key=lambda r: int(r[0][1:]))

        tables = {
            "sectors": by_id([(ids[n], n) for n in self.sectors]),
            "regions": by_id([(ids[n], n) for n in self.regions]),
            "companies": by_id(
                [(ids[n], n, ids[s], ids[r]) for n, (s, r) in self.companies.items()]
            ),
        }
        for table, amounts in self.amounts.items():
            tables[table] = by_id([(ids[n], *map(str, v)) for n, v in amounts.items()])
        return Ledger(tables), ids


class FigureMaker:
    """Builds the figures of one ledger, each with the expert's plan of calls."""

    def __init__(self, b: LedgerBuilder, ids: dict[str, str]) -> None:
        self.b, self.ids = b, ids

    def amount(self, metric: str, company: str, q: int) -> int:
        return self.b.amounts[METRICS[metric]][company][q]

    def _company_row(self, company: str) -> ToolCall:
        return ToolCall.make("lookup", table="companies", keys=company)

    def cell(self, company: str, metric: str, q: int) -> Figure:
        table = METRICS[metric]
        plan = (
            self._company_row(company),
            ToolCall.make("lookup", table=table, keys=self.ids[company]),
        )
        return self._figure(
            f"the {QUARTERS[q]} {metric} of {company}", self.amount(metric, company, q), plan
        )

    def total(self, company: str, metric: str) -> Figure:
        table = METRICS[metric]
        values = [self.amount(metric, company, q) for q in range(4)]
        plan = (
            self._company_row(company),
            ToolCall.make("lookup", table=table, keys=self.ids[company]),
            ToolCall.make("calculate", expression="+".join(map(str, values))),
        )
        return self._figure(f"the full-year {metric} of {company}", sum(values), plan)

    def profit(self, company: str, q: int) -> Figure:
        r, c = self.amount("revenue", company, q), self.amount("cost", company, q)
        plan = (
            self._company_row(company),
            ToolCall.make("lookup", table="revenue", keys=self.ids[company]),
            ToolCall.make("lookup", table="costs", keys=self.ids[company]),
            ToolCall.make("calculate", expression=f"{r}-{c}"),
        )
        return self._figure(f"the {QUARTERS[q]} profit of {company}", r - c, plan)

    def members(self, column: str, group: str) -> list[str]:
        i = 0 if column == "sector" else 1
        return [n for n, sr in self.b.companies.items() if sr[i] == group]

    def _group_plan(self, column: str, group: str, metric: str) -> list[ToolCall]:
        members = sorted(self.members(column, group), key=lambda n: int(self.ids[n][1:]))
        return [
            ToolCall.make("lookup", table=FOREIGN_KEYS[column], keys=group),
            ToolCall.make("filter", table="companies", condition=f"{column}={self.ids[group]}"),
            ToolCall.make(
                "lookup", table=METRICS[metric], keys=", ".join(self.ids[n] for n in members)
            ),
        ]

    def group(self, column: str, group: str, metric: str, q: int) -> Figure | None:
        members = sorted(self.members(column, group), key=lambda n: int(self.ids[n][1:]))
        if not 2 <= len(members) <= MAX_ROWS:
            return None
        values = [self.amount(metric, n, q) for n in members]
        plan = self._group_plan(column, group, metric)
        plan.append(ToolCall.make("calculate", expression="+".join(map(str, values))))
        phrase = f"the total {QUARTERS[q]} {metric} of the {group} {column}"
        return self._figure(phrase, sum(values), tuple(plan))

    def top(self, sector: str, metric: str, q: int) -> Figure | None:
        members = self.members("sector", sector)
        values = sorted((self.amount(metric, n, q), n) for n in members)
        if not 2 <= len(members) <= MAX_ROWS or values[-1][0] == values[-2][0]:
            return None
        best = values[-1][1]
        plan = tuple(self._group_plan("sector", sector, metric))
        subtask = f"Which company of the {sector} sector had the highest {QUARTERS[q]} {metric}?"
        phrase = f"the company of the {sector} sector with the highest {QUARTERS[q]} {metric}"
        ret = ToolCall.make("return", result=best)
        return Figure(subtask, phrase, best, False, (*plan, ret))

    @staticmethod
    def _figure(phrase: str, value: int, plan: tuple[ToolCall, ...]) -> Figure:
        answer = str(value)
        ret = ToolCall.make("return", result=answer)
        return Figure(f"What was {phrase}?", phrase, answer, True, (*plan, ret))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class LedgerTask(Task):
    """Samples ledgers and questions at a difficulty."""

    roles = (ROLE,)
    role_descriptions = {ROLE: "computes one figure from the tables"}
    calculator_roles = (ROLE,)

    def __init__(
        self,
        parts: tuple[int, int],
        figures: Sequence[str],
        companies: int,
        sectors: int,
        regions: int,
        decoys: int,
        tolerance: float = 0.01,
    ) -> None:
        lo, hi = tuple(parts)
        if not (1 <= lo <= hi <= 3):
            raise ValueError(f"parts must be a range within 1..3 like (2, 3), got {parts!r}")
        figures = tuple(figures)
        if not figures or not set(figures) <= set(FIGURES):
            raise ValueError(f"figures must be a non-empty subset of {FIGURES}, got {figures!r}")
        checks = {
            "companies": (companies, 4, 40),
            "sectors": (sectors, 2, len(SECTOR_NAMES)),
            "regions": (regions, 2, len(REGION_NAMES)),
            "decoys": (decoys, 0, 3),
        }
        for name, (value, low, high) in checks.items():
            if not (isinstance(value, int) and low <= value <= high):
                raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
        if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 0.5):
            raise ValueError(f"tolerance must be a number in [0, 0.5), got {tolerance!r}")
        self.parts, self.figures = (lo, hi), figures
        self.companies, self.sectors, self.regions = companies, sectors, regions
        self.decoys, self.tolerance = decoys, float(tolerance)

    def sample(self, rng: np.random.Generator) -> LedgerEpisode:
        while True:  # a draw is rejected only when its figures clash; a few tries suffice
            episode = self._try(rng)
            if episode is not None:
                return episode

    def _try(self, rng: np.random.Generator) -> LedgerEpisode | None:
        b = LedgerBuilder(rng, self.companies, self.sectors, self.regions)
        n = int(rng.integers(self.parts[0], self.parts[1] + 1))
        combine = self._combine(rng, n)
        pool = [k for k in self.figures if combine in ("single", "list") or k != "top"]
        kinds = [pool[int(rng.integers(len(pool)))] for _ in range(n)]
        subjects = [self._subject(b, rng, kind) for kind in kinds]
        for kind, subject in zip(kinds, subjects, strict=True):
            if kind in ("cell", "total", "profit"):
                for _ in range(self.decoys):
                    b.add_company(like=subject)
        ledger, ids = b.ledger()
        maker = FigureMaker(b, ids)
        figures = [self._make(maker, rng, k, s) for k, s in zip(kinds, subjects, strict=True)]
        if any(f is None for f in figures):
            return None
        question, gold, calc, figs = self._question(combine, [f for f in figures if f])
        episode = LedgerEpisode(ledger, question, gold, figs, calc, self.tolerance)
        return episode if self._distinct(episode) else None

    def _combine(self, rng: np.random.Generator, n: int) -> str:
        """How the figures are combined: arithmetic where they are numbers, else a list."""
        if n == 1:
            return "single"
        options = []
        if set(self.figures) - {"top"}:
            options += ["sum"] + (["difference", "ratio"] if n == 2 else [])
        if "top" in self.figures:
            options.append("list")
        return options[int(rng.integers(len(options)))]

    @staticmethod
    def _subject(b: LedgerBuilder, rng: np.random.Generator, kind: str) -> str:
        if kind in ("cell", "total", "profit"):
            names = list(b.companies)
            return names[int(rng.integers(len(names)))]
        if kind == "group" and rng.random() < 0.5:
            return "region:" + b.regions[int(rng.integers(len(b.regions)))]
        return "sector:" + b.sectors[int(rng.integers(len(b.sectors)))]

    @staticmethod
    def _make(
        maker: FigureMaker, rng: np.random.Generator, kind: str, subject: str
    ) -> Figure | None:
        metric = ("revenue", "cost")[int(rng.integers(2))]
        q = int(rng.integers(4))
        if kind == "cell":
            return maker.cell(subject, metric, q)
        if kind == "total":
            return maker.total(subject, metric)
        if kind == "profit":
            return maker.profit(subject, q)
        column, group = subject.split(":")
        if kind == "group":
            return maker.group(column, group, metric, q)
        return maker.top(group, metric, q)

    @staticmethod
    def _question(combine: str, figs: list[Figure]) -> tuple[str, str, str | None, list[Figure]]:
        """Question, gold answer, main's calculation, and the figures in the question's order."""
        if combine == "single":
            return figs[0].subtask, figs[0].answer, None, figs
        if combine == "list":
            phrases = _join([f.phrase for f in figs])
            return f"Give {phrases}, in that order.", ", ".join(f.answer for f in figs), None, figs
        if combine != "sum":  # the larger figure first: differences and ratios are >= 0 and 1
            figs = sorted(figs, key=lambda f: -int(f.answer))
        values = [int(f.answer) for f in figs]
        a, b = (figs[0].phrase, values[0]), (figs[-1].phrase, values[-1])
        if combine == "sum":
            question = f"What is the sum of {_join([f.phrase for f in figs])}?"
            return question, str(sum(values)), "+".join(map(str, values)), figs
        if combine == "difference":
            question = f"By how much did {a[0]} exceed {b[0]}?"
            return question, str(a[1] - b[1]), f"{a[1]}-{b[1]}", figs
        question = f"What is the ratio of {a[0]} to {b[0]}, rounded to two decimals?"
        gold = format_number(round(a[1] / b[1], 2))
        return question, gold, f"round({a[1]}/{b[1]}, 2)", figs

    @staticmethod
    def _distinct(ep: LedgerEpisode) -> bool:
        """Every figure is told apart: its subtask matches it, no two values match each other.

        Subtasks are matched fuzzily, the stricter test (a subtask that fuzzy matching
        pairs with its own figure is paired with it by exact matching too), so the
        episodes drawn are the same whichever matching an episode uses.
        """
        for i, fact in enumerate(ep.facts):
            if ep.match_fact(ROLE, fact.subtask, mode="fuzzy") is not fact:
                return False
            if any(ep.check(fact.answer, other.answer) for other in ep.facts[i + 1 :]):
                return False
        return True

    def vocabulary(self) -> list[str]:
        texts = [
            *NAME_FIRST,
            *NAME_SECOND,
            *SECTOR_NAMES,
            *REGION_NAMES,
            *TABLES,
            *(c for cols in TABLES.values() for c in cols),
            "What was the of full-year profit total sector region Which company had highest",
            "Give and in that order. What is the sum By how much did exceed ratio to rounded two",
            "decimals revenue cost costs where row rows first shown unknown",
            "no table tables are keys given write ids such as or names after too many look up at",
            "most a time keys like company the gives them bad condition column value e.g. has",
            "its columns holds from needs number got compares amounts use it on of",
            "Task: return give your result to main and stop",  # the sub-agent prompt
        ]
        words: set[str] = set()
        for text in texts:
            words.update(re.findall(r"[A-Za-z]+", text))
        return sorted(words)


class LedgerEnv(TaskEnv, name="ledger_v0", task=LedgerTask, difficulties=DIFFICULTIES):
    """ledger_v0 (see the module docstring for the env card)."""


__all__ = ["env", "raw_env", "LedgerEnv", "LedgerTask", "LedgerEpisode", "list_match"]
