"""Text observations and spaces shared by every environment.

Observations are plain strings that also carry ``dtype = np.dtype("<U")`` so that
PettingZoo's ``api_test`` (which compares ``observation.dtype`` with the space's
dtype) accepts them. Every observation may echo an agent's arbitrary output, so it
is sanitised to the space's character set and clipped to its maximum length before
it is returned (``gymnasium.spaces.Text.contains`` rejects anything else).
"""

from __future__ import annotations

import string

import numpy as np
from gymnasium.spaces import Text

#: Printable ASCII plus newline and tab: what observations and actions may contain.
CHARSET: str = string.ascii_letters + string.digits + string.punctuation + " \n\t"
_CHARSET_SET = frozenset(CHARSET)
_TRUNCATION_MARK = " ...[clipped]"


class TextObservation(str):
    """A ``str`` that declares the dtype of ``gymnasium.spaces.Text``.

    It behaves as an ordinary string in every respect; ``dtype`` only exists so that
    generic checkers that compare dtypes with the observation space accept it.
    """

    __slots__ = ()
    dtype = np.dtype("<U")


def sanitize(text: str, max_length: int) -> TextObservation:
    """Maps ``text`` into the observation charset and clips it to ``max_length``.

    Characters outside :data:`CHARSET` become ``?`` (``\\r`` becomes a newline), and a
    clipped text ends with a visible marker so the reader knows something was cut.

    Args:
        text: Any string.
        max_length: The space's maximum length (at least 16).

    Returns:
        A :class:`TextObservation` that ``Text(max_length, charset=CHARSET)`` contains.
    """
    if max_length < 16:
        raise ValueError(f"max_length must be at least 16, got {max_length}")
    if len(text) > max_length:
        text = text[: max_length - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK
    if not _CHARSET_SET.issuperset(text):
        text = "".join(c if c in _CHARSET_SET else ("\n" if c == "\r" else "?") for c in text)
    return TextObservation(text)


def text_space(max_length: int) -> Text:
    """The ``Text`` space used for observations and actions (min length 0)."""
    return Text(max_length=max_length, min_length=0, charset=CHARSET)
