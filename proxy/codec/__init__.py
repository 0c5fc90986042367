"""Sans-I/O HTTP/1.1 codec: bytes in, events out; calls in, bytes out. No I/O, no asyncio."""

from .events import (
    NEED_DATA,
    ClientEvent,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Headers,
    InformationalResponse,
    NeedData,
    Request,
    Response,
    ServerEvent,
)
from .headers import (
    HOP_BY_HOP,
    connection_tokens,
    has_token,
    strip_hop_by_hop,
    validate_header_name,
    validate_header_value,
    validate_headers,
)
from .http1 import ClientConnection, ServerConnection

__all__ = [
    "HOP_BY_HOP",
    "NEED_DATA",
    "ClientConnection",
    "ClientEvent",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Headers",
    "InformationalResponse",
    "NeedData",
    "Request",
    "Response",
    "ServerConnection",
    "ServerEvent",
    "connection_tokens",
    "has_token",
    "strip_hop_by_hop",
    "validate_header_name",
    "validate_header_value",
    "validate_headers",
]
