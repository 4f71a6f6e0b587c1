"""A sub-agent's ``r_expert`` judges the fact by its value anywhere in the result (issue 33).

The pure rule (:func:`fact_in_answer`) on hand-written cases, then every registered
task: a fact's gold value bare, in prose, with a unit and next to its entity earns
1.0; a wrong value, a wrong value in prose and the right value hedged with a wrong
one earn 0.0, through ``Episode.expert_score`` and through the env's rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

import mgrpo_envs
from mgrpo_envs.core.codecs import ToolCall
from mgrpo_envs.core.rewards import answers_match, fact_in_answer, numbers_in
from mgrpo_envs.core.task import Episode, Fact, ToolEvent, pool_of
from mgrpo_envs.core.tools import Tool

ENV_IDS = mgrpo_envs.list_envs()
KINDS = ("number", "name")


# ----------------------------------------------------------------- the pure rule
@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("605", [605.0]),
        ("$1,234.50 in total", [1234.5]),
        ("605, 610", [605.0, 610.0]),
        ("-12 and 3-4", [-12.0, 3.0, 4.0]),  # a '-' after a digit is no sign
        ("1990-1995", [1990.0, 1995.0]),
        ("The fare is 605.", [605.0]),
        ("12% of 4.5", [12.0, 4.5]),
        ("Q3 revenue of c12, d4, CO2, m^2, 605km", []),  # ids, words and units
        ("", []),
    ],
)
def test_numbers_in(text: str, numbers: list[float]) -> None:
    assert numbers_in(text) == numbers


@pytest.mark.parametrize(
    ("given", "gold", "ok"),
    [
        # a numeric gold, stated anywhere, with currency and unit words
        ("605", "605", True),
        ("605 dollars", "605", True),
        ("SkyNorth 605", "605", True),
        ("The fare is 605.", "605", True),
        ("$605", "605", True),
        ("USD 605.00", "605", True),
        ("Q3 revenue of Orion Foods: 605", "605", True),  # Q3 is a word, not a number
        ("1,234 units", "1234", True),
        ("the ratio is 1.5", "1.50", True),
        ("-12", "-12", True),
        # ... and the wrong or hedged ones
        ("610", "605", False),
        ("610 dollars for the fare", "605", False),
        ("SkyNorth 610", "605", False),
        ("605 or 610", "605", False),
        ("not 605 but 610", "605", False),
        ("605, 610", "605", False),
        ("605-410=195", "195", False),  # working shown next to the value
        ("12", "-12", False),
        ("605km", "605", False),  # glued to a unit: no number
        ("six hundred and five", "605", False),  # spelled out: no number
        ("", "605", False),
        # a name gold: whole words, case-folded, numbers beside it are free
        ("Mara Quill", "Mara Quill", True),
        ("It was directed by mara quill.", "Mara Quill", True),
        ("MARA QUILL's first film", "Mara Quill", True),
        ("Mara Quill, born in 1950", "Mara Quill", True),
        ("Mara Quillon", "Mara Quill", False),
        ("Quill Mara", "Mara Quill", False),
        ("Mara", "Mara Quill", False),
        ("unknown", "Mara Quill", False),
        # a gold that holds a number: the answer's numbers must be the gold's
        ("in Room 12", "Room 12", True),
        ("Room 12 or Room 14", "Room 12", False),
    ],
)
def test_fact_in_answer(given: str, gold: str, ok: bool) -> None:
    assert fact_in_answer(given, gold) is ok


def test_the_bare_value_always_counts() -> None:
    for given, gold in [("1987.0", "1987"), ("The Silver Harbor", "Silver Harbor"), ("x", "x")]:
        assert answers_match(given, gold)
        assert fact_in_answer(given, gold)


def test_numbers_within_tolerance() -> None:
    assert fact_in_answer("about 100.4 dollars", "100", rel_tol=0.01)
    assert fact_in_answer("100.4 or 99.8", "100", rel_tol=0.01)  # both are the gold
    assert not fact_in_answer("about 102 dollars", "100", rel_tol=0.01)
    assert not fact_in_answer("100 or 102", "100", rel_tol=0.01)
    assert not fact_in_answer("about 100.4 dollars", "100")  # exact by default


def test_rivals_conflict_with_a_name() -> None:
    rivals = ["Mara Quill", "Mara Vance", "Leo Quill", "Orion Foods Holdings"]
    assert fact_in_answer("Mara Quill directed it", "Mara Quill", rivals=rivals)
    assert not fact_in_answer("Mara Quill or Mara Vance", "Mara Quill", rivals=rivals)
    assert not fact_in_answer("not Mara Vance but Mara Quill", "Mara Quill", rivals=rivals)
    assert not fact_in_answer("Mara Vance", "Mara Quill", rivals=rivals)
    # without rivals, another name is not known to conflict
    assert fact_in_answer("Mara Quill or Mara Vance", "Mara Quill")
    # a rival that holds the gold's words, and a gold that holds a rival's
    assert not fact_in_answer("Orion Foods Holdings", "Orion Foods", rivals=rivals)
    assert fact_in_answer("Orion Foods Holdings", "Orion Foods Holdings", rivals=["Orion Foods"])
    assert not fact_in_answer(
        "Orion Foods Holdings, or Orion Foods", "Orion Foods Holdings", rivals=["Orion Foods"]
    )


def test_what_the_subtask_says_never_conflicts() -> None:
    subtask = "What do 3 apples from Mara Vance cost?"
    assert fact_in_answer("3 apples cost 12", "12", echo=subtask)
    assert not fact_in_answer("3 apples cost 12", "12")
    assert fact_in_answer("Mara Vance sold them to Mara Quill", "Mara Quill", echo=subtask,
                          rivals=["Mara Vance"])  # fmt: skip
    assert not fact_in_answer("12 or 13", "12", echo=subtask)


def test_pool_of() -> None:
    pools = (("Mara Quill", "Leo Vance"), ("Port Alden",))
    assert pool_of("mara quill", pools) == pools[0]
    assert pool_of("Port Alden", pools) == pools[1]
    assert pool_of("1987", pools) == ()


# ----------------------------------------------------------------- every task
def is_number(value: str) -> bool:
    return len(numbers_in(value)) == 1 and not any(c.isalpha() for c in value)


def sample_fact(env_id: str, kind: str) -> tuple[Episode, Fact, int]:
    """The first fact of ``kind`` in the env's hard episodes, its episode and seed."""
    env = mgrpo_envs.make(env_id, difficulty="hard")
    for seed in range(200):
        env.reset(seed=seed)
        ep = env.unwrapped.episode
        for fact in ep.facts:
            if is_number(fact.answer) == (kind == "number"):
                return ep, fact, seed
    raise AssertionError(f"{env_id} drew no {kind} fact in 200 hard episodes")


