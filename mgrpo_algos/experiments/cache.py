"""Stamped caches: a built model is reused only under the stamp it was built with.

A cache (a warm start, a saved model) is a directory with ``stamp.json`` beside what
it holds: the ``cache_stamp`` it was built under (its recipe, the package versions
and the library's code version, `mgrpo_algos.provenance`). A run reuses it only when
the stamp it would write is the stored one; otherwise it says which settings differ
and builds it again. The demo, the experiments' warm starts and the benchmarks all
decide through these helpers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAMP_FILE = "stamp.json"
"""The file next to a cached model that holds the ``cache_stamp`` it was built under."""


def stamp_difference(cached: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    """Why a cache stamped ``cached`` is not one built under ``wanted`` (None: it is).

    Returns:
        ``"now != cached: transformers 5.24.0 != 5.17.0, code 1a2b3c4d5e6f != ..."``
        naming each recipe setting, package version and the code version that
        differ; ``"no stamp"`` when there is no stored stamp.
    """
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, as they are stored
    if cached is None:
        return "no stamp"
    if cached == wanted:
        return None
    diffs = []
    for section in ("recipe", "versions"):
        old, new = cached.get(section), wanted.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [
                f"{k} {new.get(k)} != {old.get(k)}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        elif old != new:
            diffs.append(f"{section} {new} != {old}")
    if cached.get("code") != wanted.get("code"):
        diffs.append(f"code {wanted.get('code')} != {cached.get('code')}")
    return "now != cached: " + ", ".join(diffs or ["stamp layout"])


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The stamp stored with the cache in ``path`` (None when there is none)."""
    stamp_file = Path(path) / STAMP_FILE
    return json.loads(stamp_file.read_text()) if stamp_file.is_file() else None


def cache_usable(path: Path, stamp: dict[str, Any], *, cache: bool = True, what: str) -> bool:
    """Whether the cache in ``path`` was built under ``stamp``; prints which and why.

    Args:
        path: The cache's directory (its stamp is ``path / STAMP_FILE``).
        stamp: ``cache_stamp(recipe)`` of the cache this run needs.
        cache: False rebuilds whatever is there.
        what: Names the cache in the printed line.
    """
    reason = stamp_difference(read_stamp(path), stamp) if cache else "the cache is turned off"
    if reason is None:
        print(f"using the cached {what} in {path} (same recipe, versions and code)")
        return True
    print(f"building the {what} in {path} ({reason})")
    return False


def write_stamp(path: Path, stamp: dict[str, Any]) -> None:
    """Stores ``stamp`` with the cache in ``path`` (after the cache itself is complete)."""
    (Path(path) / STAMP_FILE).write_text(json.dumps(stamp, indent=2, sort_keys=True))
