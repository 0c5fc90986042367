"""A unary-only gRPC server over the proxy's sans-I/O HTTP/2 codec.

grpcio's asyncio server spends about 170 µs of CPU on each call, which caps a Rate Limit
Service at a few thousand decisions per core — far below what one proxy asks for. A unary
call is one request message in, one response message out, so it needs none of grpcio's
machinery: this server reads the HTTP/2 stream with :class:`~proxy.codec.h2.H2ServerConnection`
(libnghttp2), hands the message bytes to a handler, and answers with a response head, one
DATA frame and the ``grpc-status`` trailer. Everything else is refused the way a gRPC server
refuses it: an unknown method is ``UNIMPLEMENTED``, a non-gRPC request or a compressed
message (no ``grpc-encoding`` is negotiated) is answered with a trailers-only status, and a
connection-level protocol error gets a GOAWAY.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, cast

import structlog

from proxy.codec.events import NEED_DATA
from proxy.codec.h2 import H2ServerConnection
from proxy.codec.h2_events import (
    H2ConnectionClosed,
    H2ConnectionError,
    H2Data,
    H2Request,
    H2StreamReset,
    H2Trailers,
)
from proxy.routing.grpc import (
    GrpcStatus,
    frame_message,
    is_grpc_content_type,
    percent_encode_message,
    unframe_message,
)

__all__ = ["GrpcAbort", "Handler", "UnaryGrpcServer"]

log = structlog.get_logger(__name__)

#: The serialized request in, the serialized response out; raises :class:`GrpcAbort`.
Handler = Callable[[bytes], Coroutine[Any, Any, bytes]]

_MAX_MESSAGE: Final = 4 << 20  # grpcio's default receive limit
_RESPONSE_HEAD: Final = [(b"content-type", b"application/grpc")]
_OK_TRAILERS: Final = [(b"grpc-status", b"0")]


class GrpcAbort(Exception):
    """A handler's non-OK answer: ``status`` and ``message`` go to the caller as trailers."""

    def __init__(self, status: GrpcStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UnaryGrpcServer:
    """Serves ``handlers`` (``/package.Service/Method`` → :data:`Handler`) on one address."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = {path.encode(): handler for path, handler in handlers.items()}
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        # No SO_REUSEPORT: a second server on a taken port must fail, not share it silently.
        self._server = await loop.create_server(
            lambda: _Connection(self._handlers, self._connections), host, port, reuse_port=False
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.drain()
        try:
            await asyncio.wait_for(self._server.wait_closed(), grace)
        except TimeoutError:
            for connection in list(self._connections):
                connection.abort()
        self._server = None


class _Connection(asyncio.Protocol):
    """One client connection: many concurrent calls, one write per batch of answers."""

    __slots__ = (
        "_bodies",
        "_calls",
        "_codec",
        "_flush_scheduled",
        "_handlers",
        "_live",
        "_transport",
    )

    def __init__(self, handlers: Mapping[bytes, Handler], live: set[_Connection]) -> None:
        self._handlers = handlers
        self._live = live
        self._codec = H2ServerConnection()
        self._transport: asyncio.Transport | None = None
        # stream id → (handler, body so far); None for a stream already answered.
        self._bodies: dict[int, tuple[Handler, bytearray] | None] = {}
        self._flush_scheduled = False
        # The event loop keeps only weak references to tasks.
        self._calls: set[asyncio.Task[bytes]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self._transport = cast(asyncio.Transport, transport)
        self._live.add(self)
        self._flush()  # our SETTINGS

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._transport = None
        for task in self._calls:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        codec = self._codec
        try:
            codec.receive_data(data)
        except H2ConnectionError as exc:
            log.info("grpc connection error", error=str(exc))
            self._flush()
            self.abort()
            return
        while (event := codec.next_event()) is not NEED_DATA:
            if isinstance(event, H2Data):
                self._on_data(event)
            elif isinstance(event, H2Request):
                self._on_request(event)
            elif isinstance(event, H2Trailers):
                self._end(event.stream_id)
            elif isinstance(event, H2StreamReset):
                self._bodies.pop(event.stream_id, None)
            elif isinstance(event, H2ConnectionClosed):
                self._flush()
                self.abort()
                return
        self._flush()

    def _on_request(self, request: H2Request) -> None:
        sid = request.stream_id
        content_type = next((v for k, v in request.headers if k == b"content-type"), None)
        if request.method != b"POST" or not is_grpc_content_type(content_type):
            # A plain HTTP client: answer as gRPC servers do, with a status it can read.
            self._codec.send_response(sid, 415, [(b"content-type", b"text/plain")])
            self._codec.send_data(
                sid, b"gRPC requires POST with application/grpc\n", end_stream=True
            )
            self._bodies[sid] = None
            return
        handler = self._handlers.get(request.path or b"")
        if handler is None:
            path = (request.path or b"").decode("latin-1")
            self._status(sid, GrpcStatus.UNIMPLEMENTED, f"unknown method {path}")
            return
        self._bodies[sid] = (handler, bytearray())
        if request.end_stream:
            self._end(sid)

    def _on_data(self, data: H2Data) -> None:
        sid = data.stream_id
        self._codec.consumed(sid, len(data.data))
        entry = self._bodies.get(sid)
        if entry is not None:
            body = entry[1]
            body += data.data
            if len(body) > _MAX_MESSAGE + 5:  # the length prefix
                self._status(sid, GrpcStatus.RESOURCE_EXHAUSTED, "request message too large")
                return
        if data.end_stream:
            self._end(sid)

    def _end(self, sid: int) -> None:
        entry = self._bodies.get(sid)
        if entry is None:
            return
        handler, body = entry
        message = unframe_message(body)
        if isinstance(message, str):
            compressed = message.startswith("compressed")
            status = GrpcStatus.UNIMPLEMENTED if compressed else GrpcStatus.INTERNAL
            self._status(sid, status, f"request: {message}")
            return
        self._bodies[sid] = None
        task = asyncio.get_running_loop().create_task(handler(message))
        self._calls.add(task)
        task.add_done_callback(lambda done: self._answer(sid, done))

    def _answer(self, sid: int, done: asyncio.Task[bytes]) -> None:
        self._calls.discard(done)
        if sid not in self._bodies or self._transport is None:
            return  # the caller reset the stream, or left
        if done.cancelled():
            self._status(sid, GrpcStatus.CANCELLED, "cancelled")
        elif (exc := done.exception()) is not None:
            if isinstance(exc, GrpcAbort):
                self._status(sid, exc.status, exc.message)
            else:
                log.error("grpc handler failed", error=repr(exc))
                self._status(sid, GrpcStatus.INTERNAL, "internal error")
        else:
            message = done.result()
            codec = self._codec
            codec.send_response(sid, 200, _RESPONSE_HEAD)
            codec.send_data(sid, frame_message(message))
            codec.send_trailers(sid, _OK_TRAILERS)
            del self._bodies[sid]
        self._schedule_flush()

    def _status(self, sid: int, status: GrpcStatus, message: str) -> None:
        """A trailers-only answer (the head carries the status)."""
        fields = [
            *_RESPONSE_HEAD,
            (b"grpc-status", b"%d" % status),
            (b"grpc-message", percent_encode_message(message)),
        ]
        self._codec.send_response(sid, 200, fields, end_stream=True)
        self._bodies.pop(sid, None)

    def _schedule_flush(self) -> None:
        # Answers finishing in the same loop turn leave in one write.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return
        out = self._codec.data_to_send()
        if out:
            transport.write(out)
        if self._codec.wants_close:
            transport.close()

    def drain(self) -> None:
        self._codec.shutdown_notice()
        self._codec.goaway()
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
