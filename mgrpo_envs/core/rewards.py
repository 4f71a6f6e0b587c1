"""Rewards of the main agent and of each sub-agent call (M-GRPO, arXiv 2511.13288, sec. 3).

Main agent:  ``R_M = 0`` if its final output is invalid, else ``a1 * r_format + a2 * r_correct``.
Sub-agent call: ``R_S = 0`` if its output is invalid, else
``b1 * r_format + b2 * r_correct_main + b3 * r_expert``.

Two definitions of ``r_format`` (:func:`format_score`): ``"binary"`` is the paper's,
1 when the final output is well-formed; ``"fraction"`` (*ours*, the default) is the
share of the agent's outputs (in the episode for main, in the call for a sub-agent)
that parsed as a valid tool call, so that malformed intermediate turns cost
something even when the final output is valid. An output is "invalid" when the
episode (call) did not end with a well-formed final action; then the reward is 0
under either definition.

Correctness checks: main's ``r_correct`` takes the bare answer (:func:`answers_match`);
a sub-agent's verifiable ``r_expert`` finds the fact's value anywhere in its result,
with no conflicting value beside it (:func:`fact_in_answer`).

The formulas live here alone: the envs use them for their own rewards, and the
learners call them with the weights and the ``format_reward`` of their config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^a-z0-9.\- ]+")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
#: A number in free text: digits (``1,234``-style thousands groups allowed) with an optional
#: decimal part, not glued to a letter, digit, ``_``, ``.`` or ``^`` on either side, so that
#: ``Q3``, ``d12``, ``CO2``, ``m^2`` and ``605km`` hold no number (see :func:`fact_in_answer`).
_TEXT_NUMBER = re.compile(r"(?<![\w.^])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w^]|\.\d)")
#: A word of :func:`fact_in_answer`: a run of letters and digits, of any script.
_TOKEN = re.compile(r"[^\W_]+")
_LEADING_ARTICLES = frozenset(("a", "an", "the"))

FormatReward = Literal["binary", "fraction"]
FORMAT_REWARDS: tuple[str, ...] = ("binary", "fraction")


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward terms; defaults are the paper's.

    Attributes:
        a1: Main agent's format weight.
        a2: Main agent's correctness weight.
        b1: Sub-agent's format weight.
        b2: Weight of the main agent's correctness, copied to every sub-call.
        b3: Weight of the expert's judgement of the call itself.
    """

    a1: float = 0.1
    a2: float = 0.9
    b1: float = 0.1
    b2: float = 0.4
    b3: float = 0.5

    def __post_init__(self) -> None:
        for name in ("a1", "a2", "b1", "b2", "b3"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"reward weight {name} must be a finite number >= 0, got {value!r}"
                )


def normalize_answer(text: str) -> str:
    """Lower-cases, drops articles and punctuation, collapses spaces, trims ``.0``."""
    text = text.lower().strip()
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    text = " ".join(text.split()).strip(" .")
    if _NUMBER.match(text):
        value = float(text)
        if value.is_integer():
            return str(int(value))
    return text


def answers_match(given: str, gold: str, *, rel_tol: float = 0.0, abs_tol: float = 1e-6) -> bool:
    """True when ``given`` equals ``gold`` after normalisation (numbers within tolerance)."""
    g, t = normalize_answer(given), normalize_answer(gold)
    if g == t:
        return True
    if _NUMBER.match(g) and _NUMBER.match(t):
        return math.isclose(float(g), float(t), rel_tol=rel_tol, abs_tol=abs_tol)
    return False


def numbers_in(text: str) -> list[float]:
    """The numbers written in ``text``, in order (the rule is :func:`fact_in_answer`'s).

    ``$1,234.50`` gives 1234.5, ``-12`` gives -12 (a ``-`` is a sign when no letter or
    digit precedes it, so ``1990-1995`` gives 1990 and 1995), and ``Q3``, ``d12``,
    ``m^2`` and ``605km`` give nothing.
    """
    found = []
    for m in _TEXT_NUMBER.finditer(text):
        value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        start = m.start()
        signed = start >= 1 and text[start - 1] == "-"
        if signed and not (start >= 2 and text[start - 2].isalnum()):
            value = -value
        found.append(value)
    return found


def _words(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(text.casefold()))


def _spans(words: tuple[str, ...], phrase: tuple[str, ...]) -> list[tuple[int, int]]:
    """Where ``phrase`` occurs in ``words`` as a whole-word run: ``(start, end)`` pairs."""
    n = len(phrase)
    if n == 0:
        return []
    return [(i, i + n) for i in range(len(words) - n + 1) if words[i : i + n] == phrase]


