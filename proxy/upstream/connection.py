"""One HTTP/1.1 connection to an upstream host (an ``asyncio.Protocol``).

The connection carries one request at a time (HTTP/1.1 without pipelining, as Envoy's
HTTP/1 pool does), so it is itself that request's :class:`RequestEncoder`. Parsed response
events go straight to the attached :class:`UpstreamCallbacks` through plain method calls: no
Task, no queue, no per-event allocation beyond the codec's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, cast

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
from proxy.upstream.interfaces import Headers, ResetReason, UpstreamCallbacks
from pymesh.errors import RemoteProtocolError

if TYPE_CHECKING:
    from proxy.upstream.pool import ConnectionPool

__all__ = ["UpstreamConnection"]

log = structlog.get_logger(__name__)

# Methods whose requests go upstream without a length when they have no body; Envoy's codec
# frames a POST, PUT, OPTIONS... that has no body with ``content-length: 0``.
_BODYLESS = frozenset({b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"})


class UpstreamConnection(asyncio.Protocol):
    chunks_bodies = True

    __slots__ = (
        "_codec",
        "_connect",
        "_flow",
        "_mid_response",
        "callbacks",
        "closed",
        "local_address",
        "pool",
        "requests",
        "transport",
        "write_paused",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._codec = ClientConnection()
        self.callbacks: UpstreamCallbacks | None = None
        self.closed = False
        self.write_paused = False
        self.local_address: str | None = None
        self._flow: FlowControl | None = None
        # A response head went to the callbacks and its body has not ended: a close now cuts a
        # response short, which Envoy reports as a protocol error, not a termination.
        self._mid_response = False
        self._connect = False  # the exchange is a CONNECT: its end closes the connection
        self.requests = 0

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self.transport = cast(asyncio.Transport, transport)
        self._flow = FlowControl(self.transport)
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local_address = f"{local[0]}:{local[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.pool.stats.upstream_cx_rx_bytes_total.value += len(data)
        cb = self.callbacks
        if cb is None:
            # Bytes while idle: the server broke HTTP/1.1 framing; never reuse this connection.
            self.close()
            return
        codec = self._codec
        try:
            codec.receive_data(data)
            while True:
                event = codec.next_event()
                kind = type(event)
                if kind is Data:
                    if codec.ends_next():
                        # The last piece and the end in one call (HTTP/1.1 trailers dropped).
                        codec.next_event()
                        self._finish_exchange(cb, event.data)  # type: ignore[union-attr]
                        cb.on_upstream_batch_end()
                        return
                    cb.on_upstream_data(event.data, False)  # type: ignore[union-attr]
                elif kind is Response:
                    self._mid_response = True
                    cb.on_upstream_headers(event, False)  # type: ignore[arg-type]
                elif kind is EndOfMessage:
                    # HTTP/1.1 trailers are dropped, as Envoy does without enable_trailers.
                    self._finish_exchange(cb)
                    cb.on_upstream_batch_end()
                    return
                elif event is NEED_DATA:
                    cb.on_upstream_batch_end()
                    return
                elif kind is InformationalResponse:
                    continue  # 100 Continue was already answered downstream by the proxy
                elif kind is ConnectionClosed:
                    self._reset(ResetReason.CONNECTION_TERMINATION)
                    return
                if self.callbacks is not cb:
                    # The callbacks detached (retry, reset) while handling the event, or handed
                    # the rest of the exchange over to be read and dropped.
                    cb.on_upstream_batch_end()
                    if self.callbacks is None:
                        return
                    cb = self.callbacks
        except RemoteProtocolError as exc:
            log.debug("upstream protocol error", error=str(exc))
            self._reset(ResetReason.PROTOCOL_ERROR)
            cb.on_upstream_batch_end()

    def eof_received(self) -> bool | None:
        cb = self.callbacks
        if cb is not None and self._codec.tunnelling:
            # HTTP/1.1 gives a switched connection no end but its close: Envoy reports the
            # tunnel's upstream closing as a connection termination.
            self._reset(ResetReason.CONNECTION_TERMINATION)
            cb.on_upstream_batch_end()
            return None
        if cb is not None:
            try:
                self._codec.receive_data(b"")
                event = self._codec.next_event()
                # A close-delimited body ends at EOF: that is a complete response.
                if type(event) is EndOfMessage:
                    self._finish_exchange(cb)
                    cb.on_upstream_batch_end()
                    return None
            except RemoteProtocolError:
                pass
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.stats.upstream_cx_destroy_remote.value += 1
        cb, self.callbacks = self.callbacks, None
        self.pool.on_connection_closed(self)
        if cb is not None:
            cb.on_upstream_reset(
                ResetReason.PROTOCOL_ERROR
                if self._mid_response and not self._codec.tunnelling
                else ResetReason.CONNECTION_TERMINATION
            )
            cb.on_upstream_batch_end()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.callbacks is not None:
            self.callbacks.on_upstream_watermark(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.callbacks is not None:
            self.callbacks.on_upstream_watermark(False)

    # -- the pool's side -----------------------------------------------------------------
    def attach(self, callbacks: UpstreamCallbacks) -> None:
        self.callbacks = callbacks
        self._mid_response = False
        self.requests += 1

    # -- RequestEncoder --------------------------------------------------------------------
    def encode_headers(
        self, method: bytes, path: bytes, headers: Headers, end_stream: bool
    ) -> None:
        """The request head. Body framing follows the headers: a content-length when there
        is one, chunked when a body follows without one, none when the request ends here."""
        self._connect = method == b"CONNECT"
        if self._connect or any(name == b"upgrade" for name, _ in headers):
            # A protocol switch: raw bytes follow the head, with no framing.
            self.write(self._codec.send_request(method, path, headers))
            if end_stream:
                self._end()
            return
        if end_stream:
            if method not in _BODYLESS and not _has_length(headers):
                headers = [*headers, (b"content-length", b"0")]
            self.write(self._codec.send_request(method, path, headers, chunked=False))
            self._end()
            return
        chunked = not _has_length(headers)
        self.write(self._codec.send_request(method, path, headers, chunked=chunked))

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self.write(self._codec.send_data(data))
        if end_stream:
            self._end()

    def encode_trailers(self, trailers: Headers) -> None:
        # Envoy's HTTP/1.1 codec sends request trailers only with enable_trailers; without it
        # the chunked body just ends (an HTTP/2 client's trailers stop here).
        end = self._codec.send_end(trailers if self.pool.enable_trailers else None)
        if end:
            self.write(end)

    def read_disable(self, disable: bool) -> None:
        if self._flow is not None:
            self._flow.read_disable(disable)

    def reset(self) -> None:
        """Abandon the exchange in flight (retry, timeout, downstream reset): the connection
        cannot be reused because the response may still be arriving."""
        self.callbacks = None
        self.close()

    def discard_response(self) -> None:
        self.callbacks = _DISCARD

    # -- output ------------------------------------------------------------------------------
    def _end(self) -> None:
        end = self._codec.send_end()
        if end:
            self.write(end)
        if self._connect and self._codec.tunnelling and self.transport is not None:
            # The client ended its side of a CONNECT tunnel: like Envoy's HTTP/1.1 codec,
            # close the connection once what is written has gone out.
            self.transport.close()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            self.pool.stats.upstream_cx_tx_bytes_total.value += len(data)
            transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.stats.upstream_cx_destroy_local.value += 1
            if self.transport is not None:
                self.transport.abort()

    # -- internals ----------------------------------------------------------------------------
    def _finish_exchange(self, cb: UpstreamCallbacks, last: bytes = b"") -> None:
        self.callbacks = None
        self._mid_response = False
        if self._flow is not None:
            # Every reason to stop reading belonged to this exchange.
            self._flow.clear()
        if self._codec.keep_alive and not self.closed:
            self._codec.start_next_cycle()
            # Released before the callbacks hear of the end, so that a request the end
            # triggers can pick this very connection up again.
            self.pool.release(self)
        else:
            self.close()
        cb.on_upstream_data(last, True)

    def _reset(self, reason: ResetReason) -> None:
        cb, self.callbacks = self.callbacks, None
        self.close()
        if cb is not None:
            cb.on_upstream_reset(reason)


def _has_length(headers: Headers) -> bool:
    for name, _ in headers:  # noqa: SIM110 - a plain loop is cheaper than any() here
        if name == b"content-length":
            return True
    return False


class _DiscardCallbacks:
    """Takes the rest of an exchange nobody waits for any more."""

    __slots__ = ()

    def on_upstream_headers(self, response: Response, end_stream: bool) -> None:
        pass

    def on_upstream_data(self, data: bytes, end_stream: bool) -> None:
        pass

    def on_upstream_trailers(self, trailers: Headers) -> None:
        pass

    def on_upstream_reset(self, reason: ResetReason) -> None:
        pass

    def on_upstream_watermark(self, above: bool) -> None:
        pass

    def on_upstream_batch_end(self) -> None:
        pass


_DISCARD = _DiscardCallbacks()
