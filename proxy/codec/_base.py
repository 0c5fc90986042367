"""What both directions of the sans-I/O HTTP/1.1 codec share: feeding llhttp (httptools),
the event queue, body framing out.

``ServerConnection`` is the downstream side (parses requests, writes responses) and
``ClientConnection`` the upstream side (writes requests, parses responses). Neither touches a
socket. llhttp does the byte-level work and calls back once per message, URL, header and body
piece; the callbacks only append events to a queue that ``next_event()`` drains.

llhttp parses everything it is fed, so pipelined requests are parsed as soon as they arrive and
wait in the queue until ``start_next_cycle()``. A protocol error is reported in order: by
``receive_data()`` when nothing comes before it, else by ``next_event()`` once the events and
the exchange before it are done with. Errors carry the status Envoy answers with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, Final, Generic, TypeVar

import httptools

from pymesh.errors import LocalProtocolError, RemoteProtocolError

from .events import (
    NEED_DATA,
    ClientEvent,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Headers,
    NeedData,
    Request,
    Response,
    ServerEvent,
)
from .headers import serialise_fields

__all__ = ["_Connection"]

_E = TypeVar("_E", ServerEvent, ClientEvent)

# Sending side of one exchange, and the framing of the body being sent.
_IDLE, _BODY, _DONE = 0, 1, 2
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3

# Received fields whose values the codec needs; any other name costs one failed dict lookup.
_CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT, _HOST = 1, 2, 3, 4
_FRAMING_FIELDS: Final[Mapping[bytes, int]] = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
    b"host": _HOST,
}
# RFC 3986's authority characters (unreserved, sub-delims, ":", "@", "[", "]" and "%" for
# pct-encoding), the set Envoy's codec accepts in Host / :authority.
_AUTHORITY_CHARS: Final = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@[]%"
)
_VERSIONS: Final[Mapping[str, bytes]] = {"1.1": b"1.1", "1.0": b"1.0"}
_STATUS_LINES: Final[Mapping[int, bytes]] = {
    status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
_CHUNKED_FIELD: Final = (b"transfer-encoding", b": ", b"chunked", b"\r\n")
_CLOSE_FIELD: Final = (b"connection", b": ", b"close", b"\r\n")
_KEEP_ALIVE_FIELD: Final = (b"connection", b": ", b"keep-alive", b"\r\n")

# llhttp's reason strings that deserve a clearer message or a status other than 400. Envoy
# answers 426 to a well-formed version other than 1.0/1.1 and 501 to any transfer-coding but a
# lone "chunked" (an inner coding would be lost anyway: transfer-encoding is hop-by-hop).
_REQUEST_ERRORS: Final[Mapping[str, tuple[str, int]]] = {
    "Unexpected whitespace after header value": ("obs-fold: header line starts with SP/HT", 400),
    "Invalid header token": ("invalid header name (whitespace before the colon?)", 400),
    "Invalid header value char": ("control character in a header value", 400),
    "Invalid HTTP version": ("unsupported HTTP version", 426),
    "Pause on PRI/Upgrade": ("HTTP/2 connection preface on an HTTP/1.1 connection", 426),
    "Request has invalid `Transfer-Encoding`": ("unsupported transfer-encoding", 501),
    "Invalid `Transfer-Encoding` header value": ("unsupported transfer-encoding", 501),
}


class _Stop(Exception):
    """Raised from a callback to make llhttp stop where it is (the input is ignored after)."""


class _Connection(Generic[_E]):
    """What both directions share: feeding llhttp, the event queue, and body framing out."""

    __slots__ = (
        "_chunked",
        "_closed",
        "_content_length",
        "_current",
        "_emit",
        "_error",
        "_events",
        "_expect",
        "_fed",
        "_fed_end",
        "_fields",
        "_head_start",
        "_held",
        "_ignore",
        "_in_message",
        "_max_header_bytes",
        "_max_headers",
        "_our_keep_alive",
        "_out_mode",
        "_out_remaining",
        "_out_state",
        "_parser",
        "_pending",
        "_stall",
        "_stall_limit",
        "_their_done",
        "_tunnel",
    )
    _UPSTREAM: bool
    _MESSAGE: type[Request] | type[Response]
    _parser: Any  # httptools has no usable stubs under the project's mypy settings

    def __init__(self, max_header_bytes: int, max_headers: int, line_allowance: int) -> None:
        self._events: deque[_E] = deque()
        self._emit: Callable[[Any], None] = self._events.append
        self._error: RemoteProtocolError | None = None  # reported: the connection is dead
        self._held: RemoteProtocolError | None = None  # not yet: events are queued ahead of it
        self._pending: RemoteProtocolError | None = None  # raised by a callback
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        # Bytes that may arrive without producing an event: a head or trailer section still
        # being received. It bounds what httptools buffers for one half-received field.
        self._stall_limit = line_allowance + max_header_bytes + 4 * max_headers + 64
        self._stall = 0
        self._closed = self._ignore = self._in_message = self._their_done = False
        # After a protocol switch (101, CONNECT) the input is no longer HTTP: every byte is a
        # Data event and the peer's FIN ends the message.
        self._tunnel = False
        self._fields: Headers = []
        # Bytes fed so far, and by the end of the current feed: a message head that began
        # at or after ``_head_start`` cannot hold more field bytes than ``_fed_end`` minus it,
        # so fields are only counted when that bound passes the limit.
        self._fed = self._fed_end = self._head_start = 0
        self._content_length: int | None = None
        self._chunked = False
        self._expect: bytes | None = None
        self._current: Request | Response | None = None
        self._out_state = _IDLE
        self._out_mode = _NO_BODY
        self._out_remaining = 0
        self._our_keep_alive = True

    def _make_parser(self, parser_type: Any, **callbacks: Callable[..., None]) -> Any:
        # httptools reads the callbacks off the protocol object once, at construction.
        parser = parser_type(
            SimpleNamespace(
                on_message_begin=self._on_message_begin,
                on_header=self._on_header,
                on_headers_complete=self._on_headers_complete,
                on_body=self._on_body,
                on_message_complete=self._on_message_complete,
                **callbacks,
            )
        )
        # Strict mode rejects bytes after a "Connection: close" message; those are ignored (the
        # connection closes after the current exchange), as Envoy does.
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side."""
        if self._error is not None:
            raise self._error
        if self._held is not None:
            return
        if self._closed:
            if data:
                raise LocalProtocolError("receive_data() called after end of input")
            return
        if not data:
            self._closed = True
            self._on_eof()
            return
        if self._tunnel:
            self._emit(Data(data))
            return
        if self._ignore:
            return
        before = len(self._events)
        self._fed_end = self._fed + len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            if self._ignore and self._pending is None:
                return  # a callback raised _Stop
            self._die(exc)
            return
        self._fed = self._fed_end
        if len(self._events) != before:
            self._stall = 0
        else:
            self._stall += len(data)
            if self._stall > self._stall_limit:
                self._reject(f"header section larger than {self._stall_limit} bytes", 431)
                self._die(None)

    def next_event(self) -> _E | NeedData:
        """The next event, or NEED_DATA. Raises the RemoteProtocolError that killed the
        connection, if any."""
        if self._error is not None:
            raise self._error
        events = self._events
        if not events:
            if self._held is not None and not self._their_done:
                self._error = self._held
                raise self._error
            return NEED_DATA
        event = events[0]
        cls = event.__class__
        if cls is ConnectionClosed:
            return event  # left queued: every later call reports the close again
        if self._their_done:
            return NEED_DATA  # the next message waits for start_next_cycle()
        events.popleft()
        if cls is EndOfMessage:
            self._their_done = True
        elif cls is self._MESSAGE:
            self._current = event  # type: ignore[assignment]
        return event

    def ends_next(self) -> bool:
        """Whether the next event is the message's end (a caller about to pass on the last
        body piece can then say so in the same call)."""
        events = self._events
        return bool(events) and events[0].__class__ is EndOfMessage and not self._their_done

    @property
    def paused(self) -> bool:
        """The peer's message is complete; anything it sent since waits for start_next_cycle()
        (a transport may stop reading meanwhile)."""
        return self._their_done

    def _reject(self, message: str, status: int) -> RemoteProtocolError:
        """An error to raise from inside a llhttp callback (which wraps whatever is raised)."""
        self._pending = RemoteProtocolError(message, 502 if self._UPSTREAM else status)
        return self._pending

    def _die(self, exc: Exception | None) -> None:
        """Stop parsing for good on the error a callback raised, else on llhttp's ``exc``.

        It is raised here unless events are queued ahead of it or the current exchange is still
        going on: then next_event() hands those events out first and raises it after them (after
        start_next_cycle() when it follows a complete message). So a good request pipelined
        before a bad one is answered, and the bad one gets its error status next, as Envoy does.
        """
        error = self._pending
        if error is None:
            if exc is None or isinstance(exc, httptools.HttpParserCallbackError):
                raise AssertionError("callback failed without an error") from exc
            else:
                reason = str(exc)
                known = None if self._UPSTREAM else _REQUEST_ERRORS.get(reason)
                what = "response" if self._UPSTREAM else "request"
                message, status = known or (f"malformed {what}: {reason}", 400)
                error = RemoteProtocolError(message, 502 if self._UPSTREAM else status)
        self._ignore = True
        if self._events or self._their_done:
            self._held = error
        else:
            self._error = error
            raise error

    def _on_eof(self) -> None:
        if self._tunnel:
            self._emit(EndOfMessage([]))
            return
        if self._in_message:
            what = "response" if self._UPSTREAM else "request"
            self._reject(f"connection closed in the middle of a {what}", 400)
            self._die(None)
            return
        self._emit(ConnectionClosed())

    def _after_upgrade(self, rest: bytes) -> None:
        self._reject("unexpected protocol switch", 400)
        self._die(None)

    def _on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp strips leading OWS only
        self._fields.append((name, value))
        kind = _FRAMING_FIELDS.get(name)
        if kind is not None:
            self._framing_field(kind, value)

    def _framing_field(self, kind: int, value: bytes) -> None:
        if kind == _CONTENT_LENGTH:
            # llhttp has checked the digits and refused duplicates (identical ones too, as Envoy
            # does), and refuses framing fields in trailers before they reach this callback.
            self._content_length = int(value)
        elif kind == _TRANSFER_ENCODING:
            if value.lower() != b"chunked":
                raise self._reject(f"unsupported transfer-encoding {value!r}", 501)
            self._chunked = True
        elif kind == _EXPECT:
            self._expect = value
        elif not self._UPSTREAM and value.translate(None, _AUTHORITY_CHARS):
            # One C call: whatever is left after deleting the allowed bytes is not allowed.
            raise self._reject(f"invalid authority {value!r}", 400)

    def _check_limits(self) -> None:
        # Envoy's limits (max_request_headers_kb, max_headers_count) count field names and
        # values and fields; it answers 431 when either is exceeded.
        fields = self._fields
        if len(fields) > self._max_headers:
            raise self._reject(f"more than {self._max_headers} header fields", 431)
        limit = self._max_header_bytes
        if self._fed_end - self._head_start > limit and (
            sum(len(name) + len(value) for name, value in fields) > limit
        ):
            raise self._reject(f"header fields exceed {limit} bytes", 431)

    def _on_body(self, body: bytes) -> None:
        self._emit(Data(body))

    def _end_message(self) -> None:
        if self._fields:
            self._head_start = 0  # trailers are rare: bound them by all that was fed
            self._check_limits()
        self._in_message = False
        self._emit(EndOfMessage(self._fields))

    def _on_message_begin(self) -> None:
        raise NotImplementedError

    def _on_headers_complete(self) -> None:
        raise NotImplementedError

    def _on_message_complete(self) -> None:
        raise NotImplementedError

    # -- sending ------------------------------------------------------------------------------

    def _start_body(self, mode: int, length: bytes | None) -> None:
        self._out_mode = mode
        self._out_state = _BODY
        if mode == _LENGTH:
            assert length is not None
            if not length.isdigit():
                raise LocalProtocolError(f"invalid content-length {length!r}")
            self._out_remaining = int(length)
            if not self._out_remaining:
                self._out_state = _DONE
        elif mode == _NO_BODY:
            self._out_state = _DONE

    def _start_tunnel_out(self) -> None:
        """After the head that switches protocols, what is sent is raw bytes: no framing, no
        end marker (the transport's close is the end), and no further exchange."""
        self._out_mode = _UNTIL_CLOSE
        self._out_state = _BODY
        self._our_keep_alive = False

    def enter_tunnel(self, rest: bytes) -> None:
        """Switch the input to raw bytes: ``rest`` (what followed the head in the bytes
        already received) and all that comes after are Data events; the peer's FIN ends the
        message."""
        self._tunnel = True
        self._in_message = False
        if rest:
            self._emit(Data(rest))

    @property
    def tunnelling(self) -> bool:
        return self._tunnel

    def send_data(self, data: bytes) -> bytes:
        """Bytes for a piece of the body; chunk-framed when the body is chunked. A body that is
        complete (none allowed, or content-length reached) takes only empty data."""
        if self._out_state != _BODY:
            if self._out_state == _DONE and not data:
                return b""
            raise LocalProtocolError("send_data() outside a message body")
        mode = self._out_mode
        if mode == _CHUNKED:
            # An empty chunk would end the body, so empty data sends nothing.
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if mode == _LENGTH:
            remaining = self._out_remaining - len(data)
            if remaining <= 0:
                if remaining:
                    raise LocalProtocolError("body longer than its content-length")
                self._out_state = _DONE
            self._out_remaining = remaining
        return data

    def send_end(self, trailers: Headers | None = None) -> bytes:
        """Bytes that end the body (b"" when it is already complete). Trailers need chunked
        framing; otherwise they are dropped, as Envoy drops them."""
        state = self._out_state
        if state != _BODY:
            if state == _DONE:
                return b""
            raise LocalProtocolError("send_end() before the message head")
        if self._out_mode == _LENGTH:
            raise LocalProtocolError(f"body {self._out_remaining} bytes short of content-length")
        self._out_state = _DONE
        if self._out_mode != _CHUNKED:
            return b""
        if not trailers:
            return b"0\r\n\r\n"
        parts = [b"0\r\n"]
        serialise_fields(parts, trailers)
        parts.append(b"\r\n")
        return _join(parts)

    def _cycle_complete(self) -> None:
        if not self._their_done:
            raise LocalProtocolError("start_next_cycle(): the peer's message is not complete")
        if self._out_state != _DONE:
            raise LocalProtocolError("start_next_cycle(): our message is not complete (send_end)")
        if not self.keep_alive:
            raise LocalProtocolError("the connection cannot be reused")
        self._their_done = False
        self._out_state = _IDLE
        self._current = None

    @property
    def keep_alive(self) -> bool:
        raise NotImplementedError


def _synthetic_head(chunked: bool, length: int | None, keep_alive: bool) -> bytes:
    """A request head with the given body framing, to re-arm llhttp after an upgrade request."""
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % (length or 0)
    close = b"" if keep_alive else b"connection: close\r\n"
    return b"PUT / HTTP/1.1\r\n%b\r\n%b\r\n" % (framing, close)


def _join(parts: list[bytes]) -> bytes:
    """Join a head built by serialise_fields() and refuse header injection: every field line
    is four parts and one LF, so a CR/LF smuggled into a name, value or reason shows up as an
    extra LF (a bare CR is not a line end to an HTTP/1.1 recipient)."""
    head = b"".join(parts)
    if head.count(b"\n") != (len(parts) - 2) // 4 + 2:
        raise LocalProtocolError("CR or LF inside a header name, value or start line")
    return head
