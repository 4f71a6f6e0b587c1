"""ledger_v0: its expert and baselines, its table tools, answer tolerance, and a worked example."""

from __future__ import annotations

import re

import gymnasium
import numpy as np
import pytest

import mgrpo_envs
from mgrpo_envs.core.rewards import answers_match
from mgrpo_envs.tasks.ledger import DIFFICULTIES, MAX_ROWS, LedgerEnv, list_match
from mgrpo_envs.testing import play_episode, random_tool_action

EXPERT = lambda e: e.unwrapped.oracle_action()  # noqa: E731


def outcome(env, policy, seed: int) -> dict:
    return play_episode(env, policy, seed)["final"]["main"]["outcome"]


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_expert_solves_and_random_callers_do_not(difficulty: str) -> None:
    env = mgrpo_envs.make("ledger_v0", difficulty=difficulty, codec="json")
    expert = np.mean([outcome(env, EXPERT, seed)["correct"] for seed in range(200)])
    env = mgrpo_envs.make("ledger_v0", difficulty=difficulty)
    rng = np.random.default_rng(1)
    rand = [outcome(env, lambda e: random_tool_action(e, rng), s)["correct"] for s in range(200)]
    assert expert >= 0.99, expert
    assert np.mean(rand) <= 0.02


def main_without_arithmetic(env) -> str:
    """The expert, except that main answers the last figure instead of combining them."""
    action = env.unwrapped.oracle_action()
    if env.agent_selection == "main" and action.startswith("calculate["):
        returned = [t for who, t in env.unwrapped.transcript() if " returned: " in t]
        return f"answer[{returned[-1].split(': ', 1)[1]}]"
    return action


def test_figures_alone_do_not_answer_the_question() -> None:
    env = mgrpo_envs.make("ledger_v0", difficulty="medium")
    wins = [outcome(env, main_without_arithmetic, seed)["correct"] for seed in range(200)]
    assert np.mean(wins) <= 0.02


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_single_agent_view_expert_with_one_calculator(difficulty: str) -> None:
    env = gymnasium.make("mgrpo_envs/Ledger-v0", difficulty=difficulty)
    wins = 0
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        assert obs.count("calculate[<expression>]") == 1
        done = False
        while not done:
            _, reward, term, trunc, info = env.step(env.unwrapped.oracle_action())
            done = term or trunc
        wins += info["outcome"]["correct"]
    assert wins == 40


def test_same_seed_same_ledger_and_other_seeds_differ() -> None:
    def ledger(seed: int):
        env = LedgerEnv(difficulty="hard")
        env.reset(seed=seed)
        return env.episode.question, env.episode.ledger.tables

    assert ledger(3) == ledger(3)
    assert ledger(3) != ledger(4)


def test_worked_example() -> None:
    """easy, seed 0: a ratio of a full-year sum and one quarter, through the foreign keys."""
    env = mgrpo_envs.make("ledger_v0", difficulty="easy")
    env.reset(seed=0)
    assert env.unwrapped.episode.question == (
        "What is the ratio of the full-year cost of Vesper Supplies to the Q4 revenue of "
        "Cobalt Systems, rounded to two decimals?"
    )
    assert env.unwrapped.episode.gold == "4.49"  # (580+295+534+485) / 422 = 4.488...
    env.step("delegate[What was the full-year cost of Vesper Supplies?]")
    env.step("lookup[companies | Vesper Supplies]")
    assert env.observe("analyst").endswith("c6 | Vesper Supplies | s1 | r2")
    env.step("lookup[costs | c6]")
    assert env.observe("analyst") == (
        "costs: 1 row(s)\ncompany | Q1 | Q2 | Q3 | Q4\nc6 | 580 | 295 | 534 | 485"
    )
    env.step("calculate[580+295+534+485]")
    assert env.observe("analyst") == "1894"
    env.step("return[1894]")
    env.step("delegate[What was the Q4 revenue of Cobalt Systems?]")
    env.step("lookup[companies | cobalt systems]")
    assert "c8 | Cobalt Systems | s1 | r2" in env.observe("analyst")
    env.step("lookup[revenue | c8]")
    assert env.observe("analyst").endswith("c8 | 165 | 940 | 578 | 422")
    env.step("return[422]")
    env.step("calculate[1894/422]")
    assert env.observe("main") == "4.488152"
    env.step("answer[4.488]")  # within the 1% tolerance of 4.49
    out = env.infos["main"]["outcome"]
    assert out["correct"] and env.rewards["main"] == pytest.approx(1.0)
    assert [c["expert"] for c in env.infos["analyst"]["calls"]] == [1.0, 1.0]


@pytest.mark.parametrize(
    "given,correct",
    [
        ("4.49", True),
        ("4.488", True),
        ("4.5", True),
        ("4.46", True),
        ("4.4", False),
        ("4.6", False),
        ("449", False),
        ("about four", False),
        ("", False),
    ],
)
def test_tolerance_of_the_final_answer(given: str, correct: bool) -> None:
    env = mgrpo_envs.make("ledger_v0", difficulty="easy")
    env.reset(seed=0)
    env.step(f"answer[{given}]")
    assert env.infos["main"]["outcome"]["correct"] is correct


