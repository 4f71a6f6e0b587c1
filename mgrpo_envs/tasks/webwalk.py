"""webwalk_v0: multi-part questions answered by walking a generated website.

Env card
========

A web-navigation task in the manner of WebWalkerQA, generated offline. Every
episode draws a fresh website of an institute: a home page, sections (Research,
Events, Teaching) whose pages are grouped by department, season or level, one page
per lab, event or course, and below those the subpages that hold the facts
(History, Team, Venue, Schedule, ...). Facts sit several clicks below the home
page. The site also holds traps: near-duplicate names (``Ocean Lab`` next to
``Ocean Centre``), links whose text promises the facts (``Ocean Lab key facts``)
but lead to an archived page with outdated values, and news items that mention
the same names with other numbers, people and buildings.

Roles
    ``main`` plans, delegates, calculates and answers. ``navigator`` finds one fact
    per call by browsing the site.

Tools
    main: ``delegate[task]`` (start a navigator call), ``calculate[expression]``
    (arithmetic through a whitelisted AST), ``answer[text]`` (ends the episode).
    navigator: ``open[page]`` (a page by its url, such as ``/research``, or its id,
    such as ``p12``; ``open[home]`` is the start page), ``click[link]`` (follow a
    link of the open page by its number or its text), ``back[]`` (the previous
    page), ``find[text]`` (the lines of the open page that contain the text),
    ``return[result]`` (ends the call; main sees the result). Each call starts with
    no page open and an empty back history (in the single-agent view, the episode
    does).

Pages
    A page shows its id, title and url, its text lines (facts as ``Label: value``)
    and its links numbered from 1, one per line, e.g.::

        p41 Ocean Lab: Team (/research/department-of-earth-sciences/ocean-lab/team)
        Head: Mara Quill
        Member count: 23
        [1] Home
        [2] Ocean Lab

Questions
    One to three parts, each about a different section ("the head of the Ocean
    Lab", "the seat count of the Harbor Festival"); the scripted main agent
    delegates one part per call. Parts are combined in one of three ways: a list
    of values in the order asked ("Give the head of the Ocean Lab and the venue
    city of the Harbor Festival, in that order." -> ``Mara Quill, Port Alden``),
    the difference of two years, or the sum of counts (the last two need the
    calculator). A one-part question asks for the value itself.

Observation and action
    ``Text`` spaces (printable ASCII, ``max_observation_chars`` long). The observation
    is the new message for the acting agent; the action is the agent's text, in which
    the first tool call counts (``codec="compact"``: ``click[Ocean Lab]``, ``back[]``;
    ``codec="json"``: ``<tool_call>{"name": "click", "arguments": {...}}</tool_call>``).

Rewards (paid at the end; see :mod:`mgrpo_envs.core.rewards`)
    ``main``: 0 without a well-formed answer, else ``0.1 * r_format + 0.9 * correct``
    (answers compared after lower-casing and dropping punctuation and articles).
    ``navigator``: mean over its calls of 0 (no ``return``) or
    ``0.1 * r_format + 0.4 * correct_main + 0.5 * expert``; ``expert`` is 1 when the
    returned text states the gold value of the part the subtask asks for anywhere
    in it (``23``, ``Member count: 23``, ``The head is Mara Quill.``) and no
    conflicting value: beside a year or count no other number, beside a name no
    other name of its type (person, city or building), so ``23 or 31`` and ``Mara
    Quill or Leo Vance`` score 0 (``Episode.check_fact``, the rule of
    ``mgrpo_envs.core.rewards.fact_in_answer``). A subtask asks for a
    part when it equals the part's canonical subtask, the one the scripted main
    agent delegates, up to case, whitespace and punctuation (``Episode.match_fact``).

Episode end
    ``main`` answers (terminated), or a budget runs out (truncated): main turns,
    total turns, or main's context characters. A navigator call that runs out of
    turns or context ends without a result and main is told so.

Arguments
    ``difficulty`` (``easy``, ``medium``, ``hard``) sets the defaults of: ``parts``
    (range of parts per question), ``depth`` (2: section -> page with the facts;
    3: section -> group -> page; 4: section -> group -> page -> subpage),
    ``groups`` (groups per section, depth 3 and 4), ``entities`` (pages per group,
    or per section at depth 2), ``decoys`` (near-duplicate names per entity in the
    question), ``archived`` (misleading "key facts" links to archived pages),
    ``news`` (news items), ``arithmetic`` (whether differences and sums are drawn),
    and the turn budgets ``main_turns``, ``sub_turns``, ``episode_turns``,
    ``context_chars``; each may be given explicitly. The site has about 30 pages at
    easy, 80 at medium and 350 at hard. Also ``codec``, ``reward_weights``,
    ``max_observation_chars``, ``render_mode``.

Version history
    v0: first release. Change within v0: a subtask is matched to its fact exactly
    (normalised text equal) rather than by word overlap, which took "fare from A to
    B" for "fare from B to A"; word-overlap matching is opt-in
    (``Episode.fact_matching = "fuzzy"``). Change within v0 (issue 33): ``expert``
    judges the part by its value anywhere in the navigator's result (``Member
    count: 23`` now scores as ``23`` did; a conflicting value scores 0), where only
    the bare value scored before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pettingzoo import AECEnv

from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent, pool_of
from mgrpo_envs.core.task_env import TaskEnv, wrap
from mgrpo_envs.core.tools import Tool, ToolError

ROLE = "navigator"
ORG_FIRST = "Northwind Bluestone Redwood Starling Highgate Ashford Meridian Westmark".split()
ORG_SECOND = "Institute Academy College".split()
TOPICS = (
    "Robotics Ocean Climate Language Materials Genome Quantum Vision Energy Soil Forest "
    "River Desert Glacier Coral Volcano Harbor Aurora Signal Circuit Prairie Canyon Lantern "
    "Meadow Comet Mineral Orchard Delta Falcon Granite"
).split()
FIRST_NAMES = (
    "Mara Leo Ines Tomas Ada Felix Nora Hugo Lena Otto Vera Emil Iris Jonas Clara Anton "
    "Greta Pavel Rosa Milan"
).split()
LAST_NAMES = (
    "Quill Vance Marlow Okafor Lindqvist Serrano Abbott Castell Dunmore Faraday Holm Ivers "
    "Kessler Laine Moreau Novak Pryce Sorel Thorne Wren"
).split()
CITIES = (
    "Port Alden|Kelmstad|Varrow|New Essing|Lorient Bay|Dunhollow|Marisport|Ostfeld|Bellmoor|"
    "Cairnby|Halvik|San Teodor|Rookhaven|Ember Falls|Quillon|Tarsk"
).split("|")
TREES = "Birch Cedar Maple Willow Alder Rowan Hazel Aspen Linden Juniper".split()
BUILDING_KINDS = "Hall Building House Wing".split()
#: Every name a part's value can take, one pool per type: a name gold's rivals (r_expert).
NAMES_BY_TYPE: dict[str, tuple[str, ...]] = {
    "person": tuple(f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES),
    "city": tuple(CITIES),
    "building": tuple(f"{a} {b}" for a in TREES for b in BUILDING_KINDS),
}


@dataclass(frozen=True)
class Kind:
    """One section of the site: what its pages are about and where their facts live.

    Attributes:
        section: The section title (a link on the home page).
        noun: The plural noun for its pages ("labs").
        groups: Names of the group pages between the section and the entity pages.
        suffixes: Last words of entity names ("Lab" in "Ocean Lab").
        subpages: (subpage title, the two attributes it shows), at depth 4.
    """

    section: str
    noun: str
    groups: tuple[str, ...]
    suffixes: tuple[str, ...]
    subpages: tuple[tuple[str, tuple[str, str]], ...]

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every attribute of the section's pages, in the order of their subpages."""
        return tuple(a for _, pair in self.subpages for a in pair)


