import re

import pytest

from proxy.config.model import (
    HeaderMatcher,
    Int64Range,
    QueryParameterMatcher,
    StringMatcher,
    StringMatchKind,
)
from proxy.routing.header_match import (
    get_header,
    header_matches,
    headers_match,
    parse_int,
    parse_query,
    query_matches,
    split_query,
)


def exact(v: bytes) -> StringMatcher:
    return StringMatcher(StringMatchKind.EXACT, v)


# (matcher, header value or None for absent, expected)
CASES = [
    # Envoy: no specifier means "present"
    (HeaderMatcher(b"x", present_match=True), b"a", True),
    (HeaderMatcher(b"x", present_match=True), None, False),
    (HeaderMatcher(b"x", present_match=False), None, True),
    (HeaderMatcher(b"x", present_match=False), b"a", False),
    # present + invert: matches only an absent header
    (HeaderMatcher(b"x", present_match=True, invert_match=True), None, True),
    (HeaderMatcher(b"x", present_match=True, invert_match=True), b"a", False),
    (HeaderMatcher(b"x", present_match=False, invert_match=True), None, False),
    (HeaderMatcher(b"x", string_match=exact(b"a")), b"a", True),
    (HeaderMatcher(b"x", string_match=exact(b"a")), b"b", False),
    (HeaderMatcher(b"x", string_match=exact(b"a"), invert_match=True), b"b", True),
    # invert never turns an absent header into a match
    (HeaderMatcher(b"x", string_match=exact(b"a"), invert_match=True), None, False),
    (HeaderMatcher(b"x", string_match=exact(b""), treat_missing_header_as_empty=True), None, True),
    (
        HeaderMatcher(
            b"x",
            string_match=StringMatcher(StringMatchKind.REGEX, b"", regex=re.compile(rb"\d+")),
        ),
        b"123",
        True,
    ),
    (
        HeaderMatcher(
            b"x",
            string_match=StringMatcher(StringMatchKind.REGEX, b"", regex=re.compile(rb"\d+")),
        ),
        b"123a",
        False,
    ),
    (HeaderMatcher(b"x", range_match=Int64Range(-10, 10)), b"-10", True),
    (HeaderMatcher(b"x", range_match=Int64Range(-10, 10)), b"10", False),
    (HeaderMatcher(b"x", range_match=Int64Range(-10, 10)), b" 5 ", True),
    (HeaderMatcher(b"x", range_match=Int64Range(-10, 10)), b"5a", False),
    (HeaderMatcher(b"x", range_match=Int64Range(-10, 10)), b"1_0", False),
    (
        HeaderMatcher(b"x", string_match=StringMatcher(StringMatchKind.PREFIX, b"ab", True)),
        b"ABc",
        True,
    ),
]


@pytest.mark.parametrize(("matcher", "value", "expected"), CASES)
def test_header_matcher_table(matcher, value, expected):
    assert header_matches(matcher, value) is expected


def test_repeated_headers_are_joined_with_commas():
    headers = [(b"x", b"a"), (b"y", b"z"), (b"x", b"b")]
    assert get_header(headers, b"x") == b"a,b"
    assert headers_match([HeaderMatcher(b"x", string_match=exact(b"a,b"))], headers)
    assert not headers_match([HeaderMatcher(b"x", string_match=exact(b"a"))], headers)
    assert headers_match([], headers)


def test_parse_int_like_simple_atoi():
    assert parse_int(b"42") == 42
    assert parse_int(b"+7") == 7
    assert parse_int(b"-3") == -3
    assert parse_int(b"") is None
    assert parse_int(b"4 2") is None


def test_query_parsing_first_value_wins_and_is_not_decoded():
    assert split_query(b"/a/b?x=1&y#frag") == (b"/a/b", b"x=1&y")
    assert split_query(b"/a#f?x") == (b"/a", None)
    params = parse_query(b"x=1&x=2&y&z=a%20b&&")
    assert params == {b"x": b"1", b"y": b"", b"z": b"a%20b"}
    assert query_matches(QueryParameterMatcher(b"y"), params)
    assert not query_matches(QueryParameterMatcher(b"w"), params)
    assert query_matches(QueryParameterMatcher(b"x", exact(b"1")), params)
    assert not query_matches(QueryParameterMatcher(b"x", exact(b"2")), params)


def test_matcher_without_specifier_is_a_presence_match():
    assert header_matches(HeaderMatcher(b"x"), b"v")
    assert not header_matches(HeaderMatcher(b"x"), None)
    assert header_matches(HeaderMatcher(b"x", invert_match=True), None)
