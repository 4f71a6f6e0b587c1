"""Conformance checks any hierarchical tool-use env can run: ``check_tool_env``.

PettingZoo's ``api_test`` and ``seed_test`` check the AEC protocol; this checks what
learners rely on beyond it: cached text spaces that contain every observation, the
``infos`` keys of the public contract, consistent invocation indices, rewards in
range, determinism under a seed, and bad actions answered with an observation
rather than an exception, by every agent the scripted expert hands the turn to
(whatever the budgets: a role it cannot reach is reported, not failed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.spaces import Text
from pettingzoo import AECEnv

from mgrpo_envs.core.text import CHARSET

#: Actions no codec accepts as a valid call, or calls that a tool must refuse.
BAD_ACTIONS: tuple[str, ...] = (
    "",
    " ",
    "x" * 100_000,
    "\u00e9\u00e8\u4e2d\u6587 \U0001f600 \x00\x07",
    "[[[[]]",
    "]][[",
    "nonexistent_tool[x]",
    '<tool_call>{"name": "search", "arguments": {',
    '<tool_call>{"name": 3}</tool_call>',
    "calculate[__import__('os').system('true')]",
    "calculate[9**9**9]",
    "{" * 5000,
)
MAIN_OUTCOME_KEYS = ("correct", "format_ok", "answer", "gold", "num_invocations")
CALL_KEYS = ("subtask", "result", "format_ok", "expert", "invocation")
#: Steps after which an episode counts as never ending.
MAX_STEPS = 10_000
#: Fresh episodes the scripted expert plays to hand a role the turn for the bad actions.
REACH_TRIES = 8


class ConformanceError(AssertionError):
    """An env broke the hierarchical tool-env contract; the message says where."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConformanceError(message)


def random_tool_action(env: AECEnv, rng: np.random.Generator) -> str:
    """A random but well-formed-looking action: a random tool name with random words.

    The baseline "random policy" of the benchmarks: it knows the call syntax of the
    compact codec and the words it has seen, nothing else.
    """
    obs = str(env.observe(env.agent_selection))
    tools = [w.split("[", 1)[0] for w in obs.split() if "[<" in w]
    words = [w for w in obs.replace("[", " ").replace("]", " ").split() if w.isalnum()]
    tool = tools[int(rng.integers(len(tools)))] if tools else "answer"
    n = int(rng.integers(1, 4))
    arg = " ".join(words[int(rng.integers(len(words)))] for _ in range(n)) if words else "x"
    return f"{tool}[{arg}]"


def play_episode(env: AECEnv, policy: Callable[[AECEnv], str], seed: int | None) -> dict[str, Any]:
    """Plays one episode; returns main's final info plus the (agent, obs, reward) trace."""
    env.reset(seed=seed)
    trace: list[tuple[str, str, float]] = []
    final: dict[str, dict] = {}
    for agent in env.agent_iter():
        obs, reward, term, trunc, info = env.last()
        trace.append((agent, str(obs), float(reward)))
        if term or trunc:
            final[agent] = info
            env.step(None)
        else:
            env.step(policy(env))
    return {"final": final, "trace": trace}


def _check_spaces(env: AECEnv) -> None:
    for agent in env.possible_agents:
        for get in (env.observation_space, env.action_space):
            space = get(agent)
            _require(space is get(agent), f"{get.__name__}({agent!r}) must return a cached object")
            _require(
                isinstance(space, Text), f"{get.__name__}({agent!r}) must be Text, got {space}"
            )


def _check_step_infos(env: AECEnv, agent: str, info: dict, seen: dict[str, int]) -> None:
    for key in ("role", "turn"):
        _require(key in info, f"infos[{agent!r}] lacks {key!r}: {sorted(info)}")
    _require(
        info["role"] == agent, f"infos[{agent!r}]['role'] is {info['role']!r}, expected {agent!r}"
    )
    if agent == "main":
        return
    _require("invocation" in info, f"infos[{agent!r}] lacks 'invocation'")
    inv = info["invocation"]
    last = seen.get(agent, -1)
    if info.get("new_call"):
        _require(inv == last + 1, f"{agent}: new call has invocation {inv}, expected {last + 1}")
        seen[agent] = inv
    else:
        _require(inv == last, f"{agent}: invocation {inv} mid-call, expected {last}")


def _check_final(env: AECEnv, final: dict[str, dict]) -> None:
    _require("main" in final, "the episode ended without main's final info")
    outcome = final["main"].get("outcome")
    _require(isinstance(outcome, dict), "infos['main'] lacks 'outcome' at the end")
    for key in MAIN_OUTCOME_KEYS:
        _require(key in outcome, f"outcome lacks {key!r}: {sorted(outcome)}")
    total_calls = 0
    for role in env.possible_agents[1:]:
        calls = final.get(role, {}).get("calls")
        _require(isinstance(calls, list), f"infos[{role!r}] lacks the per-call records 'calls'")
        for i, rec in enumerate(calls):
            for key in CALL_KEYS:
                _require(key in rec, f"{role} call record lacks {key!r}")
            _require(rec["invocation"] == i, f"{role} call {i} has invocation {rec['invocation']}")
            _require(0.0 <= rec["expert"] <= 1.0, f"expert score {rec['expert']} outside [0, 1]")
        total_calls += len(calls)
    _require(
        outcome["num_invocations"] == total_calls,
        f"num_invocations {outcome['num_invocations']} but {total_calls} call records",
    )


