"""The env options of ``mgrpo`` (``--env``, ``--difficulty``, ``--env-arg``), read and checked.

A user's mistake in them (a spec that names no env, a file or module that cannot be
imported or registers no such id, an argument the env does not take, a pair that is
not ``KEY=VALUE``) is a ValueError naming what was given and what is expected, which
the command prints as one line (issue 33). The checks run before any learner is
loaded; ``mgrpo_envs`` itself (pettingzoo, gymnasium, numpy) is imported when a
check runs, so that a wrong flag is reported without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def env_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``["main_turns=4", "codec=json"]`` -> ``{"main_turns": 4, "codec": "json"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"--env-arg takes KEY=VALUE (e.g. --env-arg main_turns=4), got {pair!r}"
            )
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def env_kwargs_of(
    base: Mapping[str, Any], difficulty: str | None, pairs: Sequence[str]
) -> dict[str, Any]:
    """``base`` with ``--difficulty`` and the ``--env-arg`` pairs given over it."""
    kwargs = dict(base)
    if difficulty is not None:
        kwargs["difficulty"] = difficulty
    kwargs.update(env_args(pairs))
    return kwargs


def load_env_spec(spec: str) -> str:
    """The env id ``spec`` names (``mgrpo_envs.load_env``), a user's mistake a ValueError.

    A spec that names no env, a file or module that cannot be imported, and one that
    registers no such id are the user's mistakes; an error raised by the code of a
    user's env itself is left as it is (its traceback is the help).
    """
    import mgrpo_envs

    source = spec.rpartition(":")[0]
    try:
        return mgrpo_envs.load_env(spec)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if not missing or not (source == missing or source.startswith(missing + ".")):
            raise  # the module was found: an import inside it failed
        raise ValueError(
            f"--env {spec!r}: no module {source!r} to import; expected a registered env id "
            f"({', '.join(mgrpo_envs.list_envs())}), FILE.py:ID (a Python file) or "
            "MODULE:ID (an importable module) whose import registers ID"
        ) from err
    except ValueError as err:
        raise ValueError(f"--env {spec!r}: {err}") from err


def check_env(spec: str, kwargs: Mapping[str, Any]) -> str:
    """The env id ``spec`` names, after building the env once with ``kwargs``.

    Raises:
        ValueError: ``spec`` names no env (:func:`load_env_spec`), or the env does
            not take an argument of ``kwargs`` or refuses its value.
    """
    import mgrpo_envs

    env_id = load_env_spec(spec)
    try:
        mgrpo_envs.make(env_id, **kwargs).close()
    except TypeError as err:  # an argument the env does not take (mgrpo_envs.make's contract)
        raise ValueError(f"{err} (env arguments are set by --difficulty and --env-arg)") from err
    return env_id
