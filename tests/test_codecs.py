"""Tests for the action codecs (agent text <-> ToolCall)."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo_envs.core.codecs import (
    CODEC_NAMES,
    ActionCodec,
    CompactCodec,
    JSONCodec,
    ParseError,
    ToolCall,
    describe_call,
    make_codec,
)

TOOLS: dict[str, list[str]] = {
    "search": ["query"],
    "visit": ["doc_id"],
    "answer": ["text"],
    "lookup": ["table", "key"],
    "triple": ["a", "b", "c"],
    "finish": [],
}

COMPACT = CompactCodec(TOOLS)
JSON = JSONCodec(TOOLS)
CODECS: list[ActionCodec] = [COMPACT, JSON]


def _tag(payload: object) -> str:
    return f"<tool_call>{json.dumps(payload)}</tool_call>"


# ---------------------------------------------------------------- ToolCall


def test_tool_call_make_and_args() -> None:
    call = ToolCall.make("lookup", table="sales", key="Q3")
    assert call == ToolCall("lookup", (("table", "sales"), ("key", "Q3")))
    assert call.args == {"table": "sales", "key": "Q3"}
    assert ToolCall.make("x", name="n").args == {"name": "n"}
    assert hash(call) == hash(ToolCall.make("lookup", table="sales", key="Q3"))


def test_tool_call_validates_types() -> None:
    with pytest.raises(TypeError, match=r"\(str, str\) pairs, got \('k', 3\)"):
        ToolCall("x", (("k", 3),))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str, got int"):
        ToolCall(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be unique"):
        ToolCall("x", (("k", "1"), ("k", "2")))


# ---------------------------------------------------------------- compact, by hand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("search[silver harbor producer]", ToolCall.make("search", query="silver harbor producer")),
        (
            "The film is Silver Harbor. I need its producer.\nsearch[ silver harbor producer ]\n"
            "Then I will visit the page.",
            ToolCall.make("search", query="silver harbor producer"),
        ),
        ("lookup[sales | Q3]", ToolCall.make("lookup", table="sales", key="Q3")),
        ("lookup[sales|Q3]", ToolCall.make("lookup", table="sales", key="Q3")),
        ("lookup[ | Q3]", ToolCall.make("lookup", table="", key="Q3")),
        ("triple[1 | 2 | 3]", ToolCall.make("triple", a="1", b="2", c="3")),
        ("search[a [nested [deep]] b]", ToolCall.make("search", query="a [nested [deep]] b")),
        ("search[a | b]", ToolCall.make("search", query="a | b")),
        ("search[]", ToolCall.make("search", query="")),
        ("finish[]", ToolCall.make("finish")),
        ("finish[  ]", ToolCall.make("finish")),
        ("research[x] then visit[d3]", ToolCall.make("visit", doc_id="d3")),
        ("(search[x])", ToolCall.make("search", query="x")),
        ("visit[d1] search[x]", ToolCall.make("visit", doc_id="d1")),
        ("search[é 東京 \x00]", ToolCall.make("search", query="é 東京 \x00")),
        ("lookup[a[ | ]b]", ToolCall.make("lookup", table="a[", key="]b")),
    ],
)
def test_compact_parse_examples(text: str, expected: ToolCall) -> None:
    assert COMPACT.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"no tool call found: write one of search\[<query>\], visit\[<doc_id>\]"),
        ("I am not sure what to do.", r"no tool call found"),
        ("google[x]", r"no tool call found"),
        ("research[x]", r"no tool call found"),
        ("search (x)", r"no tool call found"),
        (
            "search[x",
            r"unclosed '\[' after 'search': end the call with '\]', e\.g\. search\[<query>\]",
        ),
        ("search[a [b] c", r"unclosed '\['"),
        (
            "lookup[sales]",
            r"lookup takes 2 arguments separated by '\|' \(table \| key\), got 1 part",
        ),
        ("lookup[a | b | c]", r"got 3 part\(s\); write lookup\[<table> \| <key>\]"),
        ("finish[now]", r"finish takes no arguments, got 'now'; write finish\[\]"),
    ],
)
def test_compact_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        COMPACT.parse(text)


def test_compact_format() -> None:
    assert COMPACT.format(ToolCall.make("lookup", table="sales", key="Q3")) == "lookup[sales | Q3]"
    assert COMPACT.format(ToolCall.make("search", query="a | b")) == "search[a | b]"
    assert COMPACT.format(ToolCall.make("search", query="x [y]")) == "search[x [y]]"
    assert COMPACT.format(ToolCall.make("finish")) == "finish[]"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (ToolCall.make("lookup", table="a|b", key="c"), r"argument 'table' .* contains '\|'"),
        (ToolCall.make("search", query="a ] b"), r"unbalanced brackets"),
        (ToolCall.make("search", query="a [ b"), r"unbalanced brackets"),
        (ToolCall.make("search", query="]["), r"unbalanced brackets"),
        (ToolCall.make("search", query=" padded"), r"surrounding whitespace"),
        (ToolCall.make("google", query="x"), r"unknown tool 'google': expected one of search"),
        (ToolCall.make("lookup", key="Q3", table="s"), r"must be \('table', 'key'\) in this order"),
        (ToolCall.make("lookup", table="s"), r"must be \('table', 'key'\) in this order, got"),
    ],
)
def test_compact_format_refuses_calls_that_would_not_round_trip(
    call: ToolCall, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        COMPACT.format(call)


def test_compact_needs_identifier_like_names() -> None:
    with pytest.raises(ValueError, match=r"identifier-like tool names .* got \['web search'\]"):
        CompactCodec({"web search": ["query"]})


# ---------------------------------------------------------------- json, by hand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '<tool_call>{"name": "search", "arguments": {"query": "silver harbor"}}</tool_call>',
            ToolCall.make("search", query="silver harbor"),
        ),
        (
            "I should search first.\n<tool_call>\n"
            '{"name": "search", "arguments": {"query": " silver harbor "}}\n</tool_call>\nok',
            ToolCall.make("search", query="silver harbor"),
        ),
        (
            _tag({"name": "lookup", "arguments": {"key": 3, "table": "sales"}}),
            ToolCall.make("lookup", table="sales", key="3"),
        ),
        (
            _tag({"name": "triple", "arguments": {"a": True, "b": 2.5, "c": False}}),
            ToolCall.make("triple", a="true", b="2.5", c="false"),
        ),
        (_tag({"name": " finish ", "arguments": {}, "id": 7}), ToolCall.make("finish")),
        (
            _tag({"name": "search", "arguments": {"query": "a"}})
            + _tag({"name": "visit", "arguments": {"doc_id": "b"}}),
            ToolCall.make("search", query="a"),
        ),
        (
            '<tool_call>{"name": "search", "arguments": {"query": "東京 <\\/tool_call>"}}'
            "</tool_call>",
            ToolCall.make("search", query="東京 </tool_call>"),
        ),
    ],
)
def test_json_parse_examples(text: str, expected: ToolCall) -> None:
    assert JSON.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"no <tool_call> block found: write the call as <tool_call>\{\"name\": \"search\""),
        ('{"name": "search", "arguments": {"query": "x"}}', r"no <tool_call> block found"),
        (
            '<tool_call>{"name": "search", "arguments": {"query": "x"}}',
            r"missing closing </tool_call> tag",
        ),
        (
            '<tool_call>{"name": "search", "arguments": {"query": "x"}</tool_call>',
            r"invalid JSON inside <tool_call>: Expecting ',' delimiter",
        ),
        ("<tool_call>{'name': 'search'}</tool_call>", r"invalid JSON .*property name"),
        ("<tool_call></tool_call>", r"invalid JSON inside <tool_call>: Expecting value"),
        ("<tool_call>" + "[" * 100_000 + "</tool_call>", r"invalid JSON inside <tool_call>"),
        ("<tool_call>" + "1" * 5000 + "</tool_call>", r"invalid JSON inside <tool_call>"),
        ("<tool_call>[1, 2]</tool_call>", r"must be an object .* got a list"),
        (_tag({"arguments": {}}), r'"name" must be a string naming a tool .* got null'),
        (_tag({"name": 3, "arguments": {}}), r'"name" must be a string .* got a number'),
        (_tag({"name": "google", "arguments": {}}), r"unknown tool 'google': known tools are"),
        (_tag({"name": "search"}), r'"arguments" must be a JSON object, got null'),
        (
            _tag({"name": "search", "arguments": '{"query": "x"}'}),
            r'"arguments" must be a JSON object, got a string',
        ),
        (
            _tag({"name": "search", "arguments": {"query": ["x"]}}),
            r"argument 'query' of 'search' must be a string, number or boolean, got a list",
        ),
        (
            _tag({"name": "search", "arguments": {"query": None}}),
            r"must be a string, number or boolean, got null",
        ),
        (
            _tag({"name": "lookup", "arguments": {"table": "t"}}),
            r"lookup: missing argument\(s\) 'key'; write <tool_call>",
        ),
        (
            _tag({"name": "search", "arguments": {"query": "x", "page": 2}}),
            r"search: unexpected argument\(s\) 'page'",
        ),
        (
            _tag({"name": "lookup", "arguments": {"tabel": "t", "key": "k"}}),
            r"missing argument\(s\) 'table'; unexpected argument\(s\) 'tabel'",
        ),
    ],
)
def test_json_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        JSON.parse(text)


def test_json_format_is_canonical_and_escapes_the_closing_tag() -> None:
    call = ToolCall.make("lookup", table="ventes 東京", key='say "hi"')
    assert JSON.format(call) == (
        '<tool_call>{"name": "lookup", "arguments": {"table": "ventes 東京", '
        '"key": "say \\"hi\\""}}</tool_call>'
    )
    tricky = ToolCall.make("search", query="a </tool_call> b")
    assert "</tool_call>" not in JSON.format(tricky)[: -len("</tool_call>")]
    assert JSON.parse(JSON.format(tricky)) == tricky


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (ToolCall.make("search", query="x\n"), r"surrounding whitespace"),
        (ToolCall.make("google", query="x"), r"unknown tool 'google'"),
        (ToolCall.make("lookup", key="Q3", table="s"), r"in this order"),
    ],
)
def test_json_format_refuses(call: ToolCall, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JSON.format(call)


# ---------------------------------------------------------------- factory, schema, describe


def test_make_codec() -> None:
    assert isinstance(make_codec("compact", TOOLS), CompactCodec)
    assert isinstance(make_codec("json", TOOLS), JSONCodec)
    assert all(isinstance(make_codec(name, TOOLS), ActionCodec) for name in CODEC_NAMES)
    with pytest.raises(ValueError, match=r"unknown codec 'xml': expected one of 'compact', 'json'"):
        make_codec("xml", TOOLS)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_invalid_schemas(name: str) -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        make_codec(name, {})
    with pytest.raises(ValueError, match=r"unique non-empty strings, got \['a', 'a'\]"):
        make_codec(name, {"t": ["a", "a"]})
    with pytest.raises(TypeError, match=r"got the string 'query'; write \['query'\]"):
        make_codec(name, {"t": "query"})  # type: ignore[dict-item]


def test_tools_property_is_a_copy() -> None:
    tools = COMPACT.tools
    assert tools["lookup"] == ("table", "key")
    tools["lookup"] = ()
    assert COMPACT.tools["lookup"] == ("table", "key")


def test_describe_call() -> None:
    assert describe_call(COMPACT, "search", ["query"]) == "search[<query>]"
    assert describe_call("compact", "lookup", ["table", "key"]) == "lookup[<table> | <key>]"
    assert describe_call(JSON, "search", ["query"]) == (
        '<tool_call>{"name": "search", "arguments": {"query": "<query>"}}</tool_call>'
    )
    with pytest.raises(ValueError, match="unknown codec 'xml'"):
        describe_call("xml", "search", ["query"])


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("tool", list(TOOLS))
def test_described_call_parses_to_placeholders(codec: ActionCodec, tool: str) -> None:
    call = codec.parse(describe_call(codec, tool, TOOLS[tool]))
    assert call == ToolCall(tool, tuple((arg, f"<{arg}>") for arg in TOOLS[tool]))


# ---------------------------------------------------------------- robustness

_FRAGMENTS = [
    "search[",
    "lookup[",
    "triple[",
    "finish[",
    "research[",
    "[",
    "]",
    "|",
    " | ",
    " ",
    "\n",
    "a",
    "Q3",
    "é東",
    "\x00",
    "<tool_call>",
    "</tool_call>",
    '{"name": "search", "arguments": {"query": "x"}}',
    '{"name": "lookup", "arguments": {"table": "t", "key": 3}}',
    '{"name": "finish", "arguments": {}}',
    '"',
    "{",
    "}",
    ":",
    ",",
    '"name"',
    '"arguments"',
    '"query"',
    "\\",
    "\\u00e9",
    "null",
    "true",
    "1e999",
    "NaN",
    "<\\/",
]

_FRAGMENT_TEXT = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=4)), max_size=40
).map("".join)

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_ARG_NAMES = st.sampled_from(["query", "doc_id", "text", "table", "key", "a", "b", "c", "x"])
_JSON_CALL_TEXT = st.builds(
    lambda before, name, arguments, after: (
        f"{before}{_tag({'name': name, 'arguments': arguments})}{after}"
    ),
    st.text(max_size=10),
    st.sampled_from([*TOOLS, "google", " search "]),
    st.dictionaries(_ARG_NAMES, _JSON_VALUES, max_size=4),
    st.text(max_size=10),
)

# Near-misses and hits: a real call form with odd content, so that parsing often succeeds.
_COMPACT_CALL_TEXT = st.builds(
    lambda before, tool, inner, after: f"{before}{tool}[{inner}]{after}",
    st.text(max_size=10),
    st.sampled_from(list(TOOLS)),
    st.lists(
        st.sampled_from(["a", " ", "|", " | ", "[", "]", "[x]", "é", "\n", "\x00"]), max_size=12
    ).map("".join),
    st.text(max_size=10),
)
_SCALARS = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.floats())
_SCHEMA_CALL_TEXT = st.sampled_from(list(TOOLS)).flatmap(
    lambda tool: st.builds(
        lambda before, arguments, extra, after: (
            before + _tag({"name": tool, "arguments": {**arguments, **extra}}) + after
        ),
        st.text(max_size=10),
        st.fixed_dictionaries({arg: _SCALARS for arg in TOOLS[tool]}),
        st.dictionaries(_ARG_NAMES, _JSON_VALUES, max_size=1) | st.just({}),
        st.text(max_size=10),
    )
)

ANY_TEXT = st.one_of(
    st.text(),
    st.text(max_size=20_000),
    _FRAGMENT_TEXT,
    _JSON_CALL_TEXT,
    _COMPACT_CALL_TEXT,
    _SCHEMA_CALL_TEXT,
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


def _check_parse(codec: ActionCodec, text: str) -> None:
    """Parsing raises only ParseError; whatever parses, formats and reads back the same."""
    try:
        call = codec.parse(text)
    except ParseError as err:
        assert str(err)
        return
    canonical = codec.format(call)
    assert codec.parse(canonical) == call
    assert codec.format(codec.parse(canonical)) == canonical


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_arbitrary_text_raises_only_parse_error_and_round_trips(
    codec: ActionCodec, text: str
) -> None:
    _check_parse(codec, text)


def _large_inputs() -> list[str]:
    rng = random.Random(0)
    size = 100_000
    noise = "".join(chr(rng.randrange(32, 0x3000)) for _ in range(size))
    brackets = "".join(rng.choice("[]|") for _ in range(size))
    return [
        "",
        "\x00" * size,
        "a" * size,
        noise,
        "[" * size,
        "]" * size,
        "[]" * (size // 2),
        "search[" + "[]" * (size // 2) + "]",
        "search[" + "][" * (size // 2),
        "search[" * (size // 7),
        "search " * (size // 7),
        "x" * size + "search[" + "a" * size + "]",
        "lookup[" + "a|" * (size // 2) + "]",
        "search[" + brackets,
        "<tool_call>" * (size // 11),
        "<tool_call>" + "[" * size + "</tool_call>",
        "<tool_call>" + '{"a":' * (size // 5) + "</tool_call>",
        "<tool_call>" + '"' + "\\" * size + "</tool_call>",
        _tag({"name": "search", "arguments": {"query": "q" * size}}),
        "<tool_call>" + noise,
    ]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_large_inputs_parse_fast_and_safely(codec: ActionCodec) -> None:
    for text in _large_inputs():
        start = time.perf_counter()
        _check_parse(codec, text)
        # A generous bound: linear parsing takes milliseconds; quadratic would take minutes.
        assert time.perf_counter() - start < 1.0, f"slow on input starting {text[:30]!r}"


# ---------------------------------------------------------------- round trips over calls

_PLAIN = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="[]"), max_size=12
)


def _balanced(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text whose brackets nest properly, built by wrapping pieces in '[...]'."""
    return st.recursive(
        inner,
        lambda children: st.lists(
            st.one_of(children, children.map(lambda s: f"[{s}]")), max_size=4
        ).map("".join),
        max_leaves=8,
    )


