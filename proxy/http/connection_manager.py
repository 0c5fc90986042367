"""The HTTP/1.1 side of the connection manager: one :class:`DownstreamConnection` per accepted
connection, driving one :class:`~proxy.http.stream.ActiveStream` at a time.

The connection is the codec driver: it feeds bytes to the sans-I/O codec, turns its events
into ``decode_headers`` / ``decode_data`` / ``decode_trailers`` calls on the stream, and is
that stream's :class:`~proxy.http.codec_api.StreamEncoder` (response bytes, read-disable,
deadline, idle timer, ``connection: close``). Everything HTTP/1.1-specific stays here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import structlog

from proxy.codec import NEED_DATA, ConnectionClosed, Data, EndOfMessage, Request, ServerConnection
from proxy.codec.h2 import is_h2_preface
from proxy.http.stream import ActiveStream
from proxy.http.stream_info import ConnectionInfo, connection_info
from proxy.transport.flow_control import FlowControl
from pymesh.errors import RemoteProtocolError

if TYPE_CHECKING:
    from proxy.http.filter import Headers, Timers
    from proxy.http.hcm import HcmRuntime

__all__ = ["DownstreamConnection"]

log = structlog.get_logger(__name__)


class DownstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_close_after",
        "_deadline",
        "_deadline_callback",
        "_deadline_timer",
        "_deadline_timer_at",
        "_flow",
        "_head_started",
        "_header_timer",
        "_idle_since",
        "_idle_timer",
        "_processing",
        "_sniff",
        "_sniffed",
        "_streamed",
        "_wbuf",
        "closed",
        "codec",
        "connection_id",
        "connection_info",
        "draining",
        "hcm",
        "loop",
        "on_close",
        "original_destination",
        "scheme",
        "stream",
        "timers",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        hcm: HcmRuntime,
        loop: asyncio.AbstractEventLoop,
        *,
        scheme: bytes = b"http",
        on_close: Callable[[DownstreamConnection], None] | None = None,
        original_destination: tuple[str, int] | None = None,
        connection_id: int = 0,
        on_h2_preface: Callable[[DownstreamConnection, bytes], None] | None = None,
    ) -> None:
        self.hcm = hcm
        self.loop = loop
        self.timers: Timers = cast("Timers", loop)
        self.scheme = scheme
        self.on_close = on_close
        self.original_destination = original_destination
        self.connection_id = connection_id
        # codec_type AUTO: the first bytes decide (Envoy's prior-knowledge inference); the
        # callback hands the connection to the HTTP/2 side when they are the client preface.
        self._sniff = on_h2_preface
        self._sniffed = b""
        self.codec = ServerConnection(
            max_header_bytes=hcm.max_header_bytes, max_headers=hcm.max_headers
        )
        self.connection_info = ConnectionInfo(scheme=scheme)
        self.transport: asyncio.Transport | None = None
        self.stream: ActiveStream | None = None
        self._close_after = False
        self.draining = False
        self.closed = False
        self.write_paused = False
        self._flow: FlowControl | None = None
        self._wbuf: list[bytes] = []
        self._processing = False
        self._header_timer: asyncio.TimerHandle | None = None
        # Bytes of a request head arrived but no stream yet: the connection is not idle.
        self._head_started = False
        self._streamed = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._deadline = self._deadline_timer_at = 0.0
        self._deadline_callback: Callable[[], None] | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None

    @property
    def peer_host(self) -> str:
        return self.connection_info.remote_host

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self.transport = cast(asyncio.Transport, transport)
        self._flow = FlowControl(self.transport)
        self.connection_info = connection_info(
            transport,
            scheme=self.scheme,
            original_destination=self.original_destination,
            connection_id=self.connection_id,
        )
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stats = self.hcm.stats
        stats.downstream_cx_total.value += 1
        if self._sniff is None:
            stats.downstream_cx_http1_total.value += 1
        stats.downstream_cx_active.value += 1
        self._idle_since = self.timers.time()
        period = _shortest(self.hcm.idle_timeout, self.hcm.stream_idle_timeout)
        if period:
            self._idle_timer = self.timers.call_later(period, self._on_idle_timer)

    def data_received(self, data: bytes) -> None:
        if self._sniff is not None:
            data = self._sniff_preface(data)
            if not data:
                return
        if self.stream is None:
            self._head_started = True
            if self.hcm.request_headers_timeout and self._header_timer is None:
                self._header_timer = self.timers.call_later(
                    self.hcm.request_headers_timeout, self._on_header_timeout
                )
        try:
            self.codec.receive_data(data)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
            return
        self._process()
        self.flush()

    def _sniff_preface(self, data: bytes) -> bytes:
        """The bytes to parse as HTTP/1.1; b"" while undecided or once handed to HTTP/2."""
        data = self._sniffed + data
        verdict = is_h2_preface(data)
        if verdict is None:
            self._sniffed = data
            return b""
        switch, self._sniff, self._sniffed = self._sniff, None, b""
        if not verdict:
            self.hcm.stats.downstream_cx_http1_total.value += 1
            return data
        assert switch is not None
        # From here on this object is out of the picture: its timers must not fire.
        self.closed = True
        for timer in (self._header_timer, self._idle_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        switch(self, data)
        return b""

    def eof_received(self) -> bool | None:
        # Like Envoy's connection manager, no half-close: a client that shuts its side down
        # has gone away, and a request still in flight is reset (DC), not answered.
        with contextlib.suppress(RemoteProtocolError):
            self.codec.receive_data(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in (self._header_timer, self._idle_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        stream = self.stream
        if stream is not None:
            self.stream = None
            stream.on_downstream_reset()
        stats = self.hcm.stats
        stats.downstream_cx_active.value -= 1
        stats.downstream_cx_destroy.value += 1
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.stream is not None:
            self.stream.on_downstream_watermark(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.stream is not None:
            self.stream.on_downstream_watermark(False)

    # -- request processing -----------------------------------------------------------------------
    def _process(self) -> None:
        if self._processing:
            return  # re-entered from a stream completing inside the loop below
        self._processing = True
        codec = self.codec
        try:
            while not self.closed:
                stream = self.stream
                if stream is not None and stream.request_complete:
                    return  # a pipelined request waits until this response is done
                event = codec.next_event()
                if event is NEED_DATA:
                    return
                kind = type(event)
                if kind is Request:
                    self._start_stream(event)  # type: ignore[arg-type]
                elif stream is None:
                    continue
                elif kind is Data:
                    stream.decode_data(event.data, False)  # type: ignore[union-attr]
                elif kind is EndOfMessage:
                    # HTTP/1.1 trailers are dropped, as Envoy does without enable_trailers.
                    stream.decode_data(b"", True)
                elif kind is ConnectionClosed:
                    return
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
        finally:
            self._processing = False

    def _start_stream(self, request: Request) -> None:
        self._head_started = False
        self._streamed = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        stats = self.hcm.stats
        stats.downstream_rq_total.value += 1
        stats.downstream_rq_http1_total.value += 1
        stats.downstream_rq_active.value += 1
        if self.draining:
            self._close_after = True
        stream = self.stream = ActiveStream(self.hcm, self, request)
        end_stream = False
        if not request.chunked and not request.content_length and self.codec.ends_next():
            # No body: llhttp completed the message with its head, so the end is queued
            # right behind it. Taking it now lets the request go upstream in one piece.
            self.codec.next_event()
            end_stream = True
        stream.decode_headers(end_stream)

    def on_stream_complete(self, stream: object) -> None:
        if self.stream is not stream:
            return
        assert isinstance(stream, ActiveStream)
        self.stream = None
        self._idle_since = self.timers.time()
        if not stream.request_complete and not self.closed:
            stream.request_complete = self._skip_rest_of_request()
            if not stream.request_complete and stream.request.upgrade:
                # An upgrade request never ends on its own: Envoy's codec still holds it when
                # the connection closes, and counts that as the stream's reset.
                self.hcm.stats.downstream_rq_rx_reset.value += 1
        if (
            self._close_after
            or not stream.request_complete
            or not self.codec.keep_alive
            or self.closed
        ):
            self.flush()
            self._close()
            return
        self.codec.start_next_cycle()
        if not self._processing:
            self._process()
            self.flush()

    def _skip_rest_of_request(self) -> bool:
        """A response that went out before its request ended (a direct response, a local reply
        from a filter): drop the rest of the request if it is already here, so the connection
        stays reusable, as Envoy's codec does when the whole request came in one read."""
        codec = self.codec
        try:
            while True:
                event = codec.next_event()
                kind = type(event)
                if kind is EndOfMessage:
                    return True
                if kind is not Data:
                    return False  # NEED_DATA or ConnectionClosed: the end is not here
        except RemoteProtocolError:
            return False

    # -- StreamEncoder ------------------------------------------------------------------------
    def encode_headers(
        self, status: int, headers: Headers, end_stream: bool, head_request: bool
    ) -> None:
        stream = self.stream
        if (
            stream is not None
            and stream.upgrade is not None
            and self.codec.tunnelling
            and (status == 101 or (stream.method == b"CONNECT" and 200 <= status < 300))
        ):
            # The switch: no framing, and the connection ends when the tunnel does.
            self._wbuf.append(self.codec.send_response(status, headers))
            return
        if stream is not None and not stream.request_complete:
            request = stream.request
            if request.chunked or request.content_length:
                # Answered before its body was read (a local reply, an early upstream
                # answer): like Envoy, the connection is not reused.
                self._close_after = True
        if (
            end_stream
            and not head_request
            and status not in (204, 304)
            and not any(name == b"content-length" for name, _ in headers)
        ):
            # A head that ends the response (an HTTP/2 upstream's headers-only answer): Envoy
            # frames it with an explicit zero length rather than an empty chunked body.
            headers.append((b"content-length", b"0"))
        if self._close_after:
            headers.append((b"connection", b"close"))
        codec = self.codec
        self._wbuf.append(codec.send_response(status, headers, head_request=head_request))
        if end_stream:
            end = codec.send_end()
            if end:
                self._wbuf.append(end)

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        codec = self.codec
        wbuf = self._wbuf
        if data:
            wbuf.append(codec.send_data(data))
        if end_stream:
            end = codec.send_end()
            if end:
                wbuf.append(end)

    def encode_trailers(self, trailers: Headers) -> None:
        end = self.codec.send_end(trailers)
        if end:
            self._wbuf.append(end)

    def encode_100_continue(self) -> None:
        self._wbuf.append(self.codec.send_continue())

    def close_after_response(self) -> None:
        self._close_after = True

    def reset_stream(self) -> None:
        self.abort()

    # -- output ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        # Writes are gathered and sent once per event batch (see flush): one syscall for a
        # response head and body instead of two.
        self._wbuf.append(data)

    def flush(self) -> None:
        wbuf = self._wbuf
        if wbuf and self.transport is not None:
            if not self.closed:
                if len(wbuf) == 1:
                    self.transport.write(wbuf[0])
                else:
                    # writelines hands every piece to one writev: no copy of large bodies.
                    self.transport.writelines(wbuf)
            wbuf.clear()

    def read_disable(self, disable: bool) -> None:
        if self._flow is not None:
            self._flow.read_disable(disable)

    def abort(self) -> None:
        """Reset: drop the connection without finishing the response."""
        self._wbuf.clear()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def drain(self) -> None:
        """Stop reusing this connection: close it now if idle between requests, else after
        the response. A request whose head is still arriving is served (with ``connection:
        close``), as Envoy does: its stream exists from the first byte there. So is the first
        request of a connection just accepted: its bytes may be in flight, and closing would
        reset it (the client has not had a response to learn the connection was idle)."""
        self.draining = True
        self._close_after = True
        if self.stream is None and not self._head_started and self._streamed:
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- errors and timers ---------------------------------------------------------------
    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        self.hcm.stats.downstream_cx_protocol_error.value += 1
        stream = self.stream
        if stream is not None and stream.response_started:
            stream.reset()
            return
        if stream is not None:
            stream.stream_info.add_response_flag("DPE")
        log.debug("downstream protocol error", error=str(exc), peer=self.peer_host)
        self._send_simple(exc.status)

    def _send_simple(self, status: int, body: bytes | None = None) -> None:
        """A response for a request that never became a stream (bad bytes, slow headers); the
        body is the reason phrase unless given, as in Envoy."""
        reason = HTTPStatus(status).phrase.encode()
        if body is None:
            body = reason
        hcm = self.hcm
        head = b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"content-length: %d\r\ncontent-type: text/plain\r\n" % len(body),
                b"date: " + hcm.date() + b"\r\n",
                b"server: " + hcm.server_name + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            )
        )
        stream, self.stream = self.stream, None
        if stream is not None and not stream.done:
            stream.stream_info.response_code = status
            stream.done = True
            stream.destroy_filters()
            hcm.stats.downstream_rq_active.value -= 1
            hcm.stats.response(status)
        # Responses already complete (pipelined requests ahead of the bad one) go out first.
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.write(head)
            self._close()
        self.closed = True

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.stream is None and not self.closed:
            self.hcm.stats.downstream_rq_header_timeout.value += 1
            self._send_simple(408, b"request header timeout")

    def arm_deadline(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` at loop time ``when`` unless disarmed first (the route timeout of
        the one request in flight). A TimerHandle per request costs as much as a header
        scan; instead one timer per connection is kept scheduled across requests and, like
        the idle timer, reschedules itself when it fires before the current deadline. It is
        only moved earlier when a deadline comes before it, so timeouts fire on time."""
        self._deadline = when
        self._deadline_callback = callback
        timer = self._deadline_timer
        if timer is not None:
            if self._deadline_timer_at <= when:
                return
            timer.cancel()
        self._deadline_timer_at = when
        self._deadline_timer = self.timers.call_at(when, self._on_deadline_timer)

    def disarm_deadline(self) -> None:
        # The timer stays scheduled: the next request's deadline is later and reuses it.
        self._deadline_callback = None

    def _on_deadline_timer(self) -> None:
        self._deadline_timer = None
        callback = self._deadline_callback
        if callback is None or self.closed:
            return
        deadline = self._deadline
        if self.timers.time() < deadline:
            self._deadline_timer_at = deadline
            self._deadline_timer = self.timers.call_at(deadline, self._on_deadline_timer)
            return
        self._deadline_callback = None
        callback()

    def _on_idle_timer(self) -> None:
        """One timer per connection serves both idle timeouts: the connection's (no stream)
        and the stream's (no activity either way). It is rescheduled for whichever is due
        next rather than re-armed on every byte, which would cost a TimerHandle each time."""
        self._idle_timer = None
        if self.closed:
            return
        now = self.timers.time()
        stream = self.stream
        if stream is None:
            timeout = self.hcm.idle_timeout
            if not timeout:
                return
            remaining = self._idle_since + timeout - now
            if remaining <= 0:
                self.hcm.stats.downstream_cx_idle_timeout.value += 1
                self._close()
                return
        else:
            if stream.idle_timeout:
                remaining = stream.last_activity + stream.idle_timeout - now
                if remaining <= 0:
                    stream.on_idle_timeout()
                    self.flush()
                    remaining = stream.idle_timeout
            else:
                remaining = self.hcm.idle_timeout or 0.0
            if not remaining:
                return
        # Never sleep past one stream-idle period: a stream may start meanwhile.
        period = _shortest(self.hcm.idle_timeout, self.hcm.stream_idle_timeout)
        if period:
            remaining = min(remaining, period)
        self._idle_timer = self.timers.call_later(remaining, self._on_idle_timer)

    def check_idle_by(self, when: float) -> None:
        """Make sure the idle timer fires no later than ``when`` (a route with a shorter
        idle_timeout than the connection manager's)."""
        timer = self._idle_timer
        if timer is not None and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._idle_timer = self.timers.call_at(when, self._on_idle_timer)


def _shortest(*timeouts: float | None) -> float | None:
    """The shortest of the enabled timeouts (0 and None disable one)."""
    enabled = [t for t in timeouts if t]
    return min(enabled) if enabled else None
