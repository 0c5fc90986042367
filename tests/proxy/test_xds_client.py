"""The proxy's ADS client, in process, against pilot's ADS server with a scripted generator,
routing real requests to a loopback upstream (addresses 127.0.3.150-159)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

from pilot.xds import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    DebounceConfig,
    DiscoveryServer,
)
from proxy.config.bootstrap import bootstrap_from_dict
from proxy.server import ProxyServer
from proxy.xds_client import Backoff, XdsClient, XdsCore, ads_client, ads_target
from tests.support.envoy import xds_cluster
from tests.support.httpclient import request
from tests.support.procs import free_port
from tests.support.upstream import Fixed, Upstream
from tests.support.waiting import wait_until

PILOT = "127.0.3.150"
LISTEN = "127.0.3.151"
UPSTREAM = "127.0.3.152"


def _ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


@dataclass(frozen=True)
class Mesh:
    """What the scripted generator produces."""

    version: str
    listen_port: int
    upstream_port: int
    tag: str = "v1"
    broken_listener: bool = False
    #: when set, the listener carries its routes inline (tagged with this) instead of RDS
    inline_tag: str | None = None
    listen: str = LISTEN
    upstream: str = UPSTREAM


def generate(ctx: Mesh, proxy: Any, type_url: str) -> list[Any]:
    if type_url == CLUSTER_TYPE:
        c = cluster_pb2.Cluster(
            name="backend",
            type=cluster_pb2.Cluster.EDS,
            connect_timeout=duration_pb2.Duration(seconds=1),
        )
        c.eds_cluster_config.eds_config.CopyFrom(_ads_source())
        return [c]
    if type_url == ENDPOINT_TYPE:
        ep = endpoint_components_pb2.LbEndpoint()
        sa = ep.endpoint.address.socket_address
        sa.address, sa.port_value = ctx.upstream, ctx.upstream_port
        return [
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name="backend",
                endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[ep])],
            )
        ]
    if type_url == LISTENER_TYPE:
        hcm = hcm_pb2.HttpConnectionManager(stat_prefix="main")
        if ctx.inline_tag is not None:
            [inline] = generate(replace(ctx, tag=ctx.inline_tag), proxy, ROUTE_TYPE)
            hcm.route_config.CopyFrom(inline)
        else:
            hcm.rds.route_config_name = "main"
            hcm.rds.config_source.CopyFrom(_ads_source())
        router = any_pb2.Any()
        router.Pack(router_pb2.Router())
        hcm.http_filters.append(
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)
        )
        if ctx.broken_listener:
            hcm.http_filters.insert(
                0, hcm_pb2.HttpFilter(name="envoy.filters.http.nonexistent", typed_config=router)
            )
        packed = any_pb2.Any()
        packed.Pack(hcm)
        listener = listener_pb2.Listener(
            name="main",
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=ctx.listen, port_value=ctx.listen_port
                )
            ),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager",
                            typed_config=packed,
                        )
                    ]
                )
            ],
        )
        return [listener]
    if type_url == ROUTE_TYPE:
        route = route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster="backend"),
        )
        header = route.response_headers_to_add.add()
        header.header.key, header.header.value = "x-config", ctx.tag
        vhost = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[route])
        return [route_pb2.RouteConfiguration(name="main", virtual_hosts=[vhost])]
    return []


def bootstrap_dict(
    pilot_port: int, *, fetch_timeout: str = "5s", api_type: str = "GRPC", pilot: str = PILOT
) -> dict[str, Any]:
    source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": fetch_timeout}
    return {
        "node": {
            "id": "sidecar~10.1.0.1~app-1.default~default.svc.cluster.local",
            "cluster": "app.default",
            "metadata": {"NAMESPACE": "default", "LABELS": {"app": "app"}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": source,
            "lds_config": source,
        },
        "static_resources": {"clusters": [xds_cluster(pilot, pilot_port, http2=False)]},
    }


class Harness:
    api_type = "GRPC"

    def __init__(self, pilot: str = PILOT, listen: str = LISTEN, upstream: str = UPSTREAM) -> None:
        self.pilot = pilot
        self.pilot_port = free_port(pilot)
        self.mesh = Mesh("1", free_port(listen), 0, listen=listen, upstream=upstream)
        self.types_seen: list[str] = []
        self.ads: DiscoveryServer | None = None
        self.server: ProxyServer | None = None
        self.client: XdsCore | None = None

    def _generate(self, ctx: Mesh, proxy: Any, type_url: str) -> list[Any]:
        if type_url not in self.types_seen:
            self.types_seen.append(type_url)
        return generate(ctx, proxy, type_url)

    async def start_pilot(self) -> DiscoveryServer:
        loop = asyncio.get_running_loop()
        self.ads = DiscoveryServer(
            self.mesh,
            generate=self._generate,
            parse_node=lambda node: node.id,
            clock=loop.time,
            debounce=DebounceConfig(quiet=0.01, max_delay=0.05),
        )
        await self.ads.start(f"{self.pilot}:{self.pilot_port}")
        return self.ads

    async def stop_pilot(self) -> None:
        if self.ads is not None:
            await self.ads.stop(0)
            self.ads = None

    def push(self, **changes: Any) -> None:
        self.mesh = replace(self.mesh, version=str(int(self.mesh.version) + 1), **changes)
        assert self.ads is not None
        self.ads.update(self.mesh)

    async def start_proxy(self, **kw: Any) -> XdsCore:
        bootstrap = bootstrap_from_dict(
            bootstrap_dict(self.pilot_port, api_type=self.api_type, pilot=self.pilot, **kw)
        )
        self.server = ProxyServer(bootstrap, loop=asyncio.get_running_loop())
        await self.server.start()
        assert not self.server.ready
        backoff = Backoff(random.Random(1), base=0.05, cap=0.2)
        self.client = ads_client(self.server, backoff=backoff)
        self.client.start()
        return self.client

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        if self.server is not None:
            await self.server.shutdown()
        await self.stop_pilot()

    async def wait(self, condition: Any, timeout: float = 15.0) -> None:
        await wait_until(condition, "condition not met", timeout)

    async def get(self) -> Any:
        return await request(self.mesh.listen, self.mesh.listen_port, "GET", "/", timeout=3.0)

    async def tag(self) -> str | None:
        """The config version the proxy answers with now."""
        tag: str | None = (await self.get()).header("x-config")
        return tag


async def _is(value: Awaitable[object], wanted: object) -> bool:
    return await value == wanted


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    async with Upstream(UPSTREAM, default=Fixed(200, b"hello\n")) as up:
        h.mesh = replace(h.mesh, upstream_port=up.port)
        h.upstream = up  # type: ignore[attr-defined]
        yield h
        await h.stop()


async def test_initial_fetch_in_envoy_order_then_ready_and_routing(harness: Harness) -> None:
    await harness.start_pilot()
    client = await harness.start_proxy()
    assert harness.server is not None
    await harness.wait(lambda: harness.server.ready)
    assert type(client) is XdsClient
    assert harness.types_seen == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
    assert client.updates == 1, "the whole initial state is applied as one snapshot"
    resp = await harness.get()
    assert resp.status == 200 and resp.body == b"hello\n"
    assert resp.header("x-config") == "v1"
    snap = harness.server.holder.current
    assert set(snap.versions) == {CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE}
    assert "xds-grpc" in snap.clusters and "backend" in snap.clusters


async def test_pushed_route_change_is_applied_and_acked(harness: Harness) -> None:
    ads = await harness.start_pilot()
    await harness.start_proxy()
    await harness.wait(lambda: harness.server is not None and harness.server.ready)
    harness.push(tag="v2")

    tag = harness.tag
    await harness.wait(lambda: _is(tag(), "v2"))
    conn = next(iter(ads.connections.values()))
    await harness.wait(lambda: conn.watches[ROUTE_TYPE].status.value == "SYNCED")


async def test_invalid_push_is_nacked_and_the_old_config_keeps_serving(harness: Harness) -> None:
    ads = await harness.start_pilot()
    client = await harness.start_proxy()
    await harness.wait(lambda: harness.server is not None and harness.server.ready)
    harness.push(broken_listener=True)
    conn = next(iter(ads.connections.values()))
    await harness.wait(lambda: conn.watches[LISTENER_TYPE].nack_error is not None)
    error = conn.watches[LISTENER_TYPE].nack_error or ""
    assert error.startswith("main: "), error
    assert "nonexistent" in error
    assert client.rejects == 1
    assert harness.server is not None
    counters = {
        name: harness.server.stats.counter(f"listener_manager.lds.{name}").value
        for name in ("update_attempt", "update_success", "update_rejected")
    }
    assert counters == {"update_attempt": 2, "update_success": 1, "update_rejected": 1}
    resp = await harness.get()
    assert resp.status == 200 and resp.header("x-config") == "v1"
    # A good push afterwards is accepted again.
    harness.push(broken_listener=False, tag="v3")
    await harness.wait(lambda: conn.watches[LISTENER_TYPE].nack_error is None)
    await harness.wait(lambda: conn.watches[ROUTE_TYPE].status.value == "SYNCED")
    assert (await harness.get()).header("x-config") == "v3"


async def test_a_listener_updated_in_place_serves_its_new_inline_routes(harness: Harness) -> None:
    harness.mesh = replace(harness.mesh, inline_tag="first")
    await harness.start_pilot()
    await harness.start_proxy()
    await harness.wait(lambda: harness.server is not None and harness.server.ready)
    assert (await harness.get()).header("x-config") == "first"
    harness.push(inline_tag="second")
    await harness.wait(lambda: _is(harness.tag(), "second"))


async def test_keeps_serving_while_pilot_is_down_and_reconnects(harness: Harness) -> None:
    await harness.start_pilot()
    client = await harness.start_proxy()
    await harness.wait(lambda: harness.server is not None and harness.server.ready)
    await harness.stop_pilot()
    await harness.wait(lambda: not client.connected.is_set())
    for _ in range(3):
        assert (await harness.get()).header("x-config") == "v1"
        await asyncio.sleep(0.1)
    harness.mesh = replace(harness.mesh, version="50", tag="after-restart")
    await harness.start_pilot()
    await harness.wait(lambda: client.connected.is_set())
    await harness.wait(lambda: _is(harness.tag(), "after-restart"))


async def test_ready_after_initial_fetch_timeout_without_pilot(harness: Harness) -> None:
    await harness.start_proxy(fetch_timeout="0.3s")
    assert harness.server is not None and not harness.server.ready
    await harness.wait(lambda: harness.server.ready, timeout=3)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    b = Backoff(random.Random(7), base=0.5, cap=30.0)
    delays = [b.next() for _ in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(15.0 <= d <= 30.0 for d in delays[7:])
    b.reset()
    assert b.next() <= 0.5


def test_ads_target_is_the_first_endpoint_of_the_ads_cluster() -> None:
    bootstrap = bootstrap_from_dict(bootstrap_dict(15010))
    assert ads_target(bootstrap) == f"{PILOT}:15010"
    assert base_pb2.Node is not None


async def test_a_listener_that_cannot_bind_is_nacked_and_the_proxy_not_ready(
    harness: Harness,
) -> None:
    """As Envoy: the update's listener cannot bind a port another socket holds, so the LDS
    update is NACKed with the address and the reason, and the proxy is not ready."""
    import socket

    held = socket.socket()
    held.bind((LISTEN, 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        ads = await harness.start_pilot()
        await harness.start_proxy()
        server = harness.server
        assert server is not None
        await harness.wait(lambda: server.ready)
        harness.push(listen_port=port)
        conn = next(iter(ads.connections.values()))
        await harness.wait(lambda: conn.watches[LISTENER_TYPE].nack_error is not None)
        error = conn.watches[LISTENER_TYPE].nack_error or ""
        assert error == f"listener main: cannot bind {LISTEN}:{port}: Address already in use"
        assert server.bind_errors == (error,)
        # The port is free again: the next update binds it (the proxy is ready again), and the
        # next listener update is ACKed.
        held.close()
        harness.push(tag="v2")
        await harness.wait(lambda: server.bind_errors == ())
        assert (await harness.get()).header("x-config") == "v2"
        harness.push(inline_tag="v3")
        await harness.wait(lambda: conn.watches[LISTENER_TYPE].nack_error is None)
    finally:
        held.close()


async def test_losing_pilot_is_one_warning_line(harness: Harness) -> None:
    import structlog

    await harness.start_pilot()
    client = await harness.start_proxy()
    await harness.wait(lambda: harness.server is not None and harness.server.ready)
    with structlog.testing.capture_logs() as logs:
        await harness.stop_pilot()
        await harness.wait(lambda: not client.connected.is_set())
        await asyncio.sleep(0.5)  # several reconnection attempts (backoff 50-200 ms)
        await harness.start_pilot()
        await harness.wait(lambda: client.connected.is_set(), timeout=5)
    warnings = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert [e["event"] for e in warnings] == ["xds stream lost; reconnecting"], warnings
    assert not any("exc_info" in e or "exception" in e for e in logs)
