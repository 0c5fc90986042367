"""RE2 → Python regex conversion keeps Envoy's verdicts and semantics."""

from __future__ import annotations

import re

import pytest

from proxy.config.translate.regex import compile_regex, re2_substitution
from pymesh.errors import UnsupportedError, ValidationError


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("/api/v[0-9]+/.*", b"/api/v12/users", True),
        ("[[:digit:]]+", b"123", True),
        ("[[:alpha:]_]+", b"ab_c", True),
        ("[[:alpha:]]+", b"ab1", False),
        ("abc\\z", b"abc", True),
        ("[]a]+", b"]a", True),
        ("(?i)abc", b"ABC", True),
        ("caf\u00e9", "caf\u00e9".encode(), True),
    ],
)
def test_compile_and_fullmatch(pattern: str, subject: bytes, matches: bool) -> None:
    assert (compile_regex(pattern, "p").fullmatch(subject) is not None) is matches


@pytest.mark.parametrize("pattern", ["a(?=b)", "a(?!b)", "(?<=a)b", "(?<!a)b", "(a)\\1", "a\\Z"])
def test_re2_refusals(pattern: str) -> None:
    with pytest.raises(ValidationError) as caught:
        compile_regex(pattern, "match.safe_regex.regex")
    assert caught.value.path == "match.safe_regex.regex"


def test_unicode_classes_are_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        compile_regex("\\pL+", "p")


def test_broken_regex_is_invalid() -> None:
    with pytest.raises(ValidationError, match="invalid regex"):
        compile_regex("(unclosed", "p")


@pytest.mark.parametrize(
    ("substitution", "expected"),
    [
        ("/r/\\1", b"/r/42"),
        ("\\0!", b"/reviews/42!"),
        ("a\\\\b", b"a\\b"),
        ("no escapes", b"no escapes"),
    ],
)
def test_re2_substitution(substitution: str, expected: bytes) -> None:
    pattern = re.compile(rb"^/reviews/([0-9]+)$")
    assert pattern.sub(re2_substitution(substitution, 1, "s"), b"/reviews/42") == expected


@pytest.mark.parametrize("substitution", ["literal\\n", "\\2", "trailing\\"])
def test_rewrites_re2_fails_at_run_time_are_unsupported(substitution: str) -> None:
    with pytest.raises(UnsupportedError) as caught:
        re2_substitution(substitution, 1, "regex_rewrite.substitution")
    assert caught.value.path == "regex_rewrite.substitution"
