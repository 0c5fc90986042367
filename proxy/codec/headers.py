"""Header helpers shared by the codec and the proxy: hop-by-hop fields, validation, output.

The codec reports every field it receives, hop-by-hop ones included; the proxy calls
:func:`strip_hop_by_hop` before forwarding. The ``validate_*`` helpers are for headers the mesh
builds itself (route config, filters): received headers have already been checked by the parser,
and on the way out the codec only guards against CR/LF injection, which costs one scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from pymesh.errors import LocalProtocolError

from .events import Headers

__all__ = [
    "HOP_BY_HOP",
    "connection_tokens",
    "has_token",
    "serialise_fields",
    "strip_fields",
    "strip_hop_by_hop",
    "validate_header_name",
    "validate_header_value",
    "validate_headers",
]

# RFC 2616 section 13.5.1's list (Trailer included) without Proxy-Authenticate/-Authorization,
# which Envoy forwards, plus Proxy-Connection, which RFC 9110 section 7.6.1 also names.
HOP_BY_HOP: Final[frozenset[bytes]] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"trailer",
    }
)

# tchar (RFC 9110 section 5.6.2), lower-case only: the Headers contract is lower-case names.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
# field-value: visible ASCII, SP, HT and obs-text, no whitespace at either end.
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")


def has_token(value: bytes, token: bytes) -> bool:
    """Whether the comma-separated list ``value`` holds ``token`` (lower-case), ignoring case."""
    return any(part.strip(b" \t").lower() == token for part in value.split(b","))


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-case options named by every Connection field of ``headers``."""
    tokens = [
        part.strip(b" \t").lower()
        for name, value in headers
        if name == b"connection"
        for part in value.split(b",")
    ]
    return frozenset(token for token in tokens if token)


def strip_hop_by_hop(headers: Headers) -> Headers:
    """A new list without the hop-by-hop fields and without any field Connection names, for a
    request: ``te`` naming ``trailers`` is kept as ``te: trailers`` (Envoy's TE sanitising,
    which gRPC servers rely on to know the client reads trailers)."""
    kept = strip_fields(headers, HOP_BY_HOP)
    if len(kept) != len(headers):
        for name, value in headers:
            if name == b"te":
                if b"trailers" in value.lower():
                    kept.append((b"te", b"trailers"))
                break
    return kept


def strip_fields(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """A new list without the ``drop`` fields (a superset of :data:`HOP_BY_HOP`) and without
    any field Connection names."""
    # Runs on every request and response: one comprehension in the common case. Only when a
    # Connection field names something beyond the fixed set ("close", a custom option) are
    # its tokens parsed; the usual "keep-alive" names a field that is already dropped.
    kept = [header for header in headers if header[0] not in drop]
    if len(kept) == len(headers):
        return kept  # no Connection field either
    for name, value in headers:
        if name == b"connection" and value not in drop:
            extra = connection_tokens(headers) - drop
            if extra:
                kept = [header for header in kept if header[0] not in extra]
            break
    return kept


def validate_header_name(name: bytes) -> None:
    """Raise LocalProtocolError unless ``name`` is a lower-case field-name token."""
    if _NAME.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}")


def validate_header_value(value: bytes) -> None:
    """Raise LocalProtocolError if ``value`` holds control bytes or surrounding whitespace."""
    if _VALUE.fullmatch(value) is None:
        raise LocalProtocolError(f"invalid header value {value!r}")


def validate_headers(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Validate every name and value, for headers that did not come through the parser."""
    for name, value in headers:
        validate_header_name(name)
        validate_header_value(value)


_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION = 1, 2, 3
_OUTGOING_SPECIAL: Final[Mapping[bytes, int]] = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}


def serialise_fields(
    parts: list[bytes], headers: Iterable[tuple[bytes, bytes]]
) -> tuple[bytes | None, bool | None]:
    """Append ``name: value CRLF`` to ``parts`` for each field, always as four parts (the
    codec's injection check counts lines from the number of parts).

    Transfer-Encoding is left out: the codec owns body framing and adds it itself. Returns the
    content-length value (None without one) and, without a Connection field None, else whether
    it asks to close.
    """
    length: bytes | None = None
    close: bool | None = None
    for name, value in headers:
        kind = _OUTGOING_SPECIAL.get(name)
        if kind is not None:
            if kind == _TRANSFER_ENCODING:
                continue
            if kind == _CONTENT_LENGTH:
                if length is not None:
                    if length != value:
                        raise LocalProtocolError("conflicting content-length fields")
                    continue  # one copy is enough, and strict peers reject two
                length = value
            else:
                close = bool(close) or has_token(value, b"close")
        parts += (name, b": ", value, b"\r\n")
    return length, close
