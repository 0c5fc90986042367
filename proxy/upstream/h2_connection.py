"""One HTTP/2 connection to an upstream host (an ``asyncio.Protocol``), carrying many streams.

Each request gets an :class:`H2UpstreamStream`, its :class:`RequestEncoder`; the response's
events go to the stream's :class:`UpstreamCallbacks`. The connection tells its pool when it
can take more streams (a stream ended, the server raised its limit) and when it takes no more
(GOAWAY, ``max_requests_per_connection``); it closes once it takes no more and its last stream
is done, as Envoy's multiplexed pool client drains.

Flow control as downstream: response DATA reopens the server's window once the callbacks took
it, unless the router read-disabled the stream (the client's write buffer is full); request
bytes the server's window holds back past the buffer limit raise the stream's watermark so the
router stops reading the client.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, cast

import structlog

from proxy.codec import NEED_DATA, Response
from proxy.codec.h2 import H2ClientConnection
from proxy.codec.h2_events import (
    ErrorCode,
    H2ConnectionClosed,
    H2ConnectionError,
    H2Data,
    H2GoAway,
    H2PingAck,
    H2RemoteSettings,
    H2Response,
    H2StreamReset,
    H2Trailers,
    H2WindowOpen,
)
from proxy.upstream.interfaces import Headers, ResetReason, UpstreamCallbacks
from pymesh.errors import LocalProtocolError

if TYPE_CHECKING:
    from proxy.codec.h2_settings import H2Settings
    from proxy.upstream.h2_pool import H2ConnectionPool

__all__ = ["H2UpstreamConnection", "H2UpstreamStream"]

log = structlog.get_logger(__name__)


class H2UpstreamStream:
    """One request on an upstream HTTP/2 connection (its :class:`RequestEncoder`)."""

    chunks_bodies = False

    __slots__ = (
        "_disabled",
        "_unacked",
        "above_watermark",
        "callbacks",
        "conn",
        "local_address",
        "request_ended",
        "stream_id",
        "upgrade",
    )

    def __init__(self, conn: H2UpstreamConnection, callbacks: UpstreamCallbacks) -> None:
        self.conn = conn
        self.callbacks: UpstreamCallbacks | None = callbacks
        self.local_address = conn.local_address
        self.stream_id = 0
        self.request_ended = False
        self.above_watermark = False
        self._disabled = 0
        self._unacked = 0
        self.upgrade: bytes | None = None  # the protocol of an extended CONNECT

    # -- RequestEncoder --------------------------------------------------------------------
    def encode_headers(
        self, method: bytes, path: bytes, headers: Headers, end_stream: bool
    ) -> None:
        conn = self.conn
        authority = b""
        fields = headers
        protocol = None
        for name, value in headers:
            if name == b"host":
                # Host travels as :authority (RFC 9113 section 8.3.1), as Envoy's codec sends it.
                authority = value
            elif name == b"upgrade":
                # An HTTP/1.1 upgrade goes out as an extended CONNECT (RFC 8441), as Envoy's
                # codec sends it; the peer must have allowed them in its SETTINGS.
                protocol = value.lower()
        if authority or protocol is not None:
            fields = [field for field in headers if field[0] not in (b"host", b"upgrade")]
        if protocol is not None and method != b"CONNECT":
            method = b"CONNECT"
            self.upgrade = protocol
        try:
            sid = conn.codec.send_request(
                method, conn.scheme, authority, path, fields, end_stream=end_stream,
                protocol=protocol,
            )  # fmt: skip
        except LocalProtocolError as exc:
            log.debug("upstream h2 request refused locally", error=str(exc))
            conn.fail_stream_later(self, ResetReason.LOCAL_RESET)
            return
        self.stream_id = sid
        self.request_ended = end_stream
        conn.streams[sid] = self
        conn.flush_soon()

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        conn = self.conn
        sid = self.stream_id
        if not sid:
            return
        conn.codec.send_data(sid, data, end_stream=end_stream)
        if end_stream:
            self.request_ended = True
        elif data and not self.above_watermark and conn.codec.queued(sid) > conn.buffer_limit:
            # The server's window holds the bytes back: stop reading the client.
            self.above_watermark = True
            if self.callbacks is not None:
                self.callbacks.on_upstream_watermark(True)
        conn.flush_soon()

    def encode_trailers(self, trailers: Headers) -> None:
        if self.stream_id:
            self.conn.codec.send_trailers(self.stream_id, trailers)
            self.request_ended = True
            self.conn.flush_soon()

    def read_disable(self, disable: bool) -> None:
        if disable:
            self._disabled += 1
        elif self._disabled:
            self._disabled -= 1
            if not self._disabled and self._unacked:
                unacked, self._unacked = self._unacked, 0
                self.conn.codec.consumed(self.stream_id, unacked)
                self.conn.flush_soon()

    def reset(self) -> None:
        """Give the stream up; the connection stays for the others."""
        self.callbacks = None
        self.conn.reset_stream(self, ErrorCode.NO_ERROR)

    def discard_response(self) -> None:
        self.callbacks = None  # the rest is read and dropped: the stream simply ends

    # -- the connection's side -----------------------------------------------------------
    def received(self, amount: int) -> None:
        if self._disabled:
            self._unacked += amount
        else:
            self.conn.codec.consumed(self.stream_id, amount)

    def window_opened(self) -> None:
        conn = self.conn
        if self.above_watermark and conn.codec.queued(self.stream_id) <= conn.buffer_limit // 2:
            self.above_watermark = False
            if self.callbacks is not None:
                self.callbacks.on_upstream_watermark(False)

    def release(self) -> None:
        if self._unacked:
            unacked, self._unacked = self._unacked, 0
            self.conn.codec.consumed(self.stream_id, unacked)


class H2UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: H2ConnectionPool, settings: H2Settings, buffer_limit: int) -> None:
        self.pool = pool
        self.codec = H2ClientConnection(settings)
        self.scheme = b"http"
        self.buffer_limit = buffer_limit
        self.transport: asyncio.Transport | None = None
        self.local_address: str | None = None
        self.streams: dict[int, H2UpstreamStream] = {}
        self.closed = False
        # Streams this connection may still carry at once, and in all (max_requests_per_
        # connection); the server's SETTINGS lower the first.
        self.max_streams = settings.max_concurrent_streams
        self.remaining_requests = pool.max_requests_per_connection or 2**63
        self.goaway = False
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload = b""
        self._flush_handle: asyncio.Handle | None = None

    # -- capacity -------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Streams this connection can open now."""
        if self.closed or self.goaway or not self.codec.can_open_stream:
            return 0
        return max(0, min(self.max_streams - len(self.streams), self.remaining_requests))

    @property
    def draining(self) -> bool:
        """No new streams will ever go on this connection."""
        return self.closed or self.goaway or self.remaining_requests <= 0

    def new_stream(self, callbacks: UpstreamCallbacks) -> H2UpstreamStream:
        self.remaining_requests -= 1
        return H2UpstreamStream(self, callbacks)

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local_address = f"{local[0]}:{local[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.flush()  # the preface and our SETTINGS
        self._schedule_ping()

    def data_received(self, data: bytes) -> None:
        self.pool.stats.upstream_cx_rx_bytes_total.value += len(data)
        try:
            self.codec.receive_data(data)
        except H2ConnectionError as exc:
            log.debug("upstream h2 protocol error", error=str(exc))
            self.flush()
            self._reset_all(ResetReason.PROTOCOL_ERROR)
            self.close()
            return
        touched: set[UpstreamCallbacks] = set()
        self._process(touched)
        self.flush()
        for cb in touched:
            cb.on_upstream_batch_end()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.stats.upstream_cx_destroy_remote.value += 1
        self.transport = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._reset_all(ResetReason.CONNECTION_TERMINATION)
        self.pool.on_connection_closed(self)

    def pause_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.callbacks is not None:
                stream.callbacks.on_upstream_watermark(True)

    def resume_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.callbacks is not None:
                stream.callbacks.on_upstream_watermark(False)

    # -- events -------------------------------------------------------------------------
    def _process(self, touched: set[UpstreamCallbacks]) -> None:
        codec = self.codec
        streams = self.streams
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                return
            kind = event.__class__
            if kind is H2Data:
                sid, data, end = cast(H2Data, event)
                stream = streams.get(sid)
                if stream is None:
                    codec.consumed(sid, len(data))
                    continue
                cb = stream.callbacks
                if end:
                    self._stream_done(stream)
                if cb is not None:
                    touched.add(cb)
                    cb.on_upstream_data(data, end)
                stream.received(len(data))
            elif kind is H2Response:
                sid, status, headers, end = cast(H2Response, event)
                stream = streams.get(sid)
                if stream is None:
                    continue
                cb = stream.callbacks
                if end:
                    self._stream_done(stream)
                if cb is not None:
                    touched.add(cb)
                    if stream.upgrade is not None and status == 200:
                        # The extended CONNECT's success is the upgrade's 101, as Envoy
                        # turns it back for the stream layer.
                        status = 101
                        headers = [
                            (b"upgrade", stream.upgrade), (b"connection", b"upgrade"), *headers
                        ]  # fmt: skip
                    cb.on_upstream_headers(_response(status, headers), end)
            elif kind is H2Trailers:
                sid, trailers = cast(H2Trailers, event)
                stream = streams.get(sid)
                if stream is None:
                    continue
                cb = stream.callbacks
                self._stream_done(stream)
                if cb is not None:
                    touched.add(cb)
                    cb.on_upstream_trailers(trailers)
            elif kind is H2StreamReset:
                sid, code, remote = cast(H2StreamReset, event)
                stream = streams.pop(sid, None)
                if stream is None:
                    continue
                stream.release()
                reason = _reset_reason(code, remote)
                if reason is ResetReason.REMOTE_RESET:
                    # Counted here, as Envoy's multiplexed pool client counts a server's reset
                    # (a refused stream is not).
                    self.pool.stats.upstream_rq_rx_reset.value += 1
                cb, stream.callbacks = stream.callbacks, None
                if cb is not None:
                    touched.add(cb)
                    cb.on_upstream_reset(reason)
                self.pool.on_capacity(self)
            elif kind is H2WindowOpen:
                sid = cast(H2WindowOpen, event).stream_id
                targets = list(streams.values()) if sid == 0 else [streams.get(sid)]
                for target in targets:
                    if target is not None:
                        target.window_opened()
            elif kind is H2RemoteSettings:
                self.max_streams = min(
                    cast(H2RemoteSettings, event).max_concurrent_streams,
                    self.codec.settings.max_concurrent_streams,
                )
                self.pool.on_capacity(self)
            elif kind is H2GoAway:
                # Streams above its last id come as REFUSED_STREAM resets (safe to retry);
                # the ones below it finish here, then the connection closes.
                self.goaway = True
                self.pool.on_capacity(self)
                if not streams:
                    self.close()
            elif kind is H2PingAck:
                if cast(H2PingAck, event).opaque == self._ping_payload:
                    self._schedule_ping()
            elif kind is H2ConnectionClosed:
                self._reset_all(ResetReason.CONNECTION_TERMINATION)
                self.close()
                return

    # -- keepalive ---------------------------------------------------------------------------
    def _schedule_ping(self) -> None:
        """``connection_keepalive``: a PING every ``interval`` (plus up to ``interval_jitter``
        percent); a server that does not answer within ``timeout`` is given up on."""
        keepalive = self.codec.settings.keepalive
        if keepalive is None or not keepalive.interval or self.closed:
            return
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        loop = asyncio.get_running_loop()
        delay = keepalive.interval * (1.0 + self.pool.jitter() * keepalive.interval_jitter / 100)
        self._ping_timer = loop.call_later(delay, self._send_ping)

    def _send_ping(self) -> None:
        keepalive = self.codec.settings.keepalive
        if keepalive is None or self.closed:
            return
        self._ping_payload = b"%08d" % (len(self.streams) % 10**8)
        self.codec.ping(self._ping_payload)
        self.flush()
        self._ping_timer = asyncio.get_running_loop().call_later(
            keepalive.timeout, self._ping_timeout
        )

    def _ping_timeout(self) -> None:
        if self.closed:
            return
        log.debug("upstream h2 keepalive timeout", host=self.pool.host.address_str)
        self._reset_all(ResetReason.CONNECTION_TERMINATION)
        self.close()

    def _stream_done(self, stream: H2UpstreamStream) -> None:
        """The response has ended: the stream is over (its request too, or it is reset)."""
        self.streams.pop(stream.stream_id, None)
        if not stream.request_ended:
            # Envoy resets the rest of a request whose response came complete first.
            self.codec.reset_stream(stream.stream_id, ErrorCode.NO_ERROR)
        stream.release()
        self._after_stream()

    def reset_stream(self, stream: H2UpstreamStream, code: int) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.pool.stats.upstream_rq_tx_reset.value += 1
        self.codec.reset_stream(stream.stream_id, code)
        stream.release()
        self.flush()
        self._after_stream()

    def fail_stream_later(self, stream: H2UpstreamStream, reason: ResetReason) -> None:
        """A stream that could not be opened: its callbacks hear it on the next loop turn,
        never from inside the call that tried to open it."""

        def fail() -> None:
            cb, stream.callbacks = stream.callbacks, None
            if cb is not None:
                cb.on_upstream_reset(reason)
                cb.on_upstream_batch_end()

        asyncio.get_running_loop().call_soon(fail)

    def _after_stream(self) -> None:
        if not self.streams and self.draining:
            self.close()
        else:
            self.pool.on_capacity(self)

    def _reset_all(self, reason: ResetReason) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            cb, stream.callbacks = stream.callbacks, None
            if cb is not None:
                cb.on_upstream_reset(reason)
                cb.on_upstream_batch_end()

    # -- output ----------------------------------------------------------------------------
    def flush_soon(self) -> None:
        """Write what the streams encoded once this loop turn ends: the requests of one
        downstream read leave in one write, not one each."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        out = self.codec.data_to_send()
        if out:
            self.pool.stats.upstream_cx_tx_bytes_total.value += len(out)
            transport.write(out)
        if self.codec.wants_close:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.stats.upstream_cx_destroy_local.value += 1
            if self.transport is not None:
                out = self.codec.data_to_send()
                if out:
                    self.transport.write(out)
                self.transport.close()


def _response(status: int, headers: Headers) -> Response:
    """The response head as the router reads it (the HTTP/1.1 codec's value type)."""
    length: int | None = None
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
            break
    return Response(status, b"", headers, b"2", True, length, False)


def _reset_reason(code: int, remote: bool) -> ResetReason:
    """Envoy's stream reset reasons for a reset the server sent or the codec made."""
    if not remote:
        return ResetReason.PROTOCOL_ERROR
    if code == ErrorCode.REFUSED_STREAM:
        return ResetReason.REMOTE_REFUSED_STREAM
    return ResetReason.REMOTE_RESET
