"""The task protocol: what a task family gives the hierarchical environment.

A :class:`Task` samples :class:`Episode` s. An episode knows its question, the gold
answer, and the *facts* the question needs, in order: each fact is what one
sub-agent call should find (a canonical subtask text and its gold value). This is
what makes the expert score verifiable and lets one generic scripted expert drive
``main`` for every task; the task only scripts its sub-agents' tool use.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.rewards import answers_match, fact_in_answer
from mgrpo_envs.core.tools import Tool

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset("a an the of is what who which in by was were to for and".split())
#: A word of :func:`normalize_subtask`: a run of letters and digits, of any script.
_LETTERS_DIGITS = re.compile(r"[^\W_]+")

#: How a free-text subtask is paired with a fact; see :meth:`Episode.match_fact`.
FactMatching = Literal["exact", "fuzzy"]
FACT_MATCHING_MODES: tuple[str, ...] = ("exact", "fuzzy")


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` without stopwords (used by fuzzy fact matching)."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def normalize_subtask(text: str) -> str:
    """The form in which exact fact matching compares subtasks.

    The words of ``text`` joined by single spaces, where a word is a maximal run of
    letters and digits (of any script) and letters are case-folded; every other
    character (whitespace, punctuation, underscores, symbols) only separates words.
    So ``"What is the fare from Avalon to Brindle?"`` and ``"what is the fare
    from avalon to brindle"`` are equal, while word order and every word (``the``
    included) count: ``"... from Brindle to Avalon?"`` is another subtask, and so
    is ``"What is fare from Avalon to Brindle?"``.
    """
    return " ".join(_LETTERS_DIGITS.findall(text.casefold()))


def match_exact(facts: Sequence[Fact], subtask: str) -> Fact | None:
    """The first fact whose subtask equals ``subtask`` after :func:`normalize_subtask`."""
    key = normalize_subtask(subtask)
    return next((f for f in facts if normalize_subtask(f.subtask) == key), None)


def match_fuzzy(facts: Sequence[Fact], subtask: str) -> Fact | None:
    """The fact whose subtask's content words ``subtask`` holds most of, at least half.

    Word order is ignored, so a subtask that swaps two names matches the fact it
    swapped them from; this is why fuzzy matching is opt-in.
    """
    words = content_words(subtask)
    best, best_score = None, 0.5
    for fact in facts:
        target = content_words(fact.subtask)
        score = len(words & target) / max(len(target), 1)
        if score >= best_score and (best is None or score > best_score):
            best, best_score = fact, score
    return best


def pool_of(value: str, pools: Iterable[Sequence[str]]) -> Sequence[str]:
    """The first of ``pools`` that holds ``value`` (case-folded), or ``()``.

    A helper for :meth:`Episode.rivals`: a task keeps one pool of names per kind (its
    people, its cities, ...) and a name gold's rivals are the names of its pool.
    """
    key = value.casefold()
    return next((p for p in pools if any(key == name.casefold() for name in p)), ())


@dataclass(frozen=True)
class Fact:
    """One thing a sub-agent call should find.

    Attributes:
        role: The sub-agent role whose tools can find it.
        subtask: The canonical subtask text (what the scripted main agent delegates;
            by default a delegated subtask asks for this fact only when it equals
            this text up to case, whitespace and punctuation, see
            :meth:`Episode.match_fact`).
        answer: The gold value, as text.
    """

    role: str
    subtask: str
    answer: str


@dataclass(frozen=True)
class ToolEvent:
    """One agent output and what came back: the parsed call (None if it did not parse)."""

    call: ToolCall | None
    output: str
    ok: bool


class Episode(ABC):
    """One generated problem: question, gold answer, facts, and the sub-agents' tools."""

    question: str
    gold: str
    facts: tuple[Fact, ...]
    #: Arithmetic the main agent does on the facts (gold form), or None.
    calculation: str | None = None
    #: Relative tolerance for numeric answers (0 = exact after normalisation).
    rel_tol: float = 0.0
    #: How :meth:`match_fact` pairs a subtask with a fact: ``"exact"`` (the default)
    #: or ``"fuzzy"`` (word overlap). A task opts in by setting it on its episode class.
    fact_matching: FactMatching = "exact"

    @abstractmethod
    def tools(self, role: str) -> list[Tool]:
        """The tools of a sub-agent role, bound to this episode's world."""

    @abstractmethod
    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        """The scripted expert's next call for a sub-agent working on ``fact``.

        Returns a ``return`` call (argument ``result``) once the fact is found; when
        ``fact`` is None (the subtask matches nothing) it returns at once.
        """

    def begin_call(self, role: str, subtask: str) -> None:
        """Called by the env when a call of sub-agent ``role`` starts (default: nothing).

        Tools that keep state within one call (a browser's current page and its
        back history) reset it here, so that every call starts from the same place
        whatever the previous call did.
        """
        return None  # a hook, not an abstract method: most tasks have no per-call state

    def admissible_calls(self, role: str, history: Sequence[ToolEvent]) -> list[ToolCall] | None:
        """The calls that make sense for sub-agent ``role`` now, given this call's history.

        In the manner of TextWorld's admissible commands (Cote et al., 2018, arXiv 1806.11532):
        a small finite list of calls of the role's tools (``return`` included) that
        holds the scripted expert's next call (:meth:`sub_oracle`) for every fact the
        role can work on now, and plausible alternatives (distractors) built from the
        episode's own data: near-duplicate names, other links of the open page, the
        other table. Finite-action views (the discrete view for stable-baselines3)
        offer exactly these calls, so a list must not name what the history has not
        shown yet (the answer of a later fact, say). Its order carries no meaning (a
        view reorders it), but a view keeps only so many calls per tool: put the
        expert's calls first (:meth:`expert_calls` gives them).

        Args:
            role: The sub-agent role.
            history: The call's events so far. In the single-agent view, which has no
                calls, the whole episode's events, over every role's tools.

        Returns:
            The calls, or None (this default): the episode has no hook, and a view
            falls back to reading candidate calls from the observations' text.
        """
        return None

    def expert_calls(
        self, role: str, history: Sequence[ToolEvent], facts: Sequence[Fact] | None = None
    ) -> list[ToolCall]:
        """The expert's next call for each of ``facts`` and for no fact, without repeats.

        A helper for :meth:`admissible_calls`: :meth:`sub_oracle` for each fact
        (default: every fact of ``role``), which is ``return`` with the fact's value
        once ``history`` found it, then for a subtask that asks for no fact.
        """
        chosen = [f for f in self.facts if f.role == role] if facts is None else list(facts)
        return list(dict.fromkeys(self.sub_oracle(role, f, history) for f in [*chosen, None]))

    def match_fact(
        self, role: str, subtask: str, *, mode: FactMatching | None = None
    ) -> Fact | None:
        """The fact of ``role`` that a free-text subtask asks for, or None.

        ``"exact"`` (the default): the first fact of ``role`` whose canonical
        subtask equals ``subtask`` after :func:`normalize_subtask` (case,
        whitespace and punctuation do not count; words and their order do), so
        "fare from A to B" never matches the fact "fare from B to A".
        ``"fuzzy"``: the fact of ``role`` for which ``subtask`` holds the largest
        share, at least half, of its canonical subtask's content words (stopwords
        dropped, order ignored; ties: the earlier fact). It forgives rephrasing
        but cannot tell facts apart that differ only in word order.

        Args:
            role: The sub-agent role that was called.
            subtask: The text main delegated.
            mode: Overrides :attr:`fact_matching` for this look-up.

        Raises:
            ValueError: If the mode is neither ``"exact"`` nor ``"fuzzy"``.
        """
        mode = self.fact_matching if mode is None else mode
        facts = [f for f in self.facts if f.role == role]
        if mode == "exact":
            return match_exact(facts, subtask)
        if mode == "fuzzy":
            return match_fuzzy(facts, subtask)
        raise ValueError(
            f"fact_matching must be one of {list(FACT_MATCHING_MODES)}, got {mode!r}; "
            "set it on the Episode class, e.g. fact_matching = 'fuzzy'"
        )

    def expert_score(self, role: str, subtask: str, result: str) -> float:
        """Verifiable ``r_expert``: 1.0 if ``result`` states the fact asked for, else 0.0.

        The fact asked for is :meth:`match_fact`'s (exact by default); a subtask
        that matches no fact scores 0.0. The result is judged by :meth:`check_fact`:
        the fact's value anywhere in it, and no conflicting value.
        """
        fact = self.match_fact(role, subtask)
        if fact is None:
            return 0.0
        return 1.0 if self.check_fact(result, fact) else 0.0

    def check_fact(self, given: str, fact: Fact) -> bool:
        """Whether a sub-agent's result states ``fact``'s value and no conflicting one.

        The value is judged wherever it appears in the result (``605``, ``605 dollars``
        and ``The fare is 605.`` all state ``605``); another number, or one of
        :meth:`rivals`, next to it is a conflict. The rule is
        :func:`~mgrpo_envs.core.rewards.fact_in_answer`'s, with :attr:`rel_tol`; the
        fact's canonical subtask is echo (its own values never conflict).
        """
        return fact_in_answer(
            given, fact.answer, rel_tol=self.rel_tol, rivals=self.rivals(fact), echo=fact.subtask
        )

    def rivals(self, fact: Fact) -> Sequence[str]:
        """Names a result for ``fact`` must not give besides its value (default: none).

        A task that knows the names its values are drawn from returns those of the
        gold's kind here (the other people, cities, companies, near-duplicates among
        them), so that ``Mara Quill or Mara Vance`` does not earn ``r_expert`` for the
        gold ``Mara Quill``. Numbers need no rivals: any other number conflicts with a
        numeric gold by itself.
        """
        return ()

    def check(self, given: str, gold: str) -> bool:
        """The bare-value answer check (:func:`~mgrpo_envs.core.rewards.answers_match`).

        It scores main's final answer (``r_correct``) and tells the scripted main
        agent which result it was given is which fact's value; a sub-agent's result
        is judged by :meth:`check_fact` instead.
        """
        return answers_match(given, gold, rel_tol=self.rel_tol)


class Task(ABC):
    """A task family: samples episodes, names its sub-agent roles and their job."""

    #: Sub-agent roles, in the order they appear in ``possible_agents`` after ``main``.
    roles: tuple[str, ...]
    #: One line per role for main's prompt ("finds facts in a document collection").
    role_descriptions: dict[str, str]
    #: Sub-agent roles that also get main's calculator, ``calculate[expression]``. The env
    #: adds it, so that the single-agent view, which has main's tools, holds it only once.
    calculator_roles: tuple[str, ...] = ()

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Episode:
        """A new episode drawn with ``rng`` (all randomness must come from it)."""

    @abstractmethod
    def vocabulary(self) -> list[str]:
        """Every word the task's texts can contain (for word-level tokenizers)."""
