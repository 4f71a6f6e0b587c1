"""Arbitrary text as actions: never an exception, always an observation naming the problem."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mgrpo_envs
from mgrpo_envs.testing import BAD_ACTIONS, _advance_to

NASTY = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from("[]{}<>|\"':,\\ abc123"), max_size=200),
    st.builds(
        lambda t, a: f"{t}[{a}]",
        st.sampled_from(["search", "visit", "return", "delegate", "calculate", "answer", "nope"]),
        st.text(max_size=80),
    ),
    st.builds(
        lambda a: '<tool_call>{"name": "search", "arguments": ' + a + "</tool_call>",
        st.text(max_size=80),
    ),
    st.sampled_from(BAD_ACTIONS),
)


@pytest.mark.parametrize("env_id", mgrpo_envs.list_envs())
@pytest.mark.parametrize("codec", ["compact", "json"])
@settings(max_examples=60, deadline=None)
@given(actions=st.lists(NASTY, min_size=1, max_size=6), to_sub=st.booleans())
def test_step_never_raises_on_arbitrary_text(env_id, codec, actions, to_sub) -> None:
    env = mgrpo_envs.make(env_id, codec=codec)
    env.reset(seed=0)
    if to_sub:
        _advance_to(env, env.possible_agents[1], 0)
    for action in actions:
        if (
            not env.agents
            or env.terminations[env.agent_selection]
            or env.truncations[env.agent_selection]
        ):
            break
        agent = env.agent_selection
        env.step(action)
        obs = env.observe(agent)
        assert env.observation_space(agent).contains(obs)
        if (
            env.agent_selection == agent
            and not env.terminations[agent]
            and not env.truncations[agent]
        ):
            # the agent still acts: it was told something (a tool result or what was wrong)
            assert len(obs) > 0


@pytest.mark.parametrize(
    "action,expected",
    [
        ("", "no tool call found"),
        ("nothing to see", "no tool call found"),
        ("delegate[", "unclosed"),
        ("calculate[__import__('os')]", "not allowed"),
        ("calculate[9**9**9]", "exponent too large"),
        ("calculate[1/0]", "division by zero"),
    ],
)
def test_main_errors_name_the_problem(action: str, expected: str) -> None:
    env = mgrpo_envs.make("research_v0")
    env.reset(seed=0)
    env.step(action)
    assert expected in env.observe("main")
    assert env.infos["main"]["turn"] == 1


@pytest.mark.parametrize(
    "action,expected",
    [
        ("search[]", "empty query"),
        ("visit[d9999]", "no document 'd9999'"),
        ("visit[../../etc/passwd]", "no document"),
        ('<tool_call>{"name": "search"}', "no tool call found"),
    ],
)
def test_searcher_errors_name_the_problem(action: str, expected: str) -> None:
    env = mgrpo_envs.make("research_v0")
    env.reset(seed=0)
    env.step("delegate[What is the birth year of Mara Quill?]")
    env.step(action)
    assert env.agent_selection == "searcher"
    assert expected in env.observe("searcher")
