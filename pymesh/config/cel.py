"""The subset of CEL (Common Expression Language) Istio's Telemetry API uses: metric
``tagOverrides`` values and access-log ``filter`` expressions.

Compiled once (:func:`compile_cel`), evaluated per request against a mapping of Istio/Envoy
attributes (``request.host``, ``response.code``, ``destination.port``, ``xds.cluster_name``,
``upstream_peer.labels['app'].value`` ...). Supported: string, int, float, bool and null
literals; attribute paths with ``.field`` and ``[key]``; ``!``, unary ``-``; ``* / %``,
``+ -``; comparisons and ``in``; ``&&``, ``||`` (short-circuit, CEL's error absorption for
missing attributes); ``cond ? a : b``; the functions ``string()``, ``int()``, ``double()``,
``size()``, ``has()`` and the methods ``startsWith``, ``endsWith``, ``contains``, ``matches``.
Anything else is refused when compiled, with the position, never evaluated wrongly.

An attribute that is absent makes the expression's value :data:`MISSING`; callers treat
that as Istio does (a tag falls back to ``unknown``, a filter does not match).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pymesh.errors import ValidationError

__all__ = ["MISSING", "CelExpression", "compile_cel"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+\.\d+|\d+)
   |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
   |(?P<op>\|\||&&|==|!=|<=|>=|[<>!?:.,()\[\]+\-*/%])
   |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)
_BINARY = {
    "||": 1, "&&": 2,
    "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "in": 3,
    "+": 4, "-": 4, "*": 5, "/": 5, "%": 5,
}  # fmt: skip
_METHODS = {
    "startsWith": lambda s, a: s.startswith(a),
    "endsWith": lambda s, a: s.endswith(a),
    "contains": lambda s, a: a in s,
    "matches": lambda s, a: re.search(a, s) is not None,
}

Node = Callable[[Mapping[str, Any]], Any]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                rest = text[pos:]
                if rest.strip() == "":
                    break
                pos += len(rest) - len(rest.lstrip())
                raise self.error(f"unexpected character {text[pos]!r}", pos)
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def error(self, message: str, pos: int | None = None) -> ValidationError:
        if pos is None:
            pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        return ValidationError(f"CEL {self.text!r}: {message} at column {pos + 1}")

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, want: str | None = None) -> tuple[str, str, int]:
        if self.i >= len(self.tokens):
            raise self.error(f"expected {want!r}" if want else "unexpected end")
        tok = self.tokens[self.i]
        if want is not None and tok[1] != want:
            raise self.error(f"expected {want!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.ternary()
        if self.i != len(self.tokens):
            raise self.error(f"unexpected {self.tokens[self.i][1]!r}")
        return node

    def ternary(self) -> Node:
        cond = self.binary(1)
        if self.peek() != "?":
            return cond
        self.take("?")
        yes = self.ternary()
        self.take(":")
        no = self.ternary()
        return lambda env: _choose(cond(env), yes, no, env)

    def binary(self, level: int) -> Node:
        left = self.unary()
        while (op := self.peek()) in _BINARY and _BINARY[op] >= level:
            self.take()
            right = self.binary(_BINARY[op] + 1)
            left = _binary(op, left, right)
        return left

    def unary(self) -> Node:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda env: _not(inner(env))
        if self.peek() == "-":
            self.take()
            inner = self.unary()
            return lambda env: _neg(inner(env))
        return self.postfix(self.primary())

    def primary(self) -> Node:
        kind, value, pos = self.take()
        if kind == "num":
            number: Any = float(value) if "." in value else int(value)
            return lambda env: number
        if kind == "str":
            text = bytes(value[1:-1], "utf-8").decode("unicode_escape")
            return lambda env: text
        if value == "(":
            inner = self.ternary()
            self.take(")")
            return inner
        if kind != "name":
            raise self.error(f"unexpected {value!r}", pos)
        constants = {"true": True, "false": False, "null": None}
        if value in constants:
            const = constants[value]
            return lambda env: const
        if self.peek() == "(":
            return self.call(value, pos)
        name = value
        return lambda env: env.get(name, MISSING)

    def call(self, name: str, pos: int) -> Node:
        self.take("(")
        if name == "has":
            arg = self.ternary()
            self.take(")")
            return lambda env: arg(env) is not MISSING
        funcs: dict[str, Callable[[Any], Any]] = {
            "string": _to_string, "int": int, "double": float, "size": len,
        }  # fmt: skip
        if name not in funcs:
            raise self.error(f"function {name}() is not supported", pos)
        fn = funcs[name]
        arg = self.ternary()
        self.take(")")
        return lambda env: _apply(fn, arg(env))

    def postfix(self, node: Node) -> Node:
        while self.peek() in (".", "["):
            if self.take()[1] == "[":
                key = self.ternary()
                self.take("]")
                node = _index(node, key)
                continue
            kind, field, pos = self.take()
            if kind != "name":
                raise self.error(f"expected a field name after '.', got {field!r}", pos)
            if self.peek() == "(":
                if field not in _METHODS:
                    raise self.error(f"method {field}() is not supported", pos)
                self.take("(")
                arg = self.ternary()
                self.take(")")
                node = _method(_METHODS[field], node, arg)
            else:
                node = _field(node, field)
        return node


def _choose(cond: Any, yes: Node, no: Node, env: Mapping[str, Any]) -> Any:
    if cond is MISSING:
        return MISSING
    return yes(env) if cond is True else no(env)


def _not(v: Any) -> Any:
    return MISSING if v is MISSING or not isinstance(v, bool) else not v


def _neg(v: Any) -> Any:
    return -v if isinstance(v, int | float) and not isinstance(v, bool) else MISSING


def _to_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _apply(fn: Callable[[Any], Any], v: Any) -> Any:
    if v is MISSING:
        return MISSING
    try:
        return fn(v)
    except (TypeError, ValueError):
        return MISSING


def _field(node: Node, name: str) -> Node:
    def get(env: Mapping[str, Any]) -> Any:
        base = node(env)
        if isinstance(base, Mapping):
            return base.get(name, MISSING)
        if name == "value" and isinstance(base, str):
            return base  # a peer label read the Struct way: labels['app'].value
        return MISSING

    return get


def _index(node: Node, key: Node) -> Node:
    def get(env: Mapping[str, Any]) -> Any:
        base, k = node(env), key(env)
        if isinstance(base, Mapping):
            if isinstance(k, str):
                # header maps are keyed by lower-case name
                return base.get(k, base.get(k.lower(), MISSING))
            return base.get(k, MISSING)
        if isinstance(base, list | tuple | str) and isinstance(k, int) and 0 <= k < len(base):
            return base[k]
        return MISSING

    return get


def _method(fn: Callable[[str, str], bool], node: Node, arg: Node) -> Node:
    def call(env: Mapping[str, Any]) -> Any:
        s, a = node(env), arg(env)
        if not isinstance(s, str) or not isinstance(a, str):
            return MISSING
        try:
            return fn(s, a)
        except re.error:
            return MISSING

    return call


def _binary(op: str, left: Node, right: Node) -> Node:
    if op == "||":

        def or_(env: Mapping[str, Any]) -> Any:
            a = left(env)
            if a is True:
                return True
            b = right(env)
            if b is True:
                return True
            return MISSING if MISSING in (a, b) else False

        return or_
    if op == "&&":

        def and_(env: Mapping[str, Any]) -> Any:
            a = left(env)
            if a is False:
                return False
            b = right(env)
            if b is False:
                return False
            return MISSING if MISSING in (a, b) else True

        return and_
    compare = _OPERATORS[op]

    def apply(env: Mapping[str, Any]) -> Any:
        a, b = left(env), right(env)
        if a is MISSING or b is MISSING:
            return MISSING
        try:
            return compare(a, b)
        except (TypeError, ZeroDivisionError):
            return MISSING

    return apply


def _same_kind(a: Any, b: Any) -> bool:
    num = (int, float)
    return (isinstance(a, num) and isinstance(b, num)) or type(a) is type(b)


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: _same_kind(a, b) and a == b,
    "!=": lambda a, b: not (_same_kind(a, b) and a == b),
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if isinstance(a, int) and isinstance(b, int) else a / b,
    "%": lambda a, b: a % b,
}


@dataclass(frozen=True, slots=True)
class CelExpression:
    source: str
    _node: Node

    def evaluate(self, attributes: Mapping[str, Any]) -> Any:
        """The value, or :data:`MISSING` when an attribute it reads is absent."""
        return self._node(attributes)

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        """For filters: true only when the expression is the boolean true."""
        return self._node(attributes) is True


def compile_cel(text: str) -> CelExpression:
    """Raises :class:`ValidationError` (with the column) for what the subset cannot run."""
    if not text.strip():
        raise ValidationError("CEL expression is empty")
    return CelExpression(text, _Parser(text).parse())