KINDS: dict[str, Kind] = {
    "lab": Kind(
        "Research",
        "labs",
        tuple(
            f"Department of {d}"
            for d in "Engineering|Earth Sciences|Life Sciences|Computing|Physics|Chemistry".split(
                "|"
            )
        ),
        ("Lab", "Centre", "Group", "Unit"),
        (
            ("History", ("founding year", "founder")),
            ("Team", ("head", "member count")),
            ("Facilities", ("building", "room count")),
        ),
    ),
    "event": Kind(
        "Events",
        "events",
        tuple(f"{s} Programme" for s in "Spring Summer Autumn Winter Night Youth".split()),
        ("Festival", "Conference", "Workshop", "Fair", "Forum"),
        (
            ("About", ("first year", "organiser")),
            ("Venue", ("venue city", "seat count")),
            ("Programme", ("session count", "keynote speaker")),
        ),
    ),
    "course": Kind(
        "Teaching",
        "courses",
        tuple(f"{s} Courses" for s in "Foundation Advanced Evening Summer Graduate Online".split()),
        ("Seminar", "Course", "Studio", "Colloquium"),
        (
            ("Overview", ("launch year", "lecturer")),
            ("Enrolment", ("student count", "credit count")),
            ("Schedule", ("classroom", "hour count")),
        ),
    ),
}

