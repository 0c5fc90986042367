"""The part of kubectl's ``-o jsonpath=TEMPLATE`` that scripts use: literal text with
``{.field.sub[0].name}``, ``[*]`` to take every element, and ``{"\\n"}`` literals, e.g.
``-o 'jsonpath={.items[0].metadata.name}'`` as Istio's tasks write it."""

from __future__ import annotations

import json
import re
from typing import Any

from pymesh.errors import ValidationError

__all__ = ["render"]

_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\*|-?\d+)\]|\['([^']*)'\]")


def _walk(values: list[Any], expression: str) -> list[Any]:
    pos = 0
    if expression.startswith("$"):
        pos = 1
    if expression in ("", ".", "$"):
        return values
    while pos < len(expression):
        m = _STEP.match(expression, pos)
        if m is None:
            raise ValidationError(f"jsonpath: cannot parse {expression!r} at {expression[pos:]!r}")
        field, index = m.group(1) or m.group(3), m.group(2)
        out: list[Any] = []
        for value in values:
            if field is not None and isinstance(value, dict) and field in value:
                out.append(value[field])
            elif index == "*" and isinstance(value, list):
                out.extend(value)
            elif index is not None and index != "*" and isinstance(value, list):
                i = int(index)
                if -len(value) <= i < len(value):
                    out.append(value[i])
                else:
                    raise ValidationError(f"jsonpath: array index out of bounds: {index}")
        values, pos = out, m.end()
    return values


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render(template: str, document: Any) -> str:
    """``template`` with each ``{...}`` replaced by what it selects, space-separated."""
    out, pos = [], 0
    for m in re.finditer(r"\{([^{}]*)\}", template):
        out.append(template[pos : m.start()])
        inner = m.group(1).strip()
        if len(inner) >= 2 and inner[0] == inner[-1] == '"':
            out.append(json.loads(inner))
        else:
            out.append(" ".join(_text(v) for v in _walk([document], inner)))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)
