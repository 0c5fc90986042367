"""One client-streaming gRPC call (``StreamAccessLogs``) over the proxy's sans-I/O HTTP/2
codec, on a connection of its own: the same client the proxy's unary side calls use
(:mod:`proxy.upstream.h2_unary`), with no gRPC library thread beside the event loop.

Messages are queued in the codec and leave as the service's flow-control windows allow;
:attr:`backlog` tells how much the service holds back, so the caller can stop writing to a
slow service instead of filling memory. The call ends when the service answers (its status
in ``grpc-status``), resets the stream, or the connection goes; ``on_end(why)`` is called
once, and ``on_writable()`` whenever the service has taken queued bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

from proxy.codec.events import NEED_DATA
from proxy.codec.h2 import H2ClientConnection
from proxy.codec.h2_events import (
    H2ConnectionClosed,
    H2ConnectionError,
    H2Data,
    H2GoAway,
    H2Response,
    H2StreamReset,
    H2Trailers,
)
from proxy.routing.grpc import frame_message

__all__ = ["H2StreamCall"]

_HEAD: Final = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]


class H2StreamCall(asyncio.Protocol):
    def __init__(
        self,
        path: bytes,
        authority: bytes,
        *,
        on_end: Callable[[str], None],
        on_writable: Callable[[], None],
    ) -> None:
        self._path = path
        self._authority = authority
        self._on_end: Callable[[str], None] | None = on_end
        self._on_writable = on_writable
        self._codec = H2ClientConnection()
        self._transport: asyncio.Transport | None = None
        self._sid = 0
        self._status: bytes | None = None

    @property
    def open(self) -> bool:
        return self._sid != 0 and self._on_end is not None

    @property
    def backlog(self) -> int:
        """Bytes written that the service's flow-control window still holds back."""
        return self._codec.queued(self._sid) if self.open else 0

    def write(self, message: bytes) -> None:
        """One serialized request message."""
        if not self.open:
            return
        self._codec.send_data(self._sid, frame_message(message))
        self._flush()

    def close(self) -> None:
        """End our side (the service then answers), and the connection with it."""
        if self.open:
            self._codec.end_stream(self._sid)
            self._flush()
        self._end("closed by the proxy")
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self._transport = cast(asyncio.Transport, transport)
        self._sid = self._codec.send_request(b"POST", b"http", self._authority, self._path, _HEAD)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._end(f"connection closed{f': {exc}' if exc else ''}")

    def data_received(self, data: bytes) -> None:
        codec = self._codec
        try:
            codec.receive_data(data)
        except H2ConnectionError as exc:
            self._flush()
            self._end(f"HTTP/2 error: {exc}")
            if self._transport is not None:
                self._transport.close()
            return
        while (event := codec.next_event()) is not NEED_DATA:
            if isinstance(event, H2Response):
                if event.status != 200:
                    self._end(f"HTTP status {event.status}")
                fields = dict(event.headers)
                self._status = fields.get(b"grpc-status", self._status)
                if event.end_stream:
                    self._end(self._answer())
            elif isinstance(event, H2Data):
                codec.consumed(event.stream_id, len(event.data))
                if event.end_stream:
                    self._end(self._answer())
            elif isinstance(event, H2Trailers):
                self._status = dict(event.headers).get(b"grpc-status", self._status)
                self._end(self._answer())
            elif isinstance(event, H2StreamReset):
                self._end(f"stream reset by the service (error {event.error_code})")
            elif isinstance(event, (H2GoAway, H2ConnectionClosed)):
                self._end("the service closed the connection")
        self._flush()
        if self.open:
            self._on_writable()

    # -- helpers -----------------------------------------------------------------------------
    def _answer(self) -> str:
        status = self._status.decode("latin-1") if self._status is not None else "none"
        return f"the service ended the stream (grpc-status {status})"

    def _end(self, why: str) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(why)

    def _flush(self) -> None:
        transport = self._transport
        if transport is not None:
            out = self._codec.data_to_send()
            if out:
                transport.write(out)