#: attribute -> (value type, low, high); low/high bound years and counts.
ATTRIBUTES: dict[str, tuple[str, int, int]] = {
    "founding year": ("year", 1900, 2015),
    "founder": ("person", 0, 0),
    "head": ("person", 0, 0),
    "member count": ("count", 10, 90),
    "building": ("building", 0, 0),
    "room count": ("count", 10, 60),
    "first year": ("year", 1950, 2020),
    "organiser": ("person", 0, 0),
    "venue city": ("city", 0, 0),
    "seat count": ("count", 80, 2000),
    "session count": ("count", 10, 80),
    "keynote speaker": ("person", 0, 0),
    "launch year": ("year", 1960, 2022),
    "lecturer": ("person", 0, 0),
    "student count": ("count", 10, 300),
    "credit count": ("count", 10, 60),
    "classroom": ("building", 0, 0),
    "hour count": ("count", 12, 120),
}

DIFFICULTIES: dict[str, dict] = {
    "easy": dict(
        parts=(1, 2),
        depth=2,
        groups=1,
        entities=6,
        decoys=1,
        archived=False,
        news=4,
        arithmetic=False,
        main_turns=6,
        sub_turns=6,
        episode_turns=30,
        context_chars=6000,
    ),
    "medium": dict(
        parts=(2, 2),
        depth=3,
        groups=3,
        entities=5,
        decoys=2,
        archived=True,
        news=8,
        arithmetic=True,
        main_turns=8,
        sub_turns=8,
        episode_turns=50,
        context_chars=8000,
    ),
    "hard": dict(
        parts=(2, 3),
        depth=4,
        groups=4,
        entities=6,
        decoys=3,
        archived=True,
        news=12,
        arithmetic=True,
        main_turns=10,
        sub_turns=10,
        episode_turns=80,
        context_chars=10000,
    ),
}
HOME = "/"
LATEST_NEWS = 3
FIND_MAX_LINES = 6
_SLUG = re.compile(r"[^a-z0-9]+")
_SPACES = re.compile(r"\s+")

NEWS_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    # (headline, sentence, value type of {value})
    ("{name} welcomes new people", "The {name} welcomed {value} new people this year.", "count"),
    ("{name} hosts a guest", "{value} gave a talk at the {name}.", "person"),
    ("{name} moves for a term", "The {name} moved to {value} for one term.", "building"),
    ("{name} marks an anniversary", "The {name} marked an anniversary in {value}.", "year"),
)


def env(**kwargs) -> AECEnv:
    """The PettingZoo AEC env: :func:`raw_env` in the core's wrappers (``wrap``)."""
    return wrap(raw_env(**kwargs))


def raw_env(**kwargs) -> WebWalkEnv:
    """The unwrapped env; keyword arguments as in the env card."""
    return WebWalkEnv(**kwargs)


def slug(text: str) -> str:
    """The url part of a title: ``Earth Sciences`` -> ``earth-sciences``."""
    return _SLUG.sub("-", text.lower()).strip("-")


def label(attribute: str) -> str:
    """How a page shows an attribute: ``member count`` -> ``Member count``."""
    return attribute[:1].upper() + attribute[1:]


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text.strip().strip("[]\"'").lower()).strip()


@dataclass
class Page:
    """One page: url, title, text lines, and its links as (text, target url)."""

    url: str
    title: str
    parent: str | None
    lines: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    pid: str = ""
    #: How many leading links are navigation (Home, the parent page), kept in place.
    nav: int = 0


