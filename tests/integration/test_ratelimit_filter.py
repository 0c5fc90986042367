"""pymesh's ``envoy.filters.http.ratelimit`` where Envoy is not needed to tell right from
wrong: Envoy's stat names, a rate limit cluster without hosts, a service slower than the
filter's timeout, a client that leaves while the service thinks, ``request_type`` and the
per-route ``vh_rate_limits`` (127.0.9.2 proxy, .11 upstream, .141 a service whose answers the
test holds)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.integration.test_ratelimit_differential import TYPE, bootstrap, get
from tests.support import RATELIMIT_NET, address
from tests.support.envoy import PymeshProxyProcess, pymesh_proxy_missing
from tests.support.httpclient import AsyncConnection
from tests.support.procs import free_port

RLS = address(RATELIMIT_NET, 141)
UPSTREAM = address(RATELIMIT_NET, 10)

pytestmark = pytest.mark.skipif(pymesh_proxy_missing() is not None, reason="no pymesh")


class HeldService(rls_pb2_grpc.RateLimitServiceServicer):
    """Answers OVER_LIMIT for paths containing "over", OK otherwise; holds every answer
    while ``gate`` is clear and counts calls and cancellations."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self.cancelled = 0
        self.descriptors: list[list[tuple[str, str]]] = []

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        self.calls += 1
        self.descriptors.extend(
            [[(e.key, e.value) for e in d.entries] for d in request.descriptors]
        )
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        over = any("over" in e.value for d in request.descriptors for e in d.entries)
        code = rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK
        return rls_pb2.RateLimitResponse(overall_code=code)


@pytest.fixture
async def held() -> AsyncIterator[tuple[HeldService, int]]:
    service = HeldService()
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
    port = server.add_insecure_port(f"{RLS}:{free_port(RLS)}")
    await server.start()
    yield service, port
    service.gate.set()
    await server.stop(None)


async def run(tmp_path: Path, boot: dict[str, Any], *requests: str) -> tuple[list[int], dict]:
    proxy = PymeshProxyProcess(boot, workdir=tmp_path / "pymesh")
    await proxy.astart()
    try:
        host, port = proxy.listener()
        statuses = []
        for path in requests:
            conn = await AsyncConnection.open(host, port)
            await conn.send(get(path).request)
            statuses.append((await conn.read_response("GET", 10)).status)
            await conn.close()
        stats = await asyncio.to_thread(_stats, proxy.admin_url)
        return statuses, stats
    finally:
        await proxy.astop()


def _stats(admin: str) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(admin + "/stats?format=json", timeout=5) as resp:
        data = json.loads(resp.read())
    return {s["name"]: s.get("value", 0) for s in data["stats"] if "name" in s}


async def test_stats_as_envoy_names_them(tmp_path, held, upstream_factory) -> None:
    service, port = held
    upstream = await upstream_factory(UPSTREAM)
    statuses, stats = await run(tmp_path, bootstrap(upstream.port, port, RLS), "/ok", "/over")
    assert statuses == [200, 429]
    assert stats["cluster.backend.ratelimit.ok"] == 1
    assert stats["cluster.backend.ratelimit.over_limit"] == 1
    assert service.descriptors == [[("PATH", "/ok")], [("PATH", "/over")]]


async def test_cluster_without_hosts_is_an_error(tmp_path, upstream_factory) -> None:
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, 1)
    rls = boot["static_resources"]["clusters"][-1]
    rls["load_assignment"]["endpoints"] = []
    statuses, stats = await run(tmp_path, boot, "/a")
    assert statuses == [200]
    assert stats["cluster.backend.ratelimit.error"] == 1
    assert stats["cluster.backend.ratelimit.failure_mode_allowed"] == 1
    boot = bootstrap(upstream.port, 1, failure_mode_deny=True)
    boot["static_resources"]["clusters"][-1]["load_assignment"]["endpoints"] = []
    statuses, _ = await run(tmp_path / "deny", boot, "/a")
    assert statuses == [500]


async def test_a_late_service_is_an_error_after_the_timeout(tmp_path, held, upstream_factory):
    service, port = held
    service.gate.clear()
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, port, RLS, timeout="0.3s", failure_mode_deny=True)
    statuses, stats = await run(tmp_path, boot, "/slow")
    assert statuses == [500]
    assert stats["cluster.backend.ratelimit.error"] == 1


async def test_a_client_that_leaves_cancels_the_call(tmp_path, held, upstream_factory) -> None:
    service, port = held
    service.gate.clear()
    upstream = await upstream_factory(UPSTREAM)
    proxy = PymeshProxyProcess(bootstrap(upstream.port, port, RLS), workdir=tmp_path / "pymesh")
    await proxy.astart()
    try:
        host, listen = proxy.listener()
        conn = await AsyncConnection.open(host, listen)
        await conn.send(get("/leaving").request)
        for _ in range(200):  # the call reaches the service
            if service.calls:
                break
            await asyncio.sleep(0.02)
        await conn.close()
        for _ in range(250):
            if service.cancelled:
                break
            await asyncio.sleep(0.02)
        assert service.cancelled == 1
        assert upstream.stats.requests == 0
    finally:
        await proxy.astop()


@pytest.mark.parametrize(
    ("request_type", "headers", "calls"),
    # a client cannot make itself internal: the header from outside is not trusted (as in Envoy)
    [("internal", {}, 0), ("external", {}, 1), ("internal", {"x-envoy-internal": "true"}, 0)],
)
async def test_request_type(tmp_path, held, upstream_factory, request_type, headers, calls):
    service, port = held
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, port, RLS, request_type=request_type)
    proxy = PymeshProxyProcess(boot, workdir=tmp_path / "pymesh")
    await proxy.astart()
    try:
        host, listen = proxy.listener()
        conn = await AsyncConnection.open(host, listen)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        await conn.send(f"GET /x HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n".encode())
        assert (await conn.read_response("GET", 10)).status == 200
        await conn.close()
    finally:
        await proxy.astop()
    assert service.calls == calls


async def test_per_route_vh_rate_limits(tmp_path, held, upstream_factory) -> None:
    """The "api" route has its own action; INCLUDE adds the virtual host's PATH action."""
    service, port = held
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, port, RLS)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    api = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    api["typed_per_filter_config"] = {
        "envoy.filters.http.ratelimit": {
            "@type": TYPE + "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
            "vh_rate_limits": "INCLUDE",
        }
    }
    statuses, _ = await run(tmp_path, boot, "/api/v1/products/1")
    assert statuses == [200]
    assert service.descriptors == [[("PATH", "api")], [("PATH", "/api/v1/products/1")]]
