"""The discrete view's Gymnasium env (see the package docstring)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from mgrpo_envs.core.codecs import ParseError, ToolCall, make_codec
from mgrpo_envs.wrappers.discrete.features import SCALARS, SLOT_FEATURES, observation_vector
from mgrpo_envs.wrappers.discrete.menu import Entry, core_calls, core_view, hook_menu
from mgrpo_envs.wrappers.discrete.parsing import CALCULATE, NOT_CONTENT, parse_tool_list
from mgrpo_envs.wrappers.discrete.text_menu import TextMenu


class DiscreteToolEnv(gymnasium.Env):
    """A finite menu of tool calls over a single-agent text env (see the package docstring).

    Args:
        env_id: The hierarchical env whose single-agent view to wrap (ignored when
            ``text_env`` is given).
        slots_per_tool: Menu slots per tool (the action space is ``Discrete(tools * slots)``).
        hash_dims: Hashed bag-of-words size of the question and of the latest observation.
        text_env: A single-agent text env to wrap instead of building one; unless it is
            the core's single-agent view, it must print its tool list in its first
            observation, as the core does.
        render_mode: None or ``"ansi"`` (the transcript of the wrapped view).
        **env_kwargs: Arguments of the single-agent view and its env (difficulty, ...).

    Attributes:
        uses_hook: Whether the menu now comes from the episode's ``admissible_calls``
            hook (False: from the text heuristics).

    Raises:
        ValueError: A bad ``slots_per_tool``, ``hash_dims`` or ``render_mode``, or a
            first observation without a tool list.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        env_id: str = "research_v0",
        *,
        slots_per_tool: int = 16,
        hash_dims: int = 128,
        text_env: gymnasium.Env | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        limits = (("slots_per_tool", slots_per_tool, 1), ("hash_dims", hash_dims, 8))
        for name, value, low in limits:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if text_env is None:
            from mgrpo_envs.wrappers.single_agent import SingleAgentToolEnv

            text_env = SingleAgentToolEnv(env_id, render_mode=render_mode, **env_kwargs)
        self.text_env = text_env
        self.render_mode = render_mode
        self.slots_per_tool = slots_per_tool
        self.hash_dims = hash_dims
        first, _ = text_env.reset(seed=0)  # the tool list fixes the menu's sections
        self._core = core_view(text_env)
        self.tools = self._sections(str(first))
        sections = len(self.tools)
        self.n_actions = sections * slots_per_tool
        size = 2 * hash_dims + len(SCALARS) + sections + self.n_actions * len(SLOT_FEATURES)
        self.action_space = spaces.Discrete(self.n_actions)
        self.observation_space = spaces.Box(0.0, 1.0, (size,), dtype=np.float32)
        self._menu: list[Entry | None] = [None] * self.n_actions
        self.uses_hook = False

    def _sections(self, first: str) -> dict[str, tuple[str, ...]]:
        """Tool name -> arguments: the core's tools, else the first observation's tool list."""
        if self._core is not None:
            tools = {name: tuple(args) for name, args in self._core.tool_schemas.items()}
            self._core_codec = make_codec(self._core.hier.codec_name, tools)
            return tools
        _, tools, _ = parse_tool_list(first)
        if not tools:
            raise ValueError(
                "the first observation lists no tools (lines like 'search[<query>] - ...'); "
                f"got {first[:120]!r}"
            )
        return tools

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.text_env.reset(seed=seed, options=options)
        self._taken: Counter[str] = Counter()
        self._reader = TextMenu(str(obs), self.tools, self.slots_per_tool, self._taken)
        self._computed: list[str] = []  # the calculator's results
        self._last_section: int | None = None
        self._build_menu()
        return self._vector(info), self._info(info, "")

    def step(self, action: Any):
        index = int(action)
        if not 0 <= index < self.n_actions:
            raise ValueError(f"action must be an int in [0, {self.n_actions}), got {action!r}")
        entry = self._menu[index]
        text = entry.text if entry is not None else ""
        obs, reward, terminated, truncated, info = self.text_env.step(text)
        if entry is not None:
            self._taken[text] += 1
        self._last_section = index // self.slots_per_tool
        call = entry.call if entry is not None else None
        output = str(obs)
        if call is not None and call.name == CALCULATE and not output.startswith(NOT_CONTENT):
            self._computed.append(output.strip())
        self._reader.take_in(output, call=call)
        self._build_menu()
        return self._vector(info), float(reward), terminated, truncated, self._info(info, text)

    def render(self) -> str | None:
        return self.text_env.render() if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.text_env.close()

    # ----------------------------------------------------------------- menu access
    def action_masks(self) -> np.ndarray:
        """True for the filled slots (the convention of maskable PPO implementations)."""
        return np.array([e is not None for e in self._menu], dtype=bool)

    def menu(self) -> list[str | None]:
        """The text each slot sends now (None: an empty slot)."""
        return [e.text if e is not None else None for e in self._menu]

    def menu_calls(self) -> list[ToolCall | None]:
        """The call each slot sends now (None: an empty slot)."""
        return [e.call if e is not None else None for e in self._menu]

    def oracle_index(self) -> int | None:
        """The slot of the scripted expert's next call, or None when the menu lacks it."""
        text = self.text_env.unwrapped.oracle_action()
        codec = self._core_codec if self._core is not None else self._reader.codec
        if codec is None:
            return None
        try:
            call = codec.parse(text)
        except ParseError:
            return None
        for i, entry in enumerate(self._menu):
            if entry is not None and entry.call == call:
                return i
        return None

    # ----------------------------------------------------------------- internals
    def _build_menu(self) -> None:
        """The hook's menu when the episode has the hook, else the text heuristics'."""
        calls = core_calls(self._core, self._computed) if self._core is not None else None
        self.uses_hook = calls is not None
        if calls is not None:
            self._menu = hook_menu(calls, self.tools, self._core_codec, self.slots_per_tool)
        else:
            self._menu = self._reader.build()

    def _vector(self, info: dict[str, Any]) -> np.ndarray:
        menu, reader = self._menu, self._reader
        return observation_vector(
            info, reader, menu, self._taken, self._last_section, len(self.tools), self.hash_dims
        )

    def _info(self, info: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            **info,
            "action_text": text,
            "observation_text": self._reader.latest_text,
            "action_mask": self.action_masks(),
        }