_SINGLE_VALUE = _balanced(_PLAIN).map(str.strip)
_MULTI_VALUE = _balanced(_PLAIN.map(lambda s: s.replace("|", "/"))).map(str.strip)
_JSON_VALUE = st.text().map(str.strip)


def _calls(value: st.SearchStrategy[str], multi_value: st.SearchStrategy[str]) -> st.SearchStrategy:
    def for_tool(tool: str) -> st.SearchStrategy[ToolCall]:
        names = TOOLS[tool]
        values = value if len(names) == 1 else multi_value
        return st.tuples(*(values for _ in names)).map(
            lambda vs: ToolCall(tool, tuple(zip(names, vs, strict=True)))
        )

    return st.sampled_from(list(TOOLS)).flatmap(for_tool)


@pytest.mark.parametrize(
    ("codec", "calls"),
    [(COMPACT, _calls(_SINGLE_VALUE, _MULTI_VALUE)), (JSON, _calls(_JSON_VALUE, _JSON_VALUE))],
    ids=["compact", "json"],
)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_valid_calls_round_trip(codec: ActionCodec, calls: st.SearchStrategy, data) -> None:
    call = data.draw(calls)
    text = codec.format(call)
    assert codec.parse(text) == call
    assert codec.format(codec.parse(text)) == text
    assert codec.parse(f"Thinking about it. {text} Done.") == call


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=300, deadline=None)
@given(
    tool=st.sampled_from([*TOOLS, "google"]),
    values=st.lists(st.text(max_size=12), max_size=3),
)
def test_format_either_refuses_or_round_trips(
    codec: ActionCodec, tool: str, values: list[str]
) -> None:
    names = TOOLS.get(tool, ["query"])[: len(values)]
    call = ToolCall(tool, tuple(zip(names, values, strict=False)))
    try:
        text = codec.format(call)
    except ValueError:
        return
    assert codec.parse(text) == call
