"""The single-agent view: one policy holds every tool and cannot delegate.

This is the paper's single-agent baseline (M-GRPO, arXiv 2511.13288, sec. 4): the
same episodes and the same scoring as the hierarchical env, but one agent calls the
sub-agents' tools itself, the calculator, and ``answer``. Reward at the end:
``a1 * r_format + a2 * correct`` if it answered, else 0 (the main agent's reward).

Budgets: ``max_turns`` (default: the task's episode budget) and ``context_chars``
(default: three times one conversation's budget in the hierarchical env, since one
agent now holds every step in its context).

Tool names: a name that two sub-agent roles share (both ``flights`` and ``hotels``
have ``search``), or that a role shares with main's ``calculate`` or ``answer``, is
namespaced with the role in this view (``flights_search``, ``hotels_search``), and
each call goes to its role's tool; a name only one role uses keeps its name.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

from mgrpo_envs.core.codecs import ParseError, ToolCall, make_codec
from mgrpo_envs.core.env import Conversation, HierarchicalToolEnv, tool_help
from mgrpo_envs.core.rewards import main_reward
from mgrpo_envs.core.task import ToolEvent
from mgrpo_envs.core.text import TextObservation, sanitize, text_space
from mgrpo_envs.core.tools import Tool, ToolError, ToolRegistry
from mgrpo_envs.registry import env_class

#: Tools of main that the single agent holds too, under these names.
MAIN_TOOLS = ("calculate", "answer")


def view_tool_names(
    role_tools: Mapping[str, Sequence[Tool]], reserved: Collection[str] = MAIN_TOOLS
) -> dict[str, dict[str, str]]:
    """Role -> {tool name in the role: its name in the single-agent view}.

    A name that more than one role uses, or one of ``reserved``, becomes
    ``<role>_<name>``; any other name is kept.

    Raises:
        ValueError: Two tools would still share a name in the view, naming both
            roles, the tool and the fix.
    """
    counts = Counter(t.name for tools in role_tools.values() for t in tools)
    names: dict[str, dict[str, str]] = {}
    owner: dict[str, tuple[str, str]] = {name: ("main", name) for name in reserved}
    for role, tools in role_tools.items():
        names[role] = {}
        for tool in tools:
            shared = counts[tool.name] > 1 or tool.name in reserved
            view_name = f"{role}_{tool.name}" if shared else tool.name
            if view_name in owner:
                other_role, other_name = owner[view_name]
                raise ValueError(
                    f"the single-agent view needs unique tool names: {role}'s tool "
                    f"{tool.name!r} would be {view_name!r}, already the name of "
                    f"{other_role}'s tool {other_name!r}; rename one of the two tools"
                )
            owner[view_name] = (role, tool.name)
            names[role][tool.name] = view_name
    return names


class SingleAgentToolEnv(gymnasium.Env):
    """A Gymnasium env over one of the hierarchical tasks, for one agent with every tool.

    Args:
        env_id: The hierarchical env whose task and scoring to use.
        max_turns: Outputs the agent may produce (default: the task's episode budget).
        context_chars: Characters the conversation may hold.
        render_mode: None or ``"ansi"``.
        **env_kwargs: Arguments of the hierarchical env (difficulty, codec, ...).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        env_id: str = "research_v0",
        *,
        max_turns: int | None = None,
        context_chars: int | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.hier: HierarchicalToolEnv = env_class(env_id)(**env_kwargs)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        budgets = self.hier.budgets
        self.max_turns = max_turns if max_turns is not None else budgets.episode_turns
        self.context_chars = (
            context_chars if context_chars is not None else 3 * budgets.context_chars
        )
        for name in ("max_turns", "context_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        n = self.hier.max_observation_chars
        self.observation_space = text_space(n)
        self.action_space = text_space(n)
        self._tools: ToolRegistry | None = None
        self._names: dict[str, dict[str, str]] = {}

    def _registry(self) -> ToolRegistry:
        ep = self.hier.episode
        assert ep is not None
        role_tools = {role: ep.tools(role) for role in self.hier.task.roles}
        self._names = view_tool_names(role_tools)
        tools: list[Tool] = [
            dataclasses.replace(t, name=self._names[role][t.name])
            for role, role_list in role_tools.items()
            for t in role_list
        ]
        main = self.hier._main_tools
        tools += [main[name] for name in MAIN_TOOLS]
        return ToolRegistry(tools)

    @property
    def tool_schemas(self) -> dict[str, tuple[str, ...]]:
        """Tool name -> argument names in this view, in the prompt's order (after reset)."""
        if self._tools is None:
            raise ValueError("tool_schemas needs an episode; call reset() first")
        return self._tools.schemas

    def view_name(self, role: str, name: str) -> str:
        """The name this view gives ``role``'s tool ``name`` (main's tools keep theirs)."""
        return self._names.get(role, {}).get(name, name)

    def role_events(self, role: str) -> list[ToolEvent]:
        """The episode's events with ``role``'s namespaced tool names turned back into its own.

        What a task's scripts for ``role`` (``sub_oracle``) expect: calls by the
        names its tools have in the hierarchical env.
        """
        own = {v: k for k, v in self._names.get(role, {}).items() if v != k}
        return [
            dataclasses.replace(e, call=ToolCall(own[e.call.name], e.call.arguments))
            if e.call is not None and e.call.name in own
            else e
            for e in self._conv.events
        ]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # the hierarchical env draws the episode; its generator follows ours
        self.hier.reset(seed=int(self.np_random.integers(2**31)))
        self._tools = self._registry()
        self._codec = make_codec(self.hier.codec_name, self._tools.schemas)
        self._conv = Conversation("agent", 0)
        self._answer: str | None = None
        self._transcript: list[tuple[str, str]] = []
        ep = self.hier.episode
        assert ep is not None
        intro = (
            f"You are a research agent. Question: {ep.question}\n"
            f"Tools:\n{tool_help(self._codec, list(self._tools.values()))}\n"
            "Reply with one tool call."
        )
        return self._observe(intro), self._info(done=False)

    def _observe(self, text: str) -> TextObservation:
        obs = sanitize(text, self.hier.max_observation_chars)
        self._conv.context_chars += len(obs)
        self._transcript.append(("env", obs))
        return obs

    def step(self, action: Any):
        if self._tools is None or self._conv.end_reason:
            raise ValueError("step() called before reset() or after the episode ended")
        if not isinstance(action, str):
            raise TypeError(f"action must be a str (the agent's text), got {type(action).__name__}")
        conv = self._conv
        conv.outputs += 1
        conv.context_chars += len(action)
        self._transcript.append(("agent", action))
        try:
            call = self._codec.parse(action)
        except ParseError as err:
            call, output, ok = None, f"error: {err}", False
        else:
            conv.valid_outputs += 1
            output, ok = self._run(call)
        conv.events.append(ToolEvent(call, output, ok))
        if self._answer is not None:
            return self._finish(terminated=True, reason="answered")
        obs = self._observe(output)
        if conv.outputs >= self.max_turns:
            return self._finish(terminated=False, reason="turn budget exhausted", obs=obs)
        if conv.context_chars > self.context_chars:
            return self._finish(terminated=False, reason="context budget exhausted", obs=obs)
        return obs, 0.0, False, False, self._info(done=False)

    def _run(self, call: ToolCall) -> tuple[str, bool]:
        if call.name == "answer":
            self._answer = call.args["text"]
            return "", True
        try:
            return self._tools[call.name](**call.args), True
        except ToolError as err:
            return f"error: {err}", False

    def _finish(self, *, terminated: bool, reason: str, obs: TextObservation | None = None):
        ep = self.hier.episode
        assert ep is not None
        self._conv.end_reason = reason
        answered = self._answer is not None
        self._correct = bool(answered and ep.check(self._answer, ep.gold))
        reward = main_reward(
            answered, self._conv.r_format, float(self._correct), self.hier.reward_weights
        )
        self._reward = reward
        if obs is None:
            obs = self._observe(f"episode over: {reason}")
        return obs, reward, terminated, not terminated, self._info(done=True)

    def _info(self, *, done: bool) -> dict[str, Any]:
        info: dict[str, Any] = {
            "role": "agent",
            "turn": self._conv.outputs,
            "context_chars": self._conv.context_chars,
            "context_budget": self.context_chars,
            "turn_budget": self.max_turns,
        }
        if done:
            ep = self.hier.episode
            assert ep is not None
            info["outcome"] = {
                "correct": self._correct,
                "format_ok": self._answer is not None,
                "answer": self._answer,
                "gold": ep.gold,
                "num_invocations": 0,
                "r_format": self._conv.r_format,
                "reward": self._reward,
                "end_reason": self._conv.end_reason,
            }
        return info

    def oracle_action(self) -> str:
        """The scripted expert's next action: each fact with the sub-agents' script, then answer."""
        ep = self.hier.episode
        if ep is None or self._conv.end_reason:
            raise ValueError("oracle_action() needs a running episode; call reset() first")
        for fact in ep.facts:
            call = ep.sub_oracle(fact.role, fact, self.role_events(fact.role))
            if call.name != "return":
                name = self.view_name(fact.role, call.name)
                return self._codec.format(ToolCall(name, call.arguments))
        computed = [
            e.output
            for e in self._conv.events
            if e.ok and e.call is not None and e.call.name == "calculate"
        ]
        if ep.calculation and not any(ep.check(c, ep.gold) for c in computed):
            return self._codec.format(ToolCall.make("calculate", expression=ep.calculation))
        return self._codec.format(ToolCall.make("answer", text=ep.gold))

    def vocabulary(self) -> list[str]:
        """The words of the underlying task and prompts, namespaced tool names included."""
        sample = self.hier.task.sample(np.random.default_rng(0))
        names = view_tool_names({r: sample.tools(r) for r in self.hier.task.roles})
        view_names = {n for role_names in names.values() for n in role_names.values()}
        return sorted(set(self.hier.vocabulary()) | {"research", "agent"} | view_names)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{who}] {text}" for who, text in self._transcript)
