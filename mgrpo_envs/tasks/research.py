"""research_v0: multi-hop deep research over a generated document collection.

Env card
========

A deep-research task in the manner of GAIA, XBench-DeepSearch and WebWalkerQA,
generated offline. Every episode draws a fresh synthetic world (so facts cannot be
memorised, only looked up): cities, people, studios and films linked by relations,
one document per entity, and near-duplicate distractor entities whose names share
words with the ones the question is about.

Roles
    ``main`` plans, delegates, calculates and answers. ``searcher`` finds one fact
    per call in the document collection.

Tools
    main: ``delegate[task]`` (start a searcher call), ``calculate[expression]``
    (arithmetic through a whitelisted AST), ``answer[text]`` (ends the episode).
    searcher: ``search[query]`` (ranked retrieval; returns document ids, titles and
    snippets), ``visit[doc_id]`` (the whole document), ``return[result]`` (ends the
    call; main sees the result).

Questions
    Chains of 1-4 hops ("What is the birth year of the director of the film Silver
    Harbor?") and, from 2 hops on, differences of two years that need the calculator
    ("How many years apart are the founding year of Northwind Studios and the birth
    year of the director of the film Silver Harbor?"). Each hop is one fact; the
    scripted main agent delegates one fact per call.

Observation and action
    ``Text`` spaces (printable ASCII, ``max_observation_chars`` long). The observation
    is the new message for the acting agent; the action is the agent's text, in which
    the first tool call counts (``codec="compact"``: ``search[silver harbor]``;
    ``codec="json"``: ``<tool_call>{"name": "search", "arguments": {...}}</tool_call>``).

Rewards (paid at the end; see :mod:`mgrpo_envs.core.rewards`)
    ``main``: 0 without a well-formed answer, else ``0.1 * r_format + 0.9 * correct``.
    ``searcher``: mean over its calls of 0 (no ``return``) or
    ``0.1 * r_format + 0.4 * correct_main + 0.5 * expert``; ``expert`` is 1 when the
    returned text states the gold value of the fact the subtask asks for anywhere
    in it (``1987``, ``born in 1987``, ``It was directed by Mara Quill.``) and no
    conflicting value: beside a year no other number, beside a name no other name
    of its kind (person, film, studio, city or country), so ``1987 or 1988`` and
    ``Mara Quill or Mara Vance`` score 0 (``Episode.check_fact``, the rule of
    ``mgrpo_envs.core.rewards.fact_in_answer``). A subtask asks for a fact when it
    equals the fact's canonical subtask, the one the scripted main agent
    delegates, up to case, whitespace and punctuation (``Episode.match_fact``).

Episode end
    ``main`` answers (terminated), or a budget runs out (truncated): main turns,
    total turns, or main's context characters. A searcher call that runs out of
    turns or context ends without a result and main is told so.

Arguments
    ``difficulty`` (``easy``, ``medium``, ``hard``) sets the defaults of: ``hops``
    (range of facts per question), ``distractors`` (near-duplicates per entity in the
    question), ``corpus_size`` (background entities), ``arithmetic`` (whether
    difference questions are drawn), and the turn budgets ``main_turns``,
    ``sub_turns``, ``episode_turns``, ``context_chars``; each may be given
    explicitly. ``doc_ref``: ``id`` (the default) or ``title``: the searcher's
    ``visit`` takes a document's title (``visit[silver harbor]``; an id still
    works), and the scripted expert visits by title, so a model copies words rather
    than looks up the digits of an id. Also ``codec``, ``reward_weights``,
    ``max_observation_chars``, ``render_mode``.

Version history
    v0: first release. Change within v0: a subtask is matched to its fact exactly
    (normalised text equal) rather than by word overlap, which took "fare from A to
    B" for "fare from B to A"; word-overlap matching is opt-in
    (``Episode.fact_matching = "fuzzy"``). Added within v0: ``doc_ref="title"``
    (the default, ``id``, is v0's behaviour unchanged). Change within v0 (issue
    33): ``expert`` judges the fact by its value anywhere in the searcher's result
    (``born in 1987`` now scores as ``1987`` did; a conflicting value scores 0),
    where only the bare value scored before.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pettingzoo import AECEnv

from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.rewards import answers_match
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent, pool_of
from mgrpo_envs.core.task_env import TaskEnv, wrap
from mgrpo_envs.core.tools import Tool, ToolError

FIRST_NAMES = (
    "Mara Leo Ines Tomas Ada Felix Nora Hugo Lena Otto Vera Emil Iris Jonas Clara Anton "
    "Greta Pavel Rosa Milan Edda Lukas Alma Victor Selma Oskar Ida Bruno Hanna Viktor"
).split()
LAST_NAMES = (
    "Quill Vance Marlow Okafor Lindqvist Serrano Abbott Castell Dunmore Faraday Holm "
    "Ivers Kessler Laine Moreau Novak Orsini Pryce Rask Sorel Thorne Ueda Varga Wren "
    "Yates Zeller Brandt Corvin Ehren Falk"
).split()
TITLE_FIRST = (
    "Silver Golden Quiet Broken Hidden Crimson Distant Frozen Wild Paper Iron Glass "
    "Burning Silent Velvet Hollow Bright Lost Northern Midnight"
).split()
TITLE_SECOND = (
    "Harbor River Garden Crown Mirror Station Forest Letter Horizon Lantern Bridge "
    "Orchard Tide Summer Shadow Valley Engine Island Meadow Signal"
).split()
STUDIO_FIRST = (
    "Northwind Bluestone Redwood Starling Highgate Copperfield Ashford Lumen Meridian "
    "Foxglove Kestrel Evergreen Blackwater Sunvale Ironbridge Westmark"
).split()
STUDIO_SECOND = "Pictures Studios Films Media Productions".split()
NAME_POOLS = {
    "person": (FIRST_NAMES, LAST_NAMES),
    "film": (TITLE_FIRST, TITLE_SECOND),
    "studio": (STUDIO_FIRST, STUDIO_SECOND),
}
CITY_NAMES = (
    "Port Alden|Kelmstad|Varrow|New Essing|Lorient Bay|Dunhollow|Marisport|Ostfeld|"
    "Bellmoor|Cairnby|Halvik|San Teodor|Rookhaven|Ember Falls|Quillon|Tarsk"
).split("|")
COUNTRIES = "Norland Estavia Calmaria Vestria Orlando Ruskara Belmont Suvria".split()
#: Every name a fact's value can take, one pool per kind: a name gold's rivals (r_expert).
NAMES_BY_KIND: dict[str, tuple[str, ...]] = {
    **{
        kind: tuple(f"{a} {b}" for a in first for b in second)
        for kind, (first, second) in NAME_POOLS.items()
    },
    "city": tuple(CITY_NAMES),
    "country": tuple(COUNTRIES),
}

# relation name -> (subject type, object type or None for a year, noun phrase)
RELATIONS: dict[str, tuple[str, str | None, str]] = {
    "director": ("film", "person", "director"),
    "studio": ("film", "studio", "studio"),
    "release_year": ("film", None, "release year"),
    "founder": ("studio", "person", "founder"),
    "headquarters": ("studio", "city", "headquarters city"),
    "founding_year": ("studio", None, "founding year"),
    "birthplace": ("person", "city", "birthplace"),
    "birth_year": ("person", None, "birth year"),
    "country": ("city", "country", "country"),
}
TYPE_NOUN = {"film": "the film", "studio": "the studio", "person": "", "city": "the city"}
YEAR_RELATIONS = ("release_year", "founding_year", "birth_year")
YEAR_RANGES = {
    "release_year": (1950, 2020),
    "founding_year": (1900, 1990),
    "birth_year": (1920, 1995),
}
MAX_DOC_ID = 299  # document ids in the vocabulary; the largest seen world (hard) has 112

DIFFICULTIES: dict[str, dict] = {
    "easy": dict(
        hops=(1, 2),
        distractors=1,
        corpus_size=12,
        arithmetic=False,
        main_turns=8,
        sub_turns=6,
        episode_turns=40,
        context_chars=6000,
    ),
    "medium": dict(
        hops=(2, 3),
        distractors=2,
        corpus_size=24,
        arithmetic=True,
        main_turns=10,
        sub_turns=6,
        episode_turns=60,
        context_chars=8000,
    ),
    "hard": dict(
        hops=(3, 4),
        distractors=3,
        corpus_size=40,
        arithmetic=True,
        main_turns=12,
        sub_turns=8,
        episode_turns=90,
        context_chars=10000,
    ),
}
SEARCH_TOP_K = 5
SNIPPET_CHARS = 70
_TOKEN = re.compile(r"[a-z0-9]+")


def env(**kwargs) -> AECEnv:
    """The PettingZoo AEC env: :func:`raw_env` in the core's wrappers (``wrap``)."""
    return wrap(raw_env(**kwargs))


