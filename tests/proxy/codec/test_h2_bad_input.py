"""HTTP/2 frames that break RFC 9113 or abuse the server: each closes the connection or resets
the stream as the RFC (and Envoy 1.40, checked by hand against the real binary) does, with
memory and CPU bounded, and no request reaches the proxy."""

from __future__ import annotations

import time
import tracemalloc

import hyperframe.frame as hf

from proxy.codec.h2 import H2ServerConnection
from proxy.codec.h2_events import ErrorCode, H2ConnectionClosed, H2Request, H2StreamReset
from proxy.codec.h2_settings import H2Settings
from tests.proxy.codec.h2helpers import REQ, RawPeer, drain


def _goaway(peer: RawPeer) -> hf.GoAwayFrame:
    frames = [f for f in peer.answer() if isinstance(f, hf.GoAwayFrame)]
    assert frames, "no GOAWAY written"
    return frames[-1]


def _requests(events: list) -> list[H2Request]:
    return [e for e in events if isinstance(e, H2Request)]


def test_bad_preface_ends_the_connection() -> None:
    server = H2ServerConnection()
    server.data_to_send()
    peer = RawPeer.__new__(RawPeer)
    peer.server, peer.error = server, None
    events = peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert events == []
    assert peer.error is not None and peer.error.error_code == ErrorCode.PROTOCOL_ERROR
    assert _goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR
    assert server.wants_close


def test_frame_larger_than_max_frame_size_is_a_connection_error() -> None:
    peer = RawPeer()
    peer.send(peer.headers(1, REQ, end_stream=False), peer.data(1, b"x" * 20000))
    assert _goaway(peer).error_code == ErrorCode.FRAME_SIZE_ERROR
    assert peer.server.wants_close


def test_connection_window_overflow() -> None:
    peer = RawPeer()
    update = hf.WindowUpdateFrame(0)
    update.window_increment = 2**31 - 1
    peer.send(update)
    assert _goaway(peer).error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_stream_window_overflow() -> None:
    peer = RawPeer()
    update = hf.WindowUpdateFrame(1)
    update.window_increment = 2**31 - 1
    peer.send(peer.headers(1, REQ, end_stream=False), update)
    assert _goaway(peer).error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_lower_stream_id_never_reaches_the_proxy() -> None:
    # RFC 9113 5.1.1 lets a server ignore a stream id below the highest one seen (the stream
    # may have been closed while frames were in flight); libnghttp2, and so Envoy 1.40,
    # ignores the frame.
    peer = RawPeer()
    first = peer.send(peer.headers(3, REQ))
    assert [e.stream_id for e in _requests(first)] == [3]
    assert _requests(peer.send(peer.headers(1, REQ))) == []
    assert [e.stream_id for e in _requests(peer.send(peer.headers(5, REQ)))] == [5]


def test_headers_on_a_half_closed_stream_end_the_connection() -> None:
    peer = RawPeer()
    peer.send(peer.headers(1, REQ, end_stream=False))
    assert _requests(peer.send(peer.data(1, b"", end_stream=True), peer.headers(1, REQ))) == []
    assert _goaway(peer).error_code == ErrorCode.STREAM_CLOSED
    assert drain(peer.server)[-1] == H2ConnectionClosed(ErrorCode.STREAM_CLOSED)


def test_continuation_flood_closes_the_connection() -> None:
    peer = RawPeer()
    head = hf.HeadersFrame(1)
    head.data = peer.encoder.encode(REQ)
    flood = []
    for _ in range(10_000):
        frame = hf.ContinuationFrame(1)
        frame.data = b""
        flood.append(frame)
    started = time.process_time()
    events = peer.send(head, *flood)
    assert time.process_time() - started < 5.0
    assert _requests(events) == []
    assert peer.error is not None
    assert peer.server.wants_close


