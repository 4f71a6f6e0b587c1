"""The single-agent view: one policy holds every tool and cannot delegate.

This is the paper's single-agent baseline (M-GRPO, arXiv 2511.13288, sec. 4): the
same episodes and the same scoring as the hierarchical env, but one agent calls the
sub-agents' tools itself, the calculator, and ``answer``. Reward at the end:
``a1 * r_format + a2 * correct`` if it answered, else 0 (the main agent's reward).

Budgets: ``max_turns`` (default: the task's episode budget) and ``context_chars``
(default: three times one conversation's budget in the hierarchical env, since one
agent now holds every step in its context).
"""

from __future__ import annotations

from typing import Any

import gymnasium

from mgrpo_envs.core.codecs import ParseError, ToolCall, make_codec
from mgrpo_envs.core.env import Conversation, HierarchicalToolEnv, tool_help
from mgrpo_envs.core.rewards import main_reward
from mgrpo_envs.core.task import ToolEvent
from mgrpo_envs.core.text import TextObservation, sanitize, text_space
from mgrpo_envs.core.tools import Tool, ToolError, ToolRegistry
from mgrpo_envs.registry import env_class


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

    def _registry(self) -> ToolRegistry:
        ep = self.hier.episode
        assert ep is not None
        tools: list[Tool] = []
        for role in self.hier.task.roles:
            tools.extend(ep.tools(role))
        main = self.hier._main_tools
        tools += [main["calculate"], main["answer"]]
        return ToolRegistry(tools)

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
            call = ep.sub_oracle(fact.role, fact, self._conv.events)
            if call.name != "return":
                return self._codec.format(call)
        computed = [
            e.output
            for e in self._conv.events
            if e.ok and e.call is not None and e.call.name == "calculate"
        ]
        if ep.calculation and not any(ep.check(c, ep.gold) for c in computed):
            return self._codec.format(ToolCall.make("calculate", expression=ep.calculation))
        return self._codec.format(ToolCall.make("answer", text=ep.gold))

    def vocabulary(self) -> list[str]:
        """The words of the underlying task and prompts."""
        return sorted(set(self.hier.vocabulary()) | {"research", "agent"})

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{who}] {text}" for who, text in self._transcript)