def raw_env(**kwargs) -> ResearchEnv:
    """The unwrapped env; keyword arguments as in the env card."""
    return ResearchEnv(**kwargs)


@dataclass
class Entity:
    """One thing in the world; ``attrs`` maps relation names to entity names or years."""

    kind: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict)


class World:
    """Entities, their documents and a ranked keyword index over them."""

    def __init__(self, entities: list[Entity], rng: np.random.Generator) -> None:
        self.entities = entities
        self.by_name = {e.name: e for e in entities}
        order = rng.permutation(len(entities))
        self.docs: dict[str, tuple[str, str]] = {}
        self.doc_of: dict[str, str] = {}
        for i, idx in enumerate(order):
            e = entities[int(idx)]
            doc_id = f"d{i + 1}"
            self.docs[doc_id] = (e.name, describe(e))
            self.doc_of[e.name] = doc_id
        self._index()

    def _index(self) -> None:
        self._tf: dict[str, Counter] = {}
        df: Counter = Counter()
        for doc_id, (title, text) in self.docs.items():
            tf = Counter(_TOKEN.findall(text.lower()))
            for tok in _TOKEN.findall(title.lower()):
                tf[tok] += 3  # a title word counts more than a body word
            self._tf[doc_id] = tf
            df.update(tf.keys())
        n = len(self.docs)
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self._avg_len = sum(sum(tf.values()) for tf in self._tf.values()) / max(n, 1)

    def search(self, query: str) -> list[str]:
        """Doc ids ranked by BM25 over title-weighted tokens; an exact title ranks first."""
        terms = _TOKEN.findall(query.lower())
        if not terms:
            return []
        q_norm = " ".join(terms)
        scored = []
        for doc_id, tf in self._tf.items():
            length = sum(tf.values())
            score = 0.0
            for t in terms:
                f = tf.get(t, 0)
                if f:
                    score += (
                        self._idf[t] * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * length / self._avg_len))
                    )
            if " ".join(_TOKEN.findall(self.docs[doc_id][0].lower())) == q_norm:
                score += 100.0
            if score > 0:
                scored.append((-score, int(doc_id[1:]), doc_id))
        scored.sort()
        return [doc_id for _, _, doc_id in scored]


