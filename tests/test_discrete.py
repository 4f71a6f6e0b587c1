"""The discrete view of every registered env: checkers, menus, empty slots, seeding."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mgrpo_envs
from mgrpo_envs.registry import discrete_gym_id, discrete_ids, gym_ids
from mgrpo_envs.wrappers.discrete import (
    DiscreteToolEnv,
    description_words,
    extract_candidates,
    listed_values,
    parse_tool_list,
    task_text,
)
from mgrpo_envs.wrappers.single_agent import SingleAgentToolEnv

ENV_IDS = mgrpo_envs.list_envs()


def discrete_id(env_id: str) -> str:
    return {v: k for k, v in discrete_ids().items()}[env_id]


def test_every_env_has_a_discrete_view_named_after_its_single_agent_view() -> None:
    assert sorted(discrete_ids().values()) == ENV_IDS
    for gym_id, env_id in gym_ids().items():
        assert discrete_gym_id(gym_id) in gymnasium.registry
        assert discrete_ids()[discrete_gym_id(gym_id)] == env_id
    assert discrete_gym_id("mgrpo_envs/Research-v0") == "mgrpo_envs/ResearchDiscrete-v0"
    with pytest.raises(ValueError, match="version like '-v0'"):
        discrete_gym_id("Research")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_passes_sb3_and_gymnasium_checkers(env_id: str) -> None:
    env = gymnasium.make(discrete_id(env_id)).unwrapped
    assert isinstance(env, DiscreteToolEnv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env, warn=True)
        gym_check_env(env, skip_render_check=True)
    complaints = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert not complaints, complaints


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_random_menu_play_stays_in_the_spaces_and_ends(env_id: str) -> None:
    env = gymnasium.make(discrete_id(env_id), difficulty="easy").unwrapped
    rng = np.random.default_rng(0)
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            assert env.observation_space.contains(obs)
            assert np.array_equal(info["action_mask"], env.action_masks())
            filled = np.flatnonzero(env.action_masks())
            action = int(rng.choice(filled)) if len(filled) else 0
            obs, reward, terminated, truncated, info = env.step(action)
            assert 0.0 <= reward <= 1.0
            done = terminated or truncated
        assert "outcome" in info


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
@pytest.mark.parametrize("codec", ["compact", "json"])
def test_research_expert_call_is_in_the_menu_at_every_step(difficulty: str, codec: str) -> None:
    env = DiscreteToolEnv("research_v0", difficulty=difficulty, codec=codec)
    for seed in range(60):
        env.reset(seed=seed)
        done = False
        while not done:
            index = env.oracle_index()
            assert index is not None, (seed, env.text_env.oracle_action(), env.menu())
            assert env.action_masks()[index]
            _, reward, terminated, truncated, info = env.step(index)
            done = terminated or truncated
        # an optimal discrete policy reaches the expert's success and reward
        assert info["outcome"]["correct"], seed
        assert reward == pytest.approx(1.0)


def test_an_empty_slot_costs_a_turn_and_says_why() -> None:
    env = DiscreteToolEnv("research_v0", difficulty="easy")
    env.reset(seed=0)
    empty = int(np.flatnonzero(~env.action_masks())[0])
    assert env.menu()[empty] is None
    _, reward, terminated, truncated, info = env.step(empty)
    assert info["action_text"] == ""
    assert info["observation_text"].startswith("error: no tool call found")
    assert info["turn"] == 1 and not (terminated or truncated) and reward == 0.0


def test_api_misuse_raises_with_the_expected_values() -> None:
    env = DiscreteToolEnv("research_v0", difficulty="easy")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an int in \[0, 64\), got 64"):
        env.step(64)
    with pytest.raises(ValueError, match="slots_per_tool must be an int >= 1, got 0"):
        DiscreteToolEnv("research_v0", slots_per_tool=0)
    with pytest.raises(ValueError, match="hash_dims must be an int >= 8"):
        DiscreteToolEnv("research_v0", hash_dims=2)


def test_same_seed_and_actions_give_the_same_episode_as_the_single_agent_view() -> None:
    def run(env: DiscreteToolEnv) -> list[np.ndarray]:
        obs, _ = env.reset(seed=7)
        out = [obs]
        for action in (0, 16, 1, 17, 40):
            obs, *_ = env.step(action)
            out.append(obs)
        return out

    a = run(DiscreteToolEnv("research_v0"))
    b = run(DiscreteToolEnv("research_v0"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    single = gymnasium.make("mgrpo_envs/Research-v0").unwrapped
    text, _ = single.reset(seed=7)
    _, info = DiscreteToolEnv("research_v0").reset(seed=7)
    assert info["observation_text"] == text


def test_menu_sections_follow_the_tool_list() -> None:
    env = DiscreteToolEnv("research_v0", slots_per_tool=8)
    assert list(env.tools) == ["search", "visit", "calculate", "answer"]
    assert env.action_space.n == 32
    env.reset(seed=0)
    for i, text in enumerate(env.menu()):
        if text is not None:
            assert text.startswith(list(env.tools)[i // 8] + "[")


def test_parse_tool_list_reads_both_codecs() -> None:
    compact = (
        "Q\nTools:\nsearch[<query>] - find things\nlookup[<table> | <key>] - a cell\nback[] - go"
    )
    assert parse_tool_list(compact) == (
        "compact",
        {"search": ("query",), "lookup": ("table", "key"), "back": ()},
        {"search": "find things", "lookup": "a cell", "back": "go"},
    )
    json_list = (
        '<tool_call>{"name": "visit", "arguments": {"doc_id": "<doc_id>"}}</tool_call>'
        " - read one document\n"
    )
    assert parse_tool_list(json_list) == (
        "json",
        {"visit": ("doc_id",)},
        {"visit": "read one document"},
    )
    assert parse_tool_list("no tools here") == ("compact", {}, {})


def test_candidates_are_ids_numbers_and_names_in_reading_order() -> None:
    text = (
        "d3 Silver Harbor: Silver Harbor is a film released in 1990. It was directed by "
        "Mara Quill and produced by the Department of Physics, -4.5 ok"
    )
    assert extract_candidates(text) == [
        ("id", "d3"),
        ("phrase", "Silver Harbor"),
        ("number", "1990"),
        ("phrase", "Mara Quill"),
        ("phrase", "Department of Physics"),
        ("number", "-4.5"),
    ]
    intro = "You are a research agent. Question: What is the birth year of Ada Holm?\nTools:\nx"
    assert task_text(intro) == "What is the birth year of Ada Holm?"


def test_description_words_prefer_an_enumeration() -> None:
    tables = "rows by id or name; tables: companies, sectors, revenue"
    assert listed_values(tables) == ["companies", "sectors", "revenue"]
    assert description_words(tables) == ["companies", "sectors", "revenue"]
    assert listed_values("evaluate arithmetic") == []
    assert description_words("open a page by url or id; the start page is home") == [
        "open",
        "page",
        "url",
        "start",
        "home",
    ]


def test_wraps_a_given_text_env_and_rejects_other_render_modes() -> None:
    text_env = SingleAgentToolEnv("research_v0", difficulty="easy")
    env = DiscreteToolEnv(text_env=text_env, slots_per_tool=4)
    assert env.text_env is text_env and env.action_space.n == 16
    _, info = env.reset(seed=3)
    assert info["observation_text"].startswith("You are a research agent.")
    with pytest.raises(ValueError, match="render_mode must be None or 'ansi', got 'rgb_array'"):
        DiscreteToolEnv("research_v0", render_mode="rgb_array")
