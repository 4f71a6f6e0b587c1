"""A safe arithmetic calculator for agents.

:func:`calculate` evaluates one arithmetic expression written in Python syntax,
such as ``(1987 - 1962) * 2`` or ``round(7 / 3, 2)``, and :func:`format_number`
turns the result into the canonical text an agent observes.

Security model:
    The expression is untrusted text written by a model. It is never handed to
    ``eval``, ``exec`` or ``compile``; it is parsed with ``ast.parse(mode="eval")``
    and the resulting tree is walked by a small evaluator that knows only a
    whitelist of nodes:

    * numeric literals (``int`` and ``float``; not ``bool``, ``complex`` or ``str``);
    * the binary operators ``+ - * / // % **`` and the unary operators ``+ -``;
    * calls, with positional arguments only, to the functions ``abs``, ``round``,
      ``min``, ``max`` and ``sqrt``, referred to by bare name.

    Every other node (names, attributes, subscripts, lambdas, comprehensions,
    comparisons, strings, bit operators, keyword arguments...) is refused with a
    :class:`CalculatorError` naming what was refused. Names are only ever compared
    against the whitelist, never looked up, so no Python object is reachable.

Resource limits:
    * The length of the text is checked before parsing, so pathological input
      (``"(" * 10000``) never reaches the parser.
    * The depth of the syntax tree is bounded by ``max_depth`` while walking it.
    * Every literal and every intermediate result must be finite and at most
      ``max_abs`` in magnitude, so integer arithmetic stays on small numbers.
    * A power is bounded *before* it is computed, from an estimate of the base-10
      logarithm of its result: ``9**9**9`` is refused instantly.
    * ``round`` accepts at most :data:`MAX_NDIGITS` digits either way, since
      rounding an integer to ``-10**15`` digits would compute ``10**(10**15)``.

Any failure (syntax error, division by zero, overflow, a refused construct) is
raised as :class:`CalculatorError`, whose message is written to be shown to the
agent that wrote the expression.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable

__all__ = ["CalculatorError", "MAX_NDIGITS", "calculate", "format_number"]

MAX_NDIGITS = 15
"""Largest number of digits (either sign) accepted by ``round(x, ndigits)``."""

Number = int | float

_BINARY_OPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}

_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Name: "names are",
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts are",
    ast.Slice: "slices are",
    ast.Lambda: "lambdas are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are",
    ast.Compare: "comparisons are",
    ast.BoolOp: "boolean operators are",
    ast.IfExp: "conditional expressions are",
    ast.NamedExpr: "assignments are",
    ast.JoinedStr: "strings are",
    ast.FormattedValue: "strings are",
    ast.Tuple: "tuples are",
    ast.List: "lists are",
    ast.Set: "sets are",
    ast.Dict: "dicts are",
    ast.Starred: "starred arguments are",
    ast.Await: "await is",
    ast.Yield: "yield is",
    ast.YieldFrom: "yield is",
}


class CalculatorError(ValueError):
    """The expression was refused or could not be evaluated.

    The message says what was wrong and is meant to be shown to the agent.
    """


def _fmt_limit(value: float) -> str:
    return f"{value:g}"


def _fmt_value(value: Number) -> str:
    """Writes a value for an error message, exactly where that stays short."""
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 24 else f"{value:.6g}"
    return f"{value:.10g}"


def _fmt_operand(value: Number) -> str:
    text = _fmt_value(value)
    return f"({text})" if value < 0 else text


class _Evaluator:
    """Walks a parsed expression; one instance per call to :func:`calculate`."""

    def __init__(self, max_abs: float, max_depth: int) -> None:
        self.max_abs = max_abs
        self.max_depth = max_depth
        self.functions: dict[str, Callable[[list[Number]], Number]] = {
            "abs": self._abs,
            "max": self._max,
            "min": self._min,
            "round": self._round,
            "sqrt": self._sqrt,
        }

    def check(self, value: Number) -> Number:
        """Refuses non-finite values and values larger than ``max_abs``."""
        if isinstance(value, float) and math.isnan(value):
            raise CalculatorError("refused: the result is not a number (nan)")
        if isinstance(value, float) and math.isinf(value):
            raise CalculatorError(f"refused: number too large (exceeds {_fmt_limit(self.max_abs)})")
        if abs(value) > self.max_abs:
            raise CalculatorError(
                f"refused: intermediate result {_fmt_value(value)} exceeds the limit of "
                f"{_fmt_limit(self.max_abs)} in magnitude"
            )
        return value

    def eval(self, node: ast.AST, depth: int) -> Number:
        if depth > self.max_depth:
            raise CalculatorError(
                f"refused: expression nested too deeply (more than {self.max_depth} levels)"
            )
        if isinstance(node, ast.Expression):
            return self.eval(node.body, depth + 1)
        if isinstance(node, ast.Constant):
            return self._constant(node.value)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self._binary(node, depth)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise CalculatorError(_describe_refused(node))

    def _constant(self, value: object) -> Number:
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "strings" if isinstance(value, str | bytes) else f"{type(value).__name__} values"
            raise CalculatorError(f"refused: {kind} are not allowed ({value!r:.40})")
        return self.check(value)

    def _unary(self, node: ast.UnaryOp, depth: int) -> Number:
        if isinstance(node.op, ast.USub):
            return -self.eval(node.operand, depth + 1)
        if isinstance(node.op, ast.UAdd):
            return +self.eval(node.operand, depth + 1)
        symbol = {ast.Not: "not", ast.Invert: "~"}.get(type(node.op), type(node.op).__name__)
        raise CalculatorError(f"refused: operator '{symbol}' is not allowed (allowed: + -)")

    def _binary(self, node: ast.BinOp, depth: int) -> Number:
        symbol = _BINARY_OPS.get(type(node.op))
        if symbol is None:
            raise CalculatorError(
                f"refused: operator {type(node.op).__name__} is not allowed "
                f"(allowed: {' '.join(_BINARY_OPS.values())})"
            )
        left = self.eval(node.left, depth + 1)
        right = self.eval(node.right, depth + 1)
        if symbol == "**":
            return self._power(left, right)
        if symbol in ("/", "//", "%") and right == 0:
            raise CalculatorError("division by zero")
        if symbol == "+":
            result = left + right
        elif symbol == "-":
            result = left - right
        elif symbol == "*":
            result = left * right
        elif symbol == "/":
            result = left / right
        elif symbol == "//":
            result = left // right
        else:
            result = left % right
        return self.check(result)

    def _power(self, base: Number, exponent: Number) -> Number:
        if base == 0:
            if exponent < 0:
                raise CalculatorError("division by zero (0 raised to a negative power)")
            return self.check(base**exponent)
        if base < 0 and not float(exponent).is_integer():
            raise CalculatorError(
                f"refused: {_fmt_operand(base)}**{_fmt_operand(exponent)} has no real result "
                "(negative base with a fractional exponent)"
            )
        too_large = (
            f"refused: exponent too large ({_fmt_operand(base)}**{_fmt_operand(exponent)} "
            f"would exceed {_fmt_limit(self.max_abs)})"
        )
        # Estimate log10 of the result first; the slack admits results that land
        # just above the bound, which the exact check below then refuses.
        if exponent * math.log10(abs(base)) > math.log10(self.max_abs) + 1.0:
            raise CalculatorError(too_large)
        result = base**exponent
        if isinstance(result, complex):  # guarded above; kept as an invariant
            raise CalculatorError("refused: the result is not a real number")
        if abs(result) > self.max_abs:
            raise CalculatorError(too_large)
        return self.check(result)

    def _call(self, node: ast.Call, depth: int) -> Number:
        allowed = ", ".join(sorted(self.functions))
        if not isinstance(node.func, ast.Name):
            raise CalculatorError(_describe_refused(node.func))
        function = self.functions.get(node.func.id)
        if function is None:
            raise CalculatorError(
                f"refused: function '{node.func.id}' is not allowed (allowed: {allowed})"
            )
        if node.keywords:
            raise CalculatorError(f"refused: keyword arguments are not allowed in {node.func.id}()")
        args = [self.eval(arg, depth + 1) for arg in node.args]
        return self.check(function(args))

    @staticmethod
    def _arity(name: str, args: list[Number], low: int, high: int | None) -> None:
        if len(args) < low or (high is not None and len(args) > high):
            if high is None:
                expected = f"at least {low}"
            else:
                expected = str(low) if low == high else f"{low} or {high}"
            noun = "argument" if expected == "1" else "arguments"
            raise CalculatorError(f"{name}() takes {expected} {noun}, got {len(args)}")

    def _abs(self, args: list[Number]) -> Number:
        self._arity("abs", args, 1, 1)
        return abs(args[0])

    def _min(self, args: list[Number]) -> Number:
        self._arity("min", args, 1, None)
        return min(args)

    def _max(self, args: list[Number]) -> Number:
        self._arity("max", args, 1, None)
        return max(args)

    def _round(self, args: list[Number]) -> Number:
        self._arity("round", args, 1, 2)
        if len(args) == 1:
            return round(args[0])
        ndigits = args[1]
        if not isinstance(ndigits, int) or abs(ndigits) > MAX_NDIGITS:
            raise CalculatorError(
                f"round() needs a whole number of digits between -{MAX_NDIGITS} and "
                f"{MAX_NDIGITS}, got {_fmt_operand(ndigits)}"
            )
        return round(args[0], ndigits)

    def _sqrt(self, args: list[Number]) -> Number:
        self._arity("sqrt", args, 1, 1)
        if args[0] < 0:
            raise CalculatorError(
                f"sqrt() of a negative number has no real result, got {_fmt_operand(args[0])}"
            )
        return math.sqrt(args[0])


def _describe_refused(node: ast.AST) -> str:
    what = _REFUSED_NODES.get(type(node), f"{type(node).__name__} expressions are")
    detail = ""
    if isinstance(node, ast.Name):
        detail = f" ({node.id!r})"
    elif isinstance(node, ast.Attribute):
        detail = f" ('.{node.attr}')"
    return f"refused: {what} not allowed{detail}; write only numbers and + - * / // % **"


def calculate(
    expression: str, *, max_length: int = 300, max_abs: float = 1e15, max_depth: int = 60
) -> int | float:
    """Evaluates an arithmetic expression without executing any code.

    Args:
        expression: Python arithmetic syntax, e.g. ``"(1987 - 1962) * 2"``.
            Surrounding whitespace is ignored. Only numbers, ``+ - * / // % **``,
            parentheses and the functions ``abs``, ``round``, ``min``, ``max``,
            ``sqrt`` are accepted; see the module docstring.
        max_length: Longest accepted expression, in characters, checked before parsing.
        max_abs: Largest magnitude allowed for any literal or intermediate result.
        max_depth: Deepest syntax tree accepted (each operator or call adds a level).

    Returns:
        The value: an ``int`` when all the arithmetic stayed in integers, else a ``float``.

    Raises:
        TypeError: ``expression`` is not a ``str``.
        CalculatorError: The expression was refused or failed to evaluate; the
            message says why and can be shown to the agent.
    """
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression: write an arithmetic expression such as 2+3*4")
    if len(text) > max_length:
        raise CalculatorError(
            f"refused: expression longer than {max_length} characters (got {len(text)})"
        )
    try:
        with warnings.catch_warnings():  # an agent's "2x" is its error, not the process's
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise CalculatorError(f"invalid expression: {reason}") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("refused: expression nested too deeply to parse") from None
    try:
        return _Evaluator(max_abs, max_depth).eval(tree, 0)
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError(
            f"refused: result too large (would exceed {_fmt_limit(max_abs)})"
        ) from None
    except (RecursionError, MemoryError):
        raise CalculatorError("refused: expression nested too deeply to evaluate") from None
    except (ValueError, TypeError) as exc:
        raise CalculatorError(f"could not evaluate expression: {exc}") from None


def format_number(value: int | float) -> str:
    """Writes a number as the canonical text shown to agents.

    Integers, and floats that are whole numbers of magnitude below ``1e15``, are
    written without a decimal point (``"25"``). Other floats are rounded to six
    decimal places with trailing zeros removed (``"0.333333"``, ``"2.5"``); floats
    of magnitude ``1e15`` or more use Python's shortest form (``"1e+20"``).
    Negative numbers start with ``"-"``; negative zero is written ``"0"``.

    Args:
        value: A finite ``int`` or ``float`` (not ``bool``).

    Returns:
        The text, which :func:`calculate` parses back to the same value up to rounding.

    Raises:
        TypeError: ``value`` is not an ``int`` or ``float``, or is a ``bool``.
        ValueError: ``value`` is nan or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"value must be an int or float, got {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"value must be a finite number, got {value}")
    if abs(value) >= 1e15:
        return repr(value)
    if value.is_integer():
        return str(int(value))
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0", "") else text
