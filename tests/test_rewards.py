"""Rewards (M-GRPO sec. 3) against numbers worked out by hand, and answer matching."""

from __future__ import annotations

import pytest

import mgrpo_envs
from mgrpo_envs.core.rewards import (
    RewardWeights,
    answers_match,
    main_reward,
    normalize_answer,
    sub_reward,
)

W = RewardWeights()


def test_main_reward_by_hand() -> None:
    assert main_reward(False, 1.0, 1.0, W) == 0.0
    assert main_reward(True, 1.0, 1.0, W) == pytest.approx(1.0)
    assert main_reward(True, 0.5, 0.0, W) == pytest.approx(0.05)
    assert main_reward(True, 0.75, 1.0, RewardWeights(a1=0.2, a2=0.8)) == pytest.approx(0.95)


def test_sub_reward_by_hand() -> None:
    assert sub_reward(False, 1.0, 1.0, 1.0, W) == 0.0
    assert sub_reward(True, 1.0, 1.0, 1.0, W) == pytest.approx(1.0)
    # 0.1 * 0.5 + 0.4 * 0 + 0.5 * 1 = 0.55
    assert sub_reward(True, 0.5, 0.0, 1.0, W) == pytest.approx(0.55)
    # 0.1 * 1 + 0.4 * 1 + 0.5 * 0 = 0.5
    assert sub_reward(True, 1.0, 1.0, 0.0, W) == pytest.approx(0.5)


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="reward weight a1 must be a finite number >= 0, got -1"):
        RewardWeights(a1=-1)


@pytest.mark.parametrize(
    "given,gold,ok",
    [
        ("The Silver Harbor.", "Silver Harbor", True),
        ("  1987 ", "1987", True),
        ("1987.0", "1987", True),
        ("1986", "1987", False),
        ("mara quill", "Mara Quill", True),
        ("Mara", "Mara Quill", False),
    ],
)
def test_answers_match(given: str, gold: str, ok: bool) -> None:
    assert answers_match(given, gold) is ok


def test_numeric_tolerance() -> None:
    assert answers_match("100.4", "100", rel_tol=0.01)
    assert not answers_match("102", "100", rel_tol=0.01)
    assert normalize_answer("  A  Quiet   Garden! ") == "quiet garden"


def _play(env, actions_by_agent):
    """Plays scripted actions: a function of (agent, env) -> action."""
    env.reset(seed=0)
    for agent in env.agent_iter():
        _, _, term, trunc, _ = env.last()
        env.step(None if term or trunc else actions_by_agent(agent, env))


def test_rewards_in_an_episode_by_hand() -> None:
    """Main: 1 bad output of 3 -> r_format 2/3; a wrong sub result; a correct answer."""
    env = mgrpo_envs.make("research_v0", difficulty="easy")
    env.reset(seed=0)
    gold = env.unwrapped.episode.gold
    fact = env.unwrapped.episode.facts[0]
    env.step("hmm")  # main: bad output
    env.step(f"delegate[{fact.subtask}]")  # main: call 0
    env.step("search[x]")  # searcher: 1 of 2 valid
    env.step("oops")
    # the searcher is still acting, and 'delegate' is not its tool -> an error
    env.step(f"delegate[{fact.subtask}]")
    assert env.agent_selection == "searcher"
    env.step("return[wrong value]")  # call 0 ends: 2 valid of 4 outputs
    env.step(f"answer[{gold}]")  # main: 2 valid of 3 outputs
    infos = env.infos
    outcome = infos["main"]["outcome"]
    assert outcome["correct"] and outcome["r_format"] == pytest.approx(2 / 3)
    assert env.rewards["main"] == pytest.approx(0.1 * 2 / 3 + 0.9)
    call = infos["searcher"]["calls"][0]
    assert call["r_format"] == pytest.approx(0.5) and call["expert"] == 0.0
    # R_S = 0.1 * 0.5 + 0.4 * 1 (main correct) + 0.5 * 0 (wrong value)
    assert call["reward"] == pytest.approx(0.45)
    assert env.rewards["searcher"] == pytest.approx(0.45)
