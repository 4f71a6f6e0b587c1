"""Tools: named, offline, side-effect-free functions an agent calls with text arguments.

A tool receives its arguments as strings (already split by an action codec) and
returns the text the agent observes. A tool that cannot do what was asked raises
:class:`ToolError`; the environment turns the message into an observation, so a
bad call never crashes an episode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


class ToolError(ValueError):
    """A tool refused its arguments; the message is shown to the calling agent."""


@dataclass(frozen=True)
class Tool:
    """A named tool with an ordered argument schema.

    Attributes:
        name: The name the agent writes (``search``).
        args: Ordered argument names (``("query",)``).
        description: One line for the prompt, saying what the tool does.
        fn: Called with the arguments as keyword strings; returns the observation text.
    """

    name: str
    args: tuple[str, ...]
    description: str
    fn: Callable[..., str]

    def __call__(self, **kwargs: str) -> str:
        return self.fn(**kwargs)


class ToolRegistry(Mapping[str, Tool]):
    """An ordered, read-only mapping of tool name to :class:`Tool`."""

    def __init__(self, tools: list[Tool]) -> None:
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self._tools = {t.name: t for t in tools}

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def schemas(self) -> dict[str, tuple[str, ...]]:
        """Tool name -> ordered argument names, as the action codecs expect."""
        return {name: tool.args for name, tool in self._tools.items()}
