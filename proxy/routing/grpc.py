"""gRPC decisions as Envoy makes them: pure functions, no I/O.

* which requests are gRPC (``Grpc::Common::isGrpcRequestHeaders``);
* ``grpc-timeout`` parsing and formatting (``getGrpcTimeout`` / ``toGrpcTimeout``) and the
  stream duration it gives under a route's ``max_stream_duration`` (``grpc_timeout_header_max``
  caps it, ``grpc_timeout_header_offset`` shortens it: the HTTP connection manager's
  ``refreshDurationTimeout``);
* the gRPC status of a response (trailers, then headers, then the HTTP status mapped with
  gRPC's HTTP-to-status table), for ``%GRPC_STATUS%`` and Istio's ``grpc_response_status``;
* local replies to a gRPC caller: a trailers-only response (``:status`` 200,
  ``content-type: application/grpc``, ``grpc-status`` from the HTTP status, ``grpc-message``
  from the body, percent-encoded).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote

from proxy.codec.events import Headers
from proxy.config.model_route import MaxStreamDuration

__all__ = [
    "GRPC_CONTENT_TYPE",
    "GrpcStatus",
    "format_grpc_timeout",
    "frame_message",
    "grpc_local_reply_headers",
    "grpc_status_from_headers",
    "http_to_grpc_status",
    "is_grpc_content_type",
    "parse_grpc_timeout",
    "percent_decode_message",
    "percent_encode_message",
    "response_grpc_status",
    "stream_duration_timeout",
    "unframe_message",
]

GRPC_CONTENT_TYPE: Final = b"application/grpc"
_MAX_TIMEOUT_VALUE: Final = 99_999_999  # gRPC: at most 8 digits
_FRAME: Final = struct.Struct(">BI")  # compressed flag, message length


class GrpcStatus(enum.IntEnum):
    """gRPC status codes. ``camel`` and ``snake`` are the spellings of Envoy's
    ``%GRPC_STATUS(CAMEL_STRING)%`` (the default) and ``(SNAKE_STRING)``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def camel(self) -> str:
        return _CAMEL.get(self, "".join(part.title() for part in self.name.split("_")))

    @property
    def snake(self) -> str:
        return self.name


_CAMEL: Final[Mapping[int, str]] = {1: "Canceled", 0: "OK"}


def is_grpc_content_type(content_type: bytes | None) -> bool:
    """``application/grpc``, ``application/grpc+proto``, ``application/grpc;...`` (not
    grpc-web, which Envoy treats as a different protocol)."""
    if content_type is None or not content_type.startswith(GRPC_CONTENT_TYPE):
        return False
    rest = content_type[len(GRPC_CONTENT_TYPE) :]
    return not rest or rest[:1] in (b"+", b";")


_UNITS: Final[Mapping[int, float]] = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


