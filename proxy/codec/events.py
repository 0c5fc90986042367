"""Events of the HTTP/1.1 codec: what a connection hands back from ``next_event()``.

Events are values: immutable, compared by field. They are ``typing.NamedTuple`` classes rather
than frozen dataclasses: a proxied request makes about six of them, and a frozen dataclass's
``__init__`` (one ``object.__setattr__`` per field) costs two to four times a tuple's creation.
Events of two different kinds never compare equal (their field counts or types differ); an
event does compare equal to a plain tuple of the same values. Header names are lower-case bytes and
values are bytes as received with surrounding whitespace removed; nothing is decoded to ``str``.
A header list is not copied into the event, so whoever receives the event owns the list.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple, TypeAlias

__all__ = [
    "NEED_DATA",
    "ClientEvent",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Headers",
    "InformationalResponse",
    "NeedData",
    "Request",
    "Response",
    "ServerEvent",
]

Headers: TypeAlias = list[tuple[bytes, bytes]]


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel (an enum, so ``event is NEED_DATA`` narrows)."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    __str__ = __repr__


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by ``next_event()`` when no event can be produced until more bytes arrive (or,
between two exchanges on one connection, until ``start_next_cycle()`` is called)."""


class Request(NamedTuple):
    """A request head. The body follows as :class:`Data` events and one :class:`EndOfMessage`.

    ``content_length`` is the declared body length, or None when the body is chunked or the
    request has none. ``keep_alive`` follows the version and the Connection header (False for
    CONNECT). ``upgrade`` is set for CONNECT and for an upgrade request (``Upgrade`` plus
    ``Connection: upgrade``) other than h2c, which Envoy serves as plain HTTP/1.1. The codec
    never switches protocols: an upgrade request's body and what follows it are parsed as
    HTTP/1.1; after CONNECT the input is ignored.
    """

    method: bytes
    target: bytes
    headers: Headers
    http_version: bytes
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expect_continue: bool
    upgrade: bool


class InformationalResponse(NamedTuple):
    """An interim 1xx response from an upstream (100 Continue, 103 Early Hints, ...)."""

    status: int
    headers: Headers


class Response(NamedTuple):
    """A final response head. ``content_length`` is None when the body is chunked, delimited by
    the end of the connection, or absent (HEAD, 204, 304). ``keep_alive`` says whether the
    response lets the connection carry another exchange; it is False after HEAD (see
    ``ClientConnection``)."""

    status: int
    reason: bytes
    headers: Headers
    http_version: bytes
    keep_alive: bool
    content_length: int | None
    chunked: bool


class Data(NamedTuple):
    """A piece of a message body, with any chunked framing already removed."""

    data: bytes


class _EndOfMessage(NamedTuple):
    trailers: Headers


class EndOfMessage(_EndOfMessage):
    """The current message is complete; ``trailers`` holds the chunked trailer fields."""

    __slots__ = ()

    # A NamedTuple default is one shared object; a fresh list keeps each event's own.
    def __new__(cls, trailers: Headers | None = None) -> EndOfMessage:
        return super().__new__(cls, [] if trailers is None else trailers)


class ConnectionClosed(NamedTuple):
    """The peer closed its side of the connection between two messages."""


ServerEvent: TypeAlias = Request | Data | EndOfMessage | ConnectionClosed
ClientEvent: TypeAlias = InformationalResponse | Response | Data | EndOfMessage | ConnectionClosed