def wrong_value(ep: Episode, fact: Fact) -> str:
    """A value of the fact's kind that is not its gold: a far number, or a rival name."""
    if is_number(fact.answer):
        return str(int(abs(float(fact.answer)) * 3 + 17))
    rivals = [r for r in ep.rivals(fact) if r.casefold() != fact.answer.casefold()]
    assert rivals, f"no rivals for the name {fact.answer!r}"
    first = fact.answer.split()[0]
    near = [r for r in rivals if r.split()[0] == first]  # a near-duplicate, where one exists
    return (near or rivals)[0]


def right_answers(ep: Episode, fact: Fact) -> list[str]:
    gold, subject = fact.answer, fact.subtask.rstrip("?")
    texts = [gold, f"The answer is {gold}.", f"{subject}: {gold}", f"{subject} is {gold}."]
    if is_number(gold):
        near = float(gold) * (1 + ep.rel_tol / 2)  # within the episode's tolerance
        texts += [f"{gold} dollars", f"${gold}", f"USD {gold}", f"about {near} units"]
    else:
        texts += [gold.lower(), gold.upper(), f"It is {gold} (found it)."]
    return texts


def wrong_answers(ep: Episode, fact: Fact) -> list[str]:
    gold, subject, wrong = fact.answer, fact.subtask.rstrip("?"), wrong_value(ep, fact)
    return [
        wrong,
        f"The answer is {wrong}.",
        f"{subject}: {wrong}",
        f"{gold} or {wrong}",
        f"not {gold} but {wrong}",
        f"{wrong}, or maybe {gold}",
        f"{subject} is {gold} (or {wrong})",
    ]


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_task_judges_the_fact_by_its_value(env_id: str, kind: str) -> None:
    """The first fact of ``kind``, then every fact of that kind in 30 hard episodes."""
    first = sample_fact(env_id, kind)[:2]
    task = mgrpo_envs.make(env_id, difficulty="hard").unwrapped.task
    episodes = [task.sample(np.random.default_rng(seed)) for seed in range(30)]
    pairs = [first, *((ep, f) for ep in episodes for f in ep.facts)]
    for ep, fact in pairs:
        if is_number(fact.answer) != (kind == "number"):
            continue
        for text in right_answers(ep, fact):
            assert ep.expert_score(fact.role, fact.subtask, text) == 1.0, (fact, text)
        for text in wrong_answers(ep, fact):
            assert ep.expert_score(fact.role, fact.subtask, text) == 0.0, (fact, text)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_the_facts_of_an_episode_are_told_apart(env_id: str) -> None:
    """A result that states one fact never earns another fact's r_expert."""
    task = mgrpo_envs.make(env_id, difficulty="hard").unwrapped.task
    for seed in range(20):
        ep = task.sample(np.random.default_rng(seed))
        for fact in ep.facts:
            for other in ep.facts:
                same = answers_match(fact.answer, other.answer, rel_tol=ep.rel_tol)
                score = ep.expert_score(other.role, other.subtask, f"It is {fact.answer}.")
                assert score == (1.0 if same else 0.0), (fact, other)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_env_pays_r_expert_for_a_result_in_prose(env_id: str, kind: str) -> None:
    _, fact, seed = sample_fact(env_id, kind)
    env = mgrpo_envs.make(env_id, difficulty="hard")
    rewards = {}
    for result, expert in [(f"I found it: {fact.answer}.", 1.0), (fact.answer, 1.0)]:
        env.reset(seed=seed)
        env.step(f"delegate[{fact.subtask}]")
        assert env.agent_selection == fact.role
        env.step(f"return[{result}]")
        env.step("answer[no idea]")
        call = env.infos[fact.role]["calls"][0]
        assert call["expert"] == expert
        rewards[result] = call["reward"]
    # the same reward for the bare value and the prose: 0.1 * 1 + 0.4 * 0 + 0.5 * 1
    assert list(rewards.values()) == [pytest.approx(0.6)] * 2
    env.reset(seed=seed)
    env.step(f"delegate[{fact.subtask}]")
    env.step(f"return[{fact.answer} or {wrong_value(env.unwrapped.episode, fact)}]")
    env.step("answer[no idea]")
    assert env.infos[fact.role]["calls"][0]["expert"] == 0.0