@dataclass
class Entity:
    """A lab, event or course with its attribute values and where its page hangs."""

    kind: str
    name: str
    group: str | None
    attrs: dict[str, str] = field(default_factory=dict)
    topic: str = field(init=False)

    def __post_init__(self) -> None:
        self.topic = self.name.rsplit(" ", 1)[0]


class Site:
    """The pages of one website, addressable by url or page id, and the way down to each."""

    def __init__(self, org: str, pages: list[Page], rng: np.random.Generator) -> None:
        self.org = org
        self.pages = {p.url: p for p in pages}
        order = rng.permutation(len(pages))
        self.by_pid: dict[str, str] = {}
        for i, idx in enumerate(order):
            page = pages[int(idx)]
            page.pid = f"p{i + 1}"
            self.by_pid[page.pid] = page.url
        self._views: dict[str, str] = {}

    def resolve(self, address: str) -> str | None:
        """The url of the page that ``address`` (home, a url or a page id) names, or None."""
        key = address.strip().strip("[]\"'").strip().lower()
        if key in ("home", "/", "index", "start"):
            return HOME
        if key in self.by_pid:
            return self.by_pid[key]
        url = "/" + key.strip("/")
        return url if url in self.pages else None

    def view(self, url: str) -> str:
        """The text of a page as the navigator sees it."""
        if url not in self._views:
            page = self.pages[url]
            lines = [f"{page.pid} {page.title} ({page.url})", *page.lines]
            lines += [f"[{i}] {text}" for i, (text, _) in enumerate(page.links, 1)]
            self._views[url] = "\n".join(lines)
        return self._views[url]

    def path(self, url: str) -> list[str]:
        """Urls from the home page down to ``url`` along the site's parent pages."""
        chain = [url]
        while (parent := self.pages[chain[-1]].parent) is not None:
            chain.append(parent)
        return chain[::-1]

    def link_text(self, parent: str, child: str) -> str:
        """The text of the first link on ``parent`` that leads to ``child``."""
        return next(text for text, target in self.pages[parent].links if target == child)


