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

The formulas live here alone: the envs use them for their own rewards, and the
learners call them with the weights and the ``format_reward`` of their config.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^a-z0-9.\- ]+")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

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
