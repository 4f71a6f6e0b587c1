"""Every registered env against PettingZoo's checks, our conformance check and its card."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, seed_test

import mgrpo_envs
from mgrpo_envs.core.task_env import BUDGET_NAMES, env_options
from mgrpo_envs.registry import env_class, gym_ids
from mgrpo_envs.testing import check_tool_env, play_episode, random_tool_action

ENV_IDS = mgrpo_envs.list_envs()
DIFFICULTIES = ("easy", "medium", "hard")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pettingzoo_api(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api_test(mgrpo_envs.make(env_id), num_cycles=200)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pettingzoo_seed(env_id: str) -> None:
    seed_test(lambda: mgrpo_envs.make(env_id), num_cycles=100)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("codec", ["compact", "json"])
def test_check_tool_env(env_id: str, codec: str) -> None:
    report = check_tool_env(lambda: mgrpo_envs.make(env_id, codec=codec), episodes=4)
    assert report["expert_success"] == 1.0
    assert report["unreached_roles"] == []  # every role got the bad actions


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_expert_solves_and_random_does_not(env_id: str, difficulty: str) -> None:
    env = mgrpo_envs.make(env_id, difficulty=difficulty)
    expert = [
        play_episode(env, lambda e: e.unwrapped.oracle_action(), seed)["final"]["main"]
        for seed in range(200)
    ]
    expert_rate = np.mean([f["outcome"]["correct"] for f in expert])
    rng = np.random.default_rng(0)
    rand = [
        play_episode(env, lambda e: random_tool_action(e, rng), seed)["final"]["main"]
        for seed in range(200)
    ]
    random_rate = np.mean([f["outcome"]["correct"] for f in rand])
    assert expert_rate >= 0.99, expert_rate
    assert random_rate <= 0.02, random_rate
    # the expert's rewards are the paper's maximum: every output well-formed and correct
    assert all(f["outcome"]["reward"] == pytest.approx(1.0) for f in expert)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_single_agent_view(env_id: str) -> None:
    gym_id = {v: k for k, v in gym_ids().items()}[env_id]
    env = gymnasium.make(gym_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    view, ep = env.unwrapped, env.unwrapped.hier.episode
    for role in view.hier.task.roles:  # no tool name is shared: none is namespaced
        assert all(view.view_name(role, t.name) == t.name for t in ep.tools(role))
    wins = 0
    for seed in range(50):
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(env.unwrapped.oracle_action())
            done = term or trunc
        wins += info["outcome"]["correct"]
        assert reward == pytest.approx(1.0) if info["outcome"]["correct"] else reward < 1
    assert wins >= 49


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_is_a_readable_transcript(env_id: str) -> None:
    env = mgrpo_envs.make(env_id, render_mode="ansi")
    play_episode(env, lambda e: e.unwrapped.oracle_action(), 0)
    text = env.render()
    assert "[env -> main]" in text and "[main]" in text and "episode over: answered" in text


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_infos_report_outcome_and_calls(env_id: str) -> None:
    env = mgrpo_envs.make(env_id)
    final = play_episode(env, lambda e: e.unwrapped.oracle_action(), 3)["final"]
    outcome = final["main"]["outcome"]
    assert outcome["correct"] and outcome["format_ok"] and outcome["answer"] == outcome["gold"]
    role = env.possible_agents[1]
    calls = final[role]["calls"]
    assert len(calls) == outcome["num_invocations"] >= 1
    assert all(c["expert"] == 1.0 and c["format_ok"] for c in calls)


def test_unknown_env_id_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown env id 'nope_v0'; expected one of \[.*'research_v0'"
    ):
        mgrpo_envs.make("nope_v0")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_bad_kwargs(env_id: str) -> None:
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['colour'\].*expected some of"):
        mgrpo_envs.make(env_id, colour="red")
    with pytest.raises(ValueError, match="difficulty must be one of"):
        mgrpo_envs.make(env_id, difficulty="impossible")
    with pytest.raises(ValueError, match="budget main_turns must be a positive int, got 0"):
        mgrpo_envs.make(env_id, main_turns=0)
    with pytest.raises(ValueError, match="codec"):
        mgrpo_envs.make(env_id, codec="xml")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_after_end_and_non_str_action(env_id: str) -> None:
    env = mgrpo_envs.make(env_id)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must be a str"):
        env.step(42)
    play_episode(env, lambda e: e.unwrapped.oracle_action(), 0)
    with pytest.raises(ValueError, match=r"after the episode ended; call reset\(\)"):
        env.unwrapped.step("answer[1]")


def test_research_budgets_end_the_episode() -> None:
    env = mgrpo_envs.make("research_v0", difficulty="easy", main_turns=3)
    final = play_episode(env, lambda e: "I am thinking", 0)["final"]
    assert final["main"]["outcome"]["end_reason"] == "main turn budget exhausted"
    assert final["main"]["outcome"]["reward"] == 0.0
    # a sub-agent that never returns is stopped by its budget and main is told
    env = mgrpo_envs.make("research_v0", difficulty="easy", sub_turns=2)
    env.reset(seed=0)
    env.step("delegate[What is the birth year of Mara Quill?]")
    env.step("search[Mara Quill]")
    env.step("search[Mara]")
    assert env.agent_selection == "main"
    assert "stopped without a result (turn budget exhausted)" in env.observe("main")


@pytest.mark.parametrize("codec", ["compact", "json"])
def test_research_by_title_passes_the_conformance_check(codec: str) -> None:
    def make():
        return mgrpo_envs.make("research_v0", difficulty="easy", doc_ref="title", codec=codec)

    assert check_tool_env(make, episodes=4)["expert_success"] == 1.0


def test_research_visits_by_title_when_asked() -> None:
    env = mgrpo_envs.make("research_v0", difficulty="easy", doc_ref="title")
    env.reset(seed=5)
    env.step("delegate[What is the studio of the film Golden River?]")
    assert "visit[<title>] - read one document by its title" in env.observe("searcher")
    env.step("search[Golden River]")
    assert env.unwrapped.oracle_action() == "visit[Golden River]"
    env.step("visit[golden  RIVER]")  # case and spacing do not matter
    assert env.observe("searcher").startswith("d25 Golden River: Golden River is a film")
    env.step("visit[Golden Meadow]")
    assert "no document titled 'Golden Meadow'; titles (and ids) come from search" in (
        env.observe("searcher")
    )
    env.step("visit[d25]")  # an id still works
    assert env.observe("searcher").startswith("d25 Golden River:")
    with pytest.raises(ValueError, match="doc_ref must be 'id' or 'title', got 'url'"):
        mgrpo_envs.make("research_v0", doc_ref="url")


def test_context_budget_is_enforced_and_reported() -> None:
    env = mgrpo_envs.make("research_v0", difficulty="easy", context_chars=1200)
    env.reset(seed=0)
    assert env.infos["main"]["context_budget"] == 1200
    env.step("thinking " * 120 + "calculate[1+1]")
    assert env.agents == [] or env.truncations["main"]
    assert env.infos["main"]["outcome"]["end_reason"] == "main context budget exhausted"


def test_observations_are_text_observations_with_dtype() -> None:
    env = mgrpo_envs.make("research_v0")
    env.reset(seed=0)
    obs = env.observe("main")
    assert isinstance(obs, str) and obs.dtype == np.dtype("<U")
    assert env.observation_space("main").contains(obs)


def test_seeds_give_different_worlds_and_same_seed_same_world() -> None:
    env = mgrpo_envs.make("research_v0")
    env.reset(seed=1)
    q1 = env.observe("main")
    env.reset(seed=2)
    q2 = env.observe("main")
    env.reset(seed=1)
    assert env.observe("main") == q1 != q2


@pytest.mark.parametrize("env_id", mgrpo_envs.list_envs())
@pytest.mark.parametrize("codec", ["compact", "json"])
def test_oracle_call_formats_to_oracle_action(env_id: str, codec: str) -> None:
    """oracle_action is oracle_call written out by format_call, for every agent's turns."""
    env = mgrpo_envs.make(env_id, difficulty="easy", codec=codec)
    env.reset(seed=3)
    seen = set()
    while env.agents:
        agent = env.agent_selection
        call = env.unwrapped.oracle_call()
        action = env.unwrapped.oracle_action()
        if call is None:  # a finished agent: PettingZoo's dead step
            assert action is None
            env.step(None)
            continue
        assert action == env.unwrapped.format_call(call) == env.unwrapped.format_call(call, agent)
        seen.add(agent)
        env.step(action)
    assert seen == set(env.possible_agents)
    with pytest.raises(ValueError, match="after the episode ended"):
        env.unwrapped.oracle_call()


