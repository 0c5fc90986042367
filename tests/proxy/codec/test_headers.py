"""Hop-by-hop stripping and header validation helpers."""

from __future__ import annotations

import pytest

from proxy.codec.headers import (
    HOP_BY_HOP,
    connection_tokens,
    has_token,
    strip_hop_by_hop,
    validate_header_name,
    validate_header_value,
    validate_headers,
)
from pymesh.errors import LocalProtocolError


def test_hop_by_hop_set() -> None:
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"trailer",
    } == HOP_BY_HOP


def test_strip_hop_by_hop() -> None:
    headers = [
        (b"host", b"a"),
        (b"connection", b"keep-alive, X-Secret ,Upgrade"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"te", b"trailers"),
        (b"trailer", b"grpc-status"),
        (b"transfer-encoding", b"chunked"),
        (b"proxy-connection", b"close"),
        (b"upgrade", b"h2c"),
        (b"x-kept", b"2"),
    ]
    # te naming trailers survives, sanitised, as Envoy keeps it for gRPC servers.
    assert strip_hop_by_hop(headers) == [(b"host", b"a"), (b"x-kept", b"2"), (b"te", b"trailers")]
    assert len(headers) == 10  # a new list


def test_strip_without_connection_field_uses_the_fixed_set() -> None:
    headers = [(b"x-secret", b"1"), (b"te", b"gzip, Trailers")]
    assert strip_hop_by_hop(headers) == [(b"x-secret", b"1"), (b"te", b"trailers")]
    assert strip_hop_by_hop([(b"te", b"gzip"), (b"a", b"1")]) == [(b"a", b"1")]


def test_tokens() -> None:
    assert has_token(b"Keep-Alive, CLOSE", b"close")
    assert not has_token(b"closed", b"close")
    assert connection_tokens([(b"connection", b"a, ,B"), (b"connection", b"c")]) == {
        b"a",
        b"b",
        b"c",
    }


@pytest.mark.parametrize("name", [b"x-ok", b"a", b"!#$%&'*+-.^_`|~09"])
def test_valid_names(name: bytes) -> None:
    validate_header_name(name)


@pytest.mark.parametrize("name", [b"", b"X-Upper", b"a b", b"a:b", b"a\r\n", b"caf\xc3\xa9"])
def test_invalid_names(name: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        validate_header_name(name)


@pytest.mark.parametrize("value", [b"", b"v", b"a b\tc", b"caf\xc3\xa9", b"x" * 1000])
def test_valid_values(value: bytes) -> None:
    validate_header_value(value)


@pytest.mark.parametrize(
    "value", [b" v", b"v\t", b"a\r\nb", b"a\nb", b"a\x00b", b"a\x7fb", b"\x01"]
)
def test_invalid_values(value: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        validate_header_value(value)


def test_validate_headers() -> None:
    validate_headers([(b"a", b"b")])
    with pytest.raises(LocalProtocolError):
        validate_headers([(b"a", b"b"), (b"c", b"d\n")])
