"""Action codecs: the text an agent writes -> a :class:`ToolCall`, and back.

A codec is built from the tool schemas, a mapping from each tool name to its
ordered argument names::

    tools = {"search": ["query"], "visit": ["doc_id"], "lookup": ["table", "key"]}

Two formats are provided:

``compact`` (:class:`CompactCodec`), for small models trained from scratch::

    I need the producer first. search[silver harbor producer]
    lookup[sales | Q3]

``json`` (:class:`JSONCodec`), the form pretrained chat models are tuned on::

    <tool_call>{"name": "search", "arguments": {"query": "silver harbor"}}</tool_call>

Both accept free text (reasoning) around the call and take the first call in the
text. Argument values are strings, stripped of surrounding whitespace; an empty
value is accepted here and left for the tool to judge.

Contract shared by both codecs:

* ``parse`` raises :class:`ParseError`, and nothing else, for any ``str``; the
  message says what was wrong and shows the right form, so it can be shown to
  the agent as an observation. Parsing takes time linear in the text length.
* ``format`` writes the canonical text of a call and raises ``ValueError`` when
  the call does not fit the schema or would not read back as the same call.
  Whenever ``format(call)`` succeeds, ``parse(format(call)) == call``; and any
  call returned by ``parse`` can be formatted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "CODEC_NAMES",
    "ActionCodec",
    "CompactCodec",
    "JSONCodec",
    "ParseError",
    "ToolCall",
    "describe_call",
    "make_codec",
]

CODEC_NAMES: tuple[str, ...] = ("compact", "json")
"""Names accepted by :func:`make_codec`."""

_TOOL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_BRACKET_RE = re.compile(r"\[+|\]+")
_OPEN_TAG = "<tool_call>"
_CLOSE_TAG = "</tool_call>"
_MAX_SHOWN = 60  # characters of agent text quoted back in an error message


@dataclass(frozen=True)
class ToolCall:
    """One call of a named tool with string arguments.

    Attributes:
        name: The tool name (``"search"``).
        arguments: Ordered ``(argument name, value)`` pairs, in schema order.
    """

    name: str
    arguments: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"ToolCall.name must be a str, got {type(self.name).__name__}")
        pairs = tuple(tuple(pair) for pair in self.arguments)
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
                raise TypeError(
                    f"ToolCall.arguments must hold (str, str) pairs, got {pair!r:.{_MAX_SHOWN}}"
                )
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"ToolCall argument names must be unique, got {keys}")
        object.__setattr__(self, "arguments", pairs)

    @property
    def args(self) -> dict[str, str]:
        """The arguments as a ``{name: value}`` dict, in order."""
        return dict(self.arguments)

    @classmethod
    def make(cls, name: str, /, **kwargs: str) -> ToolCall:
        """Builds a call from keyword arguments: ``ToolCall.make("search", query="x")``."""
        return cls(name, tuple(kwargs.items()))


class ParseError(ValueError):
    """An agent's text is not a valid tool call.

    The message says what was wrong and gives an example of the right form; it is
    meant to be shown to the agent.
    """


@runtime_checkable
class ActionCodec(Protocol):
    """Turns an agent's text into a :class:`ToolCall` and a call into canonical text."""

    name: str

    def parse(self, text: str) -> ToolCall:
        """Reads the first tool call in ``text``; raises :class:`ParseError` only."""
        ...

    def format(self, call: ToolCall) -> str:
        """Writes the canonical text of ``call``; raises ``ValueError`` if it cannot."""
        ...