# ----------------------------------------------------------------- a user's own Episode
class FareEpisode(Episode):
    """A user's episode that defines nothing about judging: it gets the default rule."""

    question = "What does the flight cost?"
    gold = "605"
    facts = (
        Fact("flights", "What is the fare from Avalon to Brindle?", "605"),
        Fact("flights", "Which airline flies from Avalon to Brindle?", "SkyNorth"),
    )

    def tools(self, role: str) -> list[Tool]:
        return []

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        return ToolCall.make("return", result=fact.answer if fact else "unknown")


class RivalsEpisode(FareEpisode):
    def rivals(self, fact: Fact) -> Sequence[str]:
        return ("SkyNorth", "AirSouth")


@pytest.mark.parametrize(
    ("result", "fare", "airline", "airline_with_rivals"),
    [
        ("605", 1.0, 0.0, 0.0),
        ("605 dollars", 1.0, 0.0, 0.0),
        ("SkyNorth 605", 1.0, 1.0, 1.0),  # states both facts, neither conflicts
        ("The fare is 605.", 1.0, 0.0, 0.0),
        ("605 or 610", 0.0, 0.0, 0.0),
        ("SkyNorth", 0.0, 1.0, 1.0),
        ("skynorth, the only one", 0.0, 1.0, 1.0),
        ("SkyNorth or AirSouth", 0.0, 1.0, 0.0),  # a conflict only where rivals are known
        ("AirSouth", 0.0, 0.0, 0.0),
    ],
)
def test_a_users_episode_gets_the_rule_by_default(
    result: str, fare: float, airline: float, airline_with_rivals: float
) -> None:
    ep, rivals = FareEpisode(), RivalsEpisode()
    fare_fact, airline_fact = ep.facts
    assert ep.expert_score("flights", fare_fact.subtask, result) == fare
    assert ep.expert_score("flights", airline_fact.subtask, result) == airline
    assert rivals.expert_score("flights", airline_fact.subtask, result) == airline_with_rivals
    assert ep.expert_score("flights", "What is the fare from Brindle to Avalon?", "605") == 0.0


def test_main_still_needs_the_bare_answer() -> None:
    """``check`` (main's ``r_correct``) is unchanged: a final answer in prose is not correct."""
    ep = FareEpisode()
    assert ep.check("605", ep.gold) and ep.check("605.0", ep.gold)
    assert not ep.check("The fare is 605.", ep.gold)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_each_call_record_carries_the_gold_of_its_fact(env_id: str) -> None:
    """infos[role]["calls"][i]["gold"]: the value the expert judges the call against."""
    env = mgrpo_envs.make(env_id, difficulty="easy")
    env.reset(seed=3)
    final: dict[str, dict] = {}
    for agent in env.agent_iter():
        _, _, term, trunc, info = env.last()
        if term or trunc:
            final[agent] = info
        env.step(None if term or trunc else env.unwrapped.oracle_action())
    episode = env.unwrapped.episode
    records = [(r, c) for r in env.possible_agents[1:] for c in final[r].get("calls", [])]
    assert records
    for role, record in records:
        fact = episode.match_fact(role, record["subtask"])
        assert fact is not None and record["gold"] == fact.answer
        assert record["expert"] == 1.0  # the scripted sub-agent returns the gold value
