from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.support import SUPPORT_NET, address
from tests.support.httpclient import (
    AsyncConnection,
    BadResponse,
    Connection,
    build_request,
    concurrent_requests,
    request_sync,
    run_concurrently,
)
from tests.support.upstream import Delay, Echo, Fixed, RawResponse, Upstream

HOST = address(SUPPORT_NET, 20)
Factory = Callable[..., Awaitable[Upstream]]


def test_build_request() -> None:
    assert build_request("GET", "/x", host="h") == b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    post = build_request("POST", "/", [("A", "1")], b"hi", host=None)
    assert post == b"POST / HTTP/1.1\r\nA: 1\r\nContent-Length: 2\r\n\r\nhi"
    chunked = build_request("PUT", "/", body=[b"ab", b"", b"c"], host="h")
    assert chunked.endswith(b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
    own_framing = build_request("POST", "/", [("Content-Length", "5")], b"", host="h")
    assert b"Content-Length: 0" not in own_framing


async def test_leftover_bytes_feed_next_response(upstream_factory: Factory) -> None:
    one = b"HTTP/1.1 %d OK\r\ncontent-length: 1\r\n\r\n%s"
    two = one % (200, b"A") + one % (201, b"B")
    up = await upstream_factory(HOST, routes={"/two": RawResponse(two)})
    async with await AsyncConnection.open(HOST, up.port) as conn:
        first = await conn.request(target="/two")
        second = await conn.read_response()
    assert (first.status, first.body, second.status, second.body) == (200, b"A", 201, b"B")


async def test_bad_response(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST, routes={"/bad": RawResponse(b"garbage\r\n\r\n")})
    async with await AsyncConnection.open(HOST, up.port) as conn:
        with pytest.raises(BadResponse):
            await conn.request(target="/bad")


async def test_wait_closed_by_peer(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST)
    async with await AsyncConnection.open(HOST, up.port) as conn:
        r = await conn.request(headers=[("Connection", "close")])
        assert r.will_close
        assert await conn.wait_closed_by_peer(timeout=2)
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.request()
        assert not await conn.wait_closed_by_peer(timeout=0.1)


async def test_concurrent_requests_reuse_connections(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST, default=Delay(0.005, Echo()))
    results = await concurrent_requests(HOST, up.port, 60, connections=6)
    assert all(not isinstance(r, BaseException) and r.status == 200 for r in results)
    assert up.stats.connections == 6 and up.stats.requests == 60


async def test_run_concurrently_returns_exceptions() -> None:
    async def job(i: int) -> int:
        await asyncio.sleep(0.001)
        if i == 3:
            raise ValueError(i)
        return i * 2

    out = await run_concurrently(5, job, concurrency=2)
    assert out[:3] == [0, 2, 4] and isinstance(out[3], ValueError) and out[4] == 8


def test_sync_client(upstream_process_factory) -> None:
    host = address(SUPPORT_NET, 21)
    up = upstream_process_factory(host, routes={"/f": Fixed(202, b"ok")})
    assert request_sync(host, up.port, target="/f").body == b"ok"
    with Connection(host, up.port) as conn:
        statuses = [conn.request(target=f"/{i}").status for i in range(3)]
    assert statuses == [200, 200, 200]
    stats = up.stats()
    assert (stats.connections, stats.requests, stats.open_connections) == (2, 4, 0)
