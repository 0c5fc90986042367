"""Random frame sequences against both roles of the HTTP/2 codec (Hypothesis).

Whatever arrives, the codec may only hand out its own events or raise
:class:`H2ConnectionError`; every stream event belongs to a stream the proxy was told about
and stops at its reset; what the codec writes is whole frames; the streams it tracks stay
within the limit it announced. A second property checks that how the bytes are split into
reads changes nothing.
"""

from __future__ import annotations

import struct
from typing import Any

import hpack
import hyperframe.frame as hf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.codec.h2 import H2_PREFACE, H2ClientConnection, H2ServerConnection
from proxy.codec.h2_events import (
    H2ConnectionError,
    H2Data,
    H2Event,
    H2Informational,
    H2Request,
    H2Response,
    H2StreamReset,
    H2Trailers,
)
from proxy.codec.h2_settings import H2Settings
from tests.proxy.codec.h2helpers import REQ, drain, parse_frames

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_STREAM_EVENTS = (H2Request, H2Response, H2Informational, H2Data, H2Trailers, H2StreamReset)
_SIDS = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 2**31 - 1])
_NAMES = st.sampled_from(
    [b":method", b":path", b":scheme", b":authority", b":status", b":protocol", b"host",
     b"content-length", b"te", b"connection", b"cookie", b"x-a", b"X-Upper", b"grpc-status"]
)  # fmt: skip
_VALUES = st.sampled_from([b"GET", b"POST", b"CONNECT", b"/", b"", b"http", b"a", b"3", b"200",
                           b"trailers", b"x" * 300, b"\x00bad", b"-1"])  # fmt: skip
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=6)
_FLAGS = st.sets(st.sampled_from(["END_STREAM", "END_HEADERS", "PADDED", "ACK", "PRIORITY"]))


def _raw(frame_type: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([frame_type, flags])
        + struct.pack(">I", sid)
        + payload
    )


_KINDS = [
    "headers", "request", "cont", "data", "rst", "settings", "ping", "goaway", "window",
    "priority", "unknown", "bytes",
]  # fmt: skip


@st.composite
def frames(draw: Any, encoder: hpack.Encoder) -> bytes:
    kind = draw(st.sampled_from(_KINDS))
    sid = draw(_SIDS)
    flags = draw(_FLAGS)
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "unknown":
        return _raw(draw(st.integers(10, 255)), 0, sid, draw(st.binary(max_size=20)))
    frame: Any
    if kind in ("headers", "request"):
        fields = REQ if kind == "request" else draw(_FIELDS)
        frame = hf.HeadersFrame(sid if sid else 1)
        frame.data = encoder.encode(fields)
        flags = flags | {"END_HEADERS"} if kind == "request" else flags
    elif kind == "cont":
        frame = hf.ContinuationFrame(sid if sid else 1)
        frame.data = encoder.encode(draw(_FIELDS))
    elif kind == "data":
        frame = hf.DataFrame(sid if sid else 1)
        frame.data = draw(st.binary(max_size=300))
        if "PADDED" in flags:
            frame.pad_length = draw(st.integers(0, 20))
    elif kind == "rst":
        frame = hf.RstStreamFrame(sid if sid else 1)
        frame.error_code = draw(st.integers(0, 20))
    elif kind == "settings":
        frame = hf.SettingsFrame(0)
        if "ACK" not in flags:
            frame.settings = draw(
                st.dictionaries(st.integers(1, 9), st.integers(0, 2**32 - 1), max_size=3)
            )
    elif kind == "ping":
        frame = hf.PingFrame(0)
        frame.opaque_data = draw(st.binary(min_size=8, max_size=8))
    elif kind == "goaway":
        frame = hf.GoAwayFrame(0)
        frame.last_stream_id = draw(_SIDS)
        frame.error_code = draw(st.integers(0, 13))
    elif kind == "window":
        frame = hf.WindowUpdateFrame(sid)
        frame.window_increment = draw(st.sampled_from([0, 1, 65535, 2**31 - 1]))
    else:
        frame = hf.PriorityFrame(sid if sid else 1)
        frame.depends_on = draw(_SIDS)
    for flag in flags:
        if flag in frame.defined_flags:
            frame.flags.add(flag)
    return bytes(frame.serialize())


