"""Events and error codes of the sans-I/O HTTP/2 codec.

Events are ``NamedTuple`` values, as the HTTP/1.1 codec's are (a proxied request makes several
and a tuple is the cheapest immutable value). Stream events carry ``stream_id`` first. Header
lists are lower-case ``(name, value)`` bytes pairs without pseudo-header fields: a request's
pseudo-headers are fields of its event, a response's ``:status`` is an ``int``. Cookie crumbs
are joined into one ``cookie`` field (RFC 9113 section 8.2.3), as Envoy's codec does, so the
rest of the proxy sees one field as it would from HTTP/1.1.

Every ``H2Data`` a connection hands out must be handed back through ``consumed()`` once the
proxy has passed the bytes on (or dropped them): that is what reopens the peer's flow-control
window, so a slow reader slows its writer down instead of filling the proxy's memory.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, TypeAlias

from pymesh.errors import RemoteProtocolError

from .events import Headers

__all__ = [
    "ErrorCode",
    "H2ConnectionClosed",
    "H2ConnectionError",
    "H2Data",
    "H2Event",
    "H2GoAway",
    "H2Informational",
    "H2PingAck",
    "H2RemoteSettings",
    "H2Request",
    "H2Response",
    "H2StreamReset",
    "H2Trailers",
    "H2WindowOpen",
]


class ErrorCode(enum.IntEnum):
    """RST_STREAM and GOAWAY error codes (RFC 9113 section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2ConnectionError(RemoteProtocolError):
    """The peer broke HTTP/2 at the connection level; the connection is finished.

    ``error_code`` is what the GOAWAY carries; the GOAWAY itself (when one can be sent) is
    already waiting in ``data_to_send()``: flush it, then close the transport."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message, 400)
        self.error_code = error_code


class H2Request(NamedTuple):
    """A request head (server role). ``protocol`` is ``:protocol`` of an extended CONNECT
    (RFC 8441); ``authority`` is None when the client sent only a ``host`` field."""

    stream_id: int
    method: bytes
    scheme: bytes | None
    authority: bytes | None
    path: bytes | None
    protocol: bytes | None
    headers: Headers
    end_stream: bool


class H2Response(NamedTuple):
    """A final response head (client role)."""

    stream_id: int
    status: int
    headers: Headers
    end_stream: bool


class H2Informational(NamedTuple):
    """An interim 1xx response (client role)."""

    stream_id: int
    status: int
    headers: Headers


class H2Data(NamedTuple):
    """Body bytes of a stream; ``end_stream`` ends the peer's side of it."""

    stream_id: int
    data: bytes
    end_stream: bool


class H2Trailers(NamedTuple):
    """A trailer section; it always ends the peer's side of the stream."""

    stream_id: int
    headers: Headers


class H2StreamReset(NamedTuple):
    """The stream is gone. ``remote`` is True when the peer reset it (RST_STREAM, or GOAWAY
    refusing a stream the peer never processed: ``REFUSED_STREAM``), False when the codec did
    because the peer broke the protocol on that stream. A reset the proxy asked for with
    ``reset_stream()`` is not reported back."""

    stream_id: int
    error_code: int
    remote: bool


class H2WindowOpen(NamedTuple):
    """The peer opened its flow-control window: data queued for ``stream_id`` (0: every
    stream) can move again, so a sender paused on ``queued()`` may resume."""

    stream_id: int


class H2RemoteSettings(NamedTuple):
    """The peer's settings changed (its first SETTINGS frame, or a later one)."""

    max_concurrent_streams: int
    initial_window_size: int
    enable_connect_protocol: bool


class H2PingAck(NamedTuple):
    """The answer to our PING with this payload (keepalive)."""

    opaque: bytes


class H2GoAway(NamedTuple):
    """The peer will process no stream above ``last_stream_id``; streams above it that we
    opened are reported as ``REFUSED_STREAM`` resets (safe to retry elsewhere)."""

    last_stream_id: int
    error_code: int
    debug: bytes


class H2ConnectionClosed(NamedTuple):
    """Both sides are done with the connection (after a GOAWAY and its last stream): the
    transport closes once ``data_to_send()`` is flushed."""

    error_code: int


H2Event: TypeAlias = (
    H2Request
    | H2Response
    | H2Informational
    | H2Data
    | H2Trailers
    | H2StreamReset
    | H2WindowOpen
    | H2RemoteSettings
    | H2PingAck
    | H2GoAway
    | H2ConnectionClosed
)