def describe(e: Entity) -> str:
    """The document text of an entity."""
    a = e.attrs
    if e.kind == "film":
        return (
            f"{e.name} is a film released in {a['release_year']}. It was directed by "
            f"{a['director']} and produced by {a['studio']}."
        )
    if e.kind == "studio":
        return (
            f"{e.name} is a studio founded in {a['founding_year']} by {a['founder']}. "
            f"Its headquarters city is {a['headquarters']}."
        )
    if e.kind == "person":
        return f"{e.name} was born in {a['birth_year']} in {a['birthplace']}."
    return f"{e.name} is a city in the country of {a['country']}."


class WorldBuilder:
    """Draws entities with unique names; near-duplicates share a word with their source."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.entities: list[Entity] = []
        self.names: set[str] = set()

    def _pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def by_name(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)

    def _new_name(self, kind: str, like: str | None = None) -> str:
        if kind == "city":
            pool = list(CITY_NAMES)
        else:
            first, second = NAME_POOLS[kind]
            pool = [f"{a} {b}" for a in first for b in second]
        if like is not None:
            # keep one word of the source name: a near-duplicate that search also finds
            a, b = like.split(" ", 1)
            near = [n for n in pool if n.startswith(a + " ") or n.endswith(" " + b)]
            free = [n for n in near if n not in self.names]
            if free:
                pool = near
        free = [n for n in pool if n not in self.names]
        if not free:
            raise ValueError(f"the name pool for {kind!r} is exhausted; lower corpus_size")
        name = self._pick(free)
        self.names.add(name)
        return name

    def add(self, kind: str, like: str | None = None) -> Entity:
        e = Entity(kind, self._new_name(kind, like))
        self.entities.append(e)
        return e

    def link(self) -> None:
        """Fills every entity's relations with entities of the right kind (added if missing)."""
        i = 0
        while i < len(self.entities):
            e = self.entities[i]
            for rel, (subj, obj, _) in RELATIONS.items():
                if subj != e.kind or rel in e.attrs:
                    continue
                e.attrs[rel] = self._value(e, rel, obj)
            i += 1

    def _value(self, e: Entity, rel: str, obj: str | None) -> str:
        if obj is None:
            lo, hi = YEAR_RANGES[rel]
            return str(int(self.rng.integers(lo, hi + 1)))
        if obj == "country":
            return self._pick(COUNTRIES)
        pool = [x for x in self.entities if x.kind == obj and x is not e]
        if obj == "city" and self.names.issuperset(CITY_NAMES):
            return self._pick(pool).name
        if pool and self.rng.random() < 0.5:
            return self._pick(pool).name
        return self.add(obj).name