def _check_events(events: list[H2Event], known: set[int], gone: set[int], server: bool) -> None:
    for event in events:
        if isinstance(event, H2Request):
            assert server and event.stream_id % 2 == 1
            assert event.stream_id not in known and event.stream_id not in gone
            assert all(not name.startswith(b":") for name, _ in event.headers)
            known.add(event.stream_id)
        elif isinstance(event, _STREAM_EVENTS):
            assert event.stream_id in known, event
            assert event.stream_id not in gone, event
            if isinstance(event, H2StreamReset):
                gone.add(event.stream_id)


def _feed(conn: Any, chunks: list[bytes], server: bool) -> None:
    known: set[int] = set() if server else {1, 3}
    gone: set[int] = set()
    for chunk in chunks:
        try:
            conn.receive_data(chunk)
        except H2ConnectionError:
            parse_frames(conn.data_to_send())  # the GOAWAY, whole
            assert conn.wants_close
            return
        _check_events(drain(conn), known, gone, server)
        parse_frames(conn.data_to_send())
        _check_events(drain(conn), known, gone, server)
        assert conn.open_streams <= 8


@FUZZ
@given(st.data())
def test_server_survives_random_frames(data: Any) -> None:
    encoder = hpack.Encoder()
    server = H2ServerConnection(H2Settings(max_concurrent_streams=8))
    server.data_to_send()
    wire = [H2_PREFACE + hf.SettingsFrame(0).serialize()]
    wire += data.draw(st.lists(frames(encoder), max_size=25))
    _feed(server, wire, server=True)


@FUZZ
@given(st.data())
def test_client_survives_random_frames(data: Any) -> None:
    encoder = hpack.Encoder()
    client = H2ClientConnection(H2Settings(max_concurrent_streams=8))
    for _ in range(2):
        client.send_request(b"GET", b"http", b"a", b"/", [], end_stream=True)
    client.data_to_send()
    wire = [hf.SettingsFrame(0).serialize()]
    wire += data.draw(st.lists(frames(encoder), max_size=25))
    _feed(client, wire, server=False)


@FUZZ
@given(
    bodies=st.lists(st.binary(max_size=2000), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 20000), max_size=12),
)
def test_how_bytes_are_split_changes_nothing(bodies: list[bytes], cuts: list[int]) -> None:
    client = H2ClientConnection()
    for body in bodies:
        sid = client.send_request(b"POST", b"http", b"a", b"/", [(b"k", b"v")])
        client.send_data(sid, body, end_stream=True)
    wire = client.data_to_send()  # preface, SETTINGS, then the requests
    whole = H2ServerConnection()
    split = H2ServerConnection()
    whole.receive_data(wire)
    points = sorted({min(c, len(wire)) for c in cuts})
    for a, b in zip([0, *points], [*points, len(wire)], strict=True):
        if b > a:
            split.receive_data(wire[a:b])
    assert _bodies(drain(whole)) == _bodies(drain(split)) == [(b"k", b"v", body) for body in bodies]


def _bodies(events: list[Any]) -> list[tuple[bytes, bytes, bytes]]:
    out: dict[int, list[bytes]] = {}
    heads: dict[int, tuple[bytes, bytes]] = {}
    for event in events:
        if isinstance(event, H2Request):
            heads[event.stream_id] = event.headers[0]
            out[event.stream_id] = []
        elif isinstance(event, H2Data):
            out[event.stream_id].append(event.data)
    return [(*heads[sid], b"".join(parts)) for sid, parts in sorted(out.items())]