class SiteBuilder:
    """Draws the entities of a site and lays out its pages."""

    def __init__(self, rng: np.random.Generator, depth: int, groups: int, entities: int) -> None:
        self.rng = rng
        self.depth = depth
        self.org = f"{self._pick(ORG_FIRST)} {self._pick(ORG_SECOND)}"
        self.entities: list[Entity] = []
        self.names: set[str] = set()
        self.pages: dict[str, Page] = {}
        self.url_of: dict[str, str] = {}
        #: (entity name, attribute) -> url of the page that shows the current value
        self.fact_url: dict[tuple[str, str], str] = {}
        self._all_names = {
            kind: [f"{t} {s}" for t in TOPICS for s in spec.suffixes]
            for kind, spec in KINDS.items()
        }
        for kind, spec in KINDS.items():
            group_names: list[str | None] = [None]
            if depth >= 3:
                picked = rng.choice(len(spec.groups), size=groups, replace=False)
                group_names = [spec.groups[int(i)] for i in sorted(picked)]
            for group in group_names:
                for _ in range(entities):
                    self.add(kind, group)

    def _pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def value(self, attribute: str) -> str:
        """A random value of an attribute's type."""
        kind, lo, hi = ATTRIBUTES[attribute]
        return self.typed_value(kind, lo, hi)

    def typed_value(self, kind: str, lo: int = 1950, hi: int = 2020) -> str:
        """A random year or count in ``lo..hi``, person, city or building."""
        if kind in ("year", "count"):
            return str(int(self.rng.integers(lo, hi + 1)))
        if kind == "person":
            return f"{self._pick(FIRST_NAMES)} {self._pick(LAST_NAMES)}"
        if kind == "city":
            return self._pick(CITIES)
        return f"{self._pick(TREES)} {self._pick(BUILDING_KINDS)}"

    def add(self, kind: str, group: str | None, topic: str | None = None) -> Entity | None:
        """A new entity with a unique name (sharing ``topic`` if given); None if none is free."""
        spec = KINDS[kind]
        if topic is None:
            free = [n for n in self._all_names[kind] if n not in self.names]
        else:
            free = [f"{topic} {s}" for s in spec.suffixes if f"{topic} {s}" not in self.names]
        if not free:
            if topic is None:
                raise ValueError(
                    f"the name pool of {kind!r} is exhausted; lower groups or entities"
                )
            return None
        e = Entity(kind, self._pick(free), group)
        e.attrs = {a: self.value(a) for a in spec.attributes}
        self.names.add(e.name)
        self.entities.append(e)
        return e

    def add_decoys(self, target: Entity, count: int) -> None:
        """Near-duplicates of ``target``: same topic, other suffix, often in the same group."""
        groups = sorted({e.group or "" for e in self.entities if e.kind == target.kind})
        for _ in range(count):
            group: str | None = target.group
            if self.rng.random() < 0.5:
                group = self._pick(groups) or None
            self.add(target.kind, group, topic=target.topic)

    def stale(self, e: Entity) -> dict[str, str]:
        """Outdated values for an archived page: every one differs from the current value."""
        out = {}
        for attribute, current in e.attrs.items():
            value = current
            while value == current:
                value = self.value(attribute)
            out[attribute] = value
        return out

    # ------------------------------------------------------------------ layout
    def _page(
        self, url: str, title: str, parent: str | None, text: str = "", link: str | None = None
    ) -> Page:
        """A new page with its navigation links; its parent links to it with ``link``."""
        page = Page(url, title, parent, [text] if text else [])
        self.pages[url] = page
        if parent is not None:
            page.links.append(("Home", HOME))
            if parent != HOME:
                page.links.append((self.pages[parent].title, parent))
            page.nav = len(page.links)
            self.pages[parent].links.append((link or title, url))
        return page

    def build(self, archived: list[Entity], news: int) -> Site:
        """Lays out every page: home, sections, groups, entities, subpages, archive, news."""
        home = self._page(HOME, f"{self.org} home", None, f"Welcome to the {self.org}.")
        for kind in KINDS:
            self._section(kind)
        self._see_also()
        self._archive(archived)
        for page in self.pages.values():
            if page.parent is not None:
                rest = page.links[page.nav :]
                page.links[page.nav :] = [rest[int(i)] for i in self.rng.permutation(len(rest))]
        self._news(news)
        latest = [(f"Latest: {t}", url) for t, url in self.pages["/news"].links[1:]]
        home.links += latest[:LATEST_NEWS]
        return Site(self.org, list(self.pages.values()), self.rng)

    def _section(self, kind: str) -> None:
        spec = KINDS[kind]
        sec_url = "/" + slug(spec.section)
        section = self._page(sec_url, spec.section, HOME)
        mine = [e for e in self.entities if e.kind == kind]
        parents: dict[str | None, str] = {None: sec_url}
        if self.depth >= 3:
            for g in sorted({e.group for e in mine if e.group}, key=spec.groups.index):
                names = ", ".join(e.name for e in mine if e.group == g)
                section.lines.append(f"{g}: {names}.")
                parents[g] = f"{sec_url}/{slug(g)}"
                self._page(parents[g], g, sec_url, f"{g}, part of {spec.section}.")
        else:
            section.lines.append(f"The {spec.noun} of the {self.org}.")
        for e in mine:
            self._entity(e, parents[e.group])

    def _entity(self, e: Entity, parent: str) -> None:
        spec = KINDS[e.kind]
        url = f"{parent}/{slug(e.name)}"
        self.url_of[e.name] = url
        where = f"the {e.group}" if e.group else spec.section
        page = self._page(url, e.name, parent, f"The {e.name} is part of {where}.")
        if self.depth < 4:
            page.lines += [f"{label(a)}: {e.attrs[a]}" for a in spec.attributes]
            self.fact_url.update({(e.name, a): url for a in spec.attributes})
            return
        for title, pair in spec.subpages:
            sub = self._page(f"{url}/{slug(title)}", f"{e.name}: {title}", url, link=title)
            sub.lines += [f"{label(a)}: {e.attrs[a]}" for a in pair]
            self.fact_url.update({(e.name, a): sub.url for a in pair})

    def _see_also(self) -> None:
        """Entity pages link to a near-duplicate where one exists: a plausible wrong turn."""
        by_topic: dict[str, list[Entity]] = {}
        for e in self.entities:
            by_topic.setdefault(e.topic, []).append(e)
        for e in self.entities:
            twins = [x for x in by_topic[e.topic] if x is not e]
            if twins and self.rng.random() < 0.5:
                twin = twins[int(self.rng.integers(len(twins)))]
                self.pages[self.url_of[e.name]].links.append(
                    (f"See also: {twin.name}", self.url_of[twin.name])
                )

    def _archive(self, archived: list[Entity]) -> None:
        """Archived pages with outdated values, and links that promise "key facts" on them."""
        if not archived:
            return
        self._page("/archive", "Archive", HOME, "Old pages kept for reference.")
        for e in archived:
            url = f"/archive/{slug(e.name)}"
            page = self._page(
                url, f"{e.name} (archived page)", "/archive", "This page is archived."
            )
            page.lines += [f"{label(a)}: {v}" for a, v in self.stale(e).items()]
            parent = self.pages[self.url_of[e.name]].parent
            assert parent is not None
            self.pages[parent].links.append((f"{e.name} key facts", url))

    def _news(self, count: int) -> None:
        """News items that mention the site's names with unrelated values."""
        self._page("/news", "News", HOME, f"News of the {self.org}.")
        pairs = [(e, t) for e in self.entities for t in NEWS_TEMPLATES]
        for i, idx in enumerate(self.rng.permutation(len(pairs))[:count]):
            e, (headline, sentence, kind) = pairs[int(idx)]
            value = self.typed_value(kind, 10, 400) if kind == "count" else self.typed_value(kind)
            title = headline.format(name=e.name)
            self._page(f"/news/{i + 1}", f"News: {title}", "/news", link=title).lines.append(
                sentence.format(name=e.name, value=value)
            )


