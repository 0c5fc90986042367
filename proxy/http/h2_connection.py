"""The HTTP/2 side of the connection manager: one :class:`H2DownstreamConnection` per accepted
connection (prior-knowledge h2c, ``codec_type: AUTO`` seeing the client preface, or ALPN
``h2`` over TLS), many :class:`~proxy.http.stream.ActiveStream` at once.

Each stream gets an :class:`H2StreamEncoder` of its own. The stream layer above sees the same
request head the HTTP/1.1 side produces (``:authority`` becomes ``host``, as Envoy's header
map treats them as one), so filters and the router do not know which codec carried it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import structlog

from proxy.codec import NEED_DATA
from proxy.codec.h2 import H2ServerConnection
from proxy.codec.h2_events import (
    ErrorCode,
    H2ConnectionClosed,
    H2ConnectionError,
    H2Data,
    H2PingAck,
    H2Request,
    H2StreamReset,
    H2Trailers,
    H2WindowOpen,
)
from proxy.http.h2_stream import H2StreamEncoder, h2_request
from proxy.http.local_reply import ResponseFlag
from proxy.http.stream import ActiveStream
from proxy.http.stream_info import ConnectionInfo, connection_info

if TYPE_CHECKING:
    from proxy.http.filter import Timers
    from proxy.http.hcm import HcmRuntime

__all__ = ["H2DownstreamConnection"]

log = structlog.get_logger(__name__)


class H2DownstreamConnection(asyncio.Protocol):
    """A downstream HTTP/2 connection: the codec driver and the streams' multiplexer."""

    def __init__(
        self,
        hcm: HcmRuntime,
        loop: asyncio.AbstractEventLoop,
        *,
        scheme: bytes = b"http",
        on_close: Callable[[H2DownstreamConnection], None] | None = None,
        original_destination: tuple[str, int] | None = None,
        connection_id: int = 0,
    ) -> None:
        self.hcm = hcm
        self.loop = loop
        self.timers: Timers = cast("Timers", loop)
        self.scheme = scheme
        self.on_close = on_close
        self.original_destination = original_destination
        self.connection_id = connection_id
        self.codec = H2ServerConnection(hcm.model.http2_protocol_options)
        self.connection_info = ConnectionInfo(scheme=scheme)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2StreamEncoder] = {}
        self.closed = False
        self.draining = False
        self._goaway_sent = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload = b""
        self._error_counted = False
        self._flush_handle: asyncio.Handle | None = None
        # Streams answered before their request ended, whose RST_STREAM waits for the
        # response to leave (a reset would discard what the client's window still holds).
        self._deferred_resets: set[int] = set()

    @property
    def peer_host(self) -> str:
        return self.connection_info.remote_host

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.adopt(transport, counted=False)

    def adopt(self, transport: asyncio.BaseTransport, *, counted: bool, data: bytes = b"") -> None:
        """Take the connection over; ``counted`` when the HTTP/1.1 side that saw the preface
        (``codec_type: AUTO``) has already counted it, ``data`` what it read so far."""
        self.transport = cast(asyncio.Transport, transport)
        self.connection_info = connection_info(
            transport,
            scheme=self.scheme,
            original_destination=self.original_destination,
            connection_id=self.connection_id,
        )
        stats = self.hcm.stats
        if not counted:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stats.downstream_cx_total.value += 1
            stats.downstream_cx_active.value += 1
        stats.downstream_cx_http2_total.value += 1
        self._idle_since = self.timers.time()
        self._schedule_idle()
        keepalive = self.codec.settings.keepalive
        if keepalive is not None and keepalive.interval:
            self._schedule_ping(keepalive.interval, keepalive.interval_jitter)
        # Our SETTINGS go out first, whether or not the client has written anything yet.
        if data:
            self.data_received(data)
        else:
            self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.codec.receive_data(data)
        except H2ConnectionError as exc:
            self._connection_error(exc)
            return
        self._process()
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # no half-close: the client is gone (see connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return
        self.closed = True
        self.transport = None
        for timer in (self._idle_timer, self._drain_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        streams = list(self.streams.values())
        self.streams.clear()
        for encoder in streams:
            encoder.disarm_deadline()
            if encoder.stream is not None:
                encoder.stream.on_downstream_reset()
        stats = self.hcm.stats
        stats.downstream_cx_active.value -= 1
        stats.downstream_cx_destroy.value += 1
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        for encoder in list(self.streams.values()):
            if encoder.stream is not None:
                encoder.stream.on_downstream_watermark(True)

    def resume_writing(self) -> None:
        for encoder in list(self.streams.values()):
            if encoder.stream is not None:
                encoder.stream.on_downstream_watermark(False)

    # -- events -------------------------------------------------------------------------------
    def _process(self) -> None:
        codec = self.codec
        streams = self.streams
        while not self.closed:
            event = codec.next_event()
            kind = event.__class__
            if kind is H2Data:
                sid, data, end = cast(H2Data, event)
                encoder = streams.get(sid)
                if encoder is None or encoder.stream is None:
                    codec.consumed(sid, len(data))
                    continue
                encoder.stream.decode_data(data, end)
                encoder.received(len(data))
            elif kind is H2Request:
                self._start_stream(cast(H2Request, event))
            elif kind is H2Trailers:
                sid, trailers = cast(H2Trailers, event)
                encoder = streams.get(sid)
                if encoder is not None and encoder.stream is not None:
                    encoder.stream.decode_trailers(trailers)
            elif kind is H2StreamReset:
                self._on_reset(cast(H2StreamReset, event))
            elif kind is H2WindowOpen:
                sid = cast(H2WindowOpen, event).stream_id
                targets = list(streams.values()) if sid == 0 else [streams.get(sid)]
                for encoder in targets:
                    if encoder is not None:
                        encoder.window_opened()
                if self._deferred_resets:
                    self._reset_sent_streams()
            elif kind is H2PingAck:
                self._on_ping_ack(cast(H2PingAck, event).opaque)
            elif kind is H2ConnectionClosed:
                self._count_close(cast(H2ConnectionClosed, event).error_code)
                self._close()
                return
            elif event is NEED_DATA:
                return
            # Remote settings and the client's GOAWAY need nothing here: the codec applies the
            # settings and the client finishes its own streams.

    def _start_stream(self, event: H2Request) -> None:
        hcm = self.hcm
        stats = hcm.stats
        stats.downstream_rq_total.value += 1
        stats.downstream_rq_http2_total.value += 1
        stats.downstream_rq_active.value += 1
        encoder = self.streams[event.stream_id] = H2StreamEncoder(self, event.stream_id)
        stream = encoder.stream = ActiveStream(hcm, encoder, h2_request(event))
        stream.decode_headers(event.end_stream)

    def _on_reset(self, event: H2StreamReset) -> None:
        encoder = self.streams.pop(event.stream_id, None)
        if encoder is None:
            return
        encoder.release()
        stream = encoder.stream
        if stream is None or stream.done:
            return
        if event.remote:
            # Envoy's codec details for a client's RST_STREAM, and its DR flag.
            stream.on_downstream_reset(ResponseFlag.DOWNSTREAM_REMOTE_RESET, "http2.remote_reset")
        else:
            # libnghttp2 reset it: the client broke RFC 9113's message rules on this stream.
            stream.on_downstream_reset(
                ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR, "http2.violation.of.messaging.rule"
            )
        self._after_stream()

    def on_stream_complete(self, encoder: H2StreamEncoder) -> None:
        if self.streams.pop(encoder.stream_id, None) is None:
            return
        stream = encoder.stream
        if stream is not None and not stream.request_complete:
            # The response is complete and the request is not (a local reply, an early
            # answer): the client is told to stop sending, as Envoy does, once the response
            # has left (Envoy's deferred reset).
            self.flush()
            self.hcm.stats.downstream_rq_rx_reset.value += 1  # as Envoy counts it (h2_stream)
            if self.codec.queued(encoder.stream_id):
                self._deferred_resets.add(encoder.stream_id)
            else:
                self.codec.reset_stream(encoder.stream_id, ErrorCode.NO_ERROR)
        encoder.release()
        encoder.stream = None
        self._after_stream()

    def _reset_sent_streams(self) -> None:
        self.flush()
        for sid in list(self._deferred_resets):
            if not self.codec.queued(sid):
                self._deferred_resets.discard(sid)
                self.codec.reset_stream(sid, ErrorCode.NO_ERROR)

    def _after_stream(self) -> None:
        if not self.streams:
            self._idle_since = self.timers.time()
            if self._goaway_sent:
                self.flush()
                self._close()

    # -- output -------------------------------------------------------------------------------
    def flush_soon(self) -> None:
        """Write what the streams encoded once this loop turn ends: the responses an upstream
        read completed leave in one write, not one per stream."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        codec = self.codec
        out = codec.data_to_send()
        if out:
            transport.write(out)
        if codec.wants_close:
            # libnghttp2 may have ended the session itself (a GOAWAY for a client's protocol
            # error): its closing event says with which code.
            while (event := codec.next_event()) is not NEED_DATA:
                if event.__class__ is H2ConnectionClosed:
                    self._count_close(event.error_code)
            self._close()

    def _count_close(self, error_code: int) -> None:
        if error_code and not self._error_counted:
            self._error_counted = True
            self.hcm.stats.downstream_cx_protocol_error.value += 1

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _connection_error(self, exc: H2ConnectionError) -> None:
        """The client broke HTTP/2: the codec's GOAWAY goes out, streams end, then close."""
        self._count_close(exc.error_code or ErrorCode.PROTOCOL_ERROR)
        log.debug("downstream h2 protocol error", error=str(exc), peer=self.peer_host)
        out = self.codec.data_to_send()
        if self.transport is not None and out:
            self.transport.write(out)
        for encoder in list(self.streams.values()):
            stream = encoder.stream
            if stream is not None and not stream.done:
                stream.stream_info.add_response_flag(ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR)
        self._close()

    # -- drain and idle -----------------------------------------------------------------------
    def drain(self) -> None:
        """Envoy's drain sequence: a GOAWAY with the highest stream id (clients stop opening
        streams), then after ``drain_timeout`` the final GOAWAY naming the last stream taken;
        the connection closes when its streams are done."""
        if self.draining or self.closed:
            return
        self.draining = True
        self.codec.shutdown_notice()
        self.flush()
        self._drain_timer = self.timers.call_later(
            self.hcm.model.drain_timeout or 0.0, self._final_goaway
        )

    def _final_goaway(self) -> None:
        self._drain_timer = None
        if self.closed:
            return
        self._goaway_sent = True
        self.codec.goaway(ErrorCode.NO_ERROR)
        self.flush()
        if not self.streams:
            self._close()

    def _schedule_ping(self, interval: float, jitter: float) -> None:
        # Jittered so that connections opened together do not ping together (Envoy's
        # interval_jitter, a percentage of the interval added at random).
        delay = interval * (1.0 + self.hcm.rng.random() * jitter / 100.0)
        self._ping_timer = self.timers.call_later(delay, self._send_ping)

    def _send_ping(self) -> None:
        keepalive = self.codec.settings.keepalive
        if self.closed or keepalive is None:
            return
        self._ping_payload = b"%08d" % (self.hcm.rng.getrandbits(26))
        self.codec.ping(self._ping_payload)
        self.flush()
        self._ping_timer = self.timers.call_later(keepalive.timeout, self._ping_timeout)

    def _ping_timeout(self) -> None:
        """No PING answer within ``connection_keepalive.timeout``: the client is gone."""
        if self.closed:
            return
        log.debug("h2 keepalive timeout", peer=self.peer_host)
        self.abort()

    def _on_ping_ack(self, opaque: bytes) -> None:
        keepalive = self.codec.settings.keepalive
        if opaque != self._ping_payload or keepalive is None or not keepalive.interval:
            return
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._schedule_ping(keepalive.interval, keepalive.interval_jitter)

    def _schedule_idle(self) -> None:
        period = _shortest(self.hcm.idle_timeout, self.hcm.stream_idle_timeout)
        if period:
            self._idle_timer = self.timers.call_later(period, self._on_idle_timer)

    def check_idle_by(self, when: float) -> None:
        timer = self._idle_timer
        if timer is not None and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._idle_timer = self.timers.call_at(when, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        """One timer serves the connection's idle timeout (no streams: GOAWAY and close) and
        every stream's idle timeout, rescheduled for whichever is due next."""
        self._idle_timer = None
        if self.closed:
            return
        now = self.timers.time()
        hcm = self.hcm
        due: list[float] = []
        if not self.streams and hcm.idle_timeout:
            remaining = self._idle_since + hcm.idle_timeout - now
            if remaining <= 0:
                hcm.stats.downstream_cx_idle_timeout.value += 1
                self._goaway_sent = True
                self.codec.goaway(ErrorCode.NO_ERROR)
                self.flush()
                self._close()
                return
            due.append(remaining)
        for encoder in list(self.streams.values()):
            stream = encoder.stream
            if stream is None or not stream.idle_timeout:
                continue
            remaining = stream.last_activity + stream.idle_timeout - now
            if remaining <= 0:
                stream.on_idle_timeout()
                remaining = stream.idle_timeout
            due.append(remaining)
        self.flush()
        period = _shortest(hcm.idle_timeout, hcm.stream_idle_timeout)
        if period:
            due.append(period)
        if due:
            self._idle_timer = self.timers.call_later(min(due), self._on_idle_timer)


def _shortest(*timeouts: float | None) -> float | None:
    enabled = [t for t in timeouts if t]
    return min(enabled) if enabled else None
