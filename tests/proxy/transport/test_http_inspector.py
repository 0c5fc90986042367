"""The http_inspector's verdict on a client's first bytes, whole and one byte at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.transport.http_inspector import (
    H2_PREFACE,
    MAX_INSPECT_SIZE,
    NEED_DATA,
    NeedData,
    detect,
)

DECIDED = [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "http/1.1"),
    (b"POST /upload HTTP/1.0\r\n", "http/1.0"),
    (b"HEAD / HTTP/1.1\n", "http/1.1"),
    (b"OPTIONS * HTTP/1.1\r\n", "http/1.1"),
    (b"M-SEARCH * HTTP/1.1\r\n", "http/1.1"),
    # Envoy sets every other HTTP version as http/1.0.
    (b"GET / HTTP/2.0\r\n", "http/1.0"),
    (b"GET /\r\n", "http/1.0"),
    (H2_PREFACE, "h2c"),
    (H2_PREFACE + b"\x00\x00\x12\x04\x00", "h2c"),
    # Not HTTP: the first byte starts no method, ...
    (b"hello\n", None),
    (b"*1\r\n$4\r\nPING\r\n", None),
    (b"\x16\x03\x01\x02\x00", None),
    # ... or the line ends and the method or version is wrong.
    (b"GETS / HTTP/1.1\r\n", None),
    (b"Hello world\n", None),
    (b"GET / HTTX/1.1\r\n", None),
    (b"get / HTTP/1.1\r\n", None),
    (b"PRI * HTTP/2.0\r\n\r\nXX", None),
]


@pytest.mark.parametrize(("data", "expected"), DECIDED)
def test_verdict(data: bytes, expected: str | None) -> None:
    assert detect(data) == expected


@pytest.mark.parametrize(("data", "expected"), DECIDED)
def test_byte_at_a_time_waits_then_agrees(data: bytes, expected: str | None) -> None:
    """Every prefix before the verdict asks for more; the verdict, once given, holds."""
    verdicts = [detect(data[: i + 1]) for i in range(len(data))]
    first = next(i for i, v in enumerate(verdicts) if not isinstance(v, NeedData))
    assert all(v is NEED_DATA for v in verdicts[:first])
    assert all(v == expected for v in verdicts[first:])
    assert detect(b"") is NEED_DATA


def test_unfinished_request_line_gives_up_at_the_peek_size() -> None:
    line = b"GET /" + b"a" * (MAX_INSPECT_SIZE - 6)
    assert detect(line) is NEED_DATA
    assert detect(line + b"a") is None


@given(st.binary(min_size=1, max_size=64))
def test_any_bytes_get_a_verdict_or_wait(data: bytes) -> None:
    verdict = detect(data)
    assert verdict in (NEED_DATA, None, "h2c", "http/1.0", "http/1.1")
    if not isinstance(verdict, NeedData):
        assert detect(data + b"\r\nmore") == verdict
