"""Where a figure or a cached model came from: package versions and the code's version.

Every benchmark's JSON line, every run's resolved config and every warm-start cache
carries these, so that a figure names the environment it was measured in and a
changed environment never silently reuses a model built in another one.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

#: The packages whose versions decide the figures (peft and ray only when installed).
PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "tokenizers",
    "numpy",
    "gymnasium",
    "pettingzoo",
    "peft",
    "ray",
)

_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = ("mgrpo_algos", "mgrpo_envs")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """``name -> installed version`` (None when the package is not installed)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version() -> str:
    """A 12-hex digest of the library's own source files (``mgrpo_algos``, ``mgrpo_envs``).

    A digest of the files rather than a git commit: it is right in a fresh clone, in
    an installed copy and in a working tree with uncommitted changes alike.
    """
    digest = hashlib.sha256()
    for package in _SOURCES:
        for path in sorted((_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def provenance() -> dict[str, Any]:
    """``{"versions": package_versions(), "code": code_version()}``."""
    return {"versions": package_versions(), "code": code_version()}


def cache_stamp(recipe: dict[str, Any]) -> dict[str, Any]:
    """What a cache is keyed by: its recipe, the package versions and the code version.

    A cache is reused only when its stored stamp equals ``cache_stamp(recipe)``.
    """
    return {"recipe": recipe, **provenance()}
