"""``check_tool_env`` on a small env with two sub-agent roles, and on broken envs.

The trip env below is a complete plug-in env in the style of ``examples/my_env.py``
with two roles, ``flights`` and ``hotels``, that both own a tool named ``search``:
``main`` asks for a fare and a nightly rate, adds them and answers. It exercises
what a one-role env cannot: the turn passing between several roles, budgets that
end an episode between two roles' calls, a tool name shared by two roles (which
the single-agent view namespaces), and facts that differ only in word order.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium
import numpy as np
import pytest
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

import mgrpo_envs
from mgrpo_envs import registry
from mgrpo_envs.core.codecs import ToolCall, make_codec
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent
from mgrpo_envs.core.task_env import TaskEnv
from mgrpo_envs.core.tools import Tool, ToolError
from mgrpo_envs.testing import ConformanceError, check_tool_env
from mgrpo_envs.wrappers.single_agent import view_tool_names

CITIES = "Avalon Brindle Corvex Dunmere Eskar".split()
HOTELS = "Lark Heron Osprey Wren".split()


class TripEpisode(Episode):
    """A fare between two cities and a hotel's nightly rate; the answer is their sum."""

    def __init__(self, fares: dict[tuple[str, str], int], rates: dict[str, int], pick) -> None:
        origin, dest, hotel = pick
        self.fares, self.rates = fares, rates
        fare, rate = str(fares[origin, dest]), str(rates[hotel])
        self.question = (
            f"What does a flight from {origin} to {dest} plus one night at the {hotel} cost?"
        )
        self.facts = (
            Fact("flights", f"What is the fare from {origin} to {dest}?", fare),
            Fact("hotels", f"What is the nightly rate of the {hotel}?", rate),
        )
        self.calculation = f"{fare}+{rate}"
        self.gold = str(int(fare) + int(rate))

    def tools(self, role: str) -> list[Tool]:
        if role == "flights":
            return [Tool("search", ("origin", "dest"), "the fare of a flight", self._fare)]
        return [Tool("search", ("hotel",), "the nightly rate of a hotel", self._rate)]

    def _fare(self, origin: str, dest: str) -> str:
        key = (origin.strip().title(), dest.strip().title())
        if key not in self.fares:
            raise ToolError(f"no flight from {origin.strip()[:20]!r} to {dest.strip()[:20]!r}")
        return f"fare from {key[0]} to {key[1]}: {self.fares[key]}"

    def _rate(self, hotel: str) -> str:
        name = hotel.strip().title()
        if name not in self.rates:
            raise ToolError(f"unknown hotel {hotel.strip()[:20]!r}; try {HOTELS[0]}")
        return f"{name}: {self.rates[name]} per night"

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        if fact is None:
            return ToolCall.make("return", result="unknown")
        if any(e.ok and e.call is not None and e.call.name == "search" for e in history):
            return ToolCall.make("return", result=fact.answer)
        words = fact.subtask.rstrip("?").split()
        if role == "flights":
            return ToolCall.make("search", origin=words[-3], dest=words[-1])
        return ToolCall.make("search", hotel=words[-1])


class TripTask(Task):
    roles = ("flights", "hotels")
    role_descriptions = {"flights": "finds flight fares", "hotels": "finds hotel rates"}

    def sample(self, rng: np.random.Generator) -> TripEpisode:
        fares = {(a, b): int(rng.integers(50, 500)) for a in CITIES for b in CITIES if a != b}
        rates = {h: int(rng.integers(40, 300)) for h in HOTELS}
        origin, dest = rng.choice(len(CITIES), size=2, replace=False)
        pick = (CITIES[origin], CITIES[dest], HOTELS[int(rng.integers(len(HOTELS)))])
        return TripEpisode(fares, rates, pick)

    def vocabulary(self) -> list[str]:
        words = "What does a flight from to plus one night at the cost is fare nightly rate of"
        return [*CITIES, *HOTELS, *words.split(), "per", "unknown"]


TRIP_BUDGETS = {"medium": dict(main_turns=6, sub_turns=3, episode_turns=16, context_chars=3000)}


class TripEnv(TaskEnv, name="trip_v0", task=TripTask, difficulties=TRIP_BUDGETS):
    """trip_v0: two sub-agent roles; every budget may be given (the core's arguments)."""


def trip(**budgets: int):
    """A factory of order-enforced trip envs with these budgets."""
    return lambda: OrderEnforcingWrapper(TripEnv(**budgets))


@pytest.mark.parametrize("episode_turns", range(8, 40))
def test_two_roles_pass_at_every_episode_budget(episode_turns: int) -> None:
    report = check_tool_env(trip(episode_turns=episode_turns), episodes=2)
    assert report["expert_success"] == 1.0


