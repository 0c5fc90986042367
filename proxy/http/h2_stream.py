"""One HTTP/2 stream as the stream layer sees it: the request head translated from HEADERS,
and the :class:`~proxy.http.codec_api.StreamEncoder` that writes the answer on its stream.

Flow control: the codec does not reopen a peer's window by itself. A stream's DATA is
acknowledged (``consumed()``) once the stream has taken it, unless a filter or the router has
read-disabled that stream (the upstream's write buffer is full); then the bytes are
acknowledged when reading is enabled again, so a fast client is held back by its window
instead of filling the proxy's memory. The other way, response bytes the client's window holds
back count against the stream's buffer limit and tell the router to stop reading the upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.codec import Request
from proxy.codec.h2_events import ErrorCode

if TYPE_CHECKING:
    from proxy.codec.h2_events import H2Request
    from proxy.http.filter import Headers, Timers
    from proxy.http.h2_connection import H2DownstreamConnection
    from proxy.http.stream import ActiveStream

__all__ = ["H2StreamEncoder", "h2_request"]


def h2_request(event: H2Request) -> Request:
    """The request head the stream layer reads, from an HTTP/2 HEADERS frame."""
    headers = event.headers
    authority = event.authority
    if authority is not None:
        # :authority wins over a host field (RFC 9113 section 8.3.1), and reaches an HTTP/1.1
        # upstream as Host; it goes first, where Envoy's header map keeps it.
        if any(name == b"host" for name, _ in headers):
            headers = [field for field in headers if field[0] != b"host"]
        headers.insert(0, (b"host", authority))
    length: int | None = None
    expect = False
    for name, value in headers:
        if name == b"content-length":
            # libnghttp2 has checked it is digits and that the DATA frames add up to it.
            length = int(value)
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
    method = event.method
    target = event.path or b""
    upgrade = False
    if method == b"CONNECT":
        upgrade = True
        if event.protocol is not None:
            # An extended CONNECT (RFC 8441) is the HTTP/2 form of an HTTP/1.1 upgrade; the
            # stream layer sees the upgrade, as Envoy's codec presents it.
            method = b"GET"
            headers += ((b"upgrade", event.protocol), (b"connection", b"upgrade"))
        else:
            target = authority or b""  # classic CONNECT names only its authority
    return Request(method, target, headers, b"2", True, length, False, expect, upgrade)


class H2StreamEncoder:
    """One stream's way back to the client (the :class:`StreamEncoder` of its
    :class:`ActiveStream`), and the per-stream flow-control bookkeeping."""

    __slots__ = (
        "_deadline",
        "_unacked",
        "above_watermark",
        "conn",
        "connection_info",
        "disabled",
        "stream",
        "stream_id",
        "timers",
        "tunnel",
    )

    def __init__(self, conn: H2DownstreamConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.connection_info = conn.connection_info
        self.timers: Timers = conn.timers
        self.stream: ActiveStream | None = None
        self.disabled = 0
        self._unacked = 0
        self.above_watermark = False
        self._deadline: asyncio.TimerHandle | None = None
        self.tunnel = False  # the stream switched protocols: its reset is a CONNECT_ERROR

    def encode_headers(
        self, status: int, headers: Headers, end_stream: bool, head_request: bool
    ) -> None:
        stream = self.stream
        if status == 101 and stream is not None and stream.upgrade is not None:
            # An upgrade's switch is the extended CONNECT's 200 (RFC 8441 section 5).
            status = 200
        if stream is not None and stream.upgrade is not None and 200 <= status < 300:
            self.tunnel = True
        self.conn.codec.send_response(self.stream_id, status, headers, end_stream=end_stream)

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        codec = self.conn.codec
        codec.send_data(self.stream_id, data, end_stream=end_stream)
        if (
            data
            and not end_stream
            and not self.above_watermark
            and codec.queued(self.stream_id) > self.conn.hcm.buffer_limit
        ):
            # The client's window holds the bytes back: stop reading the upstream.
            self.above_watermark = True
            if self.stream is not None:
                self.stream.on_downstream_watermark(True)

    def encode_trailers(self, trailers: Headers) -> None:
        self.conn.codec.send_trailers(self.stream_id, trailers)

    def encode_100_continue(self) -> None:
        self.conn.codec.send_response(self.stream_id, 100, [])

    def window_opened(self) -> None:
        if self.above_watermark and (
            self.conn.codec.queued(self.stream_id) <= self.conn.hcm.buffer_limit // 2
        ):
            self.above_watermark = False
            if self.stream is not None:
                self.stream.on_downstream_watermark(False)

    def received(self, amount: int) -> None:
        """``amount`` DATA bytes went to the stream: reopen the window unless held."""
        if self.disabled:
            self._unacked += amount
        else:
            self.conn.codec.consumed(self.stream_id, amount)

    def read_disable(self, disable: bool) -> None:
        if disable:
            self.disabled += 1
        elif self.disabled:
            self.disabled -= 1
            if not self.disabled and self._unacked:
                unacked, self._unacked = self._unacked, 0
                self.conn.codec.consumed(self.stream_id, unacked)
                self.conn.flush_soon()

    def release(self) -> None:
        """The stream is over: what it held back no longer counts against the connection."""
        self.disarm_deadline()
        if self._unacked:
            unacked, self._unacked = self._unacked, 0
            self.conn.codec.consumed(self.stream_id, unacked)

    def flush(self) -> None:
        self.conn.flush_soon()

    def reset_stream(self) -> None:
        # What was already encoded (a response head) leaves first: a reset submitted before it
        # is flushed would discard it. Envoy resets a stream it gives up on mid-response with
        # INTERNAL_ERROR.
        conn = self.conn
        conn.flush()
        # A tunnel that breaks is a CONNECT_ERROR (RFC 9113 section 8.5), as Envoy resets it.
        code = ErrorCode.CONNECT_ERROR if self.tunnel else ErrorCode.INTERNAL_ERROR
        conn.codec.reset_stream(self.stream_id, code)
        # Envoy's connection manager counts every reset of an HTTP/2 stream it hears from the
        # codec, the ones it sends included.
        conn.hcm.stats.downstream_rq_rx_reset.value += 1
        conn.flush()

    def close_after_response(self) -> None:
        """HTTP/2 never closes the connection for one stream's sake."""

    def arm_deadline(self, when: float, callback: Callable[[], None]) -> None:
        self.disarm_deadline()
        self._deadline = self.conn.timers.call_at(when, callback)

    def disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def check_idle_by(self, when: float) -> None:
        self.conn.check_idle_by(when)

    def on_stream_complete(self, stream: object) -> None:
        self.conn.on_stream_complete(self)
