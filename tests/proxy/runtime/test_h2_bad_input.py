"""Abusive HTTP/2 clients against the whole proxy: what RFC 9113 and Envoy prescribe happens
on the wire, and nothing reaches the upstream (the codec's own table of defences is in
``tests/proxy/codec/test_h2_bad_input.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hpack
import hyperframe.frame as hf

from proxy.codec.h2 import H2_PREFACE
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.proxy.runtime.test_h2_downstream import h2_config
from tests.support.waiting import wait_until

PROTOCOL_ERROR, INTERNAL_ERROR, ENHANCE_YOUR_CALM = 0x1, 0x2, 0xB


def _headers(encoder: hpack.Encoder, sid: int, fields: list[tuple[bytes, bytes]]) -> bytes:
    frame = hf.HeadersFrame(sid, encoder.encode(fields), flags=["END_HEADERS", "END_STREAM"])
    return bytes(frame.serialize())


def _request(path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path), (b":authority", b"a")]


async def _exchange(
    address: tuple[str, int], data: bytes, until: Callable[[list[hf.Frame]], bool]
) -> list[hf.Frame]:
    """Send ``data`` after the preface and an empty SETTINGS; the frames that come back until
    ``until(frames)`` holds or the proxy closes (10 s at most)."""
    reader, writer = await asyncio.open_connection(*address)
    frames: list[hf.Frame] = []
    received = b""
    try:
        writer.write(H2_PREFACE + bytes(hf.SettingsFrame(0).serialize()) + data)
        async with asyncio.timeout(10.0):
            while not until(frames):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
                while len(received) >= 9:
                    frame, length = hf.Frame.parse_frame_header(memoryview(received[:9]))
                    if len(received) < 9 + length:
                        break
                    frame.parse_body(memoryview(received[9 : 9 + length]))
                    frames.append(frame)
                    received = received[9 + length :]
    finally:
        writer.close()
    return frames


def _goaway(frames: list[hf.Frame]) -> bool:
    return any(isinstance(f, hf.GoAwayFrame) for f in frames)


async def test_rapid_reset_reaches_no_upstream(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up))
    encoder = hpack.Encoder()
    burst = b"".join(
        _headers(encoder, sid, _request(b"/flood"))
        + bytes(hf.RstStreamFrame(sid, error_code=8).serialize())
        for sid in range(1, 8001, 2)
    )
    frames = await _exchange(proxy.address, burst, _goaway)
    # Four thousand streams opened and cancelled at once: none became an upstream request, and
    # libnghttp2's reset rate limit ends the connection (its GOAWAY says INTERNAL_ERROR).
    assert up.stats.requests == 0
    goaways = [f for f in frames if isinstance(f, hf.GoAwayFrame)]
    assert goaways and goaways[-1].error_code == INTERNAL_ERROR, frames
    assert proxy.stat("http.ingress.downstream_rq_total") == 0


async def test_oversized_headers_reset_the_stream_and_reach_no_upstream(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up, max_request_headers_kb=4))
    encoder = hpack.Encoder()
    big = [*_request(b"/big"), (b"x-big", b"v" * 6000)]
    data = _headers(encoder, 1, big) + _headers(encoder, 3, _request(b"/fine"))
    frames = await _exchange(
        proxy.address,
        data,
        lambda got: any(f.stream_id == 3 and "END_STREAM" in f.flags for f in got),
    )
    resets = [f for f in frames if isinstance(f, hf.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, INTERNAL_ERROR)]
    # The stream after it is served on the same connection; only it reached the upstream.
    assert any(isinstance(f, hf.HeadersFrame) and f.stream_id == 3 for f in frames)
    await wait_until(lambda: up.stats.requests == 1, "the fine request upstream")
    assert [r.target for r in up.received] == ["/fine"]


async def test_hpack_bomb_ends_the_connection(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up))
    encoder = hpack.Encoder()
    # One 4000-byte field into the dynamic table, then 10,000 one-byte references to it
    # (the table's newest entry): 40 MB once decoded.
    block = encoder.encode([*_request(b"/b"), (b"x-bomb", b"b" * 4000)])
    block += bytes([0x80 | 62]) * 10_000
    bomb = bytes(hf.HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    frames = await _exchange(proxy.address, bomb, _goaway)
    goaways = [f for f in frames if isinstance(f, hf.GoAwayFrame)]
    assert goaways and goaways[-1].error_code == ENHANCE_YOUR_CALM, frames
    assert up.stats.requests == 0