def _shown(text: str) -> str:
    """Quotes agent text for an error message, cut to a readable length."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)


def _compact_text(name: str, values: Sequence[str]) -> str:
    return f"{name}[{' | '.join(values)}]"


def _json_text(name: str, pairs: Iterable[tuple[str, str]]) -> str:
    payload = json.dumps({"name": name, "arguments": dict(pairs)}, ensure_ascii=False)
    # "</" only occurs inside JSON strings; "<\/" decodes to the same text and keeps
    # a value such as "</tool_call>" from ending the block early.
    payload = payload.replace("</", "<\\/")
    return f"{_OPEN_TAG}{payload}{_CLOSE_TAG}"


def describe_call(codec: ActionCodec | str, name: str, arg_names: Sequence[str]) -> str:
    """An example of the call form, with ``<arg>`` placeholders, for prompts.

    Args:
        codec: A codec, or a codec name from :data:`CODEC_NAMES`.
        name: The tool name.
        arg_names: The tool's ordered argument names.

    Returns:
        For example ``search[<query>]`` (compact) or
        ``<tool_call>{"name": "search", "arguments": {"query": "<query>"}}</tool_call>`` (json).

    Raises:
        ValueError: ``codec`` is not one of :data:`CODEC_NAMES`.
    """
    kind = codec if isinstance(codec, str) else codec.name
    placeholders = [f"<{arg}>" for arg in arg_names]
    if kind == "compact":
        return _compact_text(name, placeholders)
    if kind == "json":
        return _json_text(name, zip(arg_names, placeholders, strict=True))
    raise ValueError(f"unknown codec {kind!r}: expected one of {', '.join(map(repr, CODEC_NAMES))}")


def _normalize_tools(tools: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    if not isinstance(tools, Mapping) or not tools:
        raise ValueError(
            f"tools must be a non-empty mapping of name -> argument names, got {tools!r}"
        )
    schema: dict[str, tuple[str, ...]] = {}
    for name, arg_names in tools.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool names must be non-empty strings, got {name!r}")
        if isinstance(arg_names, str):
            raise TypeError(
                f"arguments of tool {name!r} must be a sequence of names, got the string "
                f"{arg_names!r}; write [{arg_names!r}]"
            )
        args = tuple(arg_names)
        if not all(isinstance(arg, str) and arg for arg in args) or len(set(args)) != len(args):
            raise ValueError(
                f"arguments of tool {name!r} must be unique non-empty strings, got {list(args)}"
            )
        schema[name] = args
    return schema


class _SchemaCodec:
    """Schema checks shared by the codecs."""

    name: str = ""

    def __init__(self, tools: Mapping[str, Sequence[str]]) -> None:
        self._tools = _normalize_tools(tools)

    @property
    def tools(self) -> dict[str, tuple[str, ...]]:
        """Tool name -> ordered argument names."""
        return dict(self._tools)

    def example(self, tool: str) -> str:
        """The call form of one known tool, with placeholders."""
        return describe_call(self.name, tool, self._tools[tool])

    def _all_examples(self) -> str:
        return ", ".join(self.example(tool) for tool in self._tools)

    def _unknown_tool(self, tool: str) -> ParseError:
        return ParseError(
            f"unknown tool {_shown(tool)}: known tools are {', '.join(self._tools)}; "
            f"write one of {self._all_examples()}"
        )

    def _bind(self, tool: str, values: Mapping[str, str]) -> ToolCall:
        """Checks the tool and argument names, strips values, orders them as the schema."""
        arg_names = self._tools.get(tool)
        if arg_names is None:
            raise self._unknown_tool(tool)
        missing = [arg for arg in arg_names if arg not in values]
        extra = [arg for arg in values if arg not in arg_names]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing argument(s) {', '.join(map(repr, missing))}")
            if extra:
                problems.append(f"unexpected argument(s) {', '.join(map(_shown, extra))}")
            raise ParseError(f"{tool}: {'; '.join(problems)}; write {self.example(tool)}")
        return ToolCall(tool, tuple((arg, values[arg].strip()) for arg in arg_names))

    def _check_call(self, call: ToolCall) -> tuple[str, ...]:
        """Refuses a call that ``parse`` would not read back unchanged."""
        arg_names = self._tools.get(call.name)
        if arg_names is None:
            raise ValueError(
                f"unknown tool {call.name!r}: expected one of {', '.join(self._tools)}"
            )
        given = tuple(key for key, _ in call.arguments)
        if given != arg_names:
            raise ValueError(
                f"arguments of {call.name!r} must be {arg_names} in this order, got {given}"
            )
        for key, value in call.arguments:
            if value != value.strip():
                raise ValueError(
                    f"argument {key!r} of {call.name!r} has surrounding whitespace, which "
                    f"parsing strips: {_shown(value)}"
                )
        return arg_names


def _closing_bracket(text: str, start: int) -> int:
    """Index of the ']' balancing a '[' just before ``start``, or -1 if there is none."""
    depth = 1
    for run in _BRACKET_RE.finditer(text, start):
        size = run.end() - run.start()
        if text[run.start()] == "[":
            depth += size
        elif size >= depth:
            return run.start() + depth - 1
        else:
            depth -= size
    return -1


def _is_balanced(text: str) -> bool:
    """Whether brackets in ``text`` nest properly (no prefix closes more than it opens)."""
    depth = 0
    for run in _BRACKET_RE.finditer(text):
        size = run.end() - run.start()
        depth += size if text[run.start()] == "[" else -size
        if depth < 0:
            return False
    return depth == 0


class CompactCodec(_SchemaCodec):
    """``search[silver harbor]``, ``lookup[sales | Q3]``: the form for small models.

    The first ``<tool name>[`` in the text, with the name starting at a word
    boundary, opens the call; its arguments run to the bracket that balances the
    opening one, so nested brackets stay part of the value. A one-argument tool
    takes the whole content (``|`` included); a tool with ``n > 1`` arguments
    takes exactly ``n`` parts separated by ``|``, in schema order.

    Args:
        tools: Tool name -> ordered argument names. Names must look like
            identifiers (letters, digits, ``_``, ``.``, ``-``; not starting with a digit).
    """

    name = "compact"

    def __init__(self, tools: Mapping[str, Sequence[str]]) -> None:
        super().__init__(tools)
        bad = [tool for tool in self._tools if not _TOOL_NAME_RE.fullmatch(tool)]
        if bad:
            raise ValueError(
                f"compact codec needs identifier-like tool names "
                f"(letters, digits, '_', '.', '-'), got {bad}"
            )
        alternatives = "|".join(re.escape(t) for t in sorted(self._tools, key=len, reverse=True))
        self._call_re = re.compile(rf"(?<!\w)({alternatives})\[")

    def parse(self, text: str) -> ToolCall:
        """Reads the first call in ``text``.

        Raises:
            ParseError: No call, an unclosed ``[``, or arguments that do not fit the schema.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        match = self._call_re.search(text)
        if match is None:
            raise ParseError(f"no tool call found: write one of {self._all_examples()}")
        tool = match.group(1)
        end = _closing_bracket(text, match.end())
        if end < 0:
            raise ParseError(
                f"unclosed '[' after {tool!r}: end the call with ']', e.g. {self.example(tool)}"
            )
        content = text[match.end() : end]
        arg_names = self._tools[tool]
        if len(arg_names) == 1:
            parts = [content]
        elif not arg_names:
            if content.strip():
                raise ParseError(
                    f"{tool} takes no arguments, got {_shown(content)}; write {tool}[]"
                )
            parts = []
        else:
            parts = content.split("|")
            if len(parts) != len(arg_names):
                raise ParseError(
                    f"{tool} takes {len(arg_names)} arguments separated by '|' "
                    f"({' | '.join(arg_names)}), got {len(parts)} part(s); "
                    f"write {self.example(tool)}"
                )
        return self._bind(tool, dict(zip(arg_names, parts, strict=True)))

    def format(self, call: ToolCall) -> str:
        """Writes ``name[v1 | v2]``.

        Raises:
            ValueError: The call does not fit the schema, a value of a multi-argument
                tool contains ``|``, or the brackets in the values do not nest.
        """
        arg_names = self._check_call(call)
        values = [value for _, value in call.arguments]
        if len(arg_names) > 1:
            for key, value in call.arguments:
                if "|" in value:
                    raise ValueError(
                        f"argument {key!r} of {call.name!r} contains '|', which separates "
                        f"arguments in the compact form: {_shown(value)}"
                    )
        content = " | ".join(values)
        if not _is_balanced(content):
            raise ValueError(
                f"arguments of {call.name!r} have unbalanced brackets, so the call "
                f"would end early or never: {_shown(content)}"
            )
        return _compact_text(call.name, values)


class JSONCodec(_SchemaCodec):
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``: the chat-model form.

    The first ``<tool_call>`` block in the text is the call; it must be closed by
    ``</tool_call>`` and hold a JSON object with a string ``"name"`` and an object
    ``"arguments"`` (other keys are ignored). Argument values must be strings;
    numbers and booleans are accepted and written as text (``3``, ``2.5``, ``true``).

    Args:
        tools: Tool name -> ordered argument names.
    """

    name = "json"

    def parse(self, text: str) -> ToolCall:
        """Reads the first ``<tool_call>`` block in ``text``.

        Raises:
            ParseError: No block, no closing tag, invalid JSON, or arguments that
                do not fit the schema.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        first = next(iter(self._tools))
        start = text.find(_OPEN_TAG)
        if start < 0:
            raise ParseError(
                f"no {_OPEN_TAG} block found: write the call as {self.example(first)} "
                f"(tools: {', '.join(self._tools)})"
            )
        body_start = start + len(_OPEN_TAG)
        end = text.find(_CLOSE_TAG, body_start)
        if end < 0:
            raise ParseError(f"missing closing {_CLOSE_TAG} tag: write {self.example(first)}")
        try:
            payload = json.loads(text[body_start:end])
        except Exception as exc:  # any decoder failure (incl. RecursionError) is the agent's
            reason = str(exc)[:200]
            raise ParseError(
                f"invalid JSON inside {_OPEN_TAG}: {reason}; write {self.example(first)}"
            ) from None
        tool, arguments = self._unpack(payload, first)
        return self._bind(tool, arguments)

    def _unpack(self, payload: object, first: str) -> tuple[str, dict[str, str]]:
        if not isinstance(payload, dict):
            raise ParseError(
                f'the {_OPEN_TAG} JSON must be an object with "name" and "arguments", '
                f"got {_json_kind(payload)}; write {self.example(first)}"
            )
        tool = payload.get("name")
        if not isinstance(tool, str):
            raise ParseError(
                f'"name" must be a string naming a tool ({", ".join(self._tools)}), '
                f"got {_json_kind(tool)}; write {self.example(first)}"
            )
        tool = tool.strip()
        if tool not in self._tools:
            raise self._unknown_tool(tool)
        arguments = payload.get("arguments")
        if not isinstance(arguments, dict):
            example = self.example(tool)
            raise ParseError(
                f'"arguments" must be a JSON object, got {_json_kind(arguments)}; write {example}'
            )
        return tool, {key: _argument_text(tool, key, value) for key, value in arguments.items()}

    def format(self, call: ToolCall) -> str:
        """Writes canonical JSON in a ``<tool_call>`` block, arguments in schema order.

        Raises:
            ValueError: The call does not fit the schema or a value has surrounding
                whitespace.
        """
        self._check_call(call)
        return _json_text(call.name, call.arguments)


def _json_kind(value: object) -> str:
    """Names the JSON type of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _argument_text(tool: str, key: str, value: object) -> str:
    """The text of one JSON argument value; numbers and booleans become strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise ParseError(
        f"argument {_shown(key)} of {_shown(tool)} must be a string, number or boolean, "
        f"got {_json_kind(value)}; put the value in quotes"
    )


def make_codec(name: str, tools: Mapping[str, Sequence[str]]) -> ActionCodec:
    """Builds a codec by name.

    Args:
        name: ``"compact"`` or ``"json"``.
        tools: Tool name -> ordered argument names.

    Returns:
        A :class:`CompactCodec` or :class:`JSONCodec`.

    Raises:
        ValueError: ``name`` is unknown, or the schema is invalid.
    """
    if name == "compact":
        return CompactCodec(tools)
    if name == "json":
        return JSONCodec(tools)
    raise ValueError(f"unknown codec {name!r}: expected one of {', '.join(map(repr, CODEC_NAMES))}")
