"""The discrete view of every registered env: checkers, menus, empty slots, seeding."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mgrpo_envs
from mgrpo_envs import registry
from mgrpo_envs.core.codecs import ToolCall, make_codec
from mgrpo_envs.core.env import Budgets, HierarchicalToolEnv, main_admissible_calls
from mgrpo_envs.core.task import Episode, Fact, Task, ToolEvent
from mgrpo_envs.core.tools import Tool, ToolError
from mgrpo_envs.registry import discrete_gym_id, discrete_ids, gym_ids
from mgrpo_envs.wrappers.discrete import (
    DiscreteToolEnv,
    Table,
    by_distance,
    clause_bounds,
    condition_operators,
    description_words,
    extract_candidates,
    label_ties,
    labelled_lines,
    listed_values,
    name_spans,
    named_in,
    names_word,
    parse_tables,
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
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_expert_call_is_in_the_menu_at_every_step(env_id: str, difficulty: str, codec: str) -> None:
    env = DiscreteToolEnv(env_id, difficulty=difficulty, codec=codec)
    for seed in range(20):
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


class ScriptedTextEnv(gymnasium.Env):
    """A text env with a fixed question and tool list that answers calls from a table."""

    def __init__(self, question: str, tools: list[str], outputs: dict[str, str]) -> None:
        self.intro = f"You are an agent. Question: {question}\nTools:\n" + "\n".join(tools)
        self.outputs = outputs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.intro, {}

    def step(self, action: str):
        if action.startswith("answer["):
            return "episode over: answered", 1.0, True, False, {}
        return self.outputs.get(action, "error: no such call"), 0.0, False, False, {}


def play_script(env: DiscreteToolEnv, calls: list[str]) -> None:
    """Plays ``calls`` through the menu, asserting each is in it when its turn comes."""
    env.reset(seed=0)
    for call in calls:
        assert call in env.menu(), (call, [t for t in env.menu() if t])
        env.step(env.menu().index(call))


TABLE_TOOLS = [
    "lookup[<table> | <keys>] - rows by id or name; tables: companies, sectors, revenue, costs",
    "filter[<table> | <condition>] - rows where column=value or Q3>number",
    "calculate[<expression>] - evaluate arithmetic",
    "answer[<text>] - give the final answer and end",
]


# the Retail sector's key, its companies, and their revenue rows
RETAIL_STEPS = {
    "lookup[sectors | Retail]": "sectors: 1 row(s)\nid | name\ns2 | Retail",
    "filter[companies | sector=s2]": (
        "companies where sector = s2: 2 row(s)\nid | name | sector\n"
        "c1 | Kestrel Mills | s2\nc4 | Maple Goods | s2"
    ),
    "lookup[revenue | c1, c4]": (
        "revenue: 2 row(s)\ncompany | Q1 | Q2 | Q3\nc1 | 10 | 50 | 7\nc4 | 20 | 40 | 9"
    ),
}


def test_menu_follows_tables_through_keys_conditions_extremes_and_cells() -> None:
    question = (
        "Give the company of the Retail sector with the highest Q2 revenue and the Q3 cost "
        "of Orion Foods, in that order."
    )
    outputs = {
        **RETAIL_STEPS,
        "lookup[companies | Orion Foods]": (
            "companies: 1 row(s)\nid | name | sector\nc7 | Orion Foods | s3"
        ),
        "lookup[costs | c7]": "costs: 1 row(s)\ncompany | Q1 | Q2 | Q3\nc7 | 5 | 6 | 8",
    }
    env = DiscreteToolEnv(text_env=ScriptedTextEnv(question, TABLE_TOOLS, outputs))
    # the largest Q2 revenue is c1's, named Kestrel Mills; Orion Foods's Q3 cost is 8
    play_script(env, [*outputs, "answer[Kestrel Mills, 8]"])


def test_menu_sums_a_column_and_combines_findings_of_two_rows() -> None:
    question = (
        "What is the total Q2 revenue of the Retail sector minus the Q1 profit of Orion Foods?"
    )
    outputs = {
        **RETAIL_STEPS,
        "calculate[50+40]": "90",
        "lookup[companies | Orion Foods]": (
            "companies: 1 row(s)\nid | name | sector\nc7 | Orion Foods | s3"
        ),
        "lookup[revenue | c7]": "revenue: 1 row(s)\ncompany | Q1 | Q2 | Q3\nc7 | 30 | 6 | 8",
        "lookup[costs | c7]": "costs: 1 row(s)\ncompany | Q1 | Q2 | Q3\nc7 | 12 | 2 | 1",
        "calculate[30-12]": "18",
        "calculate[90-18]": "72",
    }
    env = DiscreteToolEnv(text_env=ScriptedTextEnv(question, TABLE_TOOLS, outputs))
    play_script(env, [*outputs, "answer[72]"])


def test_menu_walks_links_and_joins_labelled_values() -> None:
    tools = [
        "open[<page>] - open a page by url or id; the start page is home",
        "click[<link>] - follow a link of the open page by number or text",
        "calculate[<expression>] - evaluate arithmetic",
        "answer[<text>] - give the final answer and end",
    ]
    home = "p1 Home (/)\n[1] Research\n[2] Events"
    outputs = {
        "open[home]": home,
        "click[Research]": (
            "p2 Research (/research)\nEngineering: Robotics Lab, Ocean Lab, Ocean Centre.\n"
            "[1] Home\n[2] Engineering"
        ),
        "click[Engineering]": (
            "p3 Engineering\n[1] Home\n[2] Robotics Lab\n[3] Ocean Centre\n[4] Ocean Lab"
        ),
        "click[Ocean Lab]": "p4 Ocean Lab\nHead: Mara Quill\nMember count: 23\n[1] Home",
        "click[Home]": home,
        "click[Events]": "p5 Events\n[1] Home\n[2] Harbor Fair",
        "click[Harbor Fair]": ("p6 Harbor Fair\nVenue city: Port Alden\nSeat count: 410\n[1] Home"),
    }
    for question, last in [
        (
            "Give the head of the Ocean Lab and the venue city of the Harbor Fair, in that order.",
            ["answer[Mara Quill, Port Alden]"],
        ),
        (
            "What is the sum of the member count of the Ocean Lab and the seat count of the "
            "Harbor Fair?",
            ["calculate[23+410]", "answer[433]"],
        ),
    ]:
        env = DiscreteToolEnv(
            text_env=ScriptedTextEnv(question, tools, outputs | {"calculate[23+410]": "433"})
        )
        play_script(env, [*outputs, *last])


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


def test_a_name_never_starts_inside_an_identifier() -> None:
    # "Give the Q3 ..." once gave the name "the Q" (the Q of Q3)
    assert extract_candidates("Give the Q3 profit of Vesper Works") == [
        ("id", "Q3"),
        ("phrase", "Vesper Works"),
    ]


def test_parse_tables_reads_header_rows_and_caption() -> None:
    text = (
        "costs: 1 row(s)\ncompany | Q1 | Q2\nc7 | 5 | 6\nnot a table\n"
        "id | name\ns2 | Retail\ns3 | Energy\nx | y | z"
    )
    assert parse_tables(text) == [
        Table(("company", "Q1", "Q2"), (("c7", "5", "6"),), "costs: 1 row(s)"),
        Table(("id", "name"), (("s2", "Retail"), ("s3", "Energy")), "not a table"),
    ]
    # a line with another number of cells ends the table
    assert parse_tables("a | b\n1 | 2\n1 | 2 | 3") == [Table(("a", "b"), (("1", "2"),))]
    assert parse_tables("no cells here") == []


def test_labelled_lines_keep_single_values_only() -> None:
    text = (
        "p4 Ocean Lab: Team (/research)\nHead: Mara Quill\nMember count: 23\n"
        "d3 Ada Holm: Ada Holm was born in 1901.\n[1] Home"
    )
    assert labelled_lines(text) == [("Head", "Mara Quill"), ("Member count", "23")]


def test_names_are_found_as_whole_words() -> None:
    assert named_in("the q3 revenue of A", "Q3")
    assert not named_in("the Q31 revenue", "Q3")
    assert not named_in("its headquarters", "Head")
    assert names_word("the Q4 cost of A", "costs")  # a word that starts the value
    assert names_word("Revenue: 12", "revenue")
    assert not names_word("the company of A", "companies")
    assert not names_word("co", "costs")  # under four letters only an equal word counts
    # a place inside a longer name's place is not one of the shorter name
    question = "the Ocean Lab and the Ocean Lab Annex of Ocean"
    assert name_spans(question, ["Ocean Lab", "Ocean"]) == [
        (4, 13, "Ocean Lab"),
        (22, 31, "Ocean Lab"),
        (41, 46, "Ocean"),
    ]


def test_clauses_end_at_names_commas_and_and() -> None:
    question = "x of A, y of B and z"
    spans = name_spans(question, ["A", "B"])
    assert spans == [(5, 6, "A"), (13, 14, "B")]
    assert clause_bounds(question, (5, 6), spans) == (0, 6)
    assert clause_bounds(question, (13, 14), spans) == (7, 14)


def test_labels_tie_to_the_name_they_describe() -> None:
    question = "the Q3 revenue of A and the company of B with the highest Q1 cost"
    spans = name_spans(question, ["A", "B"])
    (a, b) = [(start, end) for start, end, _ in spans]
    assert label_ties(question, a, ["Q1", "Q3"], spans) == ("Q3", None)
    assert label_ties(question, b, ["Q1", "Q3"], spans) == (None, "Q1")
    # the nearest label wins; none past the clause
    question = "the Q3 cost, the Q1 cost of A"
    spans = name_spans(question, ["A"])
    assert label_ties(question, spans[0][:2], ["Q1", "Q3"], spans) == ("Q1", None)


def test_by_distance_orders_words_by_how_near_the_focus_they_are() -> None:
    question = "the total Q2 revenue of the Retail sector"
    words = ["total", "sector", "revenue", "name"]
    assert by_distance(question, "Retail", words) == ["sector", "revenue", "total", "name"]
    assert by_distance(question, None, words) == words


def test_condition_operators_read_the_forms_a_description_shows() -> None:
    assert condition_operators("rows where column=value or Q3>number") == ["=", ">"]
    assert condition_operators("evaluate arithmetic") == []
    assert condition_operators("a<=b") == []


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


# ---------------------------------------------------------------- the admissible_calls hook


def expert_plays_through_the_menu(env: DiscreteToolEnv, seed: int) -> tuple[dict, list]:
    """Plays the expert through the menu; asserts its call is there at every step."""
    env.reset(seed=seed)
    menus, done = [], False
    while not done:
        menus.append(env.menu())
        index = env.oracle_index()
        assert index is not None, (seed, env.text_env.unwrapped.oracle_action(), env.menu())
        _, _, terminated, truncated, info = env.step(index)
        done = terminated or truncated
    return info, menus


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_built_in_menus_come_from_the_hook_not_from_the_prompt_text(
    env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = DiscreteToolEnv(env_id, difficulty="medium")
    plain = [expert_plays_through_the_menu(env, seed)[1] for seed in range(3)]
    assert env.uses_hook
    # the single-agent view now prints its tool list in another form: the text
    # heuristics would find no tool in it, the hook's menu must not change
    import mgrpo_envs.wrappers.single_agent as single_agent

    monkeypatch.setattr(single_agent, "tool_help", lambda codec, tools: "(tools withheld)")
    hidden = DiscreteToolEnv(env_id, difficulty="medium")
    assert hidden.tools == env.tools and hidden.action_space == env.action_space
    text, _ = hidden.text_env.reset(seed=0)
    assert "(tools withheld)" in text and parse_tool_list(text)[1] == {}
    assert [expert_plays_through_the_menu(hidden, seed)[1] for seed in range(3)] == plain


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_hook_menus_name_no_value_the_episode_has_not_shown(env_id: str) -> None:
    env = DiscreteToolEnv(env_id, difficulty="hard")
    for seed in range(10):
        env.reset(seed=seed)
        episode = env.text_env.unwrapped.hier.episode
        values = {f.answer for f in episode.facts} | {episode.gold}
        hidden = {v for v in values if v not in episode.question}
        calls = [call for call in env.menu_calls() if call is not None]
        shown = {value for call in calls for value in call.args.values()}
        assert calls and not hidden & shown, (seed, hidden & shown)
        # main's answers and the episode's calculation wait for the facts
        assert "answer" not in {call.name for call in calls}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_hierarchical_env_admits_the_expert_call_of_every_agent(env_id: str) -> None:
    env = mgrpo_envs.make(env_id, difficulty="hard")
    core = env.unwrapped
    for seed in range(5):
        env.reset(seed=seed)
        first = core.admissible_calls()
        assert [c.name for c in first] == ["delegate"], first  # nothing found yet
        while not (core.terminations["main"] or core.truncations["main"]):
            calls = core.admissible_calls()
            # parses only calls of the admitted tools, with their arguments
            codec = make_codec("compact", {c.name: list(c.args) for c in calls})
            action = core.oracle_action()
            assert codec.parse(action) in calls, (seed, core.agent_selection, action, calls)
            env.step(action)
        assert core.infos["main"]["outcome"]["correct"], seed


def test_main_admissible_calls_follow_the_values_main_was_given() -> None:
    episode = SimpleNamespace(
        facts=(Fact("r", "What is a?", "12"), Fact("r", "What is b?", "5")),
        calculation="12-5",
        check=lambda given, gold: given.strip() == gold,
    )
    calls = main_admissible_calls(episode, ("r",), ["12"], [])
    texts = [f"{c.name}:{'|'.join(c.args.values())}" for c in calls]
    assert texts == ["delegate:What is b?", "delegate:What is a?", "answer:12"]
    calls = main_admissible_calls(episode, ("r", "s"), ["12", "x", "5"], ["7"])
    texts = [f"{c.name}:{'|'.join(c.args.values())}" for c in calls]
    assert texts == [
        "delegate:r|What is a?",
        "delegate:r|What is b?",
        "calculate:12-5",
        "calculate:12+5",
        "calculate:round(12/5, 2)",
        "answer:12, 5",
        "answer:12",
        "answer:x",
        "answer:5",
        "answer:7",
    ]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_an_episode_without_the_hook_falls_back_to_the_text_heuristics(
    env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = DiscreteToolEnv(env_id, difficulty="easy")
    hooked = [expert_plays_through_the_menu(env, seed)[1] for seed in range(3)]
    episode_class = type(env.text_env.unwrapped.hier.episode)
    monkeypatch.setattr(episode_class, "admissible_calls", Episode.admissible_calls)
    for seed in range(3):
        info, menus = expert_plays_through_the_menu(env, seed)
        assert not env.uses_hook and info["outcome"]["correct"], seed
        assert menus != hooked[seed]  # the heuristics' menus, not the hook's


# A plug-in env with a two-argument tool: a menu read from text alone does not hold
# its expert's call; the episode's hook does.
CITIES = ("Lisbon", "Oslo", "Quito", "Hanoi")
PRICES = (60, 90, 120, 150)


class HotelEpisode(Episode):
    def __init__(
        self, hotels: dict[str, list[tuple[str, int]]], city: str, limit: int, nights: int
    ):
        self.hotels, self.city, self.limit = hotels, city, limit
        fits = sorted((price, name) for name, price in hotels[city] if price <= limit)
        price = fits[0][0] if fits else 0
        self.question = (
            f"How much do {nights} nights cost at the cheapest hotel of {city} under {limit}?"
        )
        subtask = f"What is the price of the cheapest hotel of {city} under {limit}?"
        self.facts = (Fact("booker", subtask, str(price)),)
        self.calculation = f"{nights}*{price}"
        self.gold = str(nights * price)

    def tools(self, role: str) -> list[Tool]:
        return [Tool("find_hotels", ("city", "max_price"), "hotels under a price", self._find)]

    def _find(self, city: str, max_price: str) -> str:
        if city not in self.hotels or not max_price.isdigit():
            raise ToolError(f"expected a city of {list(self.hotels)} and a price, got {city!r}")
        rows = [f"{n}: {p}" for n, p in self.hotels[city] if p <= int(max_price)]
        return "\n".join(rows) or "no hotel"

    def sub_oracle(self, role: str, fact: Fact | None, history: Sequence[ToolEvent]) -> ToolCall:
        wanted = ToolCall.make("find_hotels", city=self.city, max_price=str(self.limit))
        if fact is None or any(e.ok and e.call == wanted for e in history):
            return ToolCall.make("return", result=fact.answer if fact else "unknown")
        return wanted


class HotelEpisodeWithHook(HotelEpisode):
    def admissible_calls(self, role: str, history: Sequence[ToolEvent]) -> list[ToolCall]:
        others = [(c, str(p)) for c in CITIES for p in PRICES if (c, p) != (self.city, self.limit)]
        alternatives = [ToolCall.make("find_hotels", city=c, max_price=p) for c, p in others]
        return [*self.expert_calls(role, history), *alternatives[:6]]


class HotelTask(Task):
    roles = ("booker",)
    role_descriptions = {"booker": "finds hotels"}

    def __init__(self, episode_class: type[HotelEpisode]) -> None:
        self.episode_class = episode_class

    def sample(self, rng: np.random.Generator) -> HotelEpisode:
        hotels = {
            c: [(f"{c} Inn {i}", int(rng.integers(40, 200))) for i in range(4)] for c in CITIES
        }
        city, limit = CITIES[int(rng.integers(4))], PRICES[int(rng.integers(1, 4))]
        while not any(p <= limit for _, p in hotels[city]):
            hotels[city].append((f"{city} Hostel", int(rng.integers(20, limit))))
        return self.episode_class(hotels, city, limit, int(rng.integers(2, 9)))

    def vocabulary(self) -> list[str]:
        return [*CITIES, "Inn", "Hostel", "hotel", "price", "nights"]


class HotelEnv(HierarchicalToolEnv):
    metadata = {"render_modes": ["ansi"], "name": "hotels_v0", "is_parallelizable": False}

    def __init__(self, *, hook: bool = True, codec: str = "compact") -> None:
        task = HotelTask(HotelEpisodeWithHook if hook else HotelEpisode)
        super().__init__(task, codec=codec, budgets=Budgets(5, 3, 12, 3000))


@pytest.fixture
def hotel_env_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """``hotels_v0`` in the registry for this test only."""
    monkeypatch.setitem(registry._ENVS, "hotels_v0", (__name__, "HotelEnv", "test/Hotels-v0"))
    return "hotels_v0"


@pytest.mark.parametrize("codec", ["compact", "json"])
def test_a_plug_in_env_with_the_hook_gets_its_expert_call_in_the_menu(
    hotel_env_id: str, codec: str
) -> None:
    env = DiscreteToolEnv(hotel_env_id, codec=codec)
    assert list(env.tools) == ["find_hotels", "calculate", "answer"]
    for seed in range(10):
        info, menus = expert_plays_through_the_menu(env, seed)
        assert env.uses_hook and info["outcome"]["correct"], seed
        assert len(menus) == 3  # find_hotels, calculate, answer
        # the expert's tool call sits among distractors, not alone
        assert sum(text is not None for text in menus[0]) > 1


def test_a_plug_in_env_without_the_hook_still_runs_on_the_fallback(hotel_env_id: str) -> None:
    env = DiscreteToolEnv(hotel_env_id, hook=False)
    rng = np.random.default_rng(0)
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert not env.uses_hook
        done = False
        while not done:
            assert env.observation_space.contains(obs)
            filled = np.flatnonzero(env.action_masks())
            action = int(rng.choice(filled)) if len(filled) else 0
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert "outcome" in info
