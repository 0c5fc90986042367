"""Two Rate Limit Service processes over one Redis enforce one limit; Redis down fails fast."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.support import RATELIMIT_NET, address
from tests.support.procs import ProcessGroup, async_wait_for_port, free_port
from tests.support.redis import RedisServer

Response = rls_pb2.RateLimitResponse

CONFIG = """
domain: quota
descriptors:
  - key: source_cluster
    rate_limit: {unit: hour, requests_per_unit: 6}
"""


def request(caller: str) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key="source_cluster", value=caller)
    return rls_pb2.RateLimitRequest(
        domain="quota", descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
    )


@pytest.fixture
async def replicas(
    tmp_path: Path, procs: ProcessGroup
) -> AsyncIterator[tuple[RedisServer, list[rls_pb2_grpc.RateLimitServiceStub]]]:
    redis = RedisServer(address(RATELIMIT_NET, 103), tmp_path / "redis").start()
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    channels = []
    stubs = []
    stats_urls: list[str] = []
    try:
        for index in (1, 2):
            host = address(RATELIMIT_NET, 110 + index)
            port = free_port(host)
            http_port = free_port(host)
            argv = [
                sys.executable, "-m", "mixer.ratelimit",
                "--host", host, "--grpc-port", str(port), "--port", str(http_port),
                "--ratelimit-config", str(config),
                "--redis-url", redis.url,
                "--redis-timeout", "0.5",
            ]  # fmt: skip
            proc = procs.spawn(argv, name=f"rls-{index}")
            await async_wait_for_port(host, port, timeout=20, proc=proc)
            channel = grpc.aio.insecure_channel(f"{host}:{port}")
            channels.append(channel)
            stubs.append(rls_pb2_grpc.RateLimitServiceStub(channel))
            stats_urls.append(f"http://{host}:{http_port}/stats")
        yield redis, stubs, stats_urls
    finally:
        for channel in channels:
            await channel.close()
        redis.stop()


async def test_two_replicas_enforce_one_limit(replicas) -> None:
    _, stubs, _ = replicas
    caller = f"noisy-{time.monotonic_ns()}"
    codes = [
        (await stubs[i % 2].ShouldRateLimit(request(caller), timeout=5)).overall_code
        for i in range(8)
    ]
    assert codes == [Response.OK] * 6 + [Response.OVER_LIMIT] * 2
    # another caller has its own quota, on either replica
    quiet = await stubs[1].ShouldRateLimit(request(f"quiet-{time.monotonic_ns()}"), timeout=5)
    assert quiet.overall_code == Response.OK
    assert quiet.statuses[0].limit_remaining == 5


async def test_redis_down_is_an_unavailable_error_not_a_hang(replicas) -> None:
    redis, stubs, stats_urls = replicas
    assert (await stubs[0].ShouldRateLimit(request("a"), timeout=5)).overall_code == Response.OK
    redis.stop()
    for stub in stubs:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ShouldRateLimit(request("a"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "redis" in (info.value.details() or "")
        assert time.monotonic() - started < 5
    # counted, by the reference service's name
    for url in stats_urls:
        stats = await asyncio.to_thread(_get, url)
        assert "ratelimit.service.call.should_rate_limit.redis_error: 1\n" in stats
    redis.start()
    answer = await stubs[1].ShouldRateLimit(request("a"), timeout=5)
    assert answer.overall_code == Response.OK


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.read().decode()