def test_format_call_refuses_an_unknown_agent() -> None:
    env = mgrpo_envs.make("research_v0", difficulty="easy")
    env.reset(seed=0)
    call = env.unwrapped.oracle_call()
    with pytest.raises(ValueError, match="no agent 'critic'"):
        env.unwrapped.format_call(call, "critic")


#: What the scripted expert's episode shows when one budget is 1 (a new budget adds a line).
BUDGET_OF_ONE = {
    "main_turns": "main turn budget exhausted",
    "sub_turns": "turn budget exhausted",  # the end of every sub-agent call
    "episode_turns": "episode turn budget exhausted",
    "context_chars": "main context budget exhausted",
}


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("budget", BUDGET_NAMES)
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_a_budget_given_to_the_core_is_honoured_by_every_env(
    env_id: str, budget: str, difficulty: str
) -> None:
    preset = mgrpo_envs.make(env_id, difficulty=difficulty).unwrapped.budgets
    env = mgrpo_envs.make(env_id, difficulty=difficulty, **{budget: 1})
    assert env.unwrapped.budgets == dataclasses.replace(preset, **{budget: 1})
    final = play_episode(env, lambda e: e.unwrapped.oracle_action(), 0)["final"]
    role = env.possible_agents[1]
    if budget == "sub_turns":
        calls = final[role]["calls"]
        assert calls and all(c["end_reason"] == BUDGET_OF_ONE[budget] for c in calls)
        assert final[role]["turn_budget"] == 1
    else:
        assert final["main"]["outcome"]["end_reason"] == BUDGET_OF_ONE[budget]
    assert not final["main"]["outcome"]["correct"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_env_takes_the_core_arguments_after_its_task_knobs(env_id: str) -> None:
    params = list(inspect.signature(env_class(env_id).__init__).parameters)
    core = [*BUDGET_NAMES, *(p.name for p in env_options())]
    assert params[:2] == ["self", "difficulty"] and params[-len(core) :] == core
    assert core == [
        "main_turns",
        "sub_turns",
        "episode_turns",
        "context_chars",
        "codec",
        "reward_weights",
        "max_observation_chars",
        "render_mode",
    ]
