"""mgrpo_envs: hierarchical multi-agent tool-use tasks as PettingZoo environments.

``make(env_id, **kwargs)`` builds an AEC env, ``list_envs()`` names them, and each
task has a single-agent Gymnasium view (``gymnasium.make("mgrpo_envs/Research-v0")``).
"""

from __future__ import annotations

from mgrpo_envs.registry import list_envs, make, register_gymnasium

register_gymnasium()

__all__ = ["make", "list_envs"]
