"""webwalk_v0: its expert and baselines, its browser tools, its traps, and a worked example."""

from __future__ import annotations

import re

import gymnasium
import numpy as np
import pytest

import mgrpo_envs
from mgrpo_envs.tasks.webwalk import DIFFICULTIES, WebWalkEnv, slug
from mgrpo_envs.testing import play_episode, random_tool_action

EXPERT = lambda e: e.unwrapped.oracle_action()  # noqa: E731


def outcome(env, policy, seed: int) -> dict:
    return play_episode(env, policy, seed)["final"]["main"]["outcome"]


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_expert_solves_and_random_callers_do_not(difficulty: str) -> None:
    env = mgrpo_envs.make("webwalk_v0", difficulty=difficulty, codec="json")
    expert = np.mean([outcome(env, EXPERT, seed)["correct"] for seed in range(200)])
    env = mgrpo_envs.make("webwalk_v0", difficulty=difficulty)
    rng = np.random.default_rng(1)
    rand = [outcome(env, lambda e: random_tool_action(e, rng), s)["correct"] for s in range(200)]
    assert expert >= 0.99, expert
    assert np.mean(rand) <= 0.02


def random_walker(rng: np.random.Generator):
    """The expert main agent with a navigator that clicks at random and returns any value."""

    def policy(env) -> str:
        if env.agent_selection == "main":
            return env.unwrapped.oracle_action()
        obs = str(env.observe(env.agent_selection))
        links = re.findall(r"^\[(\d+)\] ", obs, re.M)
        values = re.findall(r"^[A-Z][a-z ]+: (.+)$", obs, re.M)
        r = rng.random()
        if values and r < 0.3:
            return f"return[{values[int(rng.integers(len(values)))]}]"
        if links and r < 0.95:
            return f"click[{links[int(rng.integers(len(links)))]}]"
        return "open[home]"

    return policy


def test_a_random_walk_does_not_find_the_facts() -> None:
    env = mgrpo_envs.make("webwalk_v0", difficulty="easy")
    rng = np.random.default_rng(0)
    wins = [outcome(env, random_walker(rng), seed)["correct"] for seed in range(200)]
    assert np.mean(wins) <= 0.02


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_single_agent_view_expert(difficulty: str) -> None:
    env = gymnasium.make("mgrpo_envs/WebWalk-v0", difficulty=difficulty)
    wins = 0
    for seed in range(40):
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, term, trunc, info = env.step(env.unwrapped.oracle_action())
            done = term or trunc
        wins += info["outcome"]["correct"]
    assert wins == 40


def test_same_seed_same_site_and_other_seeds_differ() -> None:
    def site(seed: int) -> tuple[str, dict[str, str]]:
        env = WebWalkEnv(difficulty="hard")
        env.reset(seed=seed)
        ep = env.episode
        return ep.question, {url: ep.site.view(url) for url in ep.site.pages}

    assert site(7) == site(7)
    assert site(7) != site(8)


def test_site_sizes_and_page_lengths_follow_the_difficulty() -> None:
    sizes = {}
    for difficulty in DIFFICULTIES:
        env = WebWalkEnv(difficulty=difficulty)
        env.reset(seed=0)
        site = env.episode.site
        sizes[difficulty] = len(site.pages)
        longest = max(len(site.view(url)) for url in site.pages)
        assert longest <= 1000, (difficulty, longest)
        # the facts sit `depth` clicks below the home page
        target = env.episode.targets[env.episode.facts[0].subtask]
        assert len(site.path(target)) - 1 == DIFFICULTIES[difficulty]["depth"]
    assert 20 <= sizes["easy"] < sizes["medium"] < sizes["hard"]
    assert sizes["hard"] >= 250


