"""Envoy's ``tls_inspector`` listener filter, sans-I/O: from the first bytes a client sends,
whether it speaks TLS and, if so, the server name and ALPN protocols of its ClientHello.

Feed the bytes received so far to :func:`inspect`; it answers :data:`NEED_DATA` until it can
decide. Nothing is consumed: the caller hands the same bytes to the chain it then picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_CLIENT_HELLO", "NEED_DATA", "Inspection", "inspect"]

#: Envoy's inspector gives up on ClientHellos larger than this (and treats them as TLS).
MAX_CLIENT_HELLO: Final = 64 * 1024

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0
_ALPN = 16


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Inspection:
    """``transport_protocol`` is ``tls`` or ``raw_buffer`` (Envoy's names)."""

    transport_protocol: str
    server_name: str | None = None
    alpn: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.transport_protocol == "tls"


RAW = Inspection("raw_buffer")
_TLS_UNPARSED = Inspection("tls")


def inspect(data: bytes) -> Inspection | _NeedData:
    if not data:
        return NEED_DATA
    # A TLS record starts with the handshake content type and major version 3.
    if data[0] != _HANDSHAKE:
        return RAW
    if len(data) < 2:
        return NEED_DATA
    if data[1] != 0x03:
        return RAW
    if len(data) < 6:
        return NEED_DATA
    if data[5] != _CLIENT_HELLO:
        return RAW
    # The ClientHello may span records; its own length says how much to gather.
    body = _handshake_bytes(data)
    if body is None:
        return _TLS_UNPARSED if len(data) >= MAX_CLIENT_HELLO else NEED_DATA
    if len(body) < 4:
        return NEED_DATA
    length = int.from_bytes(body[1:4], "big")
    if len(body) < 4 + length:
        return _TLS_UNPARSED if len(data) >= MAX_CLIENT_HELLO else NEED_DATA
    try:
        return _client_hello(body[4 : 4 + length])
    except (IndexError, ValueError):
        return _TLS_UNPARSED


def _handshake_bytes(data: bytes) -> bytes | None:
    """The handshake bytes of the complete records in ``data`` (None before the first one
    has arrived)."""
    out = bytearray()
    at = 0
    while at + 5 <= len(data):
        if data[at] != _HANDSHAKE:
            break
        size = int.from_bytes(data[at + 3 : at + 5], "big")
        if at + 5 + size > len(data):
            break
        out += data[at + 5 : at + 5 + size]
        at += 5 + size
    return bytes(out) if at else None


def _client_hello(hello: bytes) -> Inspection:
    at = 2 + 32  # client_version, random
    at += 1 + hello[at]  # session_id
    at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher_suites
    at += 1 + hello[at]  # compression_methods
    if at >= len(hello):
        return _TLS_UNPARSED  # no extensions
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 2
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    while at + 4 <= end:
        kind = int.from_bytes(hello[at : at + 2], "big")
        size = int.from_bytes(hello[at + 2 : at + 4], "big")
        ext = hello[at + 4 : at + 4 + size]
        at += 4 + size
        if kind == _SERVER_NAME:
            server_name = _server_name(ext)
        elif kind == _ALPN:
            alpn = _alpn(ext)
    return Inspection("tls", server_name, alpn)


def _server_name(ext: bytes) -> str | None:
    at = 2
    end = 2 + int.from_bytes(ext[0:2], "big")
    while at + 3 <= end:
        kind = ext[at]
        size = int.from_bytes(ext[at + 1 : at + 3], "big")
        if kind == 0:  # host_name
            return ext[at + 3 : at + 3 + size].decode("ascii").lower()
        at += 3 + size
    return None


def _alpn(ext: bytes) -> tuple[str, ...]:
    names = []
    at = 2
    end = 2 + int.from_bytes(ext[0:2], "big")
    while at < end:
        size = ext[at]
        names.append(ext[at + 1 : at + 1 + size].decode("ascii"))
        at += 1 + size
    return tuple(names)
