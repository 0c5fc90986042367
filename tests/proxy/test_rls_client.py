"""The proxy's Rate Limit Service client against mixer's service over real gRPC, and the
x-ratelimit headers Envoy's filter computes from the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from mixer.ratelimit.app import RateLimitApp, RateLimitOptions
from proxy.routing.ratelimit_answer import LimitStatus, RlsAnswer, RlsStatus, x_ratelimit_headers
from proxy.upstream.rls_client import RlsClient
from tests.support import RATELIMIT_NET, address
from tests.support.procs import free_port

HOST = address(RATELIMIT_NET, 130)
CONFIG = """
domain: ratelimit
descriptors:
  - key: PATH
    value: /productpage
    rate_limit: {unit: minute, requests_per_unit: 1}
"""


async def call(client: RlsClient, *descriptors, timeout: float = 5.0) -> RlsAnswer:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[RlsAnswer] = loop.create_future()
    client.limit("ratelimit", descriptors, timeout, answer.set_result)
    return await asyncio.wait_for(answer, 10)


async def test_answers_from_mixer(tmp_path: Path) -> None:
    config = tmp_path / "rl.yaml"
    config.write_text(CONFIG)
    app = RateLimitApp(RateLimitOptions(config=config))
    server = grpc.aio.server()
    app.add_to_server(server)
    port = server.add_insecure_port(f"{HOST}:{free_port(HOST)}")
    await app.start()
    await server.start()
    client = RlsClient(lambda: f"{HOST}:{port}")
    try:
        first = await call(client, (("PATH", "/productpage"),), (("PATH", "/other"),))
        assert first.status is LimitStatus.OK
        assert (
            first.statuses[0].requests_per_unit == 1 and first.statuses[1].requests_per_unit is None
        )
        second = await call(client, (("PATH", "/productpage"),))
        assert second.status is LimitStatus.OVER_LIMIT
        headers = dict(x_ratelimit_headers(second.statuses))
        assert headers[b"x-ratelimit-limit"] == b"1, 1;w=60"
        assert headers[b"x-ratelimit-remaining"] == b"0"
        assert 0 < int(headers[b"x-ratelimit-reset"]) <= 60
        bad = await call(client)  # no descriptors: the service refuses the call
        assert bad.status is LimitStatus.ERROR and "INVALID_ARGUMENT" in bad.error
    finally:
        await client.close()
        await server.stop(None)
        await app.stop()


async def test_no_host_and_dead_host_are_errors() -> None:
    none = await call(RlsClient(lambda: None), (("a", "b"),))
    assert none.status is LimitStatus.ERROR and "no healthy host" in none.error
    port = free_port(HOST)  # nothing listens there
    client = RlsClient(lambda: f"{HOST}:{port}")
    try:
        dead = await call(client, (("a", "b"),), timeout=0.5)
        assert dead.status is LimitStatus.ERROR
    finally:
        await client.close()


def test_x_ratelimit_headers_pick_the_closest_limit_and_list_every_policy() -> None:
    statuses = [
        RlsStatus(requests_per_unit=10, unit=1, remaining=7, reset_seconds=1),
        RlsStatus(requests_per_unit=1000, unit=3, name="hourly", remaining=3, reset_seconds=1800),
        RlsStatus(),
    ]
    assert x_ratelimit_headers(statuses) == [
        (b"x-ratelimit-limit", b'1000, 10;w=1, 1000;w=3600;name="hourly"'),
        (b"x-ratelimit-remaining", b"3"),
        (b"x-ratelimit-reset", b"1800"),
    ]
    assert x_ratelimit_headers([RlsStatus()]) == []
