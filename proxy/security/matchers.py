"""Envoy's value and metadata matchers (``type.matcher.v3.ValueMatcher`` / ``MetadataMatcher``)
and its ``uri_template`` path matcher, over plain Python values.

Dynamic metadata is ``Mapping[filter name, Mapping[str, value]]`` where a value is what a
``google.protobuf.Value`` holds: str, float (every number), bool, None, list or dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.config.model_common import StringMatcher

__all__ = [
    "DynamicMetadata",
    "MetadataMatcher",
    "UriTemplate",
    "ValueMatcher",
    "compile_uri_template",
    "metadata_value",
]

DynamicMetadata = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ValueMatcher:
    """One of Envoy's ValueMatcher patterns; ``kind`` names it.

    ``null``: the value is null; ``double``: ``exact`` or ``[start, end)``; ``string``:
    ``string``; ``bool``: ``boolean``; ``present``: the value exists (``boolean`` says whether
    that is wanted); ``list``: a list with one element matching ``inner[0]``; ``or``: any of
    ``inner``.
    """

    kind: str
    string: StringMatcher | None = None
    exact: float | None = None
    start: float | None = None
    end: float | None = None
    boolean: bool = False
    inner: tuple[ValueMatcher, ...] = ()

    def matches(self, value: Any, present: bool = True) -> bool:
        kind = self.kind
        if kind == "present":
            return present == self.boolean
        if not present:
            return False
        if kind == "string":
            assert self.string is not None
            return isinstance(value, str) and self.string.matches(value.encode())
        if kind == "or":
            return any(m.matches(value) for m in self.inner)
        if kind == "list":
            return isinstance(value, list) and any(self.inner[0].matches(v) for v in value)
        if kind == "bool":
            return isinstance(value, bool) and value == self.boolean
        if kind == "null":
            return value is None
        if kind == "double":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if self.exact is not None:
                return float(value) == self.exact
            assert self.start is not None and self.end is not None
            return self.start <= value < self.end
        raise AssertionError(kind)


_MISSING = object()


def metadata_value(metadata: DynamicMetadata, filter_name: str, path: Sequence[str]) -> Any:
    """The value at ``path`` in a filter's metadata, or the ``_MISSING`` sentinel."""
    current: Any = metadata.get(filter_name, _MISSING)
    for key in path:
        if not isinstance(current, Mapping):
            return _MISSING
        current = current.get(key, _MISSING)
    return current


@dataclass(frozen=True, slots=True)
class MetadataMatcher:
    filter: str
    path: tuple[str, ...]
    value: ValueMatcher
    invert: bool = False

    def matches(self, metadata: DynamicMetadata) -> bool:
        found = metadata_value(metadata, self.filter, self.path)
        present = found is not _MISSING
        return self.value.matches(found if present else None, present) != self.invert


# RFC 3986 pchar without "/": what one path segment may hold in Envoy's uri_template.
_PCHAR = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"


@dataclass(frozen=True, slots=True)
class UriTemplate:
    """``envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig``: ``*`` is one
    path segment, ``**`` any number of characters including ``/``; literals match exactly;
    matched against the path without query and fragment."""

    template: str
    regex: re.Pattern[bytes]

    def matches(self, path: bytes) -> bool:
        return self.regex.fullmatch(path) is not None


def compile_uri_template(template: str) -> UriTemplate:
    """Raise ``ValueError`` for what Envoy refuses: no leading ``/``, variables, an operator
    after ``**``, or characters a path segment may not hold."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with /")
    parts: list[str] = []
    seen_any = False
    for token in re.split(r"(\*\*|\*)", template):
        if token in ("*", "**"):
            if seen_any:
                raise ValueError(f"path template {template!r}: ** must be the last operator")
            seen_any = token == "**"
            parts.append(f"(?:{_PCHAR}|/)*" if token == "**" else f"{_PCHAR}+")
        elif token:
            if "{" in token or "}" in token:
                raise ValueError(f"path template {template!r}: variables are not supported")
            if not re.fullmatch(f"(?:{_PCHAR}|/)*", token):
                raise ValueError(f"path template {template!r}: invalid literal {token!r}")
            parts.append(re.escape(token))
    return UriTemplate(template, re.compile("".join(parts).encode()))
