"""The HTTP/2 codec, both roles against each other: exchanges, trailers, settings, flow
control, GOAWAY and RST_STREAM as the proxy sees them."""

from __future__ import annotations

import hyperframe.frame as hf
import pytest

from proxy.codec import NEED_DATA
from proxy.codec.h2 import H2ClientConnection, H2ServerConnection, is_h2_preface
from proxy.codec.h2_events import (
    ErrorCode,
    H2ConnectionClosed,
    H2Data,
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
from proxy.codec.h2_settings import H2Settings
from pymesh.errors import LocalProtocolError
from tests.proxy.codec.h2helpers import RawPeer, drain, pair, parse_frames, pump


def _get(client: H2ClientConnection, path: bytes = b"/", **kw) -> int:
    return client.send_request(b"GET", b"http", b"example.com", path, [(b"accept", b"*/*")], **kw)


def test_request_and_response_with_body() -> None:
    client, server = pair()
    sid = client.send_request(
        b"POST", b"https", b"example.com:8443", b"/upload?x=1", [(b"content-type", b"text/plain")]
    )
    client.send_data(sid, b"hello ")
    client.send_data(sid, b"world", end_stream=True)
    _, seen = pump(client, server)
    request, *body = seen
    assert request == H2Request(
        sid, b"POST", b"https", b"example.com:8443", b"/upload?x=1", None,
        [(b"content-type", b"text/plain")], False,
    )  # fmt: skip
    assert b"".join(e.data for e in body) == b"hello world"
    assert body[-1].end_stream
    for event in body:
        server.consumed(sid, len(event.data))
    server.send_response(sid, 201, [(b"server", b"pymesh")])
    server.send_data(sid, b"done", end_stream=True)
    seen_client, _ = pump(client, server)
    assert seen_client == [
        H2Response(sid, 201, [(b"server", b"pymesh")], False),
        H2Data(sid, b"done", True),
    ]
    assert client.open_streams == 0 and server.open_streams == 0


def test_informational_then_final_response() -> None:
    client, server = pair()
    sid = _get(client)
    pump(client, server)
    server.send_response(sid, 103, [(b"link", b"</a.css>; rel=preload")])
    server.send_response(sid, 200, [], end_stream=True)
    seen, _ = pump(client, server)
    assert seen == [
        H2Informational(sid, 103, [(b"link", b"</a.css>; rel=preload")]),
        H2Response(sid, 200, [], True),
    ]


def test_trailers_both_ways_and_te_trailers_kept() -> None:
    client, server = pair()
    sid = client.send_request(
        b"POST", b"http", b"grpc", b"/svc/Method",
        [(b"te", b"trailers"), (b"connection", b"keep-alive"),
         (b"content-type", b"application/grpc")],
    )  # fmt: skip
    client.send_data(sid, b"\x00\x00\x00\x00\x01x")
    client.send_trailers(sid, [(b"x-checksum", b"1")])
    _, seen = pump(client, server)
    assert seen[0].headers == [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    assert seen[-1] == H2Trailers(sid, [(b"x-checksum", b"1")])
    server.send_response(sid, 200, [(b"content-type", b"application/grpc")])
    server.send_trailers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"")])
    seen_client, _ = pump(client, server)
    assert seen_client[-1] == H2Trailers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"")])


