"""Tests for the safe arithmetic calculator."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo_envs.core.calculator import CalculatorError, calculate, format_number


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2+3*4", 14),
        ("(1987-1962)", 25),
        ("  (1987 - 1962) * 2  ", 50),
        ("7/2", 3.5),
        ("7//2", 3),
        ("-7//2", -4),
        ("7%3", 1),
        ("-3**2", -9),
        ("(-3)**2", 9),
        ("2**10", 1024),
        ("2**-1", 0.5),
        ("2**3**2", 512),
        ("+5", 5),
        ("abs(-4)", 4),
        ("round(7/3, 2)", 2.33),
        ("round(2.5)", 2),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("sqrt(16)", 4.0),
        ("1.5e3", 1500.0),
        ("10**15", 10**15),
        ("0**0", 1),
    ],
)
def test_hand_checked_results(expression: str, expected: float) -> None:
    result = calculate(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_float_arithmetic_is_exact_python_arithmetic() -> None:
    assert calculate("0.1+0.2") == 0.1 + 0.2
    assert format_number(calculate("0.1+0.2")) == "0.3"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (25, "25"),
        (-25, "-25"),
        (0, "0"),
        (25.0, "25"),
        (-4.0, "-4"),
        (2.5, "2.5"),
        (1 / 3, "0.333333"),
        (-2 / 3, "-0.666667"),
        (0.1 + 0.2, "0.3"),
        (-0.0, "0"),
        (-1e-9, "0"),
        (1e-9, "0"),
        (1e20, "1e+20"),
        (123456.0000004, "123456"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_number_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        format_number(value)


def test_format_number_refuses_bool() -> None:
    with pytest.raises(TypeError, match="got bool"):
        format_number(True)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_number_round_trips_integers(value: int) -> None:
    text = format_number(value)
    assert int(text) == value
    assert calculate(text) == value


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e14, max_value=1e14, allow_nan=False, allow_infinity=False))
def test_format_number_round_trips_floats_to_six_places(value: float) -> None:
    text = format_number(value)
    assert abs(calculate(text) - value) <= 5e-7 + 1e-15 * abs(value)
    assert format_number(calculate(text)) == text


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", r"function '__import__' is not allowed"),
        ("__import__('os').system('ls')", r"attribute access is not allowed \('\.system'\)"),
        ("().__class__", r"attribute access is not allowed \('\.__class__'\)"),
        ("(1).__class__.__bases__", r"attribute access is not allowed"),
        ("os.system('x')", r"attribute access is not allowed \('\.system'\)"),
        ("os", r"names are not allowed \('os'\)"),
        ("x + 1", r"names are not allowed \('x'\)"),
        ("pi", r"names are not allowed \('pi'\)"),
        ("lambda: 1", r"lambdas are not allowed"),
        ("(lambda: 1)()", r"lambdas are not allowed"),
        ("[1][0]", r"lists are not allowed|subscripts are not allowed"),
        ("(1, 2)[0]", r"subscripts are not allowed"),
        ("[x for x in (1, 2)]", r"comprehensions are not allowed"),
        ("sum(x for x in (1, 2))", r"function 'sum' is not allowed"),
        ("'abc'", r"strings are not allowed"),
        ("f'{1}'", r"strings are not allowed"),
        ("b'x'", r"strings are not allowed"),
        ("True", r"bool values are not allowed"),
        ("1j", r"complex values are not allowed"),
        ("None", r"NoneType values are not allowed"),
        ("1 < 2", r"comparisons are not allowed"),
        ("1 and 2", r"boolean operators are not allowed"),
        ("1 if 1 else 2", r"conditional expressions are not allowed"),
        ("(y := 2)", r"assignments are not allowed"),
        ("1 << 10", r"operator LShift is not allowed"),
        ("~1", r"operator '~' is not allowed"),
        ("not 1", r"operator 'not' is not allowed"),
        ("abs(x=1)", r"keyword arguments are not allowed"),
        ("max(*(1, 2))", r"starred arguments are not allowed|tuples are not allowed"),
        ("abs(1, 2)", r"abs\(\) takes 1 argument, got 2"),
        ("min()", r"min\(\) takes at least 1 arguments, got 0"),
        ("round(5, -10**9)", r"round\(\) needs a whole number of digits"),
        ("round(5, 2.5)", r"round\(\) needs a whole number of digits"),
        ("sqrt(-1)", r"sqrt\(\) of a negative number"),
        ("(-8)**0.5", r"\(-8\)\*\*0\.5 has no real result"),
        ("9**9**9", r"exponent too large \(9\*\*387420489 would exceed 1e\+15\)"),
        ("10**10**10", r"exponent too large"),
        ("2**10**15", r"exponent too large"),
        ("10**16", r"exponent too large \(10\*\*16 would exceed 1e\+15\)"),
        ("0.5**-100", r"exponent too large"),
        ("1e15*1e15", r"intermediate result 1e\+30 exceeds the limit of 1e\+15 in magnitude"),
        ("-(10**15)-1", r"intermediate result -1000000000000001 exceeds the limit of 1e\+15"),
        ("1.0000001**1e15", r"exponent too large \(1\.0000001\*\*1e\+15 would exceed"),
        ("999999999999999*999999999999999*999999999999999", r"result 1e\+30 exceeds the limit"),
        ("10000000000000000", r"intermediate result 10000000000000000 exceeds the limit"),
        ("1e400", r"number too large"),
        ("1/0", r"division by zero"),
        ("1//0", r"division by zero"),
        ("1%0.0", r"division by zero"),
        ("0**-1", r"division by zero"),
        ("1 +", r"invalid expression"),
        ("1 = 1", r"invalid expression"),
        ("import os", r"invalid expression"),
        ("1\x002", r"invalid expression"),
        ("", r"empty expression"),
        ("   ", r"empty expression"),
        ("-" * 100 + "1", r"nested too deeply \(more than 60 levels\)"),
        ("1+" * 100 + "1", r"nested too deeply"),
        ("(" * 10000 + "1" + ")" * 10000, r"expression longer than 300 characters"),
        ("1+" * 100000 + "1", r"expression longer than 300 characters \(got 200001\)"),
    ],
)
def test_refused_with_reason(expression: str, reason: str) -> None:
    with pytest.raises(CalculatorError, match=reason):
        calculate(expression)


def test_parentheses_add_no_depth() -> None:
    assert calculate("(" * 140 + "1" + ")" * 140) == 1


def test_limits_are_configurable() -> None:
    assert calculate("10**20", max_abs=1e30) == 10**20
    with pytest.raises(CalculatorError, match="longer than 3 characters"):
        calculate("1+23", max_length=3)
    with pytest.raises(CalculatorError, match="more than 2 levels"):
        calculate("1+2+3", max_depth=2)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expression must be a str, got int"):
        calculate(3)  # type: ignore[arg-type]


_ARITHMETIC_TEXT = st.one_of(
    st.text(alphabet="0123456789+-*/%().e, absroundminmaxsqrt", max_size=60),
    st.lists(
        st.sampled_from(
            ["9", "**", "(", ")", "-", "1e15", "*", "/", "//", "%", "0", "0.5", ".5", "2"]
            + ["round(", "abs(", "sqrt(", "max(", ","]
        ),
        max_size=30,
    ).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=400), _ARITHMETIC_TEXT))
def test_arbitrary_text_raises_only_calculator_error(text: str) -> None:
    try:
        result = calculate(text)
    except CalculatorError:
        return
    assert isinstance(result, int | float) and not isinstance(result, bool)
    assert math.isfinite(result) and abs(result) <= 1e15


def test_number_run_into_a_keyword_is_an_error_without_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CalculatorError):
            calculate("1or 2")  # Python parses it, with a SyntaxWarning
    assert not [w for w in caught if issubclass(w.category, SyntaxWarning)]