def test_worked_example() -> None:
    """easy, seed 0: one part; the fact sits on the event's page below Events."""
    env = mgrpo_envs.make("webwalk_v0", difficulty="easy")
    env.reset(seed=0)
    question = "What is the keynote speaker of the River Conference?"
    assert question in env.observe("main")
    assert env.unwrapped.episode.gold == "Pavel Vance"
    env.step(f"delegate[{question}]")
    assert env.agent_selection == "navigator"
    env.step("I start at the home page. open[home]")
    assert "[2] Events" in env.observe("navigator")
    env.step("click[Events]")
    assert "[6] River Conference" in env.observe("navigator")
    env.step("click[6]")
    page = env.observe("navigator")
    assert page.startswith("p5 River Conference (/events/river-conference)")
    env.step("find[keynote]")
    assert env.observe("navigator") == (
        "1 line(s) of p5 contain 'keynote':\nKeynote speaker: Pavel Vance"
    )
    env.step("return[Pavel Vance]")
    assert env.observe("main") == "navigator returned: Pavel Vance"
    env.step("answer[pavel vance]")
    out = env.infos["main"]["outcome"]
    assert out["correct"] and env.rewards["main"] == pytest.approx(1.0)
    assert env.infos["navigator"]["calls"][0]["expert"] == 1.0


def test_questions_combine_parts_from_different_sections() -> None:
    env = WebWalkEnv(difficulty="hard")
    seen = set()
    for seed in range(60):
        env.reset(seed=seed)
        ep = env.episode
        sections = {ep.targets[f.subtask].split("/")[1] for f in ep.facts}
        assert len(sections) == len(ep.facts) >= 2
        for fact in ep.facts:
            assert ep.match_fact("navigator", fact.subtask) is fact
        if ep.calculation and "-" in ep.calculation:
            seen.add("difference")
            hi, lo = map(int, ep.calculation.split("-"))
            assert ep.gold == str(hi - lo) and "years apart" in ep.question
        elif ep.calculation:
            seen.add("sum")
            assert ep.gold == str(sum(int(f.answer) for f in ep.facts))
        else:
            seen.add("list")
            assert ep.gold == ", ".join(f.answer for f in ep.facts)
    assert seen == {"difference", "sum", "list"}


def test_misleading_links_lead_to_outdated_values() -> None:
    env = WebWalkEnv(difficulty="medium")
    for seed in range(20):
        env.reset(seed=seed)
        ep, site = env.episode, env.episode.site
        for fact in ep.facts:
            target = site.pages[ep.targets[fact.subtask]]
            name = target.title
            parent = site.pages[target.parent]
            trap = [url for text, url in parent.links if text == f"{name} key facts"]
            assert len(trap) == 1, (seed, name)
            attribute_line = next(line for line in target.lines if line.endswith(fact.answer))
            label = attribute_line.split(":")[0]
            stale = next(line for line in site.pages[trap[0]].lines if line.startswith(label))
            assert stale != attribute_line and "archived" in site.view(trap[0])
            # and a near-duplicate name shares the topic word
            topic = name.rsplit(" ", 1)[0]
            assert any(
                p.title.startswith(topic + " ") and p.title != name for p in site.pages.values()
            )


def current_task(env) -> str:
    """The subtask of the navigator's current call, read from the transcript."""
    intros = [
        text
        for who, text in env.unwrapped.transcript()
        if who == "env -> navigator" and text.startswith("You are the navigator.")
    ]
    return re.search(r"Task: (.+)", intros[-1]).group(1)


def gullible_navigator(env) -> str:
    """Follows the expert until it sees a "key facts" link for its entity, then trusts it."""
    if env.agent_selection == "main":
        return env.unwrapped.oracle_action()
    obs = str(env.observe("navigator"))
    attribute, entity = re.match(r"What is the (.+?) of the (.+)\?$", current_task(env)).groups()
    if "(archived page)" in obs.split("\n", 1)[0]:
        value = re.search(rf"^{re.escape(attribute.capitalize())}: (.+)$", obs, re.M).group(1)
        return f"return[{value}]"
    trap = re.search(rf"^\[(\d+)\] {re.escape(entity)} key facts$", obs, re.M)
    if trap:
        return f"click[{trap.group(1)}]"
    return env.unwrapped.oracle_action()


def test_a_navigator_that_trusts_key_facts_links_fails() -> None:
    env = mgrpo_envs.make("webwalk_v0", difficulty="medium")
    for seed in range(10):
        final = play_episode(env, gullible_navigator, seed)["final"]
        assert not final["main"]["outcome"]["correct"]
        calls = final["navigator"]["calls"]
        assert calls and all(c["expert"] == 0.0 for c in calls)