def test_cookie_crumbs_are_joined() -> None:
    peer = RawPeer()
    events = peer.send(
        peer.headers(1, [*REQ_WITH_AUTH, (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")])
    )
    assert events[0].headers == [(b"x", b"y"), (b"cookie", b"a=1; b=2")]


REQ_WITH_AUTH = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"h"),
]


def test_settings_announced_are_envoys_defaults() -> None:
    server = H2ServerConnection()
    frames = parse_frames(server.data_to_send())
    settings = frames[0]
    assert isinstance(settings, hf.SettingsFrame)
    assert settings.settings == {1: 4096, 3: 1024, 4: 16 * 1024 * 1024}
    window = frames[1]
    assert isinstance(window, hf.WindowUpdateFrame)
    assert window.window_increment + 65535 == 24 * 1024 * 1024


def test_peer_settings_are_reported() -> None:
    client = H2ClientConnection()
    server = H2ServerConnection(H2Settings(max_concurrent_streams=7, allow_connect=True))
    seen_client, _ = pump(client, server)
    assert H2RemoteSettings(7, 16 * 1024 * 1024, True) in seen_client


def test_max_concurrent_streams_refuses_extra_streams() -> None:
    peer = RawPeer(H2ServerConnection(H2Settings(max_concurrent_streams=2)))
    peer.send(hf.SettingsFrame(0, settings={}))
    peer.answer()
    events = peer.send(*(peer.headers(sid, REQ_WITH_AUTH, end_stream=False) for sid in (1, 3, 5)))
    assert [e.stream_id for e in events] == [1, 3]
    resets = [f for f in peer.answer() if isinstance(f, hf.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(5, ErrorCode.REFUSED_STREAM)]


def test_flow_control_holds_the_sender_until_data_is_consumed() -> None:
    small = H2Settings(initial_stream_window_size=65535, initial_connection_window_size=65535)
    client, server = pair(server_settings=small)
    sid = client.send_request(b"POST", b"http", b"a", b"/", [])
    client.send_data(sid, b"x" * 100_000, end_stream=True)
    _, seen = pump(client, server)
    received = sum(len(e.data) for e in seen if isinstance(e, H2Data))
    assert received == 65535  # the window, and not a byte more
    assert client.queued(sid) == 100_000 - 65535
    server.consumed(sid, received)
    seen_client, seen = pump(client, server)
    assert any(isinstance(e, H2WindowOpen) for e in seen_client)
    assert sum(len(e.data) for e in seen if isinstance(e, H2Data)) == 100_000 - 65535
    assert seen[-1].end_stream and client.queued(sid) == 0


def test_client_reset_reaches_server_as_remote_cancel_and_is_not_echoed() -> None:
    client, server = pair()
    sid = client.send_request(b"POST", b"http", b"a", b"/", [])
    pump(client, server)
    client.reset_stream(sid)
    seen_client, seen = pump(client, server)
    assert seen == [H2StreamReset(sid, ErrorCode.CANCEL, True)]
    assert seen_client == []
    server.send_response(sid, 200, [], end_stream=True)  # too late: dropped, no error
    assert parse_frames(server.data_to_send()) == []


def test_server_reset_after_response_started() -> None:
    client, server = pair()
    sid = _get(client)
    pump(client, server)
    server.send_response(sid, 200, [])
    server.send_data(sid, b"part")
    server.reset_stream(sid, ErrorCode.INTERNAL_ERROR)
    seen, _ = pump(client, server)
    assert seen[-1] == H2StreamReset(sid, ErrorCode.INTERNAL_ERROR, True)


def test_content_length_mismatch_resets_the_stream_only() -> None:
    peer = RawPeer()
    events = peer.send(
        peer.headers(1, [*REQ_WITH_AUTH, (b"content-length", b"5")], end_stream=False),
        peer.data(1, b"abc", end_stream=True),
    )
    assert isinstance(events[0], H2Request)
    answer = peer.answer()
    assert [(f.stream_id, f.error_code) for f in answer if isinstance(f, hf.RstStreamFrame)] == [
        (1, ErrorCode.PROTOCOL_ERROR)
    ]
    assert drain(peer.server) == [H2StreamReset(1, ErrorCode.PROTOCOL_ERROR, False)]
    assert peer.send(peer.headers(3, REQ_WITH_AUTH))[0].stream_id == 3


def test_goaway_refuses_streams_above_last_and_blocks_new_ones() -> None:
    client, server = pair()
    first, second, third = (_get(client, end_stream=True) for _ in range(3))
    server.receive_data(client.data_to_send())
    assert [e.stream_id for e in drain(server)] == [first, second, third]
    server.goaway()  # names the last stream it received: all three will be served
    server.send_response(first, 200, [], end_stream=True)
    seen, _ = pump(client, server)
    assert H2GoAway(third, ErrorCode.NO_ERROR, b"") in seen
    assert not client.can_open_stream
    with pytest.raises(LocalProtocolError):
        _get(client)


def test_goaway_with_lower_last_stream_refuses_the_rest() -> None:
    client = H2ClientConnection()
    peer_server = H2ServerConnection()
    pump(client, peer_server)
    first, second = _get(client, end_stream=True), _get(client, end_stream=True)
    client.data_to_send()  # lost on the way: the server never saw them
    goaway = hf.GoAwayFrame(0)
    goaway.last_stream_id = first
    client.receive_data(goaway.serialize())
    seen = drain(client) + drain_after_flush(client)
    assert H2GoAway(first, 0, b"") in seen
    assert H2StreamReset(second, ErrorCode.REFUSED_STREAM, True) in seen
    assert all(getattr(e, "stream_id", None) != first for e in seen)


def drain_after_flush(conn) -> list:
    conn.data_to_send()
    return drain(conn)


def test_graceful_drain_shutdown_notice_then_goaway_then_closed() -> None:
    client, server = pair()
    sid = _get(client, end_stream=True)
    pump(client, server)
    server.shutdown_notice()
    seen, _ = pump(client, server)
    assert seen == [H2GoAway(2**31 - 1, 0, b"")]
    server.goaway()
    server.send_response(sid, 200, [], end_stream=True)
    seen, _seen_server = pump(client, server)
    assert H2GoAway(sid, 0, b"") in seen
    assert server.wants_close


def test_ping_ack() -> None:
    client, server = pair()
    client.ping(b"12345678")
    seen, _ = pump(client, server)
    assert seen == [H2PingAck(b"12345678")]


def test_connect_and_extended_connect_requests() -> None:
    client, server = pair(server_settings=H2Settings(allow_connect=True))
    sid = client.send_request(
        b"CONNECT", b"http", b"echo:80", b"/chat", [(b"sec-websocket-version", b"13")],
        protocol=b"websocket",
    )  # fmt: skip
    tunnel = client.send_request(b"CONNECT", b"", b"db:5432", b"", [])
    _, seen = pump(client, server)
    assert seen[0] == H2Request(
        sid, b"CONNECT", b"http", b"echo:80", b"/chat", b"websocket",
        [(b"sec-websocket-version", b"13")], False,
    )  # fmt: skip
    assert seen[1] == H2Request(tunnel, b"CONNECT", None, b"db:5432", None, None, [], False)


def test_extended_connect_refused_when_not_allowed() -> None:
    peer = RawPeer()
    events = peer.send(
        peer.headers(1, [*REQ_WITH_AUTH[:1], (b":protocol", b"websocket"), *REQ_WITH_AUTH[1:]])
    )
    assert not [e for e in events if isinstance(e, H2Request)]


def test_bytes_fed_one_at_a_time_give_the_same_events() -> None:
    client, server = pair()
    sid = client.send_request(b"POST", b"http", b"a", b"/x", [(b"k", b"v")])
    client.send_data(sid, b"body", end_stream=True)
    wire = client.data_to_send()
    for i in range(len(wire)):
        server.receive_data(wire[i : i + 1])
    events = drain(server)
    assert events[0] == H2Request(sid, b"POST", b"http", b"a", b"/x", None, [(b"k", b"v")], False)
    assert b"".join(e.data for e in events[1:]) == b"body" and events[-1].end_stream


def test_outgoing_connection_specific_fields_are_dropped() -> None:
    client, server = pair()
    sid = client.send_request(
        b"GET", b"http", b"a", b"/",
        [(b"connection", b"close"), (b"upgrade", b"h2c"), (b"te", b"gzip"), (b"x", b"1")],
        end_stream=True,
    )  # fmt: skip
    _, seen = pump(client, server)
    assert seen == [H2Request(sid, b"GET", b"http", b"a", b"/", None, [(b"x", b"1")], True)]


def test_invalid_status_is_refused_locally() -> None:
    client, server = pair()
    sid = _get(client, end_stream=True)
    pump(client, server)
    with pytest.raises(LocalProtocolError):
        server.send_response(sid, 42, [])


def test_connection_closed_after_goaway_exchange() -> None:
    client, server = pair()
    client.goaway()
    seen, seen_server = pump(client, server)
    assert H2GoAway(0, 0, b"") in seen_server
    assert client.wants_close
    assert H2ConnectionClosed(0) in seen


def test_preface_detection() -> None:
    assert is_h2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00") is True
    assert is_h2_preface(b"PRI * HTT") is None
    assert is_h2_preface(b"GET / HTTP/1.1\r\n") is False
    assert is_h2_preface(b"") is None


def test_next_event_without_data() -> None:
    assert H2ServerConnection().next_event() is NEED_DATA
