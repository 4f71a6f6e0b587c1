"""The hierarchical tool-use environment: a PettingZoo ``AECEnv``.

``main`` acts at plan steps. It may delegate a subtask to a sub-agent role; that
role then acts for several turns with its own tools until it returns a result (or
exhausts its turn or context budget), after which ``main`` sees the result. ``main``
may delegate any number of times, may use the calculator, and ends the episode with
``answer``. Only the agent whose turn it is acts; ``agent_selection`` says which.

Observations are the *new message* for the acting agent since it last acted (the
opening message of a conversation, a tool's output, an error); a learner keeps the
conversation. ``infos[agent]["new_call"]`` is True on the first message of a
conversation (the episode for ``main``, one call for a sub-agent).

Every reward is paid when the episode ends (M-GRPO sec. 3): ``main`` receives
``R_M`` and each sub-agent role receives the mean ``R_S`` over its calls (0 with no
calls); the per-call rewards are in ``infos[role]["calls"]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from pettingzoo import AECEnv

from mgrpo_envs.core.calculator import CalculatorError, calculate, format_number
from mgrpo_envs.core.codecs import ActionCodec, ParseError, ToolCall, describe_call, make_codec
from mgrpo_envs.core.rewards import RewardWeights, format_score, main_reward, sub_reward
from mgrpo_envs.core.task import Episode, Task, ToolEvent
from mgrpo_envs.core.text import TextObservation, sanitize, text_space
from mgrpo_envs.core.tools import Tool, ToolError, ToolRegistry

MAIN = "main"
RETURN_TOOL = "return"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Budgets:
    """Turn and context budgets; every one is enforced and reported in ``infos``.

    Attributes:
        main_turns: Outputs ``main`` may produce in an episode.
        sub_turns: Outputs a sub-agent may produce in one call.
        episode_turns: Outputs of all agents together in an episode.
        context_chars: Characters one conversation (main's episode, or one call) may hold.
    """

    main_turns: int = 10
    sub_turns: int = 6
    episode_turns: int = 60
    context_chars: int = 8000

    def __post_init__(self) -> None:
        for budget in fields(self):
            value = getattr(self, budget.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"budget {budget.name} must be a positive int, got {value!r}")


@dataclass
class Conversation:
    """What one agent saw and did in one conversation (main's episode or one call)."""

    role: str
    invocation: int
    subtask: str = ""
    events: list[ToolEvent] = field(default_factory=list)
    outputs: int = 0
    valid_outputs: int = 0
    context_chars: int = 0
    result: str | None = None
    end_reason: str = ""

    @property
    def r_format(self) -> float:
        """The env's own ``r_format``: the fraction of well-formed outputs."""
        return format_score(self.result is not None, self.valid_outputs, self.outputs, "fraction")


def tool_help(codec: ActionCodec, tools: list[Tool]) -> str:
    """The tool list of a prompt: one example call and description per tool."""
    return "\n".join(
        f"{describe_call(codec, t.name, list(t.args))} - {t.description}" for t in tools
    )


def main_admissible_calls(
    episode: Episode, roles: Sequence[str], results: Sequence[str], computed: Sequence[str]
) -> list[ToolCall]:
    """Main's admissible calls, made from the episode's facts and the values main was given.

    ``delegate``: the first fact no result matches yet (the scripted expert's next
    subtask) and the facts already matched. ``calculate``: the episode's calculation
    once every fact is matched, then ``a+b``, ``a-b`` (larger first) and
    ``round(a/b, 2)`` over the latest numeric results. ``answer``: the matched
    results joined by ", " in the facts' order, each result, and the calculator's
    results. Nothing here names a value main has not been given.

    Args:
        episode: The running episode.
        roles: The task's sub-agent roles (``delegate`` names a role only when several).
        results: The values main was given: sub-agents' results (in the single-agent
            view, the values of the facts found).
        computed: The calculator's results so far.

    Returns:
        The calls, without repeats.
    """
    known = [next((r for r in results if episode.check(r, f.answer)), None) for f in episode.facts]
    missing = [f for f, r in zip(episode.facts, known, strict=True) if r is None]
    found = [f for f, r in zip(episode.facts, known, strict=True) if r is not None]
    calls = [
        ToolCall.make("delegate", task=f.subtask)
        if len(roles) == 1
        else ToolCall.make("delegate", role=f.role, task=f.subtask)
        for f in [*missing[:1], *found]
    ]
    if episode.calculation and not missing:
        calls.append(ToolCall.make("calculate", expression=episode.calculation))
    numbers = [r for r in dict.fromkeys(r.strip() for r in results) if _NUMBER.fullmatch(r)][-3:]
    for i, a in enumerate(numbers):
        for b in numbers[i + 1 :]:
            hi, lo = (a, b) if float(a) >= float(b) else (b, a)
            ratio = [f"round({hi}/{lo}, 2)"] if float(lo) != 0 else []
            for expression in (f"{a}+{b}", f"{hi}-{lo}", *ratio):
                calls.append(ToolCall.make("calculate", expression=expression))
    values = [r for r in known if r is not None]
    joined = [", ".join(values)] if len(values) > 1 else []
    for text in dict.fromkeys([*joined, *results, *computed]):
        calls.append(ToolCall.make("answer", text=text))
    return list(dict.fromkeys(calls))


class HierarchicalToolEnv(AECEnv):
    """A main agent that delegates to multi-turn tool-using sub-agents.

    Args:
        task: The task family that samples episodes.
        codec: ``"compact"`` (``search[query]``) or ``"json"`` (``<tool_call>{...}</tool_call>``).
        budgets: Turn and context budgets.
        reward_weights: (a1, a2, b1, b2, b3) of M-GRPO's rewards.
        max_observation_chars: Length of the observation and action ``Text`` spaces.
        render_mode: None or ``"ansi"`` (``render()`` returns the transcript).
    """

    metadata = {
        "render_modes": ["ansi"],
        "name": "hierarchical_tool_v0",
        "is_parallelizable": False,
    }

    def __init__(
        self,
        task: Task,
        *,
        codec: str = "compact",
        budgets: Budgets | None = None,
        reward_weights: RewardWeights | None = None,
        max_observation_chars: int = 2048,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        if not isinstance(max_observation_chars, int) or max_observation_chars < 256:
            raise ValueError(
                f"max_observation_chars must be an int >= 256, got {max_observation_chars!r}"
            )
        self.task = task
        self.codec_name = codec
        self.budgets = budgets or Budgets()
        self.reward_weights = reward_weights or RewardWeights()
        self.render_mode = render_mode
        self.max_observation_chars = max_observation_chars
        self.possible_agents = [MAIN, *task.roles]
        self.agents: list[str] = []
        space = text_space(max_observation_chars)
        self._obs_spaces = {a: space for a in self.possible_agents}
        self._act_spaces = {a: text_space(max_observation_chars) for a in self.possible_agents}
        self._main_tools = self._build_main_tools()
        self._main_codec = make_codec(codec, self._main_tools.schemas)
        # The sub-agents' codecs only depend on tool schemas, which are fixed per task.
        self._sub_codecs: dict[str, ActionCodec] = {}
        self.np_random, _ = seeding.np_random(None)
        self.episode: Episode | None = None
        self._sub_tools: dict[str, ToolRegistry] = {}

    # ----------------------------------------------------------------- spaces
    def observation_space(self, agent: str):
        return self._obs_spaces[agent]

    def action_space(self, agent: str):
        return self._act_spaces[agent]

    # ----------------------------------------------------------------- tools
    def _build_main_tools(self) -> ToolRegistry:
        roles = self.task.roles
        if len(roles) == 1:
            delegate_args: tuple[str, ...] = ("task",)
            who = f"the {roles[0]} ({self.task.role_descriptions[roles[0]]})"
        else:
            delegate_args = ("role", "task")
            who = "a sub-agent role: " + "; ".join(
                f"{r} ({self.task.role_descriptions[r]})" for r in roles
            )
        return ToolRegistry(
            [
                Tool("delegate", delegate_args, f"give one subtask to {who}", self._no_direct_call),
                Tool("calculate", ("expression",), "evaluate arithmetic", self._calculate),
                Tool("answer", ("text",), "give the final answer and end", self._no_direct_call),
            ]
        )

    @staticmethod
    def _no_direct_call(**_: str) -> str:  # delegate/answer are handled by the env itself
        raise AssertionError("handled by the environment")

    @staticmethod
    def _calculate(expression: str) -> str:
        try:
            return format_number(calculate(expression))
        except CalculatorError as err:
            raise ToolError(str(err)) from err

    def _sub_registry(self, role: str) -> ToolRegistry:
        assert self.episode is not None
        tools = self.episode.tools(role)
        if role in self.task.calculator_roles:
            tools.append(self._main_tools["calculate"])
        tools.append(Tool(RETURN_TOOL, ("result",), "give your result to main and stop", str))
        return ToolRegistry(tools)

    def _sub_codec(self, role: str) -> ActionCodec:
        if role not in self._sub_codecs:
            self._sub_codecs[role] = make_codec(self.codec_name, self._sub_tools[role].schemas)
        return self._sub_codecs[role]

    # ----------------------------------------------------------------- reset
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.episode = self.task.sample(self.np_random)
        self._sub_tools = {r: self._sub_registry(r) for r in self.task.roles}
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self._skip_agent_selection = None
        self._episode_turns = 0
        self._main = Conversation(MAIN, 0)
        self._calls: list[Conversation] = []
        self._call: Conversation | None = None
        self._final_answer: str | None = None
        self._transcript: list[tuple[str, str]] = []
        self._observations: dict[str, TextObservation] = {}
        self._new_call = {a: False for a in self.agents}
        for role in self.task.roles:
            self._observations[role] = sanitize(
                "(idle: no subtask yet)", self.max_observation_chars
            )
        self._say(MAIN, self._main_intro(), new=True)
        self.agent_selection = MAIN
        self.infos = {a: self._info(a) for a in self.agents}

    def _main_intro(self) -> str:
        assert self.episode is not None
        tools = list(self._main_tools.values())
        return (
            f"You are the main agent. Question: {self.episode.question}\n"
            f"Tools:\n{tool_help(self._main_codec, tools)}\n"
            "Reply with one tool call."
        )

    def _sub_intro(self, role: str, subtask: str) -> str:
        tools = list(self._sub_tools[role].values())
        return (
            f"You are the {role}. Task: {subtask}\n"
            f"Tools:\n{tool_help(self._sub_codec(role), tools)}\n"
            "Reply with one tool call."
        )

    # ----------------------------------------------------------------- observe
    def observe(self, agent: str) -> TextObservation:
        if agent not in self._obs_spaces:
            raise ValueError(f"unknown agent {agent!r}; expected one of {self.possible_agents}")
        return self._observations.get(agent, sanitize("", self.max_observation_chars))

    def _say(self, agent: str, text: str, *, new: bool = False) -> None:
        """Queues ``text`` as ``agent``'s next observation and counts it in its context."""
        obs = sanitize(text, self.max_observation_chars)
        self._observations[agent] = obs
        self._new_call[agent] = new
        self._conversation(agent).context_chars += len(obs)
        self._transcript.append((f"env -> {agent}", obs))

    def _conversation(self, agent: str) -> Conversation:
        if agent == MAIN:
            return self._main
        assert self._call is not None and self._call.role == agent
        return self._call

    # ----------------------------------------------------------------- step
    def step(self, action: Any) -> None:
        if not self.agents:
            raise ValueError("step() called after the episode ended; call reset() first")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        if not isinstance(action, str):
            raise TypeError(
                f"action for {agent!r} must be a str (the agent's text), "
                f"got {type(action).__name__}"
            )
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        self._episode_turns += 1
        conv = self._conversation(agent)
        conv.outputs += 1
        conv.context_chars += len(action)
        self._transcript.append((agent, action))
        if agent == MAIN:
            self._step_main(action)
        else:
            self._step_sub(agent, action)
        if self.agents and not self._done and self._episode_turns >= self.budgets.episode_turns:
            self._end_episode(truncated=True, reason="episode turn budget exhausted")
        self.infos = {a: self._info(a) for a in self.agents}
        self._accumulate_rewards()

    @property
    def _done(self) -> bool:
        return any(self.terminations.values()) or any(self.truncations.values())

    def _parse(self, codec: ActionCodec, action: str, conv: Conversation) -> ToolCall | None:
        try:
            call = codec.parse(action)
        except ParseError as err:
            conv.events.append(ToolEvent(None, f"error: {err}", False))
            return None
        conv.valid_outputs += 1
        return call

    def _step_main(self, action: str) -> None:
        call = self._parse(self._main_codec, action, self._main)
        if call is None:
            self._say(MAIN, self._main.events[-1].output)
        elif call.name == "answer":
            self._final_answer = call.args["text"]
            self._main.events.append(ToolEvent(call, "", True))
            self._end_episode(truncated=False, reason="answered")
            return
        elif call.name == "delegate":
            role = call.args.get("role", self.task.roles[0]).strip()
            if role not in self.task.roles:
                msg = f"error: unknown role {role!r}; expected one of {list(self.task.roles)}"
                self._main.events.append(ToolEvent(call, msg, False))
                self._say(MAIN, msg)
            else:
                self._start_call(role, call)
                return
        else:
            self._run_tool(MAIN, self._main_tools[call.name], call, self._main)
        self._check_main_budgets()

    def _check_main_budgets(self) -> None:
        if self._main.outputs >= self.budgets.main_turns:
            self._end_episode(truncated=True, reason="main turn budget exhausted")
        elif self._main.context_chars > self.budgets.context_chars:
            self._end_episode(truncated=True, reason="main context budget exhausted")

    def _run_tool(self, agent: str, tool: Tool, call: ToolCall, conv: Conversation) -> None:
        try:
            output, ok = tool(**call.args), True
        except ToolError as err:
            output, ok = f"error: {err}", False
        conv.events.append(ToolEvent(call, output, ok))
        self._say(agent, output)

    def _start_call(self, role: str, call: ToolCall) -> None:
        subtask = call.args["task"]
        invocation = sum(1 for c in self._calls if c.role == role)
        self._call = Conversation(role, invocation, subtask=subtask)
        self._calls.append(self._call)
        self._main.events.append(ToolEvent(call, "", True))
        assert self.episode is not None
        self.episode.begin_call(role, subtask)
        self._say(role, self._sub_intro(role, subtask), new=True)
        self.agent_selection = role

    def _step_sub(self, role: str, action: str) -> None:
        conv = self._conversation(role)
        call = self._parse(self._sub_codec(role), action, conv)
        if call is None:
            self._say(role, conv.events[-1].output)
        elif call.name == RETURN_TOOL:
            conv.result = call.args["result"]
            conv.events.append(ToolEvent(call, "", True))
            self._end_call("returned")
            return
        else:
            self._run_tool(role, self._sub_tools[role][call.name], call, conv)
        if conv.outputs >= self.budgets.sub_turns:
            self._end_call("turn budget exhausted")
        elif conv.context_chars > self.budgets.context_chars:
            self._end_call("context budget exhausted")

    def _end_call(self, reason: str) -> None:
        conv = self._call
        assert conv is not None
        conv.end_reason = reason
        self._call = None
        self.agent_selection = MAIN
        if conv.result is not None:
            message = f"{conv.role} returned: {conv.result}"
        else:
            message = f"{conv.role} stopped without a result ({reason})"
        self._main.events[-1] = ToolEvent(self._main.events[-1].call, message, True)
        self._say(MAIN, message)
        self._check_main_budgets()

    # ----------------------------------------------------------------- end
    def _end_episode(self, *, truncated: bool, reason: str) -> None:
        assert self.episode is not None
        if self._call is not None:
            self._call.end_reason = f"episode ended: {reason}"
            self._call = None
        self._main.end_reason = reason
        w = self.reward_weights
        answered = self._final_answer is not None
        correct = answered and self.episode.check(self._final_answer, self.episode.gold)
        self._r_correct = 1.0 if correct else 0.0
        self.rewards[MAIN] = main_reward(answered, self._main.r_format, self._r_correct, w)
        self._call_rewards = [self._score_call(c) for c in self._calls]
        for role in self.task.roles:
            pairs = zip(self._calls, self._call_rewards, strict=True)
            mine = [r for c, r in pairs if c.role == role]
            self.rewards[role] = float(np.mean(mine)) if mine else 0.0
        for a in self.agents:
            self.terminations[a] = not truncated
            self.truncations[a] = truncated
        self._transcript.append(("env", f"episode over: {reason}"))

    def _score_call(self, conv: Conversation) -> float:
        assert self.episode is not None
        valid = conv.result is not None
        expert = self._expert(conv)
        return sub_reward(valid, conv.r_format, self._r_correct, expert, self.reward_weights)

    def _expert(self, conv: Conversation) -> float:
        assert self.episode is not None
        if conv.result is None:
            return 0.0
        return self.episode.expert_score(conv.role, conv.subtask, conv.result)

    def _gold(self, conv: Conversation) -> str | None:
        """The gold value of the fact a call's subtask asks for (None: it asks for none)."""
        assert self.episode is not None
        fact = self.episode.match_fact(conv.role, conv.subtask or "")
        return None if fact is None else fact.answer

    # ----------------------------------------------------------------- infos
    def _info(self, agent: str) -> dict[str, Any]:
        conv = self._main if agent == MAIN else self._last_call(agent)
        info: dict[str, Any] = {
            "role": agent,
            "turn": conv.outputs if conv is not None else 0,
            "episode_turn": self._episode_turns,
            "new_call": self._new_call.get(agent, False),
            "context_chars": conv.context_chars if conv is not None else 0,
            "context_budget": self.budgets.context_chars,
        }
        if agent != MAIN:
            info["invocation"] = conv.invocation if conv is not None else -1
            info["turn_budget"] = self.budgets.sub_turns
        else:
            info["turn_budget"] = self.budgets.main_turns
            info["num_invocations"] = len(self._calls)
        if self._done:
            info.update(self._final_info(agent))
        return info

    def _last_call(self, role: str) -> Conversation | None:
        mine = [c for c in self._calls if c.role == role]
        return mine[-1] if mine else None

    def _final_info(self, agent: str) -> dict[str, Any]:
        assert self.episode is not None
        if agent == MAIN:
            return {
                "outcome": {
                    "correct": bool(self._r_correct),
                    "format_ok": self._final_answer is not None,
                    "answer": self._final_answer,
                    "gold": self.episode.gold,
                    "num_invocations": len(self._calls),
                    "r_format": self._main.r_format,
                    "outputs": self._main.outputs,
                    "valid_outputs": self._main.valid_outputs,
                    "reward": self.rewards[MAIN],
                    "end_reason": self._main.end_reason,
                }
            }
        calls = [
            {
                "invocation": c.invocation,
                "subtask": c.subtask,
                "result": c.result,
                "format_ok": c.result is not None,
                "r_format": c.r_format,
                "outputs": c.outputs,
                "valid_outputs": c.valid_outputs,
                "expert": self._expert(c),
                "gold": self._gold(c),
                "reward": r,
                "turns": c.outputs,
                "end_reason": c.end_reason,
            }
            for c, r in zip(self._calls, self._call_rewards, strict=True)
            if c.role == agent
        ]
        return {"calls": calls}

    # ----------------------------------------------------------------- oracle
    def oracle_action(self) -> str | None:
        """The scripted expert's action for the agent to act now (None for a finished agent)."""
        call = self.oracle_call()
        return None if call is None else self.format_call(call)

    def oracle_call(self) -> ToolCall | None:
        """The scripted expert's call for the agent to act now, before it is written out.

        None for a finished agent. :meth:`format_call` writes it as the agent would;
        a scripted policy may change the call first (a noisy expert, say).
        """
        if not self.agents:
            raise ValueError("oracle_call() called after the episode ended; call reset() first")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            return None
        assert self.episode is not None
        if agent == MAIN:
            return self._main_oracle()
        conv = self._conversation(agent)
        fact = self.episode.match_fact(agent, conv.subtask)
        return self.episode.sub_oracle(agent, fact, conv.events)

    def format_call(self, call: ToolCall, agent: str | None = None) -> str:
        """``call`` as ``agent`` (default: the agent to act now) writes it, in its codec."""
        agent = self.agent_selection if agent is None else agent
        if agent == MAIN:
            return self._main_codec.format(call)
        if agent not in self._sub_tools:
            raise ValueError(f"no agent {agent!r}; agents: {self.possible_agents}")
        return self._sub_codec(agent).format(call)

    def _main_oracle(self) -> ToolCall:
        ep = self.episode
        assert ep is not None
        returned = [
            e.output.split(": ", 1)[1]
            for e in self._main.events
            if e.call is not None and e.call.name == "delegate" and " returned: " in e.output
        ]
        for fact in ep.facts:
            if not any(ep.check(r, fact.answer) for r in returned):
                if len(self.task.roles) == 1:
                    return ToolCall.make("delegate", task=fact.subtask)
                return ToolCall.make("delegate", role=fact.role, task=fact.subtask)
        computed = [
            e.output for e in self._main.events if e.call and e.call.name == "calculate" and e.ok
        ]
        if ep.calculation and not any(ep.check(c, ep.gold) for c in computed):
            return ToolCall.make("calculate", expression=ep.calculation)
        return ToolCall.make("answer", text=ep.gold)

    def admissible_calls(self) -> list[ToolCall] | None:
        """The calls that make sense for the agent to act now, the expert's among them.

        ``main``'s come from :func:`main_admissible_calls`; a sub-agent's from the
        episode's :meth:`~mgrpo_envs.core.task.Episode.admissible_calls` over the
        call's events (None when the episode has no such hook, or the agent is done).
        """
        if not self.agents:
            raise ValueError("admissible_calls() called after the episode ended; call reset()")
        agent, ep = self.agent_selection, self.episode
        assert ep is not None
        if self.terminations[agent] or self.truncations[agent]:
            return None
        if agent != MAIN:
            return ep.admissible_calls(agent, self._conversation(agent).events)
        events = [e for e in self._main.events if e.call is not None]
        calls = [e for e in events if e.call.name == "delegate" and " returned: " in e.output]
        results = [e.output.split(" returned: ", 1)[1] for e in calls]
        computed = [e.output for e in events if e.call.name == "calculate" and e.ok]
        return main_admissible_calls(ep, self.task.roles, results, computed)

    # ----------------------------------------------------------------- render
    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        lines = [f"[{who}] {text}" for who, text in self._transcript]
        return "\n".join(lines)

    def close(self) -> None:
        pass

    def transcript(self) -> list[tuple[str, str]]:
        """The episode so far as (speaker, text) pairs."""
        return list(self._transcript)

    def vocabulary(self) -> list[str]:
        """Every word this env's texts can contain (task words plus the prompts' words)."""
        words = set(self.task.vocabulary())
        sample = self.task.sample(np.random.default_rng(0))
        sub_help = [
            tool_help(
                make_codec(self.codec_name, ToolRegistry(sample.tools(r)).schemas), sample.tools(r)
            )
            for r in self.task.roles
        ]
        for text in (
            *sub_help,
            "You are the main agent. Question: Tools: Reply with one tool call.",
            f"You are the Task: {RETURN_TOOL} give your result to main and stop",
            tool_help(self._main_codec, list(self._main_tools.values())),
            "returned: stopped without a result turn budget exhausted context error unknown role",
            "idle: no subtask yet episode over answered",
        ):
            words.update(text.replace("[", " ").replace("]", " ").split())
        words.update(self.task.roles)
        return sorted(words)
