"""Proxies of one class get one generation per push, and an endpoint-only change generates
endpoints alone, over real ADS streams (127.0.54.30+)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from pilot.generate import generate
from pilot.generate.classes import proxy_class
from pilot.generate.incremental import affected_types
from pilot.model import ProxyNode
from pilot.xds import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    DebounceConfig,
    DiscoveryServer,
)
from tests.pilot.generate._mesh import Mesh, build_mesh
from tests.pilot.xds.ads_client import AdsClient, istio_node

HOST = "127.0.54.30"
WEB = {"app": "web", "version": "v1"}


EDGE_SIDECAR = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: edge, namespace: shop}
spec:
  workloadSelector: {labels: {tier: edge}}
  egress: [{hosts: ["./web.shop.svc.cluster.local"]}]
"""


@pytest.fixture
async def ads(tmp_path: Path) -> AsyncIterator[DiscoveryServer]:
    (tmp_path / "edge.yaml").write_text(EDGE_SIDECAR)
    mesh = build_mesh("features.yaml", tmp_path / "edge.yaml")
    server = DiscoveryServer(
        mesh.ctx,
        generate=generate,
        parse_node=ProxyNode.from_node,
        classify=proxy_class,
        clock=asyncio.get_running_loop().time,
    )
    await server.start(f"{HOST}:0")
    yield server
    await server.stop()


async def _resources(ads: DiscoveryServer, pod: str, ip: str, labels: dict[str, str]) -> bytes:
    """The serialised resources of one CDS answer to a new proxy."""
    node = istio_node(pod, "shop", ip, labels=labels, service_account="web")
    async with AdsClient(f"{HOST}:{ads.port}", node) as client:
        await client.send(CLUSTER_TYPE)
        reply = await client.recv()
        assert reply.type_url == CLUSTER_TYPE and reply.resources
        return b"".join(r.SerializeToString() for r in reply.resources)


async def test_two_proxies_of_one_class_share_one_generation(ads: DiscoveryServer) -> None:
    first = await _resources(ads, "web-v1-a", "127.0.54.41", WEB)
    builds = ads.cache.builds
    second = await _resources(ads, "web-v1-b", "127.0.54.42", WEB)
    assert second == first
    assert ads.cache.builds == builds  # served from the first proxy's generation
    assert ads.cache.hits == 1


async def test_a_proxy_whose_relevant_field_differs_gets_its_own(ads: DiscoveryServer) -> None:
    first = await _resources(ads, "web-v1-a", "127.0.54.43", WEB)
    builds = ads.cache.builds
    # a label a Sidecar selects on: its egress is narrower, so its clusters differ
    edge = await _resources(ads, "web-v1-c", "127.0.54.44", {**WEB, "tier": "edge"})
    assert ads.cache.builds == builds + 1
    assert edge != first
    assert len(edge) < len(first)
    # and back in the first class: shared again
    assert await _resources(ads, "web-v1-d", "127.0.54.45", WEB) == first
    assert ads.cache.builds == builds + 1


async def test_an_endpoint_only_change_generates_and_sends_endpoints_alone() -> None:
    old = build_mesh("features.yaml")
    server = DiscoveryServer(
        old.ctx,
        generate=generate,
        parse_node=ProxyNode.from_node,
        classify=proxy_class,
        incremental=affected_types,
        clock=asyncio.get_running_loop().time,
        debounce=DebounceConfig(quiet=0.01, max_delay=0.1),
    )
    await server.start(f"{HOST}:0")
    node = istio_node("web-v1-x", "shop", "127.0.54.46", labels=WEB, service_account="web")
    try:
        async with AdsClient(f"{HOST}:{server.port}", node) as client:
            cds = await _subscribe(client, CLUSTER_TYPE)
            eds_names = [
                c.name
                for c in map(cluster_pb2.Cluster.FromString, (r.value for r in cds.resources))
                if c.type == cluster_pb2.Cluster.EDS
            ]
            eds = await _subscribe(client, ENDPOINT_TYPE, eds_names)
            await _subscribe(client, LISTENER_TYPE)
            await _subscribe(client, ROUTE_TYPE, ["8080", "80", "9090", "3306"])
            builds = server.cache.builds

            pod = ProxyNode.build(
                "127.0.54.47", "api-v1-y", "shop", labels={"app": "api", "version": "v1"}
            )
            server.update(Mesh(old.resources, {**old.nodes, "y": pod}, old.mesh).ctx)
            pushed = await client.recv()
            assert pushed.type_url == ENDPOINT_TYPE
            assert pushed.resources != eds.resources  # the new pod is in
            await client.ack(pushed, eds_names)
            await client.expect_nothing()
            assert server.cache.builds == builds + 1  # EDS alone was generated

            server.update(build_mesh("features.yaml", "egress.yaml").ctx)  # config: all types
            while (reply := await client.recv()).type_url != ROUTE_TYPE:
                await client.ack(reply, eds_names if reply.type_url == ENDPOINT_TYPE else ())
            assert server.cache.builds >= builds + 1 + 4
    finally:
        await server.stop()


async def _subscribe(client: AdsClient, type_url: str, names: list[str] | None = None) -> Any:
    await client.send(type_url, names or ())
    reply = await client.recv()
    assert reply.type_url == type_url
    await client.ack(reply, names or ())
    return reply
