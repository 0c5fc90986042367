"""What both roles of the HTTP/2 codec share: driving libnghttp2, turning its events into the
codec's, flow control handed to the proxy, and the defences against abusive peers.

The frame-level work (framing, HPACK, stream states, flow-control accounting, RFC 9113's
message checks) is libnghttp2's, through the ``ngh2`` binding; see ``docs/h2-codec.md`` for why
it was chosen over the pure-Python ``h2``. Only this module and ``h2.py`` import ``ngh2``: the
rest of the proxy sees ``receive_data`` / ``next_event`` / ``send_*`` / ``data_to_send`` and
the events of ``h2_events``.

Defences, each with the RFC 9113 or Envoy behaviour it gives:
* bad preface, oversized frames, window overflow, stream-state and HPACK violations: GOAWAY
  with the RFC's error code (libnghttp2);
* CONTINUATION floods, PING/SETTINGS floods: the connection is closed (libnghttp2's limits,
  ``max_outbound_control_frames``);
* header lists over the limit: the stream is reset with INTERNAL_ERROR as Envoy does, and a
  list four times over it (an HPACK bomb) closes the connection before it is held in memory;
* DATA frames with an empty payload and no END_STREAM beyond
  ``max_consecutive_inbound_frames_with_empty_payload``: GOAWAY ENHANCE_YOUR_CALM;
* rapid reset: a stream opened and reset by the peer within one read never reaches the proxy,
  and libnghttp2's reset rate limit ends the connection.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, Final

import ngh2

from pymesh.errors import LocalProtocolError

from .events import NEED_DATA, Headers, NeedData
from .h2_events import (
    ErrorCode,
    H2ConnectionClosed,
    H2ConnectionError,
    H2Data,
    H2Event,
    H2GoAway,
    H2Informational,
    H2PingAck,
    H2RemoteSettings,
    H2Request,
    H2Response,
    H2StreamReset,
    H2Trailers,
    H2WindowOpen,
)
from .h2_settings import H2Settings

__all__ = [
    "CONNECTION_SPECIFIC",
    "H2_PREFACE",
    "_H2Connection",
    "header_list_size",
    "outgoing_fields",
]

H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 section 8.2.2: fields that make an HTTP/2 message malformed. ``te`` is allowed
# with the value "trailers" only.
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)

_NAME: Final = itemgetter(0)

# Stream states as the codec tracks them: announced to the proxy, or finished from the
# proxy's point of view (it reset the stream, or was told of the reset) and only waiting for
# libnghttp2 to close it.
_LIVE, _DONE = 1, 2

# An HPACK bomb is refused at the connection level past this multiple of the header limit;
# below it, an oversized list is a stream error (Envoy resets the stream, INTERNAL_ERROR).
_HARD_LIMIT_FACTOR = 4


def outgoing_fields(headers: Headers) -> Headers:
    """``headers`` without the fields HTTP/2 forbids (``te`` kept only as "trailers"); the
    same list when there are none, which is the common case and is checked in C."""
    if CONNECTION_SPECIFIC.isdisjoint(map(_NAME, headers)):
        return headers
    kept = [field for field in headers if field[0] not in CONNECTION_SPECIFIC]
    for name, value in headers:
        if name == b"te" and value.strip().lower() == b"trailers":
            kept.append((b"te", b"trailers"))
            break
    return kept


def header_list_size(fields: Sequence[tuple[bytes, bytes]]) -> int:
    """Bytes of names and values, as Envoy counts them against ``max_request_headers_kb``."""
    return sum(map(len, chain.from_iterable(fields)))


def goaway_frame(error_code: int, last_stream_id: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame, for when libnghttp2 has given up on the session and cannot send one."""
    return (
        struct.pack(">I", 8 + len(debug))[1:]
        + b"\x07\x00\x00\x00\x00\x00"
        + struct.pack(">II", last_stream_id & 0x7FFFFFFF, error_code)
        + debug
    )


