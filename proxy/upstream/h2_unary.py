"""Unary gRPC calls of the proxy's own over its sans-I/O HTTP/2 codec.

An external authorizer's ``Check`` or a rate limit service's ``ShouldRateLimit`` sits on the
request path, so its cost is every request's cost. grpcio's asyncio channel runs its own
poller thread beside the event loop and cost the caller 57 µs of CPU per call here, against
26 µs for this client (``python -m benchmarks.side_call``); here a call is one stream on a
connection the proxy owns:
a request head, one DATA frame, then the response read from the codec's events in the same
loop turn as the bytes arrive.

One connection per target (``host:port``), made when first needed and made again after it
closes. A call never outlives its timeout, and is cancelled with the stream that made it;
its outcome goes to a callback as ``done(response, None)`` or ``done(None, "CODE: why")``
with gRPC's status names, so callers report failures as grpcio-based ones did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

from proxy.codec.events import NEED_DATA
from proxy.codec.h2 import H2ClientConnection
from proxy.codec.h2_events import (
    ErrorCode,
    H2ConnectionClosed,
    H2ConnectionError,
    H2Data,
    H2GoAway,
    H2Response,
    H2StreamReset,
    H2Trailers,
)
from proxy.routing.grpc import (
    GrpcStatus,
    frame_message,
    http_to_grpc_status,
    percent_decode_message,
    unframe_message,
)

__all__ = ["Done", "H2Unary", "H2UnaryCall"]

Done = Callable[[Any, str | None], None]
"""``done(response, error)``: exactly one of them is None."""

_HEAD: Final = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]


class H2UnaryCall:
    """One call in flight; :meth:`cancel` drops its outcome and resets its stream."""

    __slots__ = ("_body", "_channel", "_deserialize", "_done", "_fields", "_timer", "stream_id")

    def __init__(self, channel: _Channel, done: Done, deserialize: Callable[[bytes], Any]) -> None:
        self._channel = channel
        self._done: Done | None = done
        self._deserialize = deserialize
        self._body = bytearray()
        self._fields: dict[bytes, bytes] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.stream_id = 0

    @property
    def live(self) -> bool:
        """Neither answered nor cancelled yet."""
        return self._done is not None

    def arm(self, timeout: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)

    def cancel(self) -> None:
        if self._done is not None:
            self._done = None
            self._stop_timer()
            self._channel.forget(self, ErrorCode.CANCEL)

    def _expire(self) -> None:
        self._timer = None
        self._channel.forget(self, ErrorCode.CANCEL)
        self.fail("DEADLINE_EXCEEDED: Deadline Exceeded")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def fail(self, error: str) -> None:
        done, self._done = self._done, None
        self._stop_timer()
        if done is not None:
            done(None, error)

    def head(self, event: H2Response) -> None:
        self._fields = dict(event.headers)
        if event.status != 200:
            code = http_to_grpc_status(event.status)
            self.fail(f"{code.name}: HTTP status {event.status}")
        elif event.end_stream:
            self.finish(())

    def data(self, chunk: bytes) -> None:
        self._body += chunk

    def finish(self, trailers: Any) -> None:
        fields = self._fields
        fields.update(trailers)
        raw = fields.get(b"grpc-status")
        if raw is None:
            self.fail("UNKNOWN: no grpc-status in the response")
            return
        try:
            status = GrpcStatus(int(raw))
        except ValueError:
            self.fail(f"UNKNOWN: grpc-status {raw!r}")
            return
        if status is not GrpcStatus.OK:
            why = percent_decode_message(fields.get(b"grpc-message", b""))
            self.fail(f"{status.name}: {why}")
            return
        message = unframe_message(self._body)
        if isinstance(message, str):
            self.fail(f"INTERNAL: response: {message}")
            return
        try:
            response = self._deserialize(message)
        except Exception as exc:  # a protobuf that does not parse
            self.fail(f"INTERNAL: cannot parse the response: {exc}")
            return
        done, self._done = self._done, None
        self._stop_timer()
        if done is not None:
            done(response, None)


class H2Unary:
    """Calls of one method; ``target`` (``host:port``) is chosen per call by the caller."""

    def __init__(
        self,
        method: str,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
        *,
        authority: str = "",
    ) -> None:
        self._path = method.encode()
        self._serialize = serialize
        self._deserialize = deserialize
        self._authority = authority.encode()
        self._channels: dict[str, _Channel] = {}

    def call(self, target: str, request: Any, timeout: float | None, done: Done) -> H2UnaryCall:
        channel = self._channels.get(target)
        if channel is None or channel.closed:
            host, _, port = target.rpartition(":")
            authority = self._authority or target.encode()
            channel = self._channels[target] = _Channel(host.strip("[]"), int(port), authority)
        message = self._serialize(request)
        call = H2UnaryCall(channel, done, self._deserialize)
        if timeout is not None:
            call.arm(timeout)
        channel.start(call, self._path, frame_message(message))
        return call

    async def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


class _Channel(asyncio.Protocol):
    """One HTTP/2 connection to one target, and the calls on it."""

    def __init__(self, host: str, port: int, authority: bytes) -> None:
        self._host = host
        self._port = port
        self._authority = authority
        self._codec = H2ClientConnection()
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, H2UnaryCall] = {}
        # Calls made before the connection is up, or while the peer's stream limit is full.
        self._waiting: list[tuple[H2UnaryCall, bytes, bytes]] = []
        self._connecting = False
        self.closed = False

    def start(self, call: H2UnaryCall, path: bytes, frame: bytes) -> None:
        if self._transport is None or not self._codec.can_open_stream:
            self._waiting.append((call, path, frame))
            if self._transport is None and not self._connecting:
                self._connecting = True
                asyncio.get_running_loop().create_task(self._connect())
            return
        self._send(call, path, frame)
        self._flush()

    def _send(self, call: H2UnaryCall, path: bytes, frame: bytes) -> None:
        codec = self._codec
        sid = codec.send_request(b"POST", b"http", self._authority, path, _HEAD)
        codec.send_data(sid, frame, end_stream=True)
        call.stream_id = sid
        self._calls[sid] = call

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self, self._host, self._port)
        except OSError as exc:
            self._connecting = False
            self._fail_all(f"UNAVAILABLE: cannot connect to {self._host}:{self._port}: {exc}")
            self.closed = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self._transport = cast(asyncio.Transport, transport)
        self._connecting = False
        waiting, self._waiting = self._waiting, []
        for call, path, frame in waiting:
            if call.live:  # not cancelled or expired while we connected
                self._send(call, path, frame)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.closed = True
        self._fail_all(f"UNAVAILABLE: connection to {self._host}:{self._port} closed")

    def data_received(self, data: bytes) -> None:
        codec = self._codec
        try:
            codec.receive_data(data)
        except H2ConnectionError as exc:
            self._flush()
            self._fail_all(f"UNAVAILABLE: {exc}")
            self.close()
            return
        calls = self._calls
        while (event := codec.next_event()) is not NEED_DATA:
            if isinstance(event, H2Data):
                codec.consumed(event.stream_id, len(event.data))
                call = calls.get(event.stream_id)
                if call is not None:
                    call.data(event.data)
                    if event.end_stream:
                        del calls[event.stream_id]
                        call.finish(())
            elif isinstance(event, H2Response):
                call = calls.get(event.stream_id)
                if call is not None:
                    if event.end_stream or event.status != 200:
                        del calls[event.stream_id]
                    call.head(event)
            elif isinstance(event, H2Trailers):
                call = calls.pop(event.stream_id, None)
                if call is not None:
                    call.finish(event.headers)
            elif isinstance(event, H2StreamReset):
                call = calls.pop(event.stream_id, None)
                if call is not None:
                    why = "REFUSED_STREAM" if event.error_code == ErrorCode.REFUSED_STREAM else ""
                    call.fail(f"UNAVAILABLE: stream reset by the server {why}".rstrip())
            elif isinstance(event, H2GoAway):
                self.closed = True  # no new calls here: the next one opens a new connection
            elif isinstance(event, H2ConnectionClosed):
                self.close()
        self._start_waiting()
        self._flush()

    def _start_waiting(self) -> None:
        if self._waiting and self._transport is not None and self._codec.can_open_stream:
            waiting, self._waiting = self._waiting, []
            for call, path, frame in waiting:
                if call.live:
                    self._send(call, path, frame)

    def forget(self, call: H2UnaryCall, code: int) -> None:
        """Drop a call that ended on our side (cancelled, or its deadline passed)."""
        if self._calls.pop(call.stream_id, None) is not None:
            self._codec.reset_stream(call.stream_id, code)
            self._flush()

    def _flush(self) -> None:
        transport = self._transport
        if transport is not None:
            out = self._codec.data_to_send()
            if out:
                transport.write(out)

    def _fail_all(self, error: str) -> None:
        calls = list(self._calls.values()) + [call for call, _, _ in self._waiting]
        self._calls.clear()
        self._waiting.clear()
        for call in calls:
            call.fail(error)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        else:
            self._fail_all("UNAVAILABLE: channel closed")
