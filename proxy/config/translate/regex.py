"""Envoy regexes are RE2; pymesh compiles them with Python's ``re`` on bytes. The conversion
keeps Envoy's verdict: what RE2 refuses (look-around, back-references) is refused here too."""

from __future__ import annotations

import re
from typing import Any

from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["compile_regex", "re2_substitution", "regex_matcher"]

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


def _re2_to_python(pattern: str, path: str) -> str:
    """Translate the RE2 syntax Envoy accepts into Python ``re`` syntax, and refuse what RE2
    itself refuses (look-around, back-references) so pymesh and Envoy give the same verdict."""
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "z":
                out.append("\\Z")
            elif nxt == "Z":
                raise ValidationError("invalid regex: RE2 does not support \\Z", path=path)
            elif nxt.isdigit() and nxt != "0" and not in_class:
                raise ValidationError(
                    "invalid regex: RE2 does not support back-references", path=path
                )
            elif nxt in "pPC":
                raise UnsupportedError(
                    f"regex escape \\{nxt} (Unicode classes) is not supported by pymesh",
                    path=path,
                )
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if char == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end != -1 else ""
                negated = name.startswith("^")
                if name.lstrip("^") not in _POSIX_CLASSES or negated:
                    raise ValidationError(f"invalid regex: bad POSIX class [:{name}:]", path=path)
                out.append(_POSIX_CLASSES[name])
                i = end + 2
                continue
            if char == "[":
                out.append("\\[")
                i += 1
                continue
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            # a leading ']' (or '^]') is a literal in both syntaxes
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        elif char == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 : i + 4]
            if rest[:1] in ("=", "!") or rest in ("<=", "<!"):
                raise ValidationError("invalid regex: RE2 does not support look-around", path=path)
        out.append(char)
        i += 1
    return "".join(out)


def compile_regex(pattern: str, path: str) -> re.Pattern[bytes]:
    """Compile an Envoy (RE2) regex for matching ``bytes``."""
    try:
        return re.compile(_re2_to_python(pattern, path).encode())
    except re.error as exc:
        raise ValidationError(f"invalid regex {pattern!r}: {exc}", path=path) from None


def regex_matcher(message: Any, path: str) -> re.Pattern[bytes]:
    """A ``type.matcher.v3.RegexMatcher`` (``google_re2`` is Envoy's only engine: accepted)."""
    return compile_regex(message.regex, f"{path}.regex" if path else "regex")


def re2_substitution(substitution: str, groups: int, path: str) -> bytes:
    r"""RE2 rewrite strings know ``\0``-``\9`` and ``\\`` only; turn them into Python's
    ``\g<n>`` form so ``re.sub`` reads nothing else as an escape. Envoy loads a rewrite with
    another escape, or naming a group the pattern lacks, but RE2 then fails it per request:
    pymesh refuses those as unsupported rather than guess that behaviour."""
    out: list[str] = []
    i = 0
    while i < len(substitution):
        char = substitution[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = substitution[i + 1 : i + 2]
        if nxt.isdigit():
            if int(nxt) > groups:
                raise UnsupportedError(
                    f"rewrite uses \\{nxt} but the regex has only {groups} group(s)", path=path
                )
            out.append(f"\\g<{nxt}>")
        elif nxt == "\\":
            out.append("\\\\")
        else:
            raise UnsupportedError(
                f"rewrite {substitution!r} has an escape RE2 rejects (only \\0-\\9 and \\\\)",
                path=path,
            )
        i += 2
    return "".join(out).encode()