class WebWalkEpisode(Episode):
    """One website, one multi-part question, and the navigator's browser."""

    def __init__(
        self,
        site: Site,
        question: str,
        gold: str,
        facts: list[Fact],
        calculation: str | None,
        targets: dict[str, str],
    ) -> None:
        self.site = site
        self.question = question
        self.gold = gold
        self.facts = tuple(facts)
        self.calculation = calculation
        #: fact subtask -> url of the page that shows its value
        self.targets = targets
        self._current: str | None = None
        self._back: list[str] = []

    def begin_call(self, role: str, subtask: str) -> None:
        self._current, self._back = None, []

    def rivals(self, fact: Fact) -> Sequence[str]:
        """Every name of the gold's type (people, cities or buildings)."""
        return pool_of(fact.answer, NAMES_BY_TYPE.values())

    def tools(self, role: str) -> list[Tool]:
        if role != ROLE:
            raise ValueError(f"webwalk_v0 has the role {ROLE!r}, got {role!r}")
        return [
            Tool("open", ("page",), "open a page by url or id; the start page is home", self._open),
            Tool(
                "click", ("link",), "follow a link of the open page by number or text", self._click
            ),
            Tool("back", (), "go back to the previous page", self._go_back),
            Tool("find", ("text",), "show the lines of the open page with this text", self._find),
        ]

    # ------------------------------------------------------------------ browser
    def _go(self, url: str) -> str:
        if self._current is not None:
            self._back.append(self._current)
        self._current = url
        return self.site.view(url)

    def _open_page(self) -> Page:
        if self._current is None:
            raise ToolError("no page is open; open one first (the start page is home)")
        return self.site.pages[self._current]

    def _open(self, page: str) -> str:
        if not page.strip():
            raise ToolError("empty page; write a url like /research, an id like p12, or home")
        url = self.site.resolve(page)
        if url is None:
            raise ToolError(
                f"no page {page.strip()[:40]!r}; urls look like /research, ids like p12, "
                "and the start page is home"
            )
        return self._go(url)

    def _click(self, link: str) -> str:
        page = self._open_page()
        key = _norm(link)
        if not key:
            raise ToolError("empty link; click a link by its number or its text")
        n = len(page.links)
        if key.isdigit():
            if not 1 <= int(key) <= n:
                raise ToolError(f"no link {key} on {page.pid}; its links are numbered 1 to {n}")
            return self._go(page.links[int(key) - 1][1])
        exact = [url for text, url in page.links if _norm(text) == key]
        if exact:
            return self._go(exact[0])
        partial = [(i, t, u) for i, (t, u) in enumerate(page.links, 1) if key in _norm(t)]
        if len(partial) == 1:
            return self._go(partial[0][2])
        if partial:
            shown = ", ".join(f"[{i}] {t}" for i, t, _ in partial[:5])
            raise ToolError(
                f"{link.strip()[:40]!r} matches {len(partial)} links on {page.pid}: {shown}; "
                "click one by its number"
            )
        raise ToolError(
            f"no link {link.strip()[:40]!r} on {page.pid}; click a link by its number "
            f"(1 to {n}) or its text"
        )

    def _go_back(self) -> str:
        if not self._back:
            raise ToolError("no previous page to go back to")
        self._current = self._back.pop()
        return self.site.view(self._current)

    def _find(self, text: str) -> str:
        page = self._open_page()
        key = _norm(text)
        if not key:
            raise ToolError("empty text; write the words to find on the open page")
        lines = self.site.view(page.url).split("\n")[1:]
        hits = [line for line in lines if key in _norm(line)]
        if not hits:
            return f"no line of {page.pid} contains {text.strip()[:40]!r}"
        head = f"{len(hits)} line(s) of {page.pid} contain {text.strip()[:40]!r}:"
        return "\n".join([head, *hits[:FIND_MAX_LINES]])

    # ------------------------------------------------------------------ expert
    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        """Walks the site's menus down to the page of the fact, then returns its value."""
        if fact is None:
            return ToolCall.make("return", result="unknown")
        target = self.targets[fact.subtask]
        header = self.site.pages[target].pid + " "
        seen = any(ev.ok and ev.call is not None and ev.output.startswith(header) for ev in history)
        if seen or self._current == target:
            return ToolCall.make("return", result=fact.answer)
        path = self.site.path(target)
        if self._current in path:
            child = path[path.index(self._current) + 1]
            return ToolCall.make("click", link=self.site.link_text(self._current, child))
        return ToolCall.make("open", page="home")

    def admissible_calls(self, role: str, history: Sequence[ToolEvent]) -> list[ToolCall]:
        """The expert's calls for every part, and the browser's other moves.

        Other moves: open the start page, click each link of the open page by its
        text, open its parent page, go back when there is a previous page, and find
        the open page's title on it.
        """
        if role != ROLE:
            raise ValueError(f"webwalk_v0 has the role {ROLE!r}, got {role!r}")
        calls = [*self.expert_calls(role, history), ToolCall.make("open", page="home")]
        if self._current is not None:
            page = self.site.pages[self._current]
            calls += [ToolCall.make("click", link=text) for text, _ in page.links]
            if page.parent is not None:
                calls.append(ToolCall.make("open", page=page.parent))
            if self._back:
                calls.append(ToolCall.make("back"))
            calls.append(ToolCall.make("find", text=page.title.split(":")[0]))
        return list(dict.fromkeys(calls))


