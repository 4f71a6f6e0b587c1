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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.rewards import answers_match
from mgrpo_envs.core.tools import Tool

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset("a an the of is what who which in by was were to for and".split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` without stopwords (used to match subtasks to facts)."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


@dataclass(frozen=True)
class Fact:
    """One thing a sub-agent call should find.

    Attributes:
        role: The sub-agent role whose tools can find it.
        subtask: The canonical subtask text (what the scripted main agent delegates).
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

    def match_fact(self, role: str, subtask: str) -> Fact | None:
        """The fact of ``role`` that a free-text subtask asks for, by word overlap.

        A fact matches when at least half of its subtask's content words occur in
        ``subtask``; the best match wins (ties: the earlier fact).
        """
        words = content_words(subtask)
        best, best_score = None, 0.5
        for fact in self.facts:
            if fact.role != role:
                continue
            target = content_words(fact.subtask)
            score = len(words & target) / max(len(target), 1)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = fact, score
        return best

    def expert_score(self, role: str, subtask: str, result: str) -> float:
        """Verifiable ``r_expert``: 1.0 if ``result`` is the gold value of the fact asked for."""
        fact = self.match_fact(role, subtask)
        if fact is None:
            return 0.0
        return 1.0 if self.check(result, fact.answer) else 0.0

    def check(self, given: str, gold: str) -> bool:
        """Answer check used for the final answer and for facts."""
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