def test_hpack_bomb_closes_the_connection_without_holding_the_expansion() -> None:
    peer = RawPeer()
    block = peer.encoder.encode([*REQ, (b"x-big", b"a" * 4000)])
    frame = hf.HeadersFrame(1)
    # 4000 bytes in the dynamic table, referenced 10,000 times: 40 MB once decoded.
    frame.data = block + bytes([0x80 | 62]) * 10_000
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    tracemalloc.start()
    try:
        events = peer.send(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _requests(events) == []
    assert peer.error is not None and peer.error.error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert peak < 4 * 1024 * 1024


def test_oversized_header_list_resets_the_stream_as_envoy_does() -> None:
    peer = RawPeer()
    block = peer.encoder.encode([*REQ, (b"x-big", b"0123456789abcdef" * 4400)])
    head = hf.HeadersFrame(1)
    head.data, block = block[:16384], block[16384:]
    head.flags.add("END_STREAM")
    frames: list[hf.Frame] = [head]
    while block:
        more = hf.ContinuationFrame(1)
        more.data, block = block[:16384], block[16384:]
        frames.append(more)
    frames[-1].flags.add("END_HEADERS")
    events = peer.send(*frames)
    assert _requests(events) == []
    resets = [f for f in peer.answer() if isinstance(f, hf.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, ErrorCode.INTERNAL_ERROR)]
    assert [e.stream_id for e in _requests(peer.send(peer.headers(3, REQ)))] == [3]


def test_too_many_header_fields_reset_the_stream() -> None:
    peer = RawPeer()
    fields = [(b"x-h%d" % i, b"v") for i in range(150)]
    assert _requests(peer.send(peer.headers(1, [*REQ, *fields]))) == []
    resets = [f for f in peer.answer() if isinstance(f, hf.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, ErrorCode.INTERNAL_ERROR)]


def test_rapid_reset_never_reaches_the_proxy_and_ends_the_connection() -> None:
    peer = RawPeer()
    frames = []
    for sid in range(1, 4001, 2):
        frames.append(peer.headers(sid, REQ, end_stream=False))
        reset = hf.RstStreamFrame(sid)
        reset.error_code = ErrorCode.CANCEL
        frames.append(reset)
    events = peer.send(*frames)
    assert _requests(events) == []
    assert not [e for e in events if isinstance(e, H2StreamReset)]
    assert peer.server.open_streams == 0
    peer.answer()
    assert peer.server.wants_close


def test_reset_after_the_request_was_handed_out_is_reported() -> None:
    peer = RawPeer()
    assert _requests(peer.send(peer.headers(1, REQ, end_stream=False)))
    reset = hf.RstStreamFrame(1)
    reset.error_code = ErrorCode.CANCEL
    assert peer.send(reset) == [H2StreamReset(1, ErrorCode.CANCEL, True)]


def test_empty_data_frame_flood() -> None:
    peer = RawPeer()
    peer.send(peer.headers(1, REQ, end_stream=False), *(peer.data(1, b"") for _ in range(3)))
    assert _goaway(peer).error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert peer.error is not None


def test_one_empty_data_frame_is_tolerated() -> None:
    peer = RawPeer()
    events = peer.send(
        peer.headers(1, REQ, end_stream=False),
        peer.data(1, b""),
        peer.data(1, b"x", end_stream=True),
    )
    assert peer.error is None and events[-1].data == b"x"


def test_ping_flood_closes_the_connection() -> None:
    peer = RawPeer(H2ServerConnection(H2Settings(max_outbound_control_frames=100)))
    peer.send(*(hf.PingFrame(0) for _ in range(1000)))
    assert peer.error is not None and peer.server.wants_close


def test_malformed_request_headers_end_the_connection_by_default() -> None:
    peer = RawPeer()
    events = peer.send(peer.headers(1, [*REQ, (b"X-Upper", b"1")]))
    assert _requests(events) == []
    peer.server.data_to_send()  # the stream is closed when its RST_STREAM goes out
    assert _goaway_after(peer).error_code == ErrorCode.PROTOCOL_ERROR


def _goaway_after(peer: RawPeer) -> hf.GoAwayFrame:
    from tests.proxy.codec.h2helpers import parse_frames

    frames = parse_frames(peer.server.data_to_send())
    goaways = [f for f in frames if isinstance(f, hf.GoAwayFrame)]
    assert goaways, frames
    return goaways[-1]


def test_malformed_request_headers_reset_the_stream_when_configured() -> None:
    settings = H2Settings(stream_error_on_invalid_http_messaging=True)
    peer = RawPeer(H2ServerConnection(settings))
    assert _requests(peer.send(peer.headers(1, [*REQ, (b"connection", b"close")]))) == []
    resets = [f for f in peer.answer() if isinstance(f, hf.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, ErrorCode.PROTOCOL_ERROR)]
    assert [e.stream_id for e in _requests(peer.send(peer.headers(3, REQ)))] == [3]


def test_missing_pseudo_header_is_malformed() -> None:
    peer = RawPeer(H2ServerConnection(H2Settings(stream_error_on_invalid_http_messaging=True)))
    assert _requests(peer.send(peer.headers(1, REQ[:2] + REQ[3:]))) == []


def test_data_on_a_stream_never_opened() -> None:
    peer = RawPeer()
    peer.send(peer.data(9, b"x"))
    assert _goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR


def test_nothing_is_read_after_the_connection_ended() -> None:
    peer = RawPeer()
    peer.send(peer.data(9, b"x"))
    peer.answer()
    assert drain(peer.server) == [H2ConnectionClosed(ErrorCode.PROTOCOL_ERROR)]
    assert peer.send(peer.headers(1, REQ)) == []
    assert peer.answer() == []


def test_fatal_error_is_sticky() -> None:
    peer = RawPeer()
    peer.send(*(hf.PingFrame(0) for _ in range(3000)))
    first = peer.error
    assert first is not None
    peer.error = None
    peer.send(peer.headers(1, REQ))
    assert peer.error is first
