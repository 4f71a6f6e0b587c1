"""mgrpo_envs: hierarchical multi-agent tool-use tasks as PettingZoo environments.

``make(env_id, **kwargs)`` builds an AEC env, ``list_envs()`` names them, and each
task has a single-agent Gymnasium view (``gymnasium.make("mgrpo_envs/Research-v0")``)
and a discrete view for classic RL learners (``"mgrpo_envs/ResearchDiscrete-v0"``).
``register(env_id, entry_point)`` adds a user's own env built on the core.
"""

from __future__ import annotations

from mgrpo_envs.registry import list_envs, load_env, make, register, register_gymnasium

register_gymnasium()

__all__ = ["make", "list_envs", "register", "load_env"]
