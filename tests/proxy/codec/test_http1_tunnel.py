"""Protocol switches in the HTTP/1.1 codec: an upgrade request or a CONNECT, the 101 or 2xx
that accepts it, and the raw bytes both ways after it, fed whole and a byte at a time."""

from __future__ import annotations

import pytest

from proxy.codec import (
    NEED_DATA,
    ClientConnection,
    Data,
    EndOfMessage,
    InformationalResponse,
    Response,
    ServerConnection,
)
from pymesh.errors import LocalProtocolError, RemoteProtocolError
from tests.proxy.codec.helpers import bytewise, merge

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
WS_FIELDS = [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]


def drain(conn: ServerConnection | ClientConnection) -> list[object]:
    out: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if type(event) is EndOfMessage:
            break
    return out


def feed(conn: ServerConnection | ClientConnection, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        out += drain(conn)
    return merge(out)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_server_hands_out_raw_bytes_after_an_upgrade_until_the_fin(split: bool) -> None:
    conn = ServerConnection()
    data = UPGRADE + b"\x81\x05hello" + b"GET / HTTP/1.1\r\n\r\n"
    events = feed(conn, [*(bytewise(data) if split else [data]), b""])
    assert events[0].upgrade and not events[0].keep_alive  # type: ignore[attr-defined]
    assert events[1:] == [Data(b"\x81\x05hello" + b"GET / HTTP/1.1\r\n\r\n"), EndOfMessage()]


def test_server_switch_head_has_no_framing_and_raw_bytes_follow() -> None:
    conn = ServerConnection()
    conn.receive_data(UPGRADE)
    drain(conn)
    head = conn.send_response(101, list(WS_FIELDS))
    assert head == SWITCH.replace(b"Upgrade", b"upgrade").replace(b"Connection", b"connection")
    assert conn.send_data(b"\x81\x02hi") == b"\x81\x02hi"  # no chunk framing
    assert conn.send_end() == b""  # the close is the end
    assert not conn.keep_alive


def test_server_refused_upgrade_is_an_ordinary_response() -> None:
    conn = ServerConnection()
    conn.receive_data(UPGRADE)
    drain(conn)
    head = conn.send_response(403, [(b"content-length", b"0")])
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"connection: close" in head


def test_server_connect_answered_with_2xx_switches() -> None:
    conn = ServerConnection()
    events = feed(conn, [b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00\x01"])
    assert events[1] == Data(b"\x00\x01")
    assert conn.send_response(200, []) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert conn.send_data(b"raw") == b"raw"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"CONNECT db:5432 HTTP/1.1\r\nHost: db\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"CONNECT db:5432 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"CONNECT db HTTP/1.1\r\nHost: db\r\n\r\n", 400),
    ],
    ids=["body", "chunked", "no port"],
)
def test_server_refuses_malformed_connect(request_bytes: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        feed(ServerConnection(), [request_bytes])
    assert caught.value.status == status


def test_server_h2c_upgrade_stays_http11() -> None:
    conn = ServerConnection()
    events = feed(conn, [b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"])
    assert not events[0].upgrade and events[1:] == [EndOfMessage()]  # type: ignore[attr-defined]
    with pytest.raises(LocalProtocolError):
        conn.send_response(101, [])


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_client_reads_the_switch_then_raw_bytes(split: bool) -> None:
    conn = ClientConnection()
    head = conn.send_request(b"GET", b"/ws", [(b"host", b"a"), *WS_FIELDS])
    assert b"transfer-encoding" not in head and b"content-length" not in head
    assert conn.send_data(b"\x81\x01x") == b"\x81\x01x"
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCH + b"HTTP/1.1 200 OK\r\n\r\n"
    events = feed(conn, [*(bytewise(data) if split else [data]), b""])
    assert events == [
        InformationalResponse(100, []),
        Response(101, b"Switching Protocols", WS_FIELDS, b"1.1", False, None, False),
        Data(b"HTTP/1.1 200 OK\r\n\r\n"),  # after the switch, bytes are only bytes
        EndOfMessage(),
    ]
    assert not conn.keep_alive


def test_client_refused_upgrade_is_read_as_http_and_not_reused() -> None:
    conn = ClientConnection()
    conn.send_request(b"GET", b"/ws", [(b"host", b"a"), *WS_FIELDS])
    events = feed(conn, [b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"])
    assert [type(e) for e in events] == [Response, Data, EndOfMessage]
    assert not conn.keep_alive


def test_client_connect_tunnel_and_refusal() -> None:
    conn = ClientConnection()
    assert conn.send_request(b"CONNECT", b"db:5432", [(b"host", b"db:5432")]) == (
        b"CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\n"
    )
    events = feed(conn, [b"HTTP/1.1 200 Connection established\r\n\r\n\x00\x01", b""])
    assert events[1:] == [Data(b"\x00\x01"), EndOfMessage()]
    refused = ClientConnection()
    refused.send_request(b"CONNECT", b"db:5432", [])
    events = feed(refused, [b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n"])
    assert [type(e) for e in events] == [Response, EndOfMessage]
    assert not refused.keep_alive