def parse_grpc_timeout(value: bytes | None) -> float | None:
    """Seconds in a ``grpc-timeout`` value (``TimeoutValue TimeoutUnit``, at most 8 digits),
    rounded up to whole milliseconds as Envoy does; None when absent or malformed (Envoy
    then acts as if there were no header)."""
    if not value:
        return None
    digits, unit = value[:-1].strip(), _UNITS.get(value[-1])
    if unit is None or not digits.isdigit():
        return None
    amount = int(digits)
    if amount > _MAX_TIMEOUT_VALUE:
        return None
    if unit >= 1e-3:
        return amount * unit
    per_ms = round(1e-3 / unit)
    return -(-amount // per_ms) / 1000.0  # ceiling: a 1 µs deadline is 1 ms, not 0


def format_grpc_timeout(seconds: float) -> bytes:
    """``toGrpcTimeout``: milliseconds while they fit in 8 digits, then the next unit that
    does (clipped at 99999999 hours)."""
    value = round(seconds * 1000)
    units = b"mSMH"
    index = 0
    if value > _MAX_TIMEOUT_VALUE:
        value //= 1000
        index = 1
    while value > _MAX_TIMEOUT_VALUE:
        if index == 3:
            value = _MAX_TIMEOUT_VALUE
        else:
            value //= 60
            index += 1
    return b"%d%c" % (value, units[index])


def stream_duration_timeout(
    route: MaxStreamDuration | None,
    connection_max_stream_duration: float | None,
    grpc_timeout: float | None,
) -> float | None:
    """The stream's duration limit in seconds (None: none), as Envoy's connection manager
    computes it once the route is known.

    With a ``grpc-timeout`` and a route ``grpc_timeout_header_max``, the header's value capped
    by that maximum (0: no cap) less ``grpc_timeout_header_offset`` (a result of 0 or below
    means no limit); otherwise the route's ``max_stream_duration`` (0: none), else the
    connection manager's."""
    if grpc_timeout is None or route is None or route.grpc_timeout_header_max is None:
        if route is not None and route.max_stream_duration is not None:
            return route.max_stream_duration or None
        return connection_max_stream_duration or None
    timeout = grpc_timeout
    cap = route.grpc_timeout_header_max
    if cap and timeout > cap:
        timeout = cap
    offset = route.grpc_timeout_header_offset
    if timeout and offset:
        timeout = timeout - offset if offset < timeout else 0.0
    return timeout or None


def http_to_grpc_status(status: int) -> GrpcStatus:
    """gRPC's HTTP-to-status mapping (``Grpc::Utility::httpToGrpcStatus``)."""
    return _HTTP_TO_GRPC.get(status, GrpcStatus.UNKNOWN)


_HTTP_TO_GRPC: Final[Mapping[int, GrpcStatus]] = {
    400: GrpcStatus.INTERNAL,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.UNIMPLEMENTED,
    429: GrpcStatus.UNAVAILABLE,
    502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE,
    504: GrpcStatus.UNAVAILABLE,
}


def grpc_status_from_headers(headers: Headers | None) -> int | None:
    """The ``grpc-status`` of a header or trailer section (any non-negative integer: user
    codes above 16 included), None when absent or not a number."""
    if headers:
        for name, value in headers:
            if name == b"grpc-status":
                return int(value) if value.isdigit() else None
    return None


def response_grpc_status(
    headers: Headers | None, trailers: Headers | None, http_status: int | None
) -> int | None:
    """A gRPC response's status as Envoy's ``%GRPC_STATUS%`` finds it: trailers first, then
    headers (a trailers-only response), then the HTTP status mapped."""
    status = grpc_status_from_headers(trailers)
    if status is None:
        status = grpc_status_from_headers(headers)
    if status is None and http_status is not None:
        status = http_to_grpc_status(http_status)
    return status


def frame_message(message: bytes) -> bytes:
    """One uncompressed gRPC message with its 5-byte length prefix."""
    return _FRAME.pack(0, len(message)) + message


def unframe_message(body: bytes | bytearray) -> bytes | str:
    """The one uncompressed message a unary call's body carries, or why it is not there
    (no ``grpc-encoding`` is negotiated by the proxy's own servers and clients)."""
    if len(body) < _FRAME.size:
        return "no message"
    compressed, size = _FRAME.unpack_from(body)
    if compressed:
        return "compressed messages are not supported"
    if size != len(body) - _FRAME.size:
        return "exactly one message expected"
    return bytes(body[_FRAME.size :])


def percent_decode_message(value: bytes) -> str:
    """``grpc-message`` as sent (``%XX`` escapes), decoded; invalid UTF-8 is replaced."""
    return unquote(value.decode("ascii", "replace"), errors="replace")


def percent_encode_message(message: str) -> bytes:
    """``grpc-message`` encoding: bytes outside printable ASCII, and ``%``, as ``%XX``."""
    out = bytearray()
    for byte in message.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def grpc_local_reply_headers(
    http_status: int, body: str, grpc_status: int | None = None
) -> Headers:
    """The fields of a trailers-only local reply to a gRPC request (its ``:status`` is 200).

    ``grpc_status`` overrides the one mapped from ``http_status`` (Envoy's callers pass
    DEADLINE_EXCEEDED for a stream's max duration, for example). A trailing newline of the
    body is not part of the message, as in Envoy."""
    status = http_to_grpc_status(http_status) if grpc_status is None else grpc_status
    fields: Headers = [
        (b"content-type", GRPC_CONTENT_TYPE),
        (b"grpc-status", b"%d" % status),
    ]
    message = body[:-1] if body.endswith("\n") else body
    if message:
        fields.append((b"grpc-message", percent_encode_message(message)))
    return fields
