"""The Rate Limit Service over real gRPC: protos, errors, config reload without restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from mixer.ratelimit.app import RateLimitApp, RateLimitOptions
from mixer.ratelimit.config import ConfigFile, load_config
from mixer.ratelimit.service import StaticConfig
from tests.support import RATELIMIT_NET, address
from tests.support.procs import free_port
from tests.support.redis import RedisServer

HOST = address(RATELIMIT_NET, 110)

CONFIG = """
domain: ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit: {unit: minute, requests_per_unit: 1, name: productpage}
  - key: PATH
    rate_limit: {unit: minute, requests_per_unit: 100}
"""

Response = rls_pb2.RateLimitResponse


class Clock:
    now = 1_700_000_000.0  # 20 s into a minute

    def __call__(self) -> float:
        return self.now


class Running:
    def __init__(self, app: RateLimitApp, stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        self.app = app
        self.stub = stub

    async def ask(self, *paths: str, domain: str = "ratelimit", hits: int = 0) -> object:
        request = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
        for path in paths:
            request.descriptors.append(
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="PATH", value=path)]
                )
            )
        return await self.stub.ShouldRateLimit(request, timeout=5)


async def start(tmp_path: Path, **options: object) -> AsyncIterator[Running]:
    app = RateLimitApp(RateLimitOptions(**options), clock=Clock())  # type: ignore[arg-type]
    server = grpc.aio.server()
    app.add_to_server(server)
    port = server.add_insecure_port(f"{HOST}:{free_port(HOST)}")
    await app.start()
    await server.start()
    channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
    try:
        yield Running(app, rls_pb2_grpc.RateLimitServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(None)
        await app.stop()


@pytest.fixture
async def rls(tmp_path: Path) -> AsyncIterator[Running]:
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.yaml").write_text(CONFIG)
    async for running in start(
        tmp_path, config=config, reload_interval=0.05, response_headers=True
    ):
        yield running


async def test_over_limit_response(rls: Running) -> None:
    first = await rls.ask("/productpage")
    assert first.overall_code == Response.OK
    status = first.statuses[0]
    assert status.current_limit.requests_per_unit == 1
    assert status.current_limit.unit == Response.RateLimit.MINUTE
    assert status.current_limit.name == "productpage"
    assert (status.limit_remaining, status.duration_until_reset.seconds) == (0, 40)
    second = await rls.ask("/productpage", "/reviews")
    assert second.overall_code == Response.OVER_LIMIT
    assert [s.code for s in second.statuses] == [Response.OVER_LIMIT, Response.OK]
    assert [(h.key, h.value) for h in second.response_headers_to_add] == [
        ("RateLimit-Limit", "1"),
        ("RateLimit-Remaining", "0"),
        ("RateLimit-Reset", "40"),
    ]
    unknown = await rls.ask("/x", domain="nobody")
    assert unknown.overall_code == Response.OK
    assert not unknown.statuses[0].HasField("current_limit")


async def test_bad_requests_are_grpc_errors(rls: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rls.ask("/x", domain="")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "domain must not be empty" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rls.ask()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rls.app.stats.service("call.should_rate_limit.service_error") == 2


async def test_reload_without_restart_and_bad_config_keeps_the_last_good(
    rls: Running,
) -> None:
    watcher = rls.app.watcher
    assert watcher is not None
    path = watcher.source.path / "config.yaml"
    changed = watcher.changed()
    write(path, CONFIG.replace("requests_per_unit: 1,", "requests_per_unit: 5,"))
    await _within(changed)
    assert (await rls.ask("/productpage")).statuses[0].limit_remaining == 4

    changed = watcher.changed()
    write(path, CONFIG.replace("unit: minute", "unit: fortnight"))
    await _within(changed)
    assert watcher.last_error is not None and "invalid rate limit unit" in watcher.last_error
    assert rls.app.stats.service("config_load_error") == 1
    # the last good config still answers
    assert (await rls.ask("/productpage")).statuses[0].limit_remaining == 3

    changed = watcher.changed()
    write(watcher.source.path / "other.yaml", "domain: other\n")
    write(path, CONFIG)
    await _within(changed)
    assert watcher.last_error is None
    assert set(watcher.current.domains) == {"ratelimit", "other"}


async def test_without_config_everything_is_ok(tmp_path: Path) -> None:
    async for running in start(tmp_path):
        for _ in range(3):
            assert (await running.ask("/productpage")).overall_code == Response.OK


async def test_config_map_selected_by_name_from_a_mixed_directory(tmp_path: Path) -> None:
    config = tmp_path / "manifests"
    config.mkdir()
    indented = "\n".join("    " + line for line in CONFIG.strip().splitlines())
    (config / "rl.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ratelimit-config}\n"
        f"data:\n  config.yaml: |\n{indented}\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\ndata: {x: y}\n"
    )
    (config / "vs.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n")
    (config / "notes.txt").write_text("{ not yaml")
    async for running in start(tmp_path, config=config, config_map="ratelimit-config"):
        await running.ask("/productpage")
        assert (await running.ask("/productpage")).overall_code == Response.OVER_LIMIT


async def _within(waiter: Coroutine[Any, Any, bool]) -> None:
    await asyncio.wait_for(waiter, 10.0)


def write(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, as a ConfigMap mount updates (never half a file)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def test_redis_failure_is_counted(tmp_path: Path) -> None:
    redis = RedisServer(address(RATELIMIT_NET, 104), tmp_path / "redis").start()
    try:
        async for running in start(tmp_path, redis_url=redis.url, redis_timeout=0.5):
            running.app.service.config = StaticConfig(load_config([ConfigFile("c", CONFIG)]))
            assert (await running.ask("/productpage")).overall_code == Response.OK
            redis.stop()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await running.ask("/productpage")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert running.app.stats.service("call.should_rate_limit.redis_error") == 1
    finally:
        redis.stop()