class ResearchEpisode(Episode):
    """One world and one question over it."""

    def __init__(
        self,
        world: World,
        question: str,
        gold: str,
        facts: list[Fact],
        calculation: str | None,
        doc_ref: str = "id",
    ) -> None:
        self.world = world
        self.question = question
        self.gold = gold
        self.facts = tuple(facts)
        self.calculation = calculation
        self.doc_ref = doc_ref
        self._subtask = ""  # the running call's (none in the single-agent view)
        self._titles = {_norm(title): doc_id for doc_id, (title, _) in world.docs.items()}

    @property
    def _visit_arg(self) -> str:
        return "title" if self.doc_ref == "title" else "doc_id"

    def _visit_call(self, doc_id: str) -> ToolCall:
        """The expert's visit of ``doc_id``: by id, or by its title under ``doc_ref="title"``."""
        ref = self.world.docs[doc_id][0] if self.doc_ref == "title" else doc_id
        return ToolCall.make("visit", **{self._visit_arg: ref})

    def _visited(self, ev: ToolEvent) -> str | None:
        """The id of the document a successful visit read (None for any other event)."""
        if not (ev.ok and ev.call is not None and ev.call.name == "visit"):
            return None
        return self._doc_of(next(iter(ev.call.args.values())))

    def _doc_of(self, ref: str) -> str | None:
        key = _norm(ref)
        if key in self.world.docs:
            return key
        return self._titles.get(key) if self.doc_ref == "title" else None

    def begin_call(self, role: str, subtask: str) -> None:
        self._subtask = subtask

    def rivals(self, fact: Fact) -> Sequence[str]:
        """Every name of the gold's kind (people, films, studios, cities or countries)."""
        return pool_of(fact.answer, NAMES_BY_KIND.values())

    def tools(self, role: str) -> list[Tool]:
        if role != "searcher":
            raise ValueError(f"research_v0 has the role 'searcher', got {role!r}")
        return [
            Tool(
                "search", ("query",), "find documents; returns ids, titles, snippets", self._search
            ),
            self._visit_tool(),
        ]

    def _visit_tool(self) -> Tool:
        if self.doc_ref == "title":
            return Tool("visit", ("title",), "read one document by its title", self._visit_title)
        return Tool("visit", ("doc_id",), "read one document by its id", self._visit)

    def _search(self, query: str) -> str:
        if not query.strip():
            raise ToolError("empty query; write some words, e.g. search[silver harbor]")
        hits = self.world.search(query)[:SEARCH_TOP_K]
        if not hits:
            return f"no documents match {query.strip()[:80]!r}"
        lines = []
        for doc_id in hits:
            title, text = self.world.docs[doc_id]
            lines.append(f"{doc_id} {title}: {text[:SNIPPET_CHARS]}")
        return "\n".join(lines)

    def _visit_title(self, title: str) -> str:
        return self._visit(title)

    def _visit(self, doc_id: str) -> str:
        ref = doc_id  # an id, or under doc_ref="title" a title
        key = self._doc_of(ref)
        if key is None and self.doc_ref == "title":
            raise ToolError(
                f"no document titled {ref.strip()[:40]!r}; titles (and ids) come from search, "
                "e.g. visit[silver harbor]"
            )
        if key is None:
            raise ToolError(
                f"no document {ref.strip()[:40]!r}; ids look like d12 and come from search"
            )
        title, text = self.world.docs[key]
        return f"{key} {title}: {text}"

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        if fact is None:
            return ToolCall.make("return", result="unknown")
        subject = fact_subject(fact)
        target = self.world.doc_of[subject]
        if any(self._visited(ev) == target for ev in history):
            return ToolCall.make("return", result=fact.answer)
        for ev in history:
            if (
                ev.ok
                and ev.call is not None
                and ev.call.name == "search"
                and re.search(rf"^{target} ", ev.output, re.MULTILINE)
            ):
                return self._visit_call(target)
        return ToolCall.make("search", query=subject)

    def admissible_calls(self, role: str, history: Sequence[ToolEvent]) -> list[ToolCall]:
        """The expert's calls for the facts whose subject is known, and distractors.

        A fact's subject is known when the question or the call's subtask names it,
        or it is the value of a fact found. Distractors: searches for each word of a
        known subject and for near-duplicate names (sharing a word with it), and a
        visit of every document the call's searches listed.
        """
        if role != "searcher":
            raise ValueError(f"research_v0 has the role 'searcher', got {role!r}")
        found = {c.args["result"] for c in self.expert_calls(role, history) if c.name == "return"}
        named = f"{self.question} {self._subtask}"
        subjects = [fact_subject(f) for f in self.facts]
        known = [f for f, s in zip(self.facts, subjects, strict=True) if s in named or s in found]
        calls = self.expert_calls(role, history, known)
        for subject in dict.fromkeys(fact_subject(f) for f in known):
            words = subject.split()
            near = [
                e.name
                for e in self.world.entities
                if e.name != subject and not set(words).isdisjoint(e.name.split())
            ]
            calls += [ToolCall.make("search", query=q) for q in [*words, *near[:2]]]
        searched = [
            e.call.args["query"]
            for e in history
            if e.ok and e.call is not None and e.call.name == "search"
        ]
        for query in reversed(searched):
            calls += [self._visit_call(d) for d in self.world.search(query)[:SEARCH_TOP_K]]
        return list(dict.fromkeys(calls))


