"""The seam between a stream and the connection (codec) that carries it.

A connection creates one :class:`~proxy.http.stream.ActiveStream` per request and drives it
with ``decode_headers`` / ``decode_data`` / ``decode_trailers``; the stream answers through
the :class:`StreamEncoder` it was given. HTTP/1.1 has one stream at a time and its connection
is the encoder; an HTTP/2 connection would give each of its streams an encoder of its own.
Nothing above this seam knows which codec is underneath.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.http.filter import Headers, Timers
    from proxy.http.stream_info import ConnectionInfo

__all__ = ["StreamEncoder"]


class StreamEncoder(Protocol):
    """One stream's way back to the client, and the connection services it may use."""

    connection_info: ConnectionInfo
    timers: Timers

    def encode_headers(
        self, status: int, headers: Headers, end_stream: bool, head_request: bool
    ) -> None: ...
    def encode_data(self, data: bytes, end_stream: bool) -> None: ...
    def encode_trailers(self, trailers: Headers) -> None: ...
    def encode_100_continue(self) -> None: ...
    def read_disable(self, disable: bool) -> None:
        """Counted (see :class:`~proxy.transport.flow_control.FlowControl`)."""

    def flush(self) -> None: ...
    def reset_stream(self) -> None:
        """Abort this stream (HTTP/1.1: the whole connection)."""

    def close_after_response(self) -> None:
        """Do not reuse the connection after this response (``connection: close``)."""

    def arm_deadline(self, when: float, callback: Callable[[], None]) -> None: ...
    def disarm_deadline(self) -> None: ...
    def check_idle_by(self, when: float) -> None: ...
    def on_stream_complete(self, stream: object) -> None:
        """The stream is finished with (HTTP/1.1: read the next request)."""
