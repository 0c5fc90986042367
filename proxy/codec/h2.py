"""Sans-I/O HTTP/2: bytes in, events out; calls in, bytes out (RFC 9113, RFC 8441).

``H2ServerConnection`` is the downstream side (reads requests, writes responses) and
``H2ClientConnection`` the upstream side (writes requests, reads responses); one connection
carries many streams. The proxy feeds what it reads to ``receive_data()``, takes events from
``next_event()`` until ``NEED_DATA``, calls ``send_*`` and writes ``data_to_send()``. Neither
touches a socket. The events, the error codes and the flow-control contract are in
``h2_events``; the machinery both roles share, and the defences, in ``_h2_base``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import ngh2

from pymesh.errors import LocalProtocolError

from ._h2_base import _LIVE, _NAME, H2_PREFACE, _H2Connection, header_list_size, outgoing_fields
from .events import Headers
from .h2_events import (
    ErrorCode,
    H2Informational,
    H2Request,
    H2Response,
)
from .h2_settings import H2Settings

__all__ = ["H2_PREFACE", "H2ClientConnection", "H2ServerConnection", "is_h2_preface"]

_STATUS: Final = {status: b"%d" % status for status in range(100, 600)}
_COLON: Final = 58  # ord(":")


def is_h2_preface(prefix: bytes) -> bool | None:
    """Whether a connection's first bytes are the HTTP/2 client preface (prior knowledge), as
    Envoy's ``codec_type: AUTO`` decides; None while too few bytes have arrived to tell."""
    size = min(len(prefix), len(H2_PREFACE))
    if prefix[:size] != H2_PREFACE[:size]:
        return False
    return True if size == len(H2_PREFACE) else None


class H2ServerConnection(_H2Connection):
    """The downstream side: reads requests, writes responses."""

    __slots__ = ()
    _SERVER = True

    def __init__(self, settings: H2Settings | None = None) -> None:
        settings = settings or H2Settings()
        local: dict[Any, int] = {}
        if settings.allow_connect:
            local[ngh2.Setting.ENABLE_CONNECT_PROTOCOL] = 1
        super().__init__(settings, ngh2.Role.SERVER, local)

    def _on_head(self, event: Any, batch: set[int]) -> None:
        if event.__class__ is not ngh2.RequestReceived:
            return
        sid: int = event.stream_id
        self._last_peer_stream = sid
        received = event.headers
        settings = self._settings
        # libnghttp2 has checked the pseudo-header fields: known names, no duplicates, all
        # before the regular fields, the ones the method requires present.
        count = 0
        method = b""
        scheme = authority = path = protocol = None
        for name, value in received:
            if name[0] != _COLON:
                break
            count += 1
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            else:
                protocol = value
        fields = list(received[count:]) if count else list(received)
        if (
            len(fields) > settings.max_headers
            or header_list_size(received) > settings.max_header_list_bytes
        ):
            self._reset_oversized(sid)
            return
        if list(map(_NAME, fields)).count(b"cookie") > 1:
            fields = _join_cookies(fields)
        self._streams[sid] = _LIVE
        batch.add(sid)
        self._events.append(
            H2Request(sid, method, scheme, authority, path, protocol, fields, event.end_stream)
        )

    def send_response(
        self, stream_id: int, status: int, headers: Headers, *, end_stream: bool = False
    ) -> None:
        """The response head (a 1xx status sends an interim response). A stream that is
        already reset takes nothing: the answer is dropped."""
        if self._streams.get(stream_id) != _LIVE:
            return
        code = _STATUS.get(status)
        if code is None:
            raise LocalProtocolError(f"invalid status code {status}")
        fields = [(b":status", code), *outgoing_fields(headers)]
        conn = self._conn
        try:
            if status < 200:
                conn.send_informational_response(stream_id, fields)
            else:
                conn.send_response(stream_id, fields, end_stream=end_stream)
        except ngh2.NGH2Error as exc:
            raise LocalProtocolError(f"cannot respond on stream {stream_id}: {exc}") from None

    def shutdown_notice(self) -> None:
        """The first GOAWAY of a graceful drain (last stream id 2^31-1): clients stop opening
        streams; ``goaway()`` later names the real last stream."""
        with contextlib.suppress(ngh2.NGH2Error):  # already going away
            self._conn.send_shutdown_notice()


class H2ClientConnection(_H2Connection):
    """The upstream side: writes requests, reads responses."""

    __slots__ = ()
    _SERVER = False

    def __init__(self, settings: H2Settings | None = None) -> None:
        local: dict[Any, int] = {ngh2.Setting.ENABLE_PUSH: 0}
        super().__init__(settings or H2Settings(), ngh2.Role.CLIENT, local)

    def send_request(
        self,
        method: bytes,
        scheme: bytes,
        authority: bytes,
        path: bytes,
        headers: Headers,
        *,
        end_stream: bool = False,
        protocol: bytes | None = None,
    ) -> int:
        """Open a stream with a request head; returns its id. CONNECT without ``protocol``
        carries ``:authority`` only (RFC 9113 section 8.5); with it, an extended CONNECT
        (RFC 8441), which the peer must have allowed (``H2RemoteSettings``)."""
        if method == b"CONNECT" and protocol is None:
            pseudo = [(b":method", method), (b":authority", authority)]
        else:
            pseudo = [
                (b":method", method),
                (b":scheme", scheme),
                (b":authority", authority),
                (b":path", path),
            ]
            if protocol is not None:
                pseudo.append((b":protocol", protocol))
        try:
            sid: int = self._conn.send_request(
                pseudo + outgoing_fields(headers), end_stream=end_stream
            )
        except ngh2.NGH2Error as exc:
            raise LocalProtocolError(f"cannot open a stream: {exc}") from None
        self._streams[sid] = _LIVE
        return sid

    @property
    def can_open_stream(self) -> bool:
        """False once the peer sent GOAWAY or the connection is closing."""
        return self._dead is None and self._goaway_last is None and self._conn.can_send_request

    def _on_head(self, event: Any, batch: set[int]) -> None:
        cls = event.__class__
        if cls is ngh2.ResponseReceived:
            sid = event.stream_id
            if self._streams.get(sid) != _LIVE:
                return
            status, fields = self._response_fields(sid, event.headers)
            if fields is not None:
                self._events.append(H2Response(sid, status, fields, event.end_stream))
        elif cls is ngh2.InformationalResponseReceived:
            sid = event.stream_id
            if self._streams.get(sid) != _LIVE:
                return
            status, fields = self._response_fields(sid, event.headers)
            if fields is not None:
                self._events.append(H2Informational(sid, status, fields))
        elif cls is ngh2.PushedStreamReceived:
            # Push is disabled in our SETTINGS; libnghttp2 already refuses a PUSH_PROMISE.
            self._conn.reset_stream(event.promised_stream_id, ErrorCode.REFUSED_STREAM)

    def _response_fields(
        self, sid: int, received: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[int, Headers | None]:
        # libnghttp2 has checked that :status comes first, alone, and is three digits.
        status = int(received[0][1])
        settings = self._settings
        if (
            len(received) > settings.max_headers
            or header_list_size(received) > settings.max_header_list_bytes
        ):
            self._reset_oversized(sid)
            return status, None
        return status, list(received[1:])


def _join_cookies(fields: Headers) -> Headers:
    """RFC 9113 section 8.2.3: cookie crumbs become one field again, joined with "; "."""
    crumbs = [value for name, value in fields if name == b"cookie"]
    joined = [field for field in fields if field[0] != b"cookie"]
    joined.append((b"cookie", b"; ".join(crumbs)))
    return joined