def test_tolerance_knob_and_list_answers() -> None:
    exact = LedgerEnv(difficulty="easy", tolerance=0.0)
    exact.reset(seed=0)
    assert exact.episode.check("4.49", "4.49") and not exact.episode.check("4.488", "4.49")
    loose = LedgerEnv(difficulty="easy", tolerance=0.05)
    loose.reset(seed=0)
    assert loose.episode.check("4.3", "4.49") and not loose.episode.check("4.2", "4.49")
    # lists: item by item, in order, numbers within tolerance, names normalised
    assert list_match("Orion Foods, 413", "Orion Foods, 412", 0.01)
    assert list_match("the orion foods; 412", "Orion Foods, 412", 0.01)
    assert not list_match("412, Orion Foods", "Orion Foods, 412", 0.01)
    assert not list_match("Orion Foods", "Orion Foods, 412", 0.01)
    assert not list_match("Orion Foods, 412, 3", "Orion Foods, 412", 0.01)
    assert list_match("1,740", "1740", 0.01) is False  # no thousands separators
    # research_v0 keeps exact answers
    research = mgrpo_envs.make("research_v0").unwrapped
    research.reset(seed=0)
    assert research.episode.rel_tol == 0.0 and not research.episode.check("1988", "1987")
    assert answers_match("1987.0", "1987")
    with pytest.raises(ValueError, match=r"tolerance must be a number in \[0, 0.5\), got 2"):
        LedgerEnv(tolerance=2)


def analyst_turn(difficulty: str = "hard", seed: int = 0):
    env = mgrpo_envs.make("ledger_v0", difficulty=difficulty)
    env.reset(seed=seed)
    env.step(env.unwrapped.oracle_action())
    assert env.agent_selection == "analyst"
    return env


@pytest.mark.parametrize(
    "action,expected",
    [
        ("lookup[tables | c1]", "no table 'tables'; tables are companies, sectors"),
        ("lookup[companies | ]", "no keys given"),
        ("lookup[companies | Nobody Inc]", "no row 'Nobody Inc' in companies; keys are ids"),
        ("lookup[revenue | Orion Foods]", "keys are company ids like c3"),
        ("lookup[revenue | c1 c2 c3 c4 c5 c6 c7 c8 c9 c10 c11 c12 c13]", "too many keys (13)"),
        ("lookup[companies]", "lookup takes 2 arguments"),
        ("filter[companies | sector is retail]", "bad condition 'sector is retail'"),
        ("filter[companies | colour=red]", "companies has no column 'colour'"),
        ("filter[companies | region>3]", "> compares amounts"),
        ("filter[revenue | Q1>lots]", "> needs a number, got 'lots'"),
        ("calculate[1/0]", "division by zero"),
    ],
)
def test_table_errors_name_the_problem(action: str, expected: str) -> None:
    env = analyst_turn()
    env.step(action)
    obs = env.observe("analyst")
    assert obs.startswith("error:") and expected in obs, obs


def test_foreign_keys_filters_and_caps() -> None:
    env = analyst_turn()
    ledger = env.unwrapped.episode.ledger
    sector_id, sector = ledger.rows("sectors")[0]
    env.step(f"filter[companies | sector={sector}]")
    assert "holds ids from the sectors table" in env.observe("analyst")
    env.step(f"filter[companies | SECTOR = {sector_id.upper()}]")
    members = [r for r in ledger.rows("companies") if r[2] == sector_id]
    obs = env.observe("analyst")
    assert obs.startswith(f"companies where sector = {sector_id.upper()}: {len(members)} row(s)")
    assert all(" | ".join(r) in obs for r in members)
    env.step("filter[revenue | Q1>0]")  # every company: capped
    obs = env.observe("analyst")
    total = len(ledger.rows("revenue"))
    assert f"{total} row(s), the first {MAX_ROWS} shown" in obs
    assert len(obs.split("\n")) == MAX_ROWS + 2
    ids = ", ".join(r[0] for r in members)
    env.step(f"lookup[revenue | {ids}]")
    assert env.observe("analyst").startswith(f"revenue: {len(members)} row(s)")


def figure_kind(subtask: str) -> str:
    if subtask.startswith("Which company"):
        return "top"
    for word, kind in (("full-year", "total"), ("profit", "profit"), ("total", "group")):
        if word in subtask:
            return kind
    return "cell"


def test_questions_at_hard_use_every_figure_and_combination() -> None:
    env = LedgerEnv(difficulty="hard")
    kinds, openings = set(), set()
    for seed in range(80):
        env.reset(seed=seed)
        ep = env.episode
        for fact in ep.facts:
            assert ep.match_fact("analyst", fact.subtask) is fact
            assert ep.match_fact("analyst", fact.subtask, mode="fuzzy") is fact
            kinds.add(figure_kind(fact.subtask))
        openings.add(" ".join(ep.question.split()[:2]))
        if ep.question.startswith("Give"):
            assert ep.gold == ", ".join(f.answer for f in ep.facts)
        elif ep.question.startswith("What is the sum"):
            assert ep.gold == str(sum(int(f.answer) for f in ep.facts))
    assert kinds == {"cell", "total", "profit", "group", "top"}
    assert {"Give the", "What is", "By how"} <= openings


def test_vocabulary_covers_the_expert_episodes() -> None:
    env = mgrpo_envs.make("ledger_v0", difficulty="hard")
    vocab = {w for entry in env.unwrapped.vocabulary() for w in re.findall(r"[A-Za-z]+", entry)}
    for seed in range(5):
        trace = play_episode(env, EXPERT, seed)["trace"]
        words = {w for _, obs, _ in trace for w in re.findall(r"[A-Za-z]{2,}", obs)}
        assert words <= vocab, sorted(words - vocab)


def test_bad_knobs_name_the_range() -> None:
    with pytest.raises(ValueError, match=r"companies must be an int in 4..40, got 100"):
        mgrpo_envs.make("ledger_v0", companies=100)
    with pytest.raises(ValueError, match=r"figures must be a non-empty subset of"):
        mgrpo_envs.make("ledger_v0", figures=("cell", "median"))
    with pytest.raises(ValueError, match=r"parts must be a range within 1..3"):
        mgrpo_envs.make("ledger_v0", parts=(0, 2))