def _play_checked(env: AECEnv, policy: Callable[[AECEnv], str], seed: int) -> dict[str, Any]:
    env.reset(seed=seed)
    seen: dict[str, int] = {}
    final: dict[str, dict] = {}
    trace = []
    w = getattr(env.unwrapped, "reward_weights", None)
    weights_max = max(w.a1 + w.a2, w.b1 + w.b2 + w.b3) if w is not None else 1.0
    for agent in env.agent_iter(MAX_STEPS):
        obs, reward, term, trunc, info = env.last()
        space = env.observation_space(agent)
        _require(
            space.contains(obs), f"observation of {agent!r} is outside its space: {obs[:80]!r}"
        )
        _require(
            -1e-9 <= reward <= weights_max + 1e-9, f"reward {reward} of {agent} outside [0, 1]"
        )
        trace.append((agent, str(obs), float(reward), bool(term), bool(trunc)))
        if term or trunc:
            final[agent] = info
            env.step(None)
            continue
        _check_step_infos(env, agent, info, seen)
        env.step(policy(env))
    _require(not env.agents, f"the episode did not end within {MAX_STEPS} steps")
    _check_final(env, final)
    return {"final": final, "trace": trace}


def _alive(env: AECEnv) -> bool:
    """Whether the selected agent may act (the episode is running and it is not done)."""
    agent = env.agent_selection
    return bool(env.agents) and not env.terminations[agent] and not env.truncations[agent]


def _expert_to(env: AECEnv, agent: str) -> bool:
    """Plays the expert in the current episode until ``agent`` may act; False if it ends first."""
    for _ in range(MAX_STEPS):
        if not _alive(env):
            return False
        if env.agent_selection == agent:
            return True
        env.step(env.unwrapped.oracle_action())
    return False


def _advance_to(env: AECEnv, agent: str, seed: int) -> bool:
    """Hands ``agent`` the turn: in the current episode, else in fresh ones.

    The current episode may end before ``agent`` acts again (the bad actions used
    up a budget, or its work is done), and one episode may not need a role at all,
    so up to ``REACH_TRIES`` fresh episodes (seeds ``seed``, ``seed + 1``, ...) are
    played before giving up.
    """
    if _alive(env) and _expert_to(env, agent):
        return True
    for k in range(REACH_TRIES):
        env.reset(seed=seed + k)
        if _expert_to(env, agent):
            return True
    return False


def _check_bad_action(env: AECEnv, agent: str, bad: str) -> None:
    """Sends ``bad`` as ``agent``'s action: no exception, and an error message if it still acts."""
    turn = env.infos[agent]["turn"]
    try:
        env.step(bad)
    except Exception as err:  # noqa: BLE001 - the contract: bad actions never raise
        raise ConformanceError(
            f"step({bad[:40]!r}) by {agent} raised {type(err).__name__}: {err}"
        ) from err
    if _alive(env) and env.agent_selection == agent:
        obs = str(env.observe(agent))
        _require(
            "error" in obs.lower(),
            f"bad action {bad[:40]!r} got no error message: {obs[:120]!r}",
        )
        _require(
            env.infos[agent]["turn"] == turn + 1,
            f"a bad action must count as a turn: {agent}'s turn went from {turn} "
            f"to {env.infos[agent]['turn']}, expected {turn + 1}",
        )
        _require(set(obs) <= set(CHARSET), "observation left the charset")


def _check_bad_actions(env: AECEnv, seed: int) -> list[str]:
    """Every bad action by every agent the expert hands the turn to; returns the others."""
    env.reset(seed=seed)
    unreached: list[str] = []
    for agent in env.possible_agents:
        for bad in BAD_ACTIONS:
            if not _advance_to(env, agent, seed):
                _require(
                    agent != "main",
                    f"'main' never got the turn in {REACH_TRIES} episodes from reset(seed={seed})",
                )
                unreached.append(agent)
                break
            _check_bad_action(env, agent, bad)
    return unreached


def check_tool_env(
    env_fn: Callable[[], AECEnv], *, episodes: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Runs the conformance checks on envs built by ``env_fn``.

    The bad actions of :data:`BAD_ACTIONS` are sent by every agent the scripted
    expert hands the turn to, in the current episode or in up to
    :data:`REACH_TRIES` fresh ones. A sub-agent role the expert never reaches
    (budgets too small for the expert to get to it, or questions that never need
    it) cannot be checked that way: it is listed in ``unreached_roles`` rather than
    failed, so a caller that expects every role to act asserts that list is empty.

    Args:
        env_fn: Builds a fresh env (called more than once).
        episodes: Episodes played with the scripted expert and with random actions.
        seed: First seed.

    Returns:
        A small report: ``expert_success`` over the expert's episodes, and
        ``unreached_roles``, the roles whose bad actions could not be sent.

    Raises:
        ConformanceError: Naming the first broken rule.
    """
    env = env_fn()
    _check_spaces(env)
    oracle = lambda e: e.unwrapped.oracle_action()  # noqa: E731
    rng = np.random.default_rng(seed)
    randoms = lambda e: random_tool_action(e, rng)  # noqa: E731
    wins = 0
    for i in range(episodes):
        out = _play_checked(env, oracle, seed + i)
        wins += bool(out["final"]["main"]["outcome"]["correct"])
        _play_checked(env, randoms, seed + 1000 + i)
    # determinism: same seed and same actions give the same trace
    a = _play_checked(env_fn(), oracle, seed)
    b = _play_checked(env_fn(), oracle, seed)
    _require(a["trace"] == b["trace"], "same seed and actions gave different episodes")
    unreached = _check_bad_actions(env, seed)
    return {"expert_success": wins / episodes, "unreached_roles": unreached}