def fact_in_answer(
    given: str,
    gold: str,
    *,
    rel_tol: float = 0.0,
    abs_tol: float = 1e-6,
    rivals: Iterable[str] = (),
    echo: str = "",
) -> bool:
    """True when ``given`` states the fact ``gold`` and nothing that contradicts it.

    The verifiable ``r_expert`` of a sub-agent call (issue 33): the fact is judged by
    its value wherever it appears in the answer, so ``605``, ``605 dollars``,
    ``SkyNorth 605`` and ``The fare is 605.`` all state the gold ``605``. The rule:

    - The bare value always counts (:func:`answers_match` is True).
    - A *numeric* gold (one number and no letters: ``605``, ``4.49``, ``$1,234``):
      some number of ``given`` equals it within ``rel_tol``/``abs_tol``, and every
      other number of ``given`` does too. Any other number is a conflicting value:
      ``605 or 610``, ``not 605 but 610`` and ``610 dollars for the fare`` are wrong,
      and so is working shown next to the value (``605 - 410 = 195`` for ``195``).
      Words never conflict with a number, so a currency or unit (``$``, ``USD``,
      ``dollars``, ``%``) is free; a number is a standalone run of digits, and
      digits glued to letters (``Q3``, ``d12``, ``CO2``, ``605km``) or after ``^``
      are part of a word, an id or a unit, not a number. A comma inside digits
      groups thousands (``1,234`` is 1234); ``605, 610`` is two numbers.
    - Any other gold (a *name*: ``Mara Quill``, ``Port Alden``): its words, a
      leading article aside, occur in ``given`` as a run of whole words, case-folded
      (``mara quill's film`` holds ``Mara Quill``; ``Mara Quillon`` does not), and
      no rival does outside that run. ``rivals`` are the other values the answer
      could name instead (an episode's other names of the gold's kind, e.g. its
      near-duplicates); naming one besides the gold (``Mara Quill or Mara Vance``)
      is a conflict. Numbers in ``given`` conflict only when the gold itself holds a
      number (``Room 12``): then each must equal one of the gold's.
    - Whatever ``echo`` (the subtask) contains is never a conflict, numbers and
      rivals alike, so an answer may repeat the question's own values.

    Args:
        given: The sub-agent's result, any text.
        gold: The fact's gold value.
        rel_tol: Relative tolerance for numbers.
        abs_tol: Absolute tolerance for numbers.
        rivals: Names that conflict with a name gold (the gold itself is ignored).
        echo: Text whose values do not count as conflicting (the subtask).

    Returns:
        Whether the answer states the gold value and no conflicting value.
    """
    if answers_match(given, gold, rel_tol=rel_tol, abs_tol=abs_tol):
        return True

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)

    gold_numbers, numbers = numbers_in(gold), numbers_in(given)
    if gold_numbers:  # then every number of the answer must be one of the gold's
        allowed = [*gold_numbers, *numbers_in(echo)]
        if any(not any(close(x, a) for a in allowed) for x in numbers):
            return False
    if len(gold_numbers) == 1 and not any(c.isalpha() for c in gold):
        return any(close(x, gold_numbers[0]) for x in numbers)
    phrase = _words(gold)
    while len(phrase) > 1 and phrase[0] in _LEADING_ARTICLES:
        phrase = phrase[1:]
    words = _words(given)
    found = _spans(words, phrase)
    if not found:
        return False
    present, echoed = set(words), _words(echo)
    for rival in rivals:
        other = _words(rival)
        if not other or other[0] not in present or other == phrase or _spans(echoed, other):
            continue
        if any(not any(s <= i and j <= e for s, e in found) for i, j in _spans(words, other)):
            return False
    return True


def main_reward(valid: bool, r_format: float, r_correct: float, w: RewardWeights) -> float:
    """``R_M``: zero for an invalid final output, else ``a1*r_format + a2*r_correct``."""
    if not valid:
        return 0.0
    return w.a1 * r_format + w.a2 * r_correct


def sub_reward(
    valid: bool, r_format: float, r_correct_main: float, r_expert: float, w: RewardWeights
) -> float:
    """``R_S`` of one sub-agent call: zero if invalid, else the weighted sum of three terms."""
    if not valid:
        return 0.0
    return w.b1 * r_format + w.b2 * r_correct_main + w.b3 * r_expert


def format_score(valid: bool, valid_outputs: int, outputs: int, mode: FormatReward) -> float:
    """``r_format`` of one conversation (main's episode, or one sub-agent call).

    Args:
        valid: The conversation ended with a well-formed final output.
        valid_outputs: Outputs that parsed as a valid tool call.
        outputs: All of the agent's outputs.
        mode: ``"binary"`` (the paper's: 1 for a valid final output) or
            ``"fraction"`` (*ours*: ``valid_outputs / outputs``).
    """
    if mode == "binary":
        return 1.0 if valid else 0.0
    elif mode == "fraction":
        return valid_outputs / outputs if outputs else 0.0
    else:
        raise ValueError(f"format_reward must be one of {list(FORMAT_REWARDS)}, got {mode!r}")