@pytest.mark.parametrize(
    ("budgets", "unreached"),
    [
        ({"main_turns": 4, "sub_turns": 2, "episode_turns": 8}, []),
        ({"main_turns": 5, "sub_turns": 2, "episode_turns": 12}, []),
        ({"main_turns": 12, "sub_turns": 8, "episode_turns": 60}, []),
        ({"sub_turns": 3, "context_chars": 600}, []),
        # flights cannot search and return in one turn: main asks it again and again
        ({"main_turns": 4, "sub_turns": 1, "episode_turns": 9}, ["hotels"]),
    ],
)
def test_two_roles_pass_with_tight_per_call_budgets(
    budgets: dict[str, int], unreached: list[str]
) -> None:
    assert check_tool_env(trip(**budgets), episodes=2)["unreached_roles"] == unreached


def test_a_role_the_expert_cannot_reach_is_reported_not_failed() -> None:
    # main may act once: it delegates to flights and the episode ends when flights stops
    report = check_tool_env(trip(main_turns=1, episode_turns=3), episodes=1)
    assert report == {"expert_success": 0.0, "unreached_roles": ["hotels"]}
    assert check_tool_env(trip(), episodes=1)["unreached_roles"] == []


class RaisingTripEnv(TripEnv):
    """Broken: an empty action by the second role raises instead of being answered."""

    def step(self, action) -> None:
        if action == "" and self.agent_selection == "hotels":
            raise ValueError("empty action")
        super().step(action)


class RolelessTripEnv(TripEnv):
    """Broken: the second role's infos lack ``role``."""

    def _info(self, agent: str) -> dict:
        info = super()._info(agent)
        if agent == "hotels":
            del info["role"]
        return info


class SilentTripEnv(TripEnv):
    """Broken: a bad action by the second role is answered without saying what was wrong."""

    def _say(self, agent: str, text: str, *, new: bool = False) -> None:
        super()._say(agent, text.replace("error", "note") if agent == "hotels" else text, new=new)


@pytest.mark.parametrize(
    ("env_cls", "message"),
    [
        (RaisingTripEnv, r"step\(''\) by hotels raised ValueError: empty action"),
        (RolelessTripEnv, r"infos\['hotels'\] lacks 'role'"),
        (SilentTripEnv, r"bad action '' got no error message"),
    ],
)
@pytest.mark.parametrize("episode_turns", [8, 10, 17, 20])
def test_broken_two_role_envs_are_still_reported(
    env_cls: type[TripEnv], message: str, episode_turns: int
) -> None:
    with pytest.raises(ConformanceError, match=message):
        check_tool_env(lambda: OrderEnforcingWrapper(env_cls(episode_turns=episode_turns)))


# ----------------------------------------------------------------- fact matching
def swapped(subtask: str) -> str:
    """'What is the fare from A to B?' -> 'What is the fare from B to A?'."""
    words = subtask.rstrip("?").split()
    words[-3], words[-1] = words[-1], words[-3]
    return " ".join(words) + "?"


def test_exact_matching_tells_a_to_b_from_b_to_a() -> None:
    ep = TripTask().sample(np.random.default_rng(0))
    there = ep.facts[0]
    back = swapped(there.subtask)
    assert ep.fact_matching == "exact"
    assert ep.match_fact("flights", there.subtask) is there
    assert ep.match_fact("flights", back) is None
    assert ep.expert_score("flights", back, there.answer) == 0.0
    assert ep.expert_score("flights", there.subtask, there.answer) == 1.0
    # case, whitespace and punctuation do not count; words and their order do
    assert ep.match_fact("flights", f"  {there.subtask.upper().rstrip('?')} ! ") is there
    assert ep.match_fact("flights", there.subtask.replace("the ", "")) is None
    assert ep.match_fact("hotels", there.subtask) is None  # another role's fact
    # with both directions among the facts, each subtask gets its own
    ep.facts = (*ep.facts, Fact("flights", back, "1"))
    assert ep.match_fact("flights", back) is ep.facts[-1]
    assert ep.match_fact("flights", there.subtask) is there


class FuzzyTripEpisode(TripEpisode):
    fact_matching = "fuzzy"


def test_fuzzy_matching_is_opt_in_and_ignores_word_order() -> None:
    plain = TripTask().sample(np.random.default_rng(0))
    ep = FuzzyTripEpisode(plain.fares, plain.rates, ("Avalon", "Brindle", "Lark"))
    there = ep.facts[0]
    assert ep.match_fact("flights", "fare Avalon Brindle please") is there  # rephrased
    assert ep.match_fact("flights", swapped(there.subtask)) is there  # why it is opt-in
    assert ep.match_fact("flights", "fare Avalon Brindle please", mode="exact") is None
    assert ep.match_fact("flights", "the fare please") is None  # under half of the words
    ep.fact_matching = "loose"
    with pytest.raises(ValueError, match=r"must be one of \['exact', 'fuzzy'\], got 'loose'"):
        ep.match_fact("flights", there.subtask)