def _phrase(attribute: str, e: Entity) -> str:
    return f"the {attribute} of the {e.name}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class WebWalkTask(Task):
    """Samples websites and multi-part questions at a difficulty."""

    roles = (ROLE,)
    role_descriptions = {ROLE: "finds one fact by browsing the website"}

    def __init__(
        self,
        parts: tuple[int, int],
        depth: int,
        groups: int,
        entities: int,
        decoys: int,
        archived: bool,
        news: int,
        arithmetic: bool,
    ) -> None:
        lo, hi = tuple(parts)
        if not (1 <= lo <= hi <= len(KINDS)):
            raise ValueError(
                f"parts must be a range within 1..{len(KINDS)} like (2, 3), got {parts!r}"
            )
        checks = {"depth": (depth, 2, 4), "groups": (groups, 1, 6), "entities": (entities, 2, 10)}
        checks.update(decoys=(decoys, 0, 3), news=(news, 0, 40))
        for name, (value, low, high) in checks.items():
            if not (isinstance(value, int) and low <= value <= high):
                raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
        self.parts, self.depth, self.groups, self.entities = (lo, hi), depth, groups, entities
        self.decoys, self.archived, self.news = decoys, bool(archived), news
        self.arithmetic = bool(arithmetic)

    def sample(self, rng: np.random.Generator) -> WebWalkEpisode:
        b = SiteBuilder(rng, self.depth, self.groups, self.entities)
        n = int(rng.integers(self.parts[0], self.parts[1] + 1))
        combine = self._combine(rng, n)
        picks = self._pick_parts(b, rng, n, combine)
        for e, _ in picks:
            b.add_decoys(e, self.decoys)
        archived: list[Entity] = []
        if self.archived:
            chosen = {e.name for e, _ in picks}
            others = [e for e in b.entities if e.name not in chosen]
            extra = rng.permutation(len(others))[: max(len(picks), len(others) // 4)]
            archived = [e for e, _ in picks] + [others[int(i)] for i in extra]
        site = b.build(archived, self.news)
        facts = [Fact(ROLE, f"What is {_phrase(a, e)}?", e.attrs[a]) for e, a in picks]
        targets = {
            f.subtask: b.fact_url[(e.name, a)] for f, (e, a) in zip(facts, picks, strict=True)
        }
        question, gold, calc = self._question(combine, picks)
        return WebWalkEpisode(site, question, gold, facts, calc, targets)

    def _combine(self, rng: np.random.Generator, n: int) -> str:
        if n == 1:
            return "single"
        options = ["list"]
        if self.arithmetic:
            options += ["sum"] + (["difference"] if n == 2 else [])
        return options[int(rng.integers(len(options)))]

    def _pick_parts(
        self, b: SiteBuilder, rng: np.random.Generator, n: int, combine: str
    ) -> list[tuple[Entity, str]]:
        """One (entity, attribute) per part, each from a different section, values distinct."""
        wanted = {"difference": "year", "sum": "count"}.get(combine)
        while True:
            kinds = [list(KINDS)[int(i)] for i in rng.permutation(len(KINDS))[:n]]
            picks = []
            for kind in kinds:
                mine = [e for e in b.entities if e.kind == kind]
                e = mine[int(rng.integers(len(mine)))]
                attrs = [a for a in KINDS[kind].attributes if wanted in (None, ATTRIBUTES[a][0])]
                picks.append((e, attrs[int(rng.integers(len(attrs)))]))
            values = [e.attrs[a].lower() for e, a in picks]
            if len(set(values)) == len(values):
                return picks

    @staticmethod
    def _question(combine: str, picks: list[tuple[Entity, str]]) -> tuple[str, str, str | None]:
        phrases = [_phrase(a, e) for e, a in picks]
        values = [e.attrs[a] for e, a in picks]
        if combine == "single":
            return f"What is {phrases[0]}?", values[0], None
        if combine == "list":
            return f"Give {_join(phrases)}, in that order.", ", ".join(values), None
        if combine == "sum":
            total = sum(int(v) for v in values)
            return f"What is the sum of {_join(phrases)}?", str(total), "+".join(values)
        assert combine == "difference", combine
        hi, lo = max(int(v) for v in values), min(int(v) for v in values)
        question = f"How many years apart are {phrases[0]} and {phrases[1]}?"
        return question, str(hi - lo), f"{hi}-{lo}"

    def vocabulary(self) -> list[str]:
        texts = [
            *ORG_FIRST,
            *ORG_SECOND,
            *TOPICS,
            *FIRST_NAMES,
            *LAST_NAMES,
            *CITIES,
            *TREES,
            *BUILDING_KINDS,
            *ATTRIBUTES,
            *(label(a) for a in ATTRIBUTES),
            *(h + " " + s for h, s, _ in NEWS_TEMPLATES),
            "What is the of Give and in that order. How many years apart are sum",
            "home Home Welcome to the is part of key facts archived page This page is archived.",
            "Old pages kept for reference. News Archive Latest: See also: unknown",
            "no page is open; open one first (the start page is home) empty url like an id or",
            "urls look like ids and no link on its links are numbered to click by its number "
            "text matches links one previous page go back line lines contain write words find",
            "open",
            "Task: return give your result to main and stop",  # the sub-agent prompt
        ]
        for spec in KINDS.values():
            texts += [spec.section, spec.noun, *spec.groups, *spec.suffixes]
            texts += [title for title, _ in spec.subpages]
        words: set[str] = set()
        for text in texts:
            words.update(re.findall(r"[A-Za-z]+", text))
            words.update(re.findall(r"[a-z]+", slug(text)))  # urls are lower-case slugs
        return sorted(words)


class WebWalkEnv(TaskEnv, name="webwalk_v0", task=WebWalkTask, difficulties=DIFFICULTIES):
    """webwalk_v0 (see the module docstring for the env card)."""


__all__ = ["env", "raw_env", "WebWalkEnv", "WebWalkTask", "WebWalkEpisode"]