def _norm(text: str) -> str:
    """Lower case, single spaces: how a visit's reference is matched."""
    return " ".join(text.lower().split())


_SUBTASK = re.compile(r"^What is the .+? of (?:the film |the studio |the city )?(.+)\?$")


def fact_subject(fact: Fact) -> str:
    """The entity name a canonical subtask is about."""
    m = _SUBTASK.match(fact.subtask)
    assert m is not None, fact.subtask
    return m.group(1)


def relation_paths(kind: str, length: int) -> list[tuple[str, ...]]:
    """Every chain of ``length`` relations starting at an entity of ``kind``."""
    if length == 0:
        return [()]
    paths = []
    for rel, (subj, obj, _) in RELATIONS.items():
        if subj != kind:
            continue
        if length == 1:
            paths.append((rel,))
        elif obj in TYPE_NOUN:
            paths.extend((rel, *rest) for rest in relation_paths(obj, length - 1))
    return paths


def subject_phrase(kind: str, name: str) -> str:
    noun = TYPE_NOUN[kind]
    return f"{noun} {name}" if noun else name


class ResearchTask(Task):
    """Samples worlds and questions at a difficulty."""

    roles = ("searcher",)
    role_descriptions = {"searcher": "finds one fact in the documents"}

    def __init__(
        self,
        hops: tuple[int, int],
        distractors: int,
        corpus_size: int,
        arithmetic: bool,
        doc_ref: str = "id",
    ) -> None:
        if doc_ref not in ("id", "title"):
            raise ValueError(f"doc_ref must be 'id' or 'title', got {doc_ref!r}")
        self.doc_ref = doc_ref
        lo, hi = tuple(hops)
        if not (1 <= lo <= hi <= 4):
            raise ValueError(f"hops must be a range within 1..4 like (2, 3), got {hops!r}")
        if not 0 <= distractors <= 5:
            raise ValueError(f"distractors must be in 0..5, got {distractors!r}")
        if not 4 <= corpus_size <= 60:
            raise ValueError(f"corpus_size must be in 4..60, got {corpus_size!r}")
        self.hops, self.distractors = (lo, hi), distractors
        self.corpus_size, self.arithmetic = corpus_size, bool(arithmetic)

    def sample(self, rng: np.random.Generator) -> ResearchEpisode:
        b = WorldBuilder(rng)
        kinds = ("film", "studio", "person", "city")
        for i in range(self.corpus_size):
            b.add(kinds[i % 3])  # cities come in through relations
        b.link()
        hops = int(rng.integers(self.hops[0], self.hops[1] + 1))
        if self.arithmetic and hops >= 2 and rng.random() < 0.5:
            question, gold, facts, calc, used = self._difference(b, rng, hops)
        else:
            path, start = self._pick_chain(b, rng, hops, year_only=False)
            phrase, gold, facts, used = self._chain(b, start, path)
            question, calc = f"What is {phrase}?", None
        for name in used:
            for _ in range(self.distractors):
                if b.by_name(name).kind != "city":
                    b.add(b.by_name(name).kind, like=name)
        b.link()
        world = World(b.entities, rng)
        return ResearchEpisode(world, question, gold, facts, calc, self.doc_ref)

    def _pick_chain(
        self, b: WorldBuilder, rng: np.random.Generator, length: int, year_only: bool
    ) -> tuple[tuple[str, ...], Entity]:
        options = []
        for kind in ("film", "studio", "person", "city"):
            for path in relation_paths(kind, length):
                if not year_only or path[-1] in YEAR_RELATIONS:
                    options.append((kind, path))
        kind, path = options[int(rng.integers(len(options)))]
        starts = [e for e in b.entities if e.kind == kind]
        if not starts:
            starts = [b.add(kind)]
            b.link()
        return path, starts[int(rng.integers(len(starts)))]

    def _chain(self, b: WorldBuilder, start: Entity, path: tuple[str, ...]):
        facts, used = [], [start.name]
        phrase = subject_phrase(start.kind, start.name)
        node = start
        for rel in path:
            noun = RELATIONS[rel][2]
            value = node.attrs[rel]
            facts.append(
                Fact(
                    "searcher",
                    f"What is the {noun} of {subject_phrase(node.kind, node.name)}?",
                    value,
                )
            )
            phrase = f"the {noun} of {phrase}"
            if RELATIONS[rel][1] in TYPE_NOUN:
                node = b.by_name(value)
                used.append(value)
        return phrase, facts[-1].answer, facts, used

    def _difference(self, b: WorldBuilder, rng: np.random.Generator, hops: int):
        first = (hops + 1) // 2
        path_a, start_a = self._pick_chain(b, rng, first, year_only=True)
        while True:  # two different chains; there are always several to choose from
            path_b, start_b = self._pick_chain(b, rng, hops - first, year_only=True)
            if (path_b, start_b.name) != (path_a, start_a.name):
                break
        phrase_a, year_a, facts_a, used_a = self._chain(b, start_a, path_a)
        phrase_b, year_b, facts_b, used_b = self._chain(b, start_b, path_b)
        hi, lo = max(int(year_a), int(year_b)), min(int(year_a), int(year_b))
        question = f"How many years apart are {phrase_a} and {phrase_b}?"
        return question, str(hi - lo), facts_a + facts_b, f"{hi}-{lo}", used_a + used_b

    def vocabulary(self) -> list[str]:
        words = set(
            FIRST_NAMES
            + LAST_NAMES
            + TITLE_FIRST
            + TITLE_SECOND
            + STUDIO_FIRST
            + STUDIO_SECOND
            + COUNTRIES
        )
        for city in CITY_NAMES:
            words.update(city.split())
        for _, _, noun in RELATIONS.values():
            words.update(noun.split())
        words.update(
            "What is the of film studio city How many years apart are and ? . : "
            "was born in a released It directed by produced founded Its headquarters "
            "country no documents match d unknown ids look like come from search "
            "empty query write some words e.g. document".split()
        )
        # Document ids and years: a tokenizer that keeps numbers (HFPolicy.tiny(...,
        # numbers=True)) makes each one token; the default drops words with digits.
        words.update(f"d{i}" for i in range(1, MAX_DOC_ID + 1))
        first = min(lo for lo, _ in YEAR_RANGES.values())
        last = max(hi for _, hi in YEAR_RANGES.values())
        words.update(str(year) for year in range(first, last + 1))
        return sorted(words)


class ResearchEnv(TaskEnv, name="research_v0", task=ResearchTask, difficulties=DIFFICULTIES):
    """research_v0 (see the module docstring for the env card)."""


__all__ = ["env", "raw_env", "ResearchEnv", "ResearchTask", "answers_match"]
