"""Fixed-window counters in a real Redis: shared, expiring, and failing fast when Redis does."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import redis.asyncio as aioredis

from mixer.ratelimit.counters import CounterError, RedisCounters
from mixer.ratelimit.decide import Hit
from tests.support import RATELIMIT_NET, address
from tests.support.procs import free_port
from tests.support.redis import RedisServer


async def test_counters_are_shared_and_expire_with_their_window(
    redis_server: RedisServer,
) -> None:
    one = RedisCounters(redis_server.url)
    two = RedisCounters(redis_server.url)
    try:
        key = f"shared_{time.monotonic_ns()}"
        assert await one.increment([Hit(key, 1, 60)]) == [1]
        assert await two.increment([Hit(key, 2, 60), Hit(key + "b", 1, 1)]) == [3, 1]
        assert await one.increment([Hit(key, 0, 60)]) == [3]
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            assert 0 < await raw.ttl(key) <= 60
            assert 0 < await raw.ttl(key + "b") <= 1
        finally:
            await raw.aclose()
    finally:
        await one.close()
        await two.close()


async def test_a_burst_larger_than_the_pool_is_counted_not_refused(
    redis_server: RedisServer,
) -> None:
    # More calls in flight than pooled connections: each must wait its turn (or share a
    # pipeline), never fail; a failure here lets the caller's request through unlimited.
    counters = RedisCounters(redis_server.url, pool_size=2)
    try:
        key = f"burst_{time.monotonic_ns()}"
        values = await asyncio.gather(
            *(counters.increment([Hit(key, 1, 60), Hit(f"{key}_{i}", 2, 60)]) for i in range(200))
        )
        assert sorted(v[0] for v in values) == list(range(1, 201))
        assert {v[1] for v in values} == {2}
    finally:
        await counters.close()


async def test_redis_down_fails_fast_and_recovers(tmp_path) -> None:
    server = RedisServer(address(RATELIMIT_NET, 101), tmp_path / "redis").start()
    counters = RedisCounters(server.url, timeout=0.5)
    try:
        assert await counters.increment([Hit("k", 1, 60)]) == [1]
        server.stop()
        started = time.monotonic()
        with pytest.raises(CounterError, match="redis"):
            await counters.increment([Hit("k", 1, 60)])
        # refused connections answer at once; the bound only proves there is no hang
        assert time.monotonic() - started < 5
        server.start()  # same port, empty (no persistence)
        assert await counters.increment([Hit("k", 1, 60)]) == [1]
    finally:
        await counters.close()
        server.stop()


async def test_redis_that_never_answers_times_out() -> None:
    host = address(RATELIMIT_NET, 102)
    port = free_port(host)
    listener = socket.create_server((host, port))
    accepted: list[socket.socket] = []

    async def accept() -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            conn, _ = await loop.sock_accept(listener)
            accepted.append(conn)  # held open, never answered

    task = asyncio.create_task(accept())
    counters = RedisCounters(f"redis://{host}:{port}/0", timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(CounterError, match=r"no answer within 0\.3s"):
            await counters.increment([Hit("k", 1, 60)])
        assert time.monotonic() - started < 5
        assert accepted, "the client never reached the silent server"
    finally:
        task.cancel()
        await counters.close()
        for conn in accepted:
            conn.close()
        listener.close()
