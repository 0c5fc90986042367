"""Every rule the parser enforces, with the status Envoy 1.40 answers (checked against the real
binary: default HCM settings plus accept_http_10, a direct_response route behind a buffer
filter for the request side, a raw TCP upstream for the response side)."""

from __future__ import annotations

import pytest

from proxy.codec import (
    NEED_DATA,
    ClientConnection,
    Data,
    EndOfMessage,
    Request,
    Response,
    ServerConnection,
)
from pymesh.errors import RemoteProtocolError
from tests.proxy.codec.helpers import bytewise, fetch, serve

POST = b"POST / HTTP/1.1\r\nHost: a\r\n"

REQUEST_ERRORS: list[tuple[str, bytes, int]] = [
    # malformed request line
    ("tab after method", b"GET\t/ HTTP/1.1\r\n\r\n", 400),
    ("garbage", b"\x01\x02\x03 / HTTP/1.1\r\n\r\n", 400),
    ("space in target", b"GET /a b HTTP/1.1\r\n\r\n", 400),
    ("control byte in target", b"GET /\x7f HTTP/1.1\r\n\r\n", 400),
    ("no version (HTTP/0.9)", b"GET /\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    # invalid method / version
    ("unknown method", b"FOO / HTTP/1.1\r\n\r\n", 400),
    ("lower-case method", b"get / HTTP/1.1\r\n\r\n", 400),
    ("malformed version", b"GET / HTTP/x.y\r\n\r\n", 400),
    ("two-digit minor", b"GET / HTTP/1.10\r\n\r\n", 400),
    # Envoy answers a well-formed but unsupported version with 426 Upgrade Required.
    ("HTTP/1.2", b"GET / HTTP/1.2\r\n\r\n", 426),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n", 426),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 426),
    # malformed header line
    ("no colon", b"GET / HTTP/1.1\r\nfoo\r\n\r\n", 400),
    ("empty name", b"GET / HTTP/1.1\r\n: b\r\n\r\n", 400),
    ("space in name", b"GET / HTTP/1.1\r\nX Y: b\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nX : b\r\n\r\n", 400),
    ("tab before colon", b"GET / HTTP/1.1\r\nX\t: b\r\n\r\n", 400),
    ("obs-fold SP", b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
    ("obs-fold HT", b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400),
    ("space before first header", b"GET / HTTP/1.1\r\n X: a\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    ("CR in value", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
    ("LF in value", b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", 400),
    ("0x01 in value", b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", 400),
    # framing
    ("CL and TE", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("TE and CL", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    ("differing CLs", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    # llhttp refuses identical duplicates too, and so does Envoy: nothing is folded.
    ("identical CLs", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("CL list", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("signed CL", POST + b"Content-Length: +3\r\n\r\nabc", 400),
    ("CL overflow", POST + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    ("chunk size not hex", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (
        "chunk size overflow",
        POST + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 21 + b"\r\n",
        400,
    ),
    ("chunk data overrun", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400),
    (
        "TE in trailers",
        POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 1\r\n\r\n",
        400,
    ),
    ("data after a request", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nxyz\r\n\r\n", 400),
    # Envoy answers any transfer-coding but a lone "chunked" with 501 Not Implemented.
    ("TE gzip", POST + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("TE identity", POST + b"Transfer-Encoding: identity\r\n\r\n", 501),
    ("TE chunked not final", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 501),
    ("TE gzip then chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("TE twice", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
]


def parse_error(chunks: list[bytes], conn: ServerConnection | ClientConnection) -> int:
    with pytest.raises(RemoteProtocolError) as info:
        if isinstance(conn, ServerConnection):
            serve(chunks, conn=conn)
        else:
            fetch([(b"GET", chunks)], conn=conn)
    assert str(info.value)
    return info.value.status


@pytest.mark.parametrize(
    ("data", "status"), [c[1:] for c in REQUEST_ERRORS], ids=[c[0] for c in REQUEST_ERRORS]
)
def test_request_rules(data: bytes, status: int) -> None:
    assert parse_error([data], ServerConnection()) == status
    assert parse_error(bytewise(data), ServerConnection()) == status


def test_error_is_sticky() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as first:
        conn.receive_data(b"GET / HTTP/1.1\r\nX : y\r\n\r\n")
    for call in (lambda: conn.receive_data(b"GET / HTTP/1.1\r\n\r\n"), conn.next_event):
        with pytest.raises(RemoteProtocolError) as again:
            call()
        assert again.value is first.value


def test_obs_fold_message_is_clear() -> None:
    with pytest.raises(RemoteProtocolError, match="obs-fold"):
        ServerConnection().receive_data(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n")


# -- limits: Envoy answers 431 for each (it counts the target toward its header limit) ------


def request_line(target_size: int) -> bytes:
    return b"GET /" + b"a" * (target_size - 1) + b" HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("pieces", [lambda d: [d], bytewise], ids=["one-shot", "bytewise"])
def test_request_line_limit(pieces) -> None:
    # 3 (GET) + 87 (target) + 10 (two spaces, HTTP/1.1) = 100 bytes, CRLF not counted
    assert serve(pieces(request_line(87)), conn=ServerConnection(max_request_line=100))
    status = parse_error(pieces(request_line(88)), ServerConnection(max_request_line=100))
    assert status == 431


def test_request_line_limit_fires_before_the_line_ends() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"GET /")
        for _ in range(20):
            conn.receive_data(b"a" * 1000)
    assert info.value.status == 431


def headers_of(sizes: list[int]) -> bytes:
    fields = b"".join(b"x%d: %s\r\n" % (i, b"v" * size) for i, size in enumerate(sizes))
    return b"GET / HTTP/1.1\r\n" + fields + b"\r\n"


def test_header_count_limit() -> None:
    assert serve([headers_of([1] * 100)])
    assert parse_error([headers_of([1] * 101)], ServerConnection()) == 431
    assert parse_error([headers_of([1] * 4)], ServerConnection(max_headers=3)) == 431


def test_header_bytes_limit() -> None:
    # names and values count (Envoy's byte size of the header map): "x0" + 998 bytes = 1000
    assert serve([headers_of([998])], conn=ServerConnection(max_header_bytes=1000))
    assert parse_error([headers_of([999])], ServerConnection(max_header_bytes=1000)) == 431
    assert parse_error(bytewise(headers_of([999])), ServerConnection(max_header_bytes=1000)) == 431
    assert parse_error([headers_of([30 * 1024, 31 * 1024])], ServerConnection()) == 431


def test_a_head_that_never_ends_is_cut_off() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"GET / HTTP/1.1\r\nX: ")
        for _ in range(100):
            conn.receive_data(b"v" * 1000)
    assert info.value.status == 431


def test_a_large_head_in_small_pieces_is_accepted() -> None:
    data = headers_of([1000] * 59)  # about 59 KiB, under the 60 KiB default
    assert serve([data[i : i + 512] for i in range(0, len(data), 512)])


def test_trailer_limits() -> None:
    trailers = b"".join(b"t%d: v\r\n" % i for i in range(101))
    data = POST + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n" + trailers + b"\r\n"
    assert parse_error([data], ServerConnection()) == 431


# -- truncation: a cut message never looks complete -----------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GE",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        POST + b"Content-Length: 10\r\n\r\nabc",
        POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
        POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n",
        POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n",
    ],
)
def test_eof_inside_a_request(data: bytes) -> None:
    assert parse_error([data], ServerConnection()) == 400
    assert parse_error(bytewise(data), ServerConnection()) == 400


# -- the upstream side: Envoy answers 502 to every malformed response ------------------------

RESPONSE_ERRORS: list[tuple[str, bytes]] = [
    ("garbage status line", b"HTTP/1.1 2x0 OK\r\n\r\n"),
    ("not HTTP", b"SSH-2.0-OpenSSH\r\n"),
    ("header without colon", b"HTTP/1.1 200 OK\r\nfoo\r\nContent-Length: 0\r\n\r\n"),
    ("CL and TE", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("TE gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
    ("differing CLs", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
    ("control byte", b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("status below 100", b"HTTP/1.1 099 Weird\r\nContent-Length: 0\r\n\r\n"),
    (
        "101 unasked",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    ),
    ("HTTP/2.0", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ("too many headers", b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 101 + b"\r\n"),
    ("EOF in the head", b"HTTP/1.1 200 OK\r\nContent-Le" + b""),
    ("EOF in a CL body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    ("EOF in a chunked body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"),
]


@pytest.mark.parametrize(
    "data", [c[1] for c in RESPONSE_ERRORS], ids=[c[0] for c in RESPONSE_ERRORS]
)
def test_response_rules(data: bytes) -> None:
    assert parse_error([data, b""], ClientConnection()) == 502
    assert parse_error([*bytewise(data), b""], ClientConnection()) == 502


def test_unsolicited_response_bytes() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        ClientConnection().receive_data(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert info.value.status == 502


def test_bytes_after_a_response_spoil_the_connection() -> None:
    """The response is delivered whole, and the connection is not reused."""
    conn = ClientConnection()
    conn.send_request(b"GET", b"/", [])
    conn.receive_data(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert [type(conn.next_event()), type(conn.next_event())] == [Response, EndOfMessage]
    assert conn.next_event() is NEED_DATA
    assert not conn.keep_alive


# -- an error behind good events waits for them ----------------------------------------------


def test_good_request_before_a_bad_one_is_answered_first() -> None:
    """Envoy answers the good request, then the bad one gets its 400 (and the third, nothing)."""
    conn = ServerConnection()
    conn.receive_data(
        b"GET /one HTTP/1.1\r\n\r\n"
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"
        b"GET /never HTTP/1.1\r\n\r\n"
    )
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == EndOfMessage()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"more bytes are ignored")
    conn.send_response(200, [(b"content-length", b"0")])
    assert conn.keep_alive
    conn.start_next_cycle()
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.status == 400
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"")
    head = conn.send_response(400, [(b"content-length", b"0")])
    assert head.endswith(b"connection: close\r\n\r\n")


def test_a_bad_request_in_a_later_read_waits_for_the_current_exchange() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET /one HTTP/1.1\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == EndOfMessage()
    conn.receive_data(b"GET / HTTP/1.1\r\nX : y\r\n\r\n")  # while /one is being answered
    assert conn.next_event() is NEED_DATA
    conn.send_response(200, [(b"content-length", b"0")])
    conn.start_next_cycle()
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_an_error_in_a_body_comes_after_the_data_before_it() -> None:
    conn = ServerConnection()
    conn.receive_data(POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == Data(b"abc")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert not conn.keep_alive


def test_response_header_bytes_limit() -> None:
    data = b"HTTP/1.1 200 OK\r\nX: " + b"v" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    assert parse_error([data], ClientConnection(max_header_bytes=1000)) == 502