class _H2Connection:
    """One HTTP/2 connection, either role. Not thread-safe; no I/O."""

    __slots__ = (
        "_batch",
        "_conn",
        "_dead",
        "_dead_output",
        "_empty_run",
        "_events",
        "_finished",
        "_goaway_last",
        "_hard_bytes",
        "_last_peer_stream",
        "_settings",
        "_streams",
    )
    _SERVER: bool

    def __init__(self, settings: H2Settings, role: Any, local: dict[Any, int]) -> None:
        self._settings = settings
        self._hard_bytes = settings.max_header_list_bytes * _HARD_LIMIT_FACTOR
        config = ngh2.Configuration(
            auto_window_update=False,
            max_outbound_ack=settings.max_outbound_control_frames,
            # 32 bytes per field, as RFC 9113 counts a header list (ngh2 adds them too).
            max_inbound_header_list_size=self._hard_bytes + 32 * settings.max_headers,
            max_inbound_header_count=settings.max_headers * _HARD_LIMIT_FACTOR,
            max_deflate_dynamic_table_size=settings.hpack_table_size,
        )
        self._conn = ngh2.Connection(role, config)
        local[ngh2.Setting.HEADER_TABLE_SIZE] = settings.hpack_table_size
        local[ngh2.Setting.MAX_CONCURRENT_STREAMS] = settings.max_concurrent_streams
        local[ngh2.Setting.INITIAL_WINDOW_SIZE] = settings.initial_stream_window_size
        self._conn.initiate_connection(local)
        if settings.initial_connection_window_size > 65535:
            self._conn.set_local_window_size(settings.initial_connection_window_size)
        self._events: deque[H2Event] = deque()
        self._streams: dict[int, int] = {}
        self._batch: set[int] | None = None
        self._dead: H2ConnectionError | None = None
        self._dead_output = b""
        self._empty_run = 0
        self._finished = False
        self._goaway_last: int | None = None
        self._last_peer_stream = 0

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer. Raises :class:`H2ConnectionError` when they end the
        connection (the GOAWAY is then waiting in ``data_to_send()``)."""
        if self._dead is not None:
            raise self._dead
        if self._finished:
            return  # after the GOAWAY exchange: nothing the peer sends matters any more
        conn = self._conn
        try:
            conn.receive_data(data)
            events = conn.events()
        except ngh2.NGH2Error as exc:
            raise self._fatal(exc) from None
        if events:
            self._translate(events)
        if self._dead is not None:
            raise self._dead

    def next_event(self) -> H2Event | NeedData:
        """The next event, or NEED_DATA."""
        events = self._events
        return events.popleft() if events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer (b"" when there are none)."""
        if self._dead is not None:
            pending = self._dead_output
            self._dead_output = b""
            return pending
        conn = self._conn
        try:
            out = conn.data_to_send()
            # Streams libnghttp2 reset on its own close when the RST_STREAM goes out.
            events = conn.events()
        except ngh2.NGH2Error as exc:
            self._fatal(exc)
            return self.data_to_send()
        if events:
            self._translate(events)
        return out

    @property
    def wants_close(self) -> bool:
        """Nothing more will be read or written: close once ``data_to_send()`` is flushed."""
        if self._dead is not None:
            return True
        conn = self._conn
        return not conn.want_read and not conn.want_write

    def _fatal(self, exc: Exception) -> H2ConnectionError:
        # libnghttp2 refuses to go on (flood, HPACK bomb, bad preface): it will not write a
        # GOAWAY any more, so one is made here.
        if isinstance(exc, ngh2.DenialOfServiceError):
            code = ErrorCode.ENHANCE_YOUR_CALM
        elif isinstance(exc, ngh2.ProtocolError):
            code = ErrorCode.PROTOCOL_ERROR
        else:
            code = ErrorCode.INTERNAL_ERROR
        return self._die(str(exc), code, goaway_frame(code, self._last_peer_stream))

    def _die(self, message: str, code: int, output: bytes) -> H2ConnectionError:
        self._dead = H2ConnectionError(message, code)
        self._dead_output = output
        self._events.clear()
        return self._dead

    def _terminate(self, message: str, code: int) -> None:
        """A connection error found here rather than in libnghttp2: GOAWAY, then close."""
        conn = self._conn
        try:
            conn.terminate_connection(code, last_stream_id=self._last_peer_stream)
            output = conn.data_to_send()
        except ngh2.NGH2Error:
            output = goaway_frame(code, self._last_peer_stream)
        self._die(message, code, output)

    def _translate(self, events: list[Any]) -> None:
        emit = self._events.append
        streams = self._streams
        self._batch = batch = set[int]()
        for event in events:
            if self._dead is not None:
                return
            cls = event.__class__
            if cls is ngh2.DataReceived:
                sid = event.stream_id
                data = event.data
                if not data and not event.end_stream:
                    self._empty_run += 1
                    if (
                        self._empty_run
                        > self._settings.max_consecutive_inbound_frames_with_empty_payload
                    ):
                        self._terminate("too many empty DATA frames", ErrorCode.ENHANCE_YOUR_CALM)
                        return
                    continue
                self._empty_run = 0
                if streams.get(sid) == _LIVE:
                    emit(H2Data(sid, data, event.end_stream))
                elif data:
                    self._conn.acknowledge_received_data(len(data), sid)
                continue
            self._empty_run = 0
            if cls is ngh2.StreamClosed:
                self._on_closed(event.stream_id, event.error_code)
            elif cls is ngh2.StreamReset:
                self._on_reset(event.stream_id, event.error_code)
            elif cls is ngh2.TrailersReceived:
                sid = event.stream_id
                if streams.get(sid) == _LIVE:
                    fields = self._fields(sid, event.headers)
                    if fields is not None:
                        emit(H2Trailers(sid, fields))
            elif cls is ngh2.WindowUpdated:
                emit(H2WindowOpen(event.stream_id))
            elif cls is ngh2.SettingsReceived:
                remote = self._conn.remote_settings
                emit(
                    H2RemoteSettings(
                        remote.get(ngh2.Setting.MAX_CONCURRENT_STREAMS, 2**32 - 1),
                        remote.get(ngh2.Setting.INITIAL_WINDOW_SIZE, 65535),
                        bool(remote.get(ngh2.Setting.ENABLE_CONNECT_PROTOCOL, 0)),
                    )
                )
            elif cls is ngh2.PingAcknowledged:
                emit(H2PingAck(event.opaque_data))
            elif cls is ngh2.GoAwayReceived:
                self._goaway_last = event.last_stream_id
                emit(H2GoAway(event.last_stream_id, event.error_code, event.debug_data))
            elif cls is ngh2.ConnectionClosed:
                self._finished = True
                emit(H2ConnectionClosed(event.error_code))
            else:
                self._on_head(event, batch)
        self._batch = None

    def _on_head(self, event: Any, batch: set[int]) -> None:
        raise NotImplementedError

    def _on_reset(self, sid: int, code: int) -> None:
        state = self._streams.get(sid)
        if state != _LIVE:
            return
        self._streams[sid] = _DONE
        if self._batch is not None and sid in self._batch:
            # Opened and reset within one read (rapid reset): the proxy never hears of it, so
            # no upstream request is started for a stream the client has already abandoned.
            self._drop_queued(sid)
            return
        self._events.append(H2StreamReset(sid, code, True))

    def _on_closed(self, sid: int, code: int) -> None:
        state = self._streams.pop(sid, 0)
        if state == _LIVE and code:
            # Closed by libnghttp2 itself: a protocol error on the stream (content-length
            # mismatch, bad trailers), or a stream the peer's GOAWAY refused.
            refused = code == ErrorCode.REFUSED_STREAM and self._goaway_last is not None
            self._events.append(H2StreamReset(sid, code, refused))
        elif (
            state == 0
            and self._SERVER
            and code == ErrorCode.PROTOCOL_ERROR
            and not self._settings.stream_error_on_invalid_http_messaging
        ):
            # A malformed HEADERS frame on a stream the proxy never saw: Envoy's default is to
            # end the whole connection, not just the stream.
            self._terminate("malformed HTTP/2 request headers", ErrorCode.PROTOCOL_ERROR)

    def _drop_queued(self, sid: int) -> None:
        kept: deque[H2Event] = deque()
        for queued in self._events:
            if queued.__class__ in _STREAM_EVENTS and queued[0] == sid:
                if queued.__class__ is H2Data and queued[1]:
                    self._conn.acknowledge_received_data(len(queued[1]), sid)
                continue
            kept.append(queued)
        self._events = kept

    def _fields(self, sid: int, received: tuple[tuple[bytes, bytes], ...]) -> Headers | None:
        """Regular fields of a trailer section, or None after resetting an oversized one."""
        size = 0
        for name, value in received:
            size += len(name) + len(value)
        if (
            size > self._settings.max_header_list_bytes
            or len(received) > self._settings.max_headers
        ):
            self._reset_oversized(sid)
            return None
        return list(received)

    def _reset_oversized(self, sid: int) -> None:
        self._streams[sid] = _DONE
        self._drop_queued(sid)
        self._conn.reset_stream(sid, ErrorCode.INTERNAL_ERROR)

    # -- sending ------------------------------------------------------------------------------

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Queue body bytes; they leave as the peer's flow-control windows allow. A stream
        that is already reset takes nothing."""
        if self._streams.get(stream_id) != _LIVE:
            return
        try:
            self._conn.send_data(stream_id, data, end_stream=end_stream)
        except ngh2.NGH2Error as exc:
            raise LocalProtocolError(f"cannot send data on stream {stream_id}: {exc}") from None

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        """End the stream with a trailer section (after any queued data)."""
        if self._streams.get(stream_id) != _LIVE:
            return
        try:
            self._conn.send_trailers(stream_id, outgoing_fields(headers))
        except ngh2.NGH2Error as exc:
            raise LocalProtocolError(f"cannot send trailers on stream {stream_id}: {exc}") from None

    def end_stream(self, stream_id: int) -> None:
        """End our side of the stream with an empty DATA frame (after any queued data)."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        """RST_STREAM; the stream's later events are dropped."""
        if self._streams.get(stream_id) == _LIVE:
            self._streams[stream_id] = _DONE
        with contextlib.suppress(ngh2.NGH2Error):  # already closed: nothing left to reset
            self._conn.reset_stream(stream_id, error_code)

    def consumed(self, stream_id: int, amount: int) -> None:
        """``amount`` bytes of ``stream_id``'s data were passed on: let the peer send more."""
        if amount and self._dead is None:
            # A plain try/except on this hot path: contextlib.suppress() costs several times
            # more per call.
            try:  # noqa: SIM105
                self._conn.acknowledge_received_data(amount, stream_id)
            except ngh2.NGH2Error:
                pass  # the connection is closing

    def queued(self, stream_id: int) -> int:
        """Body bytes accepted by ``send_data`` that the peer's window still holds back."""
        try:
            return self._conn.queued_body_size(stream_id)
        except ngh2.NGH2Error:
            return 0

    def ping(self, opaque: bytes) -> None:
        """A PING with an 8-byte payload; its answer comes back as :class:`H2PingAck`."""
        self._conn.ping(opaque)

    def goaway(self, error_code: int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """GOAWAY naming the last stream the peer opened: no new streams; the ones in flight
        finish, then :class:`H2ConnectionClosed` follows."""
        with contextlib.suppress(ngh2.NGH2Error):  # already going away
            self._conn.send_goaway(error_code, debug_data=debug)

    @property
    def open_streams(self) -> int:
        """Streams the proxy knows of that are not finished."""
        return len(self._streams)

    @property
    def settings(self) -> H2Settings:
        return self._settings


_STREAM_EVENTS: Final = frozenset(
    {H2Request, H2Response, H2Informational, H2Data, H2Trailers, H2StreamReset}
)
