"""The downstream side of HTTP/1.1: parses requests, serialises responses (sans-I/O)."""

from __future__ import annotations

import httptools

from pymesh.errors import LocalProtocolError, RemoteProtocolError

from ._base import (
    _CHUNKED,
    _CHUNKED_FIELD,
    _CLOSE_FIELD,
    _IDLE,
    _KEEP_ALIVE_FIELD,
    _LENGTH,
    _NO_BODY,
    _STATUS_LINES,
    _UNTIL_CLOSE,
    _VERSIONS,
    _Connection,
    _join,
    _synthetic_head,
)
from .events import (
    Headers,
    Request,
    ServerEvent,
)
from .headers import serialise_fields

__all__ = ["ServerConnection"]


class ServerConnection(_Connection[ServerEvent]):
    """The downstream side of a connection: parses requests, serialises responses."""

    __slots__ = ("_deferred", "_max_request_line", "_switching", "_synthetic", "_target")
    _UPSTREAM = False
    _MESSAGE = Request
    _current: Request | None

    def __init__(
        self,
        *,
        max_request_line: int = 8192,
        max_header_bytes: int = 60 * 1024,
        max_headers: int = 100,
    ) -> None:
        super().__init__(max_header_bytes, max_headers, max_request_line)
        self._max_request_line = max_request_line
        self._target = b""
        self._deferred: bytes | None = None
        self._synthetic = False
        self._switching = False  # the request just parsed switches protocols after its head
        self._parser = self._make_parser(httptools.HttpRequestParser, on_url=self._on_url)

    # -- llhttp callbacks ---------------------------------------------------------------------

    def _on_message_begin(self) -> None:
        self._in_message = True
        self._target = b""
        self._fields = []
        self._head_start = self._fed
        self._content_length = None
        self._chunked = False
        self._expect = None

    def _on_url(self, part: bytes) -> None:
        target = self._target + part
        self._target = target
        if len(target) + 13 > self._max_request_line:  # 13: " HTTP/1.1" and a 3-letter method
            line = len(self._parser.get_method()) + len(target) + 10
            if line > self._max_request_line:
                # Envoy has no limit of its own on the line: the target counts toward the
                # header limit, and its answer to that is 431.
                raise self._reject(f"request line longer than {self._max_request_line}", 431)

    def _on_headers_complete(self) -> None:
        if self._synthetic:
            self._synthetic = False
            self._fields = []
            return
        self._check_limits()
        parser = self._parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise self._bad_version(parser.get_http_version())
        method: bytes = parser.get_method()
        keep_alive: bool = parser.should_keep_alive()
        upgrade: bool = parser.should_upgrade()
        chunked = self._chunked
        length = None if chunked else self._content_length
        expect = self._expect
        expect_continue = (
            expect is not None and version == b"1.1" and expect.lower() == b"100-continue"
        )
        fields = self._fields
        if upgrade:
            if method != b"CONNECT" and any(
                n == b"upgrade" and v.lower() == b"h2c" for n, v in fields
            ):
                # Envoy's codec drops an h2c upgrade and serves the request as HTTP/1.1.
                if chunked or length:
                    self._deferred = _synthetic_head(chunked, length, keep_alive)
                upgrade = False
            else:
                if method == b"CONNECT" and chunked:
                    raise self._reject("CONNECT with a transfer-encoding", 501)
                if method == b"CONNECT" and not self._target.rpartition(b":")[2].isdigit():
                    raise self._reject("CONNECT target without a port", 400)
                if method == b"CONNECT" and length:
                    # RFC 9110 section 9.3.6: a CONNECT body has no meaning; Envoy refuses it.
                    raise self._reject("CONNECT with a body", 400)
                # Whatever follows the head is the switched protocol's (or, if the switch is
                # refused, nothing the proxy reads: the connection closes after the answer).
                keep_alive = False
                self._switching = True
        self._fields = []
        self._emit(
            Request(
                method,
                self._target,
                fields,
                version,
                keep_alive,
                length,
                chunked,
                expect_continue,
                upgrade,
            )
        )

    def _bad_version(self, version: str) -> RemoteProtocolError:
        if version == "0.9":  # what llhttp makes of a request line without a version
            return self._reject("HTTP/0.9 request line", 400)
        return self._reject(f"unsupported HTTP version {version}", 426)

    def _on_message_complete(self) -> None:
        if self._deferred is None and not self._switching:
            self._end_message()

    def _after_upgrade(self, rest: bytes) -> None:
        if self._switching:
            self._switching = False
            self.enter_tunnel(rest)
            return
        # llhttp pauses after an upgrade request's head, skipping any body, and then expects a
        # new message. The proxy refuses upgrades and serves such a request as plain HTTP/1.1
        # (Envoy does the same with h2c), so the parser is re-armed with a made-up head that
        # carries the request's framing, and its events are suppressed.
        while not self._ignore:
            if self._deferred is not None:
                rest = self._deferred + rest
                self._deferred = None
                self._synthetic = True
            try:
                self._parser.feed_data(rest)
                return
            except httptools.HttpParserUpgrade as exc:
                rest = rest[exc.args[0] :]
            except httptools.HttpParserError as exc:
                self._die(exc)
                return

    # -- sending ------------------------------------------------------------------------------

    def send_response(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        chunked: bool | None = None,
        head_request: bool = False,
    ) -> bytes:
        """The response head; a 1xx status gives an interim response. Body framing: the
        content-length field if there is one; else chunked (the field is added here) unless
        ``chunked=False`` or an HTTP/1.0 request make it close-delimited, which also closes the
        connection. HEAD, 204 and 304 have no body. A transfer-encoding field passed in is
        dropped: the codec owns that one."""
        if self._out_state != _IDLE:
            raise LocalProtocolError("a response is already in progress")
        line = _STATUS_LINES.get(status) if reason is None else None
        if line is None:
            if not 100 <= status <= 999:
                raise LocalProtocolError(f"invalid status code {status}")
            line = b"HTTP/1.1 %d %b\r\n" % (status, reason or b"")
        parts = [line]
        length, close = serialise_fields(parts, headers)
        request = self._current
        if self._tunnel and (
            status == 101
            or (request is not None and request.method == b"CONNECT" and 200 <= status < 300)
        ):
            # The switch: raw bytes follow, both ways, until a side closes.
            parts.append(b"\r\n")
            head = _join(parts)
            self._start_tunnel_out()
            return head
        if status < 200:
            if status == 101:
                raise LocalProtocolError("101 Switching Protocols without an upgrade request")
            parts.append(b"\r\n")
            return _join(parts)
        keep_alive = request is not None and request.keep_alive and not close
        http10 = request is not None and request.http_version == b"1.0"
        # The codec knows the request's method too: head_request only adds to it.
        if head_request or status in (204, 304) or (request and request.method == b"HEAD"):
            mode = _NO_BODY
        elif length is not None:
            if chunked:
                raise LocalProtocolError("chunked=True with a content-length field")
            mode = _LENGTH
        elif chunked is False or http10:
            mode = _UNTIL_CLOSE  # HTTP/1.0 has no chunked coding
            keep_alive = False
        else:
            mode = _CHUNKED
            parts += _CHUNKED_FIELD
        if not keep_alive:
            if not close:
                parts += _CLOSE_FIELD
        elif http10 and close is None:
            parts += _KEEP_ALIVE_FIELD
        parts.append(b"\r\n")
        head = _join(parts)
        self._start_body(mode, length)
        self._our_keep_alive = keep_alive
        return head

    def send_continue(self) -> bytes:
        """The interim answer to "Expect: 100-continue"."""
        if self._out_state != _IDLE or self._current is None:
            raise LocalProtocolError("100 Continue only between a request and its response")
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    @property
    def keep_alive(self) -> bool:
        """Whether the request and the response (as far as sent) allow another exchange. A bad
        request already received behind this one does not change it: the next cycle reports it
        (and the transport answers it with the error's status)."""
        request = self._current
        return (
            request is not None
            and request.keep_alive
            and self._our_keep_alive
            and self._error is None
            and not self._closed
        )

    def start_next_cycle(self) -> None:
        """Begin the next exchange once the request was read and the response sent."""
        self._cycle_complete()
        self._our_keep_alive = True