@pytest.mark.parametrize(("mode", "expert"), [("exact", 0.0), ("fuzzy", 1.0)])
def test_a_swapped_subtask_earns_no_expert_reward_by_default(mode: str, expert: float) -> None:
    env = TripEnv()
    env.reset(seed=0)
    ep = env.episode
    ep.fact_matching = mode
    there = ep.facts[0]
    env.step(f"delegate[flights | {swapped(there.subtask)}]")
    env.step(f"return[{there.answer}]")  # the fare of the other direction
    env.step("answer[0]")
    assert env.infos["flights"]["calls"][0]["expert"] == expert


# ----------------------------------------------------------------- shared tool names
@pytest.fixture
def trip_id(monkeypatch: pytest.MonkeyPatch):
    """Registers trip_v0; afterwards every registry is as it was."""
    monkeypatch.setattr(registry, "_ENVS", dict(registry._ENVS))
    gym_before = set(gymnasium.registry)
    mgrpo_envs.register("trip_v0", TripEnv)
    yield "trip_v0"
    for gym_id in set(gymnasium.registry) - gym_before:
        del gymnasium.registry[gym_id]


@pytest.mark.parametrize("codec", ["compact", "json"])
def test_single_agent_view_namespaces_a_tool_name_two_roles_share(trip_id: str, codec: str) -> None:
    env = gymnasium.make("mgrpo_envs/Trip-v0", codec=codec).unwrapped
    obs, _ = env.reset(seed=0)
    assert list(env.tool_schemas) == ["flights_search", "hotels_search", "calculate", "answer"]
    assert "flights_search" in obs and "hotels_search" in obs
    ep = env.hier.episode
    (origin, dest), hotel = ep.facts[0].subtask.rstrip("?").split()[-3::2], ep.facts[1].subtask
    hotel = hotel.rstrip("?").split()[-1]
    fmt = make_codec(codec, env.tool_schemas).format
    out = env.step(fmt(ToolCall.make("flights_search", origin=origin, dest=dest)))[0]
    assert out == f"fare from {origin} to {dest}: {ep.facts[0].answer}"
    out = env.step(fmt(ToolCall.make("hotels_search", hotel=hotel)))[0]
    assert out == f"{hotel}: {ep.facts[1].answer} per night"
    assert "error: " in env.step(fmt(ToolCall.make("hotels_search", hotel=origin)))[0]


def test_the_expert_solves_trips_through_the_single_agent_view(trip_id: str) -> None:
    env = gymnasium.make("mgrpo_envs/Trip-v0")
    for seed in range(5):
        env.reset(seed=seed)
        actions, done = [], False
        while not done:
            actions.append(env.unwrapped.oracle_action())
            _, reward, term, trunc, info = env.step(actions[-1])
            done = term or trunc
        assert info["outcome"]["correct"] and reward == pytest.approx(1.0), actions
        assert [a.split("[")[0] for a in actions] == [
            "flights_search",
            "hotels_search",
            "calculate",
            "answer",
        ]
    assert {"flights_search", "hotels_search"} <= set(env.unwrapped.vocabulary())


def test_the_discrete_view_offers_the_namespaced_tools(trip_id: str) -> None:
    env = gymnasium.make("mgrpo_envs/TripDiscrete-v0").unwrapped
    env.reset(seed=0)
    assert env.tools == env.text_env.unwrapped.tool_schemas  # one menu section per view tool
    sent = {text.split("[")[0] for text in env.menu() if text}
    assert {"flights_search", "hotels_search", "answer"} <= sent


def test_view_names_that_still_collide_are_rejected_naming_the_fix() -> None:
    def tool(name: str) -> Tool:
        return Tool(name, ("x",), "a tool", str)

    names = view_tool_names({"flights": [tool("search")], "hotels": [tool("search")]})
    assert names == {"flights": {"search": "flights_search"}, "hotels": {"search": "hotels_search"}}
    names = view_tool_names({"flights": [tool("fare"), tool("answer")], "hotels": [tool("rate")]})
    assert names == {
        "flights": {"fare": "fare", "answer": "flights_answer"},
        "hotels": {"rate": "rate"},
    }
    with pytest.raises(
        ValueError,
        match=r"hotels's tool 'search' would be 'hotels_search', already the name of "
        r"flights's tool 'hotels_search'; rename one of the two tools",
    ):
        view_tool_names(
            {"flights": [tool("search"), tool("hotels_search")], "hotels": [tool("search")]}
        )
