"""One HTTP/1.1 connection to an upstream host (an ``asyncio.Protocol``).

The connection carries one request at a time (HTTP/1.1 without pipelining, as Envoy's
HTTP/1 pool does). Parsed response events go straight to the owning :class:`UpstreamSink`
through plain method calls: no Task, no queue, no per-event allocation beyond the codec's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Protocol, cast

import structlog

from proxy.codec import (
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    Response,
)
from proxy.transport.flow_control import FlowControl
from pymesh.errors import RemoteProtocolError

if TYPE_CHECKING:
    from proxy.upstream.pool import ConnectionPool

__all__ = ["UpstreamConnection", "UpstreamSink"]

log = structlog.get_logger(__name__)

# Envoy's reset reasons, as its local replies spell them.
_TERMINATION = "connection termination"
_PROTOCOL_ERROR = "protocol error"


class UpstreamSink(Protocol):
    """What an upstream connection reports to (the router's upstream request)."""

    def on_upstream_response(self, response: Response) -> None: ...
    def on_upstream_data(self, data: bytes) -> None: ...
    def on_upstream_end(self) -> None: ...
    def on_upstream_reset(self, reason: str) -> None: ...
    def on_upstream_write_paused(self, paused: bool) -> None: ...
    def on_upstream_flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_codec",
        "_flow",
        "_mid_response",
        "closed",
        "pool",
        "requests",
        "sink",
        "transport",
        "write_paused",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._codec = ClientConnection()
        self.sink: UpstreamSink | None = None
        self.closed = False
        self.write_paused = False
        self._flow: FlowControl | None = None
        # A response head went to the sink and its body has not ended: a close now cuts a
        # response short, which Envoy reports as a protocol error, not a termination.
        self._mid_response = False
        self.requests = 0

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self.transport = cast(asyncio.Transport, transport)
        self._flow = FlowControl(self.transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.pool.stats.upstream_cx_rx_bytes_total.value += len(data)
        sink = self.sink
        if sink is None:
            # Bytes while idle: the server broke HTTP/1.1 framing; never reuse this connection.
            self.close()
            return
        codec = self._codec
        try:
            codec.receive_data(data)
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    sink.on_upstream_flush()
                    return
                if type(event) is Data:
                    sink.on_upstream_data(event.data)
                elif type(event) is Response:
                    self._mid_response = True
                    sink.on_upstream_response(event)
                elif type(event) is EndOfMessage:
                    self._finish_exchange(sink)
                    sink.on_upstream_flush()
                    return
                elif type(event) is InformationalResponse:
                    continue  # 100 Continue was already answered downstream by the proxy
                elif type(event) is ConnectionClosed:
                    self._reset(_TERMINATION)
                    return
                if self.sink is not sink:
                    # The sink detached itself (retry, reset) while handling the event, or
                    # handed the rest of the exchange over to be read and dropped.
                    sink.on_upstream_flush()
                    if self.sink is None:
                        return
                    sink = self.sink
        except RemoteProtocolError as exc:
            log.debug("upstream protocol error", error=str(exc))
            self._reset(_PROTOCOL_ERROR)
            sink.on_upstream_flush()

    def eof_received(self) -> bool | None:
        if self.sink is not None:
            try:
                self._codec.receive_data(b"")
                event = self._codec.next_event()
                # A close-delimited body ends at EOF: that is a complete response.
                if type(event) is EndOfMessage:
                    self._finish_exchange(self.sink)
                    return None
            except RemoteProtocolError:
                pass
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.stats.upstream_cx_destroy_remote.value += 1
        sink, self.sink = self.sink, None
        self.pool.on_connection_closed(self)
        if sink is not None:
            sink.on_upstream_reset(_PROTOCOL_ERROR if self._mid_response else _TERMINATION)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.sink is not None:
            self.sink.on_upstream_write_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.sink is not None:
            self.sink.on_upstream_write_paused(False)

    # -- used by the router ----------------------------------------------------------------
    def attach(self, sink: UpstreamSink) -> None:
        self.sink = sink
        self._mid_response = False
        self.requests += 1

    def write_request_head(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], chunked: bool
    ) -> None:
        self.write(self._codec.send_request(method, target, headers, chunked=chunked))

    def write_data(self, data: bytes) -> None:
        self.write(self._codec.send_data(data))

    def write_end(self) -> None:
        end = self._codec.send_end()
        if end:
            self.write(end)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            self.pool.stats.upstream_cx_tx_bytes_total.value += len(data)
            transport.write(data)

    def pause_reading(self) -> None:
        if self._flow is not None:
            self._flow.pause_reading()

    def resume_reading(self) -> None:
        if self._flow is not None:
            self._flow.resume_reading()

    def detach_and_close(self) -> None:
        """Abandon the exchange in flight (retry, timeout, downstream reset): the connection
        cannot be reused because the response may still be arriving."""
        self.sink = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.stats.upstream_cx_destroy_local.value += 1
            if self.transport is not None:
                self.transport.abort()

    # -- internals ----------------------------------------------------------------------------
    def _finish_exchange(self, sink: UpstreamSink) -> None:
        self.sink = None
        self._mid_response = False
        if self._codec.keep_alive and not self.closed:
            self._codec.start_next_cycle()
            self.resume_reading()
            # Released before the sink hears of the end, so that a request the sink's
            # completion triggers can pick this very connection up again.
            self.pool.release(self)
        else:
            self.close()
        sink.on_upstream_end()

    def _reset(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        self.close()
        if sink is not None:
            sink.on_upstream_reset(reason)