def navigator_turn(difficulty: str = "hard", seed: int = 0):
    env = mgrpo_envs.make("webwalk_v0", difficulty=difficulty)
    env.reset(seed=seed)
    env.step(env.unwrapped.oracle_action())
    assert env.agent_selection == "navigator"
    return env


@pytest.mark.parametrize(
    "action,expected",
    [
        ("click[1]", "no page is open"),
        ("find[x]", "no page is open"),
        ("back[]", "no previous page"),
        ("open[]", "empty page"),
        ("open[/nowhere]", "no page '/nowhere'"),
        ("open[p99999]", "no page 'p99999'"),
        ("back[now]", "back takes no arguments"),
    ],
)
def test_browser_errors_name_the_problem(action: str, expected: str) -> None:
    env = navigator_turn()
    env.step(action)
    obs = env.observe("navigator")
    assert obs.startswith("error:") and expected in obs, obs


def test_click_open_back_and_find() -> None:
    env = navigator_turn()
    site = env.unwrapped.episode.site
    env.step("open[home]")
    home = env.observe("navigator")
    assert home.startswith(site.pages["/"].pid + " ")
    env.step("click[Research]")
    research = env.observe("navigator")
    assert research.startswith(site.pages["/research"].pid + " ")
    env.step("click[99]")
    assert "no link 99" in env.observe("navigator") and "numbered 1 to" in env.observe("navigator")
    env.step("click[department]")  # several links contain the word
    assert "matches" in env.observe("navigator") and "by its number" in env.observe("navigator")
    env.step("click[no such link]")
    assert "no link 'no such link'" in env.observe("navigator")
    env.step("back[]")
    assert env.observe("navigator") == home
    pid = site.pages["/events"].pid
    env.step(f"open[{pid}]")
    assert env.observe("navigator").startswith(f"{pid} Events (/events)")
    env.step("find[zzzz]")
    assert env.observe("navigator") == f"no line of {pid} contains 'zzzz'"


def test_each_call_starts_with_no_page_open() -> None:
    env = mgrpo_envs.make("webwalk_v0", difficulty="medium", sub_turns=2)
    env.reset(seed=0)
    task = env.unwrapped.episode.facts[0].subtask
    env.step(f"delegate[{task}]")
    env.step("open[/research]")
    env.step("return[nothing]")
    env.step(f"delegate[{task}]")
    env.step("back[]")
    assert "no previous page" in env.observe("navigator")
    env.step("click[1]")
    assert env.agent_selection == "main"  # the turn budget of the call ran out
    assert "stopped without a result" in env.observe("main")


def test_urls_are_slugs_of_titles_and_resolve_in_many_forms() -> None:
    env = WebWalkEnv(difficulty="medium")
    env.reset(seed=2)
    site = env.episode.site
    assert slug("Department of Earth Sciences") == "department-of-earth-sciences"
    for form in ("home", "/", " HOME "):
        assert site.resolve(form) == "/"
    some = next(url for url in site.pages if url.count("/") == 3)
    assert site.resolve(some.upper() + "/") == some
    assert site.resolve(site.pages[some].pid) == some
    assert site.resolve("/nowhere") is None


def test_vocabulary_covers_the_expert_episodes() -> None:
    env = mgrpo_envs.make("webwalk_v0", difficulty="hard")
    vocab = {w for entry in env.unwrapped.vocabulary() for w in re.findall(r"[A-Za-z]+", entry)}
    for seed in range(5):
        trace = play_episode(env, EXPERT, seed)["trace"]
        words = {w for _, obs, _ in trace for w in re.findall(r"[A-Za-z]{2,}", obs)}
        assert words <= vocab, sorted(words - vocab)


def test_bad_knobs_name_the_range() -> None:
    with pytest.raises(ValueError, match=r"depth must be an int in 2..4, got 5"):
        mgrpo_envs.make("webwalk_v0", depth=5)
    with pytest.raises(ValueError, match=r"parts must be a range within 1..3"):
        mgrpo_envs.make("webwalk_v0", parts=(3, 1))
    with pytest.raises(ValueError, match=r"decoys must be an int in 0..3, got -1"):
        mgrpo_envs.make("webwalk_v0", decoys=-1)
