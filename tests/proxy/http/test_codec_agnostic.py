"""The stream layer does not care which codec carries it: here two streams share one
"connection" at once, each with an encoder of its own, the way an HTTP/2 codec drives them,
with trailers both ways."""

from __future__ import annotations

from proxy.codec import Request
from proxy.http.stream import ActiveStream
from proxy.http.stream_info import ConnectionInfo
from tests.proxy.fakes import FakeClock
from tests.proxy.http.harness import Harness, one_route, parse_request


class StreamEncoder:
    """One multiplexed stream's encoder: records frames instead of writing bytes."""

    def __init__(self, clock: FakeClock) -> None:
        self.connection_info = ConnectionInfo(("127.0.1.100", 40000), ("127.0.1.1", 8080))
        self.timers = clock
        self.frames: list[tuple[str, object]] = []
        self.read_disabled = 0
        self.completed = False

    def encode_headers(self, status, headers, end_stream, head_request):
        self.frames.append(("headers", (status, dict(headers), end_stream)))

    def encode_data(self, data, end_stream):
        self.frames.append(("data", (data, end_stream)))

    def encode_trailers(self, trailers):
        self.frames.append(("trailers", trailers))

    def encode_100_continue(self):
        self.frames.append(("100", None))

    def read_disable(self, disable):
        self.read_disabled += 1 if disable else -1

    def flush(self):
        pass

    def reset_stream(self):
        self.frames.append(("reset", None))

    def close_after_response(self):
        pass

    def arm_deadline(self, when, callback):
        self.timers.call_at(when, callback)

    def disarm_deadline(self):
        pass

    def check_idle_by(self, when):
        pass

    def on_stream_complete(self, stream):
        self.completed = True


def h2_request(path: bytes) -> Request:
    headers = [(b"host", b"svc"), (b"te", b"trailers")]
    return Request(b"POST", path, headers, b"2", True, None, False, False, False)


def test_two_streams_at_once_with_trailers() -> None:
    h = Harness(one_route())
    first, second = StreamEncoder(h.clock), StreamEncoder(h.clock)
    a = ActiveStream(h.hcm, first, h2_request(b"/a"))
    b = ActiveStream(h.hcm, second, h2_request(b"/b"))
    h.hcm.stats.downstream_rq_active.value += 2  # what the codec counts per stream
    a.decode_headers(False)
    b.decode_headers(False)
    a.decode_data(b"one", False)
    b.decode_data(b"two", False)
    a.decode_trailers([(b"x-checksum", b"1")])
    b.decode_data(b"", True)
    # Two upstream HTTP/1.1 connections, one per stream.
    up_a, t_a = h.upstream(0)
    up_b, t_b = h.upstream(0)
    target, headers, body = parse_request(t_a.take())
    assert (target, body) == (b"/a", b"one")
    assert headers["transfer-encoding"] == "chunked"  # trailers need chunked framing upstream
    assert parse_request(t_b.take())[2] == b"two"
    up_b.data_received(b"HTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nB")
    up_a.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nA")
    assert second.frames[0][0] == "headers" and second.frames[0][1][0] == 201
    assert ("data", (b"B", True)) in second.frames and second.completed
    assert first.frames[0][1][0] == 200 and first.completed
    assert a.stream_info.protocol == b"HTTP/2" and b.stream_info.response_code == 201


def test_response_trailers_reach_the_encoder() -> None:
    h = Harness(one_route())
    enc = StreamEncoder(h.clock)
    stream = ActiveStream(h.hcm, enc, h2_request(b"/t"))
    stream.decode_headers(True)
    up, _ = h.upstream()
    # The upstream answers with chunked framing and trailers; the attempt passes them on.
    attempt = up.callbacks
    up.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n")
    attempt.on_upstream_trailers([(b"grpc-status", b"0")])
    assert enc.frames[-1] == ("trailers", [(b"grpc-status", b"0")]) and enc.completed
