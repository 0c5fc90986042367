"""The upstream side of HTTP/1.1: serialises requests, parses responses (sans-I/O)."""

from __future__ import annotations

import httptools

from pymesh.errors import LocalProtocolError

from ._base import (
    _CHUNKED,
    _CHUNKED_FIELD,
    _DONE,
    _IDLE,
    _LENGTH,
    _NO_BODY,
    _VERSIONS,
    _Connection,
    _join,
    _Stop,
)
from .events import (
    ClientEvent,
    EndOfMessage,
    Headers,
    InformationalResponse,
    Response,
)
from .headers import serialise_fields

__all__ = ["ClientConnection"]


class ClientConnection(_Connection[ClientEvent]):
    """The upstream side of a connection: serialises requests, parses responses.

    A response to HEAD has no body whatever its framing fields say, but llhttp cannot be told
    so (httptools has no hook for it). Response and EndOfMessage are therefore emitted as soon
    as the head is parsed and llhttp is stopped there; since nothing tells where the head ended
    in the bytes fed, anything after it is unaccounted for and the connection is not reused.
    """

    __slots__ = (
        "_awaiting",
        "_head_buf",
        "_head_request",
        "_interim",
        "_reason",
        "_switch",
        "_until_eof",
    )
    _UPSTREAM = True
    _MESSAGE = Response
    _current: Response | None

    def __init__(self, *, max_header_bytes: int = 60 * 1024, max_headers: int = 100) -> None:
        super().__init__(max_header_bytes, max_headers, 8192)
        self._awaiting = self._head_request = self._interim = self._until_eof = False
        self._reason = b""
        # A request that may switch protocols (an upgrade, CONNECT): its method, and the
        # response bytes held until the head is whole (see receive_data).
        self._switch: bytes | None = None
        self._head_buf = b""
        self._parser = self._make_parser(httptools.HttpResponseParser, on_status=self._on_status)

    def send_request(
        self, method: bytes, target: bytes, headers: Headers, *, chunked: bool = False
    ) -> bytes:
        """The request head; the body is chunked when asked, else framed by content-length,
        else absent."""
        if self._out_state != _IDLE:
            raise LocalProtocolError("a request is already in progress")
        if not target or b" " in target or not method or b" " in method:
            raise LocalProtocolError(f"invalid request line {method!r} {target!r}")
        parts = [b"%b %b HTTP/1.1\r\n" % (method, target)]
        length, close = serialise_fields(parts, headers)
        if chunked:
            if length is not None:
                raise LocalProtocolError("chunked=True with a content-length field")
            parts += _CHUNKED_FIELD
            mode = _CHUNKED
        else:
            mode = _NO_BODY if length is None else _LENGTH
        parts.append(b"\r\n")
        head = _join(parts)
        self._start_body(mode, length)
        self._head_request = method == b"HEAD"
        self._our_keep_alive = not close
        self._awaiting = True
        self._switch = None
        if method == b"CONNECT" or any(name == b"upgrade" for name, _ in headers):
            # What is sent after the head is the switched protocol's: raw bytes.
            self._switch = method
            self._start_tunnel_out()
        return head

    def receive_data(self, data: bytes) -> None:
        """As the base, except for the answer to a request that may switch protocols: its
        head is passed to llhttp alone, so that where the head ends is known and what
        follows a switch (101, or 2xx to CONNECT) is handed out as raw bytes, never parsed."""
        if self._switch is None or self._tunnel or not data:
            super().receive_data(data)
            return
        buf = self._head_buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._stall_limit:
                self._switch = None
                self._head_buf = b""
                super().receive_data(buf)  # llhttp reports the oversized head
                return
            self._head_buf = buf
            return
        self._head_buf = b""
        head, rest = buf[: end + 4], buf[end + 4 :]
        method = self._switch
        super().receive_data(head)
        event = self._events[-1] if self._events else None
        if event.__class__ is Response:
            status = event.status
            if status == 101 or (method == b"CONNECT" and 200 <= status < 300):
                self._switch = None
                self.enter_tunnel(rest)
                return
            self._switch = None  # refused: an ordinary response, the connection not reused
            self._our_keep_alive = False
        elif event.__class__ is InformationalResponse:
            if rest:  # 100 Continue and the like: the head is still to come
                self.receive_data(rest)
            return
        if rest:
            super().receive_data(rest)

    # -- llhttp callbacks ---------------------------------------------------------------------

    def _on_message_begin(self) -> None:
        if not self._awaiting:
            raise self._reject("response bytes without an outstanding request", 502)
        self._in_message = True
        self._until_eof = False
        self._reason = b""
        self._fields = []
        self._head_start = self._fed
        self._content_length = None
        self._chunked = False

    def _on_status(self, part: bytes) -> None:
        self._reason += part

    def _on_headers_complete(self) -> None:
        self._check_limits()
        parser = self._parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise self._reject(f"unsupported HTTP version {parser.get_http_version()}", 502)
        status: int = parser.get_status_code()
        fields = self._fields
        self._fields = []
        if status < 200:
            if status < 100:
                raise self._reject(f"invalid status code {status}", 502)
            if status == 101:
                if self._switch is None:
                    raise self._reject("101 Switching Protocols without an upgrade request", 502)
                self._emit(Response(status, self._reason, fields, version, False, None, False))
                self._awaiting = False
                self._interim = True  # llhttp's end of this message is not the exchange's
                return
            self._interim = True
            self._emit(InformationalResponse(status, fields))
            return
        if self._switch == b"CONNECT" and status < 300:
            # The tunnel's bytes follow (see receive_data); no body framing applies.
            self._emit(Response(status, self._reason, fields, version, False, None, False))
            self._awaiting = False
            self._interim = True
            return
        if self._head_request:
            self._emit(Response(status, self._reason, fields, version, False, None, False))
            self._emit(EndOfMessage([]))
            self._in_message = self._awaiting = False
            self._ignore = True
            raise _Stop
        keep_alive: bool = parser.should_keep_alive()
        chunked = self._chunked
        length = None if chunked else self._content_length
        if status == 204 or status == 304:
            length = None
            chunked = False
        else:
            self._until_eof = length is None and not chunked
        self._emit(Response(status, self._reason, fields, version, keep_alive, length, chunked))

    def _on_message_complete(self) -> None:
        if self._interim:
            self._interim = self._in_message = False
            return
        self._awaiting = False
        self._end_message()

    def _after_upgrade(self, rest: bytes) -> None:
        if self._switch is None:
            super()._after_upgrade(rest)
        # else: a 101 head, fed alone (receive_data switches the input to raw bytes).

    def _on_eof(self) -> None:
        if self._until_eof and self._in_message:
            self._in_message = self._awaiting = False
            self._emit(EndOfMessage([]))
        super()._on_eof()

    @property
    def keep_alive(self) -> bool:
        """Whether the response allowed reuse and the exchange is complete on both sides."""
        response = self._current
        return (
            response is not None
            and response.keep_alive
            and self._our_keep_alive
            and self._their_done
            and self._out_state == _DONE
            and self._error is None
            and self._held is None  # bytes after the response: never reuse
            and not self._closed
        )

    def start_next_cycle(self) -> None:
        """Make the connection ready for the next request."""
        self._cycle_complete()
