"""The ADS server against a scripted client over real gRPC on loopback (127.0.3.128+).

The generator is a fake: each context says which clusters, endpoints, listeners and route
tables exist, so the tests can check what the server sends and when.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    DebounceConfig,
    DiscoveryServer,
)
from pilot.xds.status import proxy_status
from pymesh.errors import ValidationError
from tests.pilot.xds.ads_client import AdsClient, istio_node
from tests.support.waiting import wait_until

HOST = "127.0.3.130"


@dataclass(frozen=True)
class FakeCtx:
    version: str
    clusters: tuple[str, ...] = ("a", "b")
    routes: dict[str, str] = field(default_factory=lambda: {"80": "a"})
    proxies: tuple[str, ...] = ()


def fake_generate(ctx: FakeCtx, proxy: Any, type_url: str) -> list[Any]:
    if type_url == CLUSTER_TYPE:
        return [cluster_pb2.Cluster(name=c, type=cluster_pb2.Cluster.EDS) for c in ctx.clusters]
    if type_url == ENDPOINT_TYPE:
        return [endpoint_pb2.ClusterLoadAssignment(cluster_name=c) for c in ctx.clusters]
    if type_url == LISTENER_TYPE:
        return [listener_pb2.Listener(name=f"0.0.0.0_{n}") for n in ctx.routes]
    if type_url == ROUTE_TYPE:
        return [
            route_pb2.RouteConfiguration(
                name=n,
                virtual_hosts=[route_components_pb2.VirtualHost(name=target, domains=["*"])],
            )
            for n, target in ctx.routes.items()
        ]
    return []


def parse_node(node: base_pb2.Node) -> str:
    if not node.id.startswith("sidecar~"):
        raise ValidationError(f"node id {node.id!r} is not an Istio sidecar id")
    return node.id


@pytest.fixture
async def ads() -> AsyncIterator[DiscoveryServer]:
    loop = asyncio.get_running_loop()
    rebuilds: list[tuple[Any, ...]] = []

    def rebuild(proxies: Any) -> FakeCtx:
        # Like pilot: the latest config, with the proxies connected now.
        rebuilds.append(tuple(proxies))
        current = server.ctx
        return dataclasses.replace(
            current, version=f"{current.version}+p{len(rebuilds)}", proxies=tuple(proxies)
        )

    server = DiscoveryServer(
        FakeCtx(version="v1"),
        generate=fake_generate,
        parse_node=parse_node,
        rebuild=rebuild,
        clock=loop.time,
        debounce=DebounceConfig(quiet=0.02, max_delay=0.2),
    )
    server.rebuilds = rebuilds  # type: ignore[attr-defined]
    await server.start(f"{HOST}:0")
    yield server
    await server.stop()


Connect = Callable[..., Any]


@pytest.fixture
async def connect(ads: DiscoveryServer) -> AsyncIterator[Connect]:
    clients: list[AdsClient] = []

    async def make(pod: str = "reviews-v1-abc-123", **kw: Any) -> AdsClient:
        client = AdsClient(f"{HOST}:{ads.port}", istio_node(pod, **kw))
        clients.append(client)
        return await client.start()

    yield make
    for c in clients:
        await c.close()


async def _settle(ads: DiscoveryServer) -> None:
    """Wait for pending debounced work (proxy registration) to fire: the context is rebuilt
    and the pushes scheduled (their responses may still be on the way, see
    :func:`_recv_after_registration`)."""
    await wait_until(lambda: not ads.push_pending, "the debounced push fired")


async def _recv_after_registration(
    client: AdsClient, names: dict[str, tuple[str, ...]]
) -> discovery_pb2.DiscoveryResponse:
    """The next response that is not from the registration push (versions ``…+pN``), which
    a busy machine can deliver late; those are ACKed with ``names`` of their type."""
    while "+p" in (reply := await client.recv()).version_info:
        await client.ack(reply, names.get(reply.type_url, ()))
    return reply


async def _initial(client: AdsClient, type_url: str, names: tuple[str, ...] = ()) -> Any:
    await client.send(type_url, names)
    reply = await client.recv()
    assert reply.type_url == type_url
    await client.ack(reply, names)
    return reply


async def test_first_request_is_answered_with_every_cluster(ads, connect) -> None:
    client = await connect()
    await client.send(CLUSTER_TYPE)
    reply = await client.recv()
    assert reply.type_url == CLUSTER_TYPE
    assert reply.version_info == "v1"
    assert reply.nonce
    names = sorted(cluster_pb2.Cluster.FromString(r.value).name for r in reply.resources)
    assert names == ["a", "b"]
    assert reply.control_plane.identifier == "pymesh-pilot"


async def test_ack_gets_no_response_and_marks_synced(ads, connect) -> None:
    client = await connect()
    reply = await _initial(client, CLUSTER_TYPE)
    await client.expect_nothing()
    [status] = proxy_status(list(ads.connections.values()), 0.0)
    assert status["types"]["CDS"]["status"] == "SYNCED"
    assert status["types"]["CDS"]["acked_version"] == reply.version_info
    assert status["types"]["LDS"]["status"] == "NOT SENT"


async def test_named_types_send_only_what_was_asked_plus_placeholders(ads, connect) -> None:
    client = await connect()
    await client.send(ENDPOINT_TYPE, ["a", "missing"])
    reply = await client.recv()
    got = {
        endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name for r in reply.resources
    }
    assert got == {"a", "missing"}


async def test_nack_keeps_version_and_records_the_error(ads, connect) -> None:
    client = await connect()
    await client.send(LISTENER_TYPE)
    reply = await client.recv()
    await client.nack(reply, "0.0.0.0_80: unknown filter")
    await client.expect_nothing()
    [status] = proxy_status(list(ads.connections.values()), 0.0)
    lds = status["types"]["LDS"]
    assert lds["status"] == "STALE"
    assert lds["error"] == "0.0.0.0_80: unknown filter"
    assert status["errors"] == {"LDS": "0.0.0.0_80: unknown filter"}
    assert ads.metrics.rejects["lds"] == 1
    assert 'pilot_total_xds_rejects{type="lds"} 1' in ads.metrics.render()
    # The same (rejected) content is not sent again; a change is.
    ads.update(FakeCtx(version="v1b"))
    await client.expect_nothing(0.3)
    ads.update(FakeCtx(version="v2", routes={"80": "a", "8080": "b"}))
    reply2 = await client.recv()
    assert reply2.type_url == LISTENER_TYPE and reply2.version_info.startswith("v2")
    await client.ack(reply2)

    def lds() -> Any:
        [status] = proxy_status(list(ads.connections.values()), 0.0)
        return status["types"]["LDS"]

    await wait_until(lambda: lds()["status"] == "SYNCED", "the ACK was processed")
    assert "error" not in lds()


async def test_stale_nonce_is_ignored(ads, connect) -> None:
    client = await connect()
    await client.send(ROUTE_TYPE, ["80"])
    first = await client.recv()
    await client.ack(first, ["80"])
    ads.update(FakeCtx(version="v2", routes={"80": "b"}))
    second = await client.recv()
    # An ACK of the first response with other names arrives late: ignored.
    await client.send(ROUTE_TYPE, ["80", "9090"], version=first.version_info, nonce=first.nonce)
    await client.expect_nothing()
    await client.ack(second, ["80"])
    await client.expect_nothing()


async def test_new_names_in_an_ack_are_answered(ads, connect) -> None:
    client = await connect()
    first = await _initial(client, ROUTE_TYPE, ("80",))
    await client.expect_nothing(0.1)
    await client.send(ROUTE_TYPE, ["80", "9090"], version=first.version_info, nonce=first.nonce)
    reply = await client.recv()
    names = {route_pb2.RouteConfiguration.FromString(r.value).name for r in reply.resources}
    assert names == {"80", "9090"}


async def test_push_sends_only_changed_types_in_envoy_order(ads, connect) -> None:
    client = await connect()
    await _initial(client, CLUSTER_TYPE)
    await _initial(client, ENDPOINT_TYPE, ("a", "b"))
    await _initial(client, LISTENER_TYPE)
    await _initial(client, ROUTE_TYPE, ("80",))
    await _settle(ads)
    # Only the route target changes: one RDS response, nothing else.
    ads.update(FakeCtx(version="v9", routes={"80": "b"}))
    names = {ENDPOINT_TYPE: ("a", "b"), ROUTE_TYPE: ("80",)}
    reply = await _recv_after_registration(client, names)
    assert reply.type_url == ROUTE_TYPE and reply.version_info.startswith("v9")
    await client.ack(reply, ("80",))
    await client.expect_nothing()
    # A new cluster: CDS, then EDS (always re-sent after CDS, for warming).
    ads.update(FakeCtx(version="v10", clusters=("a", "b", "c"), routes={"80": "b"}))
    first, second = await client.recv(), await client.recv()
    assert (first.type_url, second.type_url) == (CLUSTER_TYPE, ENDPOINT_TYPE)
    assert ads.metrics.pushes["cds"] >= 2
    text = ads.metrics.render()
    assert 'pilot_xds_pushes{type="rds"}' in text
    assert "pilot_proxy_convergence_time_count" in text


async def test_connected_proxies_rebuild_the_context(ads, connect) -> None:
    one = await connect("reviews-v1-abc-123", ip="10.0.0.1")
    await _initial(one, CLUSTER_TYPE)
    two = await connect("reviews-v2-abc-123", ip="10.0.0.2")
    await _initial(two, CLUSTER_TYPE)
    await _settle(ads)
    assert ads.metrics.connected == 2
    assert "pilot_xds 2" in ads.metrics.render()
    assert len(ads.ctx.proxies) == 2
    await two.close()
    await wait_until(lambda: ads.metrics.connected == 1, "the closed stream was noticed")
    await _settle(ads)
    assert ads.metrics.connected == 1
    assert len(ads.ctx.proxies) == 1


async def test_invalid_node_is_refused(ads) -> None:
    bad = base_pb2.Node(id="not-istio")
    client = AdsClient(f"{HOST}:{ads.port}", bad)
    await client.start()
    try:
        await client.send(CLUSTER_TYPE)
        with pytest.raises(Exception, match="invalid node"):
            await client.recv()
    finally:
        await client.close()


async def test_debounce_coalesces_a_burst(ads, connect) -> None:
    client = await connect()
    await _initial(client, ROUTE_TYPE, ("80",))
    await _settle(ads)
    # Twenty updates before the loop runs again: a burst by construction, however slow the
    # machine (the quiet period itself is the Debouncer's, tested on a fake clock).
    for i in range(20):
        ads.update(FakeCtx(version=f"burst{i}", routes={"80": f"t{i}"}))
    reply = await _recv_after_registration(client, {ROUTE_TYPE: ("80",)})
    assert reply.version_info.startswith("burst19")
    await client.ack(reply, ("80",))
    await client.expect_nothing()


def test_discovery_request_wildcard_rules() -> None:
    from pilot.xds.watch import requested_names

    assert requested_names(CLUSTER_TYPE, []) == (frozenset(), True)
    assert requested_names(ROUTE_TYPE, []) == (frozenset(), False)
    assert requested_names(ROUTE_TYPE, ["*", "x"]) == (frozenset({"x"}), True)
    assert discovery_pb2.DiscoveryRequest().response_nonce == ""


async def test_a_registering_proxy_is_answered_once_the_registry_knows_it() -> None:
    loop = asyncio.get_running_loop()

    async def serve(quiet: float) -> DiscoveryServer:
        def rebuild(proxies: Any) -> FakeCtx:
            return dataclasses.replace(server.ctx, version="with-proxies", proxies=tuple(proxies))

        server = DiscoveryServer(
            FakeCtx(version="v1"),
            generate=fake_generate,
            parse_node=parse_node,
            rebuild=rebuild,
            registers=lambda proxy: "reviews" in proxy,
            clock=loop.time,
            debounce=DebounceConfig(quiet=quiet, max_delay=2 * quiet),
        )
        await server.start(f"{HOST}:0")
        return server

    server = await serve(0.05)
    try:
        async with AdsClient(f"{HOST}:{server.port}", istio_node("reviews-v1-a-1")) as pod:
            await pod.send(CLUSTER_TYPE)
            reply = await pod.recv()
            assert reply.version_info == "with-proxies"
    finally:
        await server.stop()
    # Clients that serve nothing are not held: with a 60 s quiet period, one that waited
    # for the debounced rebuild would not be answered within recv's 10 s.
    server = await serve(60.0)
    try:
        async with AdsClient(f"{HOST}:{server.port}", istio_node("sleep-a-1")) as client:
            await client.send(CLUSTER_TYPE)
            reply = await client.recv(10.0)
            assert reply.version_info == "v1"
    finally:
        await server.stop()
