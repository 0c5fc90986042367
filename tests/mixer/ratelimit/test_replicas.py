"""Two ``pymesh mixer`` replicas over one Redis enforce one limit; Redis down fails fast."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.support import RATELIMIT_NET, address
from tests.support.envoy import find_pymesh
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
    metrics_urls: list[str] = []
    try:
        for index in (1, 2):
            host = address(RATELIMIT_NET, 110 + index)
            port, metrics, zipkin, dashboard = (free_port(host) for _ in range(4))
            argv = [
                find_pymesh() or "pymesh", "mixer",
                "--grpc-address", f"{host}:{port}",
                "--metrics-address", f"{host}:{metrics}",
                "--zipkin-address", f"{host}:{zipkin}",
                "--dashboard-address", f"{host}:{dashboard}",
                "--ratelimit-config", str(config),
                "--redis-url", redis.url,
                "--redis-timeout", "0.5",
            ]  # fmt: skip
            proc = procs.spawn(argv, name=f"mixer-{index}")
            await async_wait_for_port(host, metrics, timeout=30, proc=proc)
            channel = grpc.aio.insecure_channel(f"{host}:{port}")
            channels.append(channel)
            stubs.append(rls_pb2_grpc.RateLimitServiceStub(channel))
            metrics_urls.append(f"http://{host}:{metrics}/metrics")
        yield redis, stubs, metrics_urls
    finally:
        for channel in channels:
            await channel.close()
        redis.stop()


async def test_two_replicas_enforce_one_limit(replicas) -> None:
    _, stubs, metrics_urls = replicas
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
    # each replica counts the decisions it made, on mixer's Prometheus port
    over = 0
    for url in metrics_urls:
        text = await asyncio.to_thread(_get, url)
        over += _value(text, "ratelimit_service_rate_limit_over_limit_total")
    assert over == 2


async def test_redis_down_is_an_unavailable_error_not_a_hang(replicas) -> None:
    redis, stubs, metrics_urls = replicas
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
    for url in metrics_urls:
        metrics = await asyncio.to_thread(_get, url)
        assert "ratelimit_service_call_should_rate_limit_redis_error_total 1.0\n" in metrics
    redis.start()
    answer = await stubs[1].ShouldRateLimit(request("a"), timeout=5)
    assert answer.overall_code == Response.OK


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.read().decode()


def _value(text: str, name: str) -> float:
    """The sample of ``name`` for the ``quota`` domain's ``source_cluster`` limit (0 if none)."""
    labels = '{domain="quota",key="source_cluster"}'
    for line in text.splitlines():
        if line.startswith(name + labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
