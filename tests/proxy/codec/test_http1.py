"""The HTTP/1.1 codec on valid traffic: events, cycles, serialisation, byte-at-a-time feeding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.codec import (
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
    ServerConnection,
)
from pymesh.errors import LocalProtocolError, RemoteProtocolError
from tests.proxy.codec.helpers import bytewise, fetch, serve


def req(method: bytes = b"GET", target: bytes = b"/", headers=None, **kw) -> Request:
    fields = dict(
        http_version=b"1.1",
        keep_alive=True,
        content_length=None,
        chunked=False,
        expect_continue=False,
        upgrade=False,
    )
    fields.update(kw)
    return Request(method, target, headers if headers is not None else [], **fields)  # type: ignore[arg-type]


EOM = EndOfMessage()

# -- valid request streams, each with the events it must give --------------------------------

POST_CL = b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value;flag\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other:  1 \r\n\r\n"
)
GET = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"

SERVER_CASES: dict[str, tuple[bytes, list[object]]] = {
    "content-length": (
        POST_CL,
        [
            req(
                b"POST",
                b"/upload?x=1",
                [(b"host", b"a"), (b"content-length", b"11")],
                content_length=11,
            ),
            Data(b"hello world"),
            EOM,
            ConnectionClosed(),
        ],
    ),
    "chunked with extensions and trailers": (
        CHUNKED,
        [
            req(b"POST", b"/", [(b"host", b"a"), (b"transfer-encoding", b"chunked")], chunked=True),
            Data(b"hello world"),
            EndOfMessage([(b"x-checksum", b"abc"), (b"x-other", b"1")]),
            ConnectionClosed(),
        ],
    ),
    "pipelined keep-alive cycles": (
        GET + POST_CL + b"\r\n" + GET,
        [
            req(b"GET", b"/a", [(b"host", b"a")]),
            EOM,
            req(
                b"POST",
                b"/upload?x=1",
                [(b"host", b"a"), (b"content-length", b"11")],
                content_length=11,
            ),
            Data(b"hello world"),
            EOM,
            req(b"GET", b"/a", [(b"host", b"a")]),
            EOM,
            ConnectionClosed(),
        ],
    ),
    "connection close ends the stream": (
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
        [req(headers=[(b"connection", b"close")], keep_alive=False), EOM, ConnectionClosed()],
    ),
    "HTTP/1.0": (
        b"GET / HTTP/1.0\r\n\r\n",
        [req(http_version=b"1.0", keep_alive=False), EOM, ConnectionClosed()],
    ),
    "HTTP/1.0 keep-alive": (
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
        [
            req(headers=[(b"connection", b"Keep-Alive")], http_version=b"1.0"),
            EOM,
            req(target=b"/2", http_version=b"1.0", keep_alive=False),
            EOM,
            ConnectionClosed(),
        ],
    ),
    "HEAD": (b"HEAD / HTTP/1.1\r\n\r\n", [req(b"HEAD"), EOM, ConnectionClosed()]),
    "expect 100-continue": (
        b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
        [
            req(
                b"PUT",
                headers=[(b"expect", b"100-Continue"), (b"content-length", b"2")],
                content_length=2,
                expect_continue=True,
            ),
            Data(b"ok"),
            EOM,
            ConnectionClosed(),
        ],
    ),
    "h2c upgrade served as HTTP/1.1": (
        b"POST / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"Content-Length: 3\r\n\r\nabc" + GET,
        [
            req(
                b"POST",
                headers=[
                    (b"connection", b"Upgrade, HTTP2-Settings"),
                    (b"upgrade", b"h2c"),
                    (b"content-length", b"3"),
                ],
                content_length=3,
            ),
            Data(b"abc"),
            EOM,
            req(b"GET", b"/a", [(b"host", b"a")]),
            EOM,
            ConnectionClosed(),
        ],
    ),
    # After an upgrade request's head the bytes are the new protocol's, framing fields or not
    # (Envoy passes a "body" through raw): Data to the FIN, which ends the message.
    "chunked websocket upgrade": (
        b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n" + GET,
        [
            req(
                b"GET",
                b"/ws",
                [
                    (b"connection", b"upgrade"),
                    (b"upgrade", b"websocket"),
                    (b"transfer-encoding", b"chunked"),
                ],
                keep_alive=False,
                chunked=True,
                upgrade=True,
            ),
            Data(b"1\r\nx\r\n0\r\n\r\n" + GET),
            EOM,
        ],
    ),
    "CONNECT": (
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01tunnel bytes",
        [
            req(b"CONNECT", b"a:443", [(b"host", b"a:443")], keep_alive=False, upgrade=True),
            Data(b"\x16\x03\x01tunnel bytes"),
            EOM,
        ],
    ),
    "leading CRLF, empty and padded values": (
        b"\r\nGET * HTTP/1.1\r\nX-Empty:\r\nX-Pad: \t v a l \t \r\nX-Obs: caf\xc3\xa9\r\n\r\n",
        [
            req(
                b"GET",
                b"*",
                [(b"x-empty", b""), (b"x-pad", b"v a l"), (b"x-obs", b"caf\xc3\xa9")],
            ),
            EOM,
            ConnectionClosed(),
        ],
    ),
}


@pytest.mark.parametrize("name", SERVER_CASES)
def test_server_events_one_shot_and_byte_at_a_time(name: str) -> None:
    data, expected = SERVER_CASES[name]
    assert serve([data]) == expected
    assert serve(bytewise(data)) == expected


RESPONSE_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nGrpc-Status: 0\r\n\r\n"
)

CLIENT_CASES: dict[str, tuple[list[tuple[bytes, bytes]], list[object]]] = {
    "content-length then chunked, keep-alive cycles": (
        [
            (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello"),
            (b"GET", RESPONSE_CHUNKED),
            (b"GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        ],
        [
            Response(
                200,
                b"OK",
                [(b"content-length", b"5"), (b"server", b"x")],
                b"1.1",
                True,
                5,
                False,
            ),
            Data(b"hello"),
            EOM,
            Response(200, b"OK", [(b"transfer-encoding", b"chunked")], b"1.1", True, None, True),
            Data(b"abc0123456789"),
            EndOfMessage([(b"grpc-status", b"0")]),
            Response(404, b"Not Found", [(b"content-length", b"0")], b"1.1", True, 0, False),
            EOM,
        ],
    ),
    "HTTP/1.0 response": (
        [(b"GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")],
        [
            Response(200, b"OK", [(b"content-length", b"2")], b"1.0", False, 2, False),
            Data(b"ok"),
            EOM,
        ],
    ),
    "close-delimited body": (
        [(b"GET", b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nuntil the end" + b"")],
        [
            Response(200, b"OK", [(b"x", b"y")], b"1.1", False, None, False),
            Data(b"until the end"),
        ],
    ),
    "HEAD with content-length": (
        [(b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")],
        [Response(200, b"OK", [(b"content-length", b"5")], b"1.1", False, None, False), EOM],
    ),
    "1xx interim responses": (
        [
            (
                b"GET",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!",
            )
        ],
        [
            InformationalResponse(100, []),
            InformationalResponse(103, [(b"link", b"</a>")]),
            Response(200, b"OK", [(b"content-length", b"1")], b"1.1", True, 1, False),
            Data(b"!"),
            EOM,
        ],
    ),
    "204 and 304 ignore their content-length": (
        [
            (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
            (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        ],
        [
            Response(204, b"No Content", [(b"content-length", b"9")], b"1.1", True, None, False),
            EOM,
            Response(304, b"Not Modified", [(b"content-length", b"9")], b"1.1", True, None, False),
            EOM,
        ],
    ),
    "empty reason": (
        [(b"GET", b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n")],
        [Response(299, b"", [(b"content-length", b"0")], b"1.1", True, 0, False), EOM],
    ),
}


@pytest.mark.parametrize("name", CLIENT_CASES)
def test_client_events_one_shot_and_byte_at_a_time(name: str) -> None:
    exchanges, expected = CLIENT_CASES[name]
    assert fetch([(method, [data]) for method, data in exchanges]) == expected
    assert fetch([(method, bytewise(data)) for method, data in exchanges]) == expected


def test_close_delimited_body_ends_at_eof() -> None:
    for pieces in ([b"HTTP/1.0 200 OK\r\n\r\nabc"], bytewise(b"HTTP/1.0 200 OK\r\n\r\nabc")):
        events = fetch([(b"GET", [*pieces, b""])])
        assert events == [
            Response(200, b"OK", [], b"1.0", False, None, False),
            Data(b"abc"),
            EOM,
            ConnectionClosed(),
        ]


# -- cycles ---------------------------------------------------------------------------------


def test_pipelined_requests_wait_for_start_next_cycle() -> None:
    conn = ServerConnection()
    conn.receive_data(GET + GET)
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == EOM
    assert conn.paused
    assert conn.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # the response has not been sent
    conn.send_response(204, [])
    assert conn.keep_alive
    conn.start_next_cycle()
    assert not conn.paused
    assert conn.next_event() == req(b"GET", b"/a", [(b"host", b"a")])


def test_connection_closed_is_reported_while_paused_and_repeatedly() -> None:
    conn = ServerConnection()
    conn.receive_data(GET)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == EOM
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    conn.send_response(200, [(b"content-length", b"0")])
    assert not conn.keep_alive  # the client has gone


def test_request_must_be_read_before_the_next_cycle() -> None:
    conn = ServerConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
    assert isinstance(conn.next_event(), Request)
    conn.send_response(413, [(b"content-length", b"0")])
    with pytest.raises(LocalProtocolError, match="peer"):
        conn.start_next_cycle()


def test_head_response_is_not_reused_and_later_bytes_are_ignored() -> None:
    conn = ClientConnection()
    conn.send_request(b"HEAD", b"/", [])
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 junk")
    assert isinstance(conn.next_event(), Response)
    assert conn.next_event() == EOM
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"more junk")
    assert not conn.keep_alive
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


def test_client_keep_alive_needs_both_sides_done_and_reusable() -> None:
    conn = ClientConnection()
    conn.send_request(b"POST", b"/", [(b"content-length", b"4")])
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(conn.next_event(), Response)
    assert conn.next_event() == EOM
    assert not conn.keep_alive  # the request body is still owed
    assert conn.send_data(b"body") == b"body"
    assert conn.keep_alive
    conn.start_next_cycle()

    conn.send_request(b"GET", b"/", [(b"connection", b"close")])
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conn.next_event()
    conn.next_event()
    assert not conn.keep_alive  # we asked to close

    conn = ClientConnection()
    conn.send_request(b"GET", b"/", [])
    conn.receive_data(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    response = conn.next_event()
    assert isinstance(response, Response)
    assert not response.keep_alive
    conn.next_event()
    assert not conn.keep_alive


def test_client_eof_before_the_response_is_a_close_not_an_error() -> None:
    conn = ClientConnection()
    conn.send_request(b"GET", b"/", [])
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


# -- serialising responses ------------------------------------------------------------------


def server_after(request: bytes) -> ServerConnection:
    conn = ServerConnection()
    conn.receive_data(request)
    while conn.next_event() is not NEED_DATA:
        pass
    return conn


H11 = b"GET / HTTP/1.1\r\n\r\n"
H10 = b"GET / HTTP/1.0\r\n\r\n"
H10_KEEP = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "headers", "kwargs", "head", "keep_alive"),
    [
        (H11, 200, [(b"content-length", b"2")], {}, b"content-length: 2\r\n", True),
        (H11, 200, [], {}, b"transfer-encoding: chunked\r\n", True),
        (H11, 200, [], {"chunked": True}, b"transfer-encoding: chunked\r\n", True),
        (H11, 200, [], {"chunked": False}, b"connection: close\r\n", False),
        (H10, 200, [], {"chunked": True}, b"connection: close\r\n", False),
        (
            H10,
            200,
            [(b"content-length", b"2")],
            {},
            b"content-length: 2\r\nconnection: close\r\n",
            False,
        ),
        (
            H10_KEEP,
            200,
            [(b"content-length", b"2")],
            {},
            b"content-length: 2\r\nconnection: keep-alive\r\n",
            True,
        ),
        (H10_KEEP, 200, [], {"chunked": True}, b"connection: close\r\n", False),
        (H11, 204, [], {"chunked": True}, b"", True),
        (H11, 304, [(b"content-length", b"9")], {}, b"content-length: 9\r\n", True),
        (
            H11,
            200,
            [(b"content-length", b"9")],
            {"head_request": True},
            b"content-length: 9\r\n",
            True,
        ),
        (b"HEAD / HTTP/1.1\r\n\r\n", 200, [], {}, b"", True),
        (
            H11,
            200,
            [(b"content-length", b"0"), (b"connection", b"close")],
            {},
            b"content-length: 0\r\nconnection: close\r\n",
            False,
        ),
        (
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            200,
            [(b"content-length", b"0")],
            {},
            b"content-length: 0\r\nconnection: close\r\n",
            False,
        ),
        (
            H11,
            200,
            [(b"transfer-encoding", b"gzip"), (b"content-length", b"1"), (b"content-length", b"1")],
            {},
            b"content-length: 1\r\n",
            True,
        ),
    ],
)
def test_response_framing(request_bytes, status, headers, kwargs, head, keep_alive) -> None:
    conn = server_after(request_bytes)
    out = conn.send_response(status, headers, **kwargs)
    assert out.startswith(b"HTTP/1.1 %d " % status)
    assert out.split(b"\r\n", 1)[1] == head + b"\r\n"
    assert conn.keep_alive is keep_alive


def test_chunked_response_body_and_trailers() -> None:
    conn = server_after(H11)
    conn.send_response(200, [])
    assert conn.send_data(b"") == b""  # an empty chunk would end the body
    assert conn.send_data(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert conn.send_end([(b"grpc-status", b"0")]) == b"0\r\ngrpc-status: 0\r\n\r\n"
    assert conn.send_end() == b""
    conn.start_next_cycle()


def test_content_length_body_is_policed() -> None:
    conn = server_after(H11)
    conn.send_response(200, [(b"content-length", b"3")])
    assert conn.send_data(b"ab") == b"ab"
    with pytest.raises(LocalProtocolError, match="short"):
        conn.send_end()
    with pytest.raises(LocalProtocolError, match="longer"):
        conn.send_data(b"cd")
    assert conn.send_data(b"c") == b"c"  # the body is complete without send_end()
    assert conn.send_end([(b"dropped", b"trailer")]) == b""
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"!")
    conn.start_next_cycle()


def test_bodyless_responses_complete_at_the_head() -> None:
    conn = server_after(b"HEAD / HTTP/1.1\r\n\r\n")
    conn.send_response(200, [(b"content-length", b"5")], head_request=True)
    with pytest.raises(LocalProtocolError, match="body"):
        conn.send_data(b"hello")
    conn.start_next_cycle()  # without send_end(): nothing is owed


def test_status_lines() -> None:
    conn = server_after(H11)
    assert conn.send_response(418, [(b"content-length", b"0")]).startswith(
        b"HTTP/1.1 418 I'm a Teapot\r\n"
    )
    conn = server_after(H11)
    assert conn.send_response(200, [], reason=b"Fine").startswith(b"HTTP/1.1 200 Fine\r\n")
    conn = server_after(H11)
    assert conn.send_response(599, []).startswith(b"HTTP/1.1 599 \r\n")
    for bad in (99, 1000):
        with pytest.raises(LocalProtocolError):
            server_after(H11).send_response(bad, [])


def test_interim_responses() -> None:
    conn = server_after(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_response(103, [(b"link", b"</a>")]) == (
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    )
    with pytest.raises(LocalProtocolError):
        conn.send_response(101, [])
    conn.send_response(200, [(b"content-length", b"0")])
    with pytest.raises(LocalProtocolError):
        conn.send_continue()
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, [])


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(b"x", b"a\r\nset-cookie: evil")], None),
        ([(b"x", b"a\nb")], None),
        ([(b"x\r\ny", b"a")], None),
        ([], b"OK\r\nx: y"),
    ],
)
def test_header_injection_is_refused(headers, reason) -> None:
    with pytest.raises(LocalProtocolError, match="CR or LF"):
        server_after(H11).send_response(200, headers, reason=reason)


def test_framing_conflicts_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        server_after(H11).send_response(200, [(b"content-length", b"1")], chunked=True)
    with pytest.raises(LocalProtocolError):
        server_after(H11).send_response(200, [(b"content-length", b"1"), (b"content-length", b"2")])
    with pytest.raises(LocalProtocolError):
        server_after(H11).send_response(200, [(b"content-length", b"+1")])


def test_error_response_after_a_parse_error() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"GET / HTTP/1.1\r\nX : y\r\n\r\n")
    head = conn.send_response(info.value.status, [(b"content-length", b"0")])
    assert head == b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert not conn.keep_alive


# -- serialising requests -------------------------------------------------------------------


def test_request_serialisation() -> None:
    conn = ClientConnection()
    head = conn.send_request(
        b"POST", b"/p?q", [(b"host", b"h"), (b"transfer-encoding", b"x")], chunked=True
    )
    assert head == b"POST /p?q HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
    assert conn.send_data(b"abc") == b"3\r\nabc\r\n"
    assert conn.send_end() == b"0\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send_request(b"GET", b"/", [])  # the response has not come yet

    conn = ClientConnection()
    conn.send_request(b"GET", b"/", [])
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")
    assert conn.send_end() == b""


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"GET", b"/a b", []),
        (b"GET", b"", []),
        (b"GET", b"/\r\nx: y", []),
        (b"GET", b"/", [(b"x", b"\n")]),
    ],
)
def test_bad_requests_are_refused(method, target, headers) -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection().send_request(method, target, headers)


def test_misuse_of_receive_data() -> None:
    conn = ServerConnection()
    conn.receive_data(b"")
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"GET")


def test_codec_is_sans_io() -> None:
    code = (
        "import sys, proxy.codec; "
        "bad = {'asyncio', 'socket', 'h11'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])
