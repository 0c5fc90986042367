"""Envoy's ``HeaderMatcher`` and ``QueryParameterMatcher`` semantics over pymesh's header lists.

Headers are ``list[tuple[bytes, bytes]]`` with lower-case names. Several values of one header
are joined with ``,`` before matching (``HeaderUtility::getAllOfHeaderAsString``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.config.model import HeaderMatcher, QueryParameterMatcher

__all__ = [
    "Headers",
    "get_header",
    "header_index",
    "header_matches",
    "headers_match",
    "headers_match_indexed",
    "parse_int",
    "parse_query",
    "query_matches",
    "split_query",
]

Headers = Sequence[tuple[bytes, bytes]]

# absl::SimpleAtoi: optional surrounding ASCII whitespace and one sign.
_INT = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")


def parse_int(value: bytes) -> int | None:
    """Parse an integer the way Envoy's ``absl::SimpleAtoi`` does, or return None."""
    m = _INT.fullmatch(value)
    return int(m.group(1)) if m is not None else None


def get_header(headers: Headers, name: bytes) -> bytes | None:
    """All values of ``name`` joined with ``,``; None when absent."""
    value: bytes | None = None
    for key, v in headers:
        if key == name:
            value = v if value is None else value + b"," + v
    return value


def header_index(headers: Headers) -> dict[bytes, bytes]:
    """A name -> joined value lookup, for callers that evaluate many matchers."""
    index: dict[bytes, bytes] = {}
    for key, v in headers:
        old = index.get(key)
        index[key] = v if old is None else old + b"," + v
    return index


def header_matches(m: HeaderMatcher, value: bytes | None) -> bool:
    """Evaluate one matcher against the (joined) header value, None meaning absent."""
    if value is None:
        if not m.treat_missing_header_as_empty:
            # An absent header matches only ``present_match: false``, or ``present_match:
            # true`` inverted; invert_match never turns an absent header into a match otherwise.
            if m.string_match is not None or m.range_match is not None:
                return False
            present = m.present_match is not False
            return present if m.invert_match else not present
        value = b""
    if m.string_match is not None:
        matched = m.string_match.matches(value)
    elif m.range_match is not None:
        n = parse_int(value)
        matched = n is not None and m.range_match.start <= n < m.range_match.end
    else:
        # No specifier at all is a presence match, as in Envoy.
        matched = m.present_match is not False
    return matched != m.invert_match


def headers_match(matchers: Sequence[HeaderMatcher], headers: Headers) -> bool:
    """True when every matcher matches (an empty sequence matches)."""
    # Plain loops: all() over a generator costs more on this per-request path.
    for m in matchers:  # noqa: SIM110
        if not header_matches(m, get_header(headers, m.name)):
            return False
    return True


def headers_match_indexed(matchers: Sequence[HeaderMatcher], index: dict[bytes, bytes]) -> bool:
    for m in matchers:  # noqa: SIM110
        if not header_matches(m, index.get(m.name)):
            return False
    return True


def split_query(path: bytes) -> tuple[bytes, bytes | None]:
    """``(path, query)`` with the fragment dropped; ``query`` is None when there is no ``?``."""
    hash_pos = path.find(b"#")
    if hash_pos >= 0:
        path = path[:hash_pos]
    q = path.find(b"?")
    if q < 0:
        return path, None
    return path[:q], path[q + 1 :]


def parse_query(query: bytes | None) -> dict[bytes, bytes]:
    """Parameters of a query string, first value winning, not percent-decoded (Envoy's
    ``QueryParamsMulti::parseQueryString`` + ``getFirstValue``)."""
    params: dict[bytes, bytes] = {}
    if not query:
        return params
    for part in query.split(b"&"):
        if not part:
            continue
        name, eq, value = part.partition(b"=")
        if name not in params:
            params[name] = value if eq else b""
    return params


def query_matches(m: QueryParameterMatcher, params: dict[bytes, bytes]) -> bool:
    value = params.get(m.name)
    if value is None:
        return False
    return m.string_match is None or m.string_match.matches(value)
