"""Delta xDS: the subscription and diff rules, then the stream over real gRPC (127.0.54.50).

The generator is a fake whose contexts say which clusters exist and what each one's connect
timeout is, so a test can change one resource and see only that one travel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from pilot.xds import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, DebounceConfig, DiscoveryServer
from pilot.xds.delta import DeltaWatch, plan, record
from pilot.xds.resources import encode_resources
from pilot.xds.status import connection_status
from tests.pilot.xds.ads_client import istio_node
from tests.support.waiting import wait_until

HOST = "127.0.54.50"


def _cluster(name: str, timeout: int = 1) -> cluster_pb2.Cluster:
    timeout_pb = duration_pb2.Duration(seconds=timeout)
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=timeout_pb)


@dataclass(frozen=True)
class Ctx:
    version: str
    clusters: Mapping[str, int]  # name -> connect timeout


def fake_generate(ctx: Ctx, proxy: Any, type_url: str) -> list[Any]:
    if type_url == CLUSTER_TYPE:
        return [_cluster(n, t) for n, t in ctx.clusters.items()]
    if type_url == ENDPOINT_TYPE:
        return [endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in ctx.clusters]
    return []


# -- the rules -------------------------------------------------------------------------------
def _encoded(clusters: Mapping[str, int]) -> Any:
    return encode_resources(CLUSTER_TYPE, [_cluster(n, t) for n, t in clusters.items()])


def test_first_cluster_request_without_names_is_a_wildcard() -> None:
    watch = DeltaWatch(CLUSTER_TYPE)
    assert watch.update([], [], first=True)
    assert watch.wildcard
    eds = DeltaWatch(ENDPOINT_TYPE)
    assert eds.update([], [], first=True)  # answered (empty), but no wildcard for EDS
    assert not eds.wildcard


def test_star_subscribes_and_unsubscribes_everything() -> None:
    watch = DeltaWatch(LISTENER_TYPE)
    watch.update(["a"], [], first=True)
    assert not watch.wildcard and watch.names == {"a"}
    assert watch.update(["*"], [], first=False)
    assert watch.wildcard
    assert not watch.update([], ["*"], first=False)
    assert not watch.wildcard and watch.names == {"a"}


def test_only_changed_resources_and_removals_are_planned() -> None:
    watch = DeltaWatch(CLUSTER_TYPE)
    watch.update([], [], first=True)
    v1 = _encoded({"a": 1, "b": 1})
    first = plan(watch, v1)
    assert [v1.names[i] for i in first.updated] == ["a", "b"] and not first.removed
    record(watch, v1, first)
    assert not plan(watch, v1)  # nothing new
    v2 = _encoded({"b": 2, "c": 1})
    second = plan(watch, v2)
    assert [v2.names[i] for i in second.updated] == ["b", "c"]
    assert second.removed == ("a",)


def test_initial_versions_of_a_reconnect_are_not_sent_again() -> None:
    v1 = _encoded({"a": 1, "b": 1})
    watch = DeltaWatch(CLUSTER_TYPE)
    held = dict(zip(v1.names, v1.versions, strict=True))
    watch.update([], [], first=True, initial_versions={**held, "gone": "x"})
    todo = plan(watch, _encoded({"a": 1, "b": 5}))
    assert todo.updated == (1,)  # only b changed
    assert todo.removed == ("gone",)


def test_an_explicit_name_that_does_not_exist_is_reported_removed() -> None:
    watch = DeltaWatch(CLUSTER_TYPE)
    watch.update(["a", "missing"], [], first=True)
    todo = plan(watch, _encoded({"a": 1}))
    assert todo.removed == ("missing",)
    record(watch, _encoded({"a": 1}), todo)
    assert not plan(watch, _encoded({"a": 1}))  # said once


# -- the stream ------------------------------------------------------------------------------
class DeltaClient:
    def __init__(self, target: str, pod: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
            self.channel
        ).DeltaAggregatedResources()
        self.node = istio_node(pod)
        self.sent_node = False

    async def send(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial: Mapping[str, str] | None = None,
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=dict(initial or {}),
        )
        if not self.sent_node:
            req.node.CopyFrom(self.node)
            self.sent_node = True
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DeltaDiscoveryResponse:
        reply = await asyncio.wait_for(self.call.read(), timeout)
        assert reply is not grpc.aio.EOF
        return reply

    async def expect_nothing(self, wait: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.call.read()), wait)

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def _contents(reply: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, int]:
    found = {}
    for r in reply.resources:
        cluster = cluster_pb2.Cluster.FromString(r.resource.value)
        assert cluster.name == r.name and r.version
        found[r.name] = cluster.connect_timeout.seconds
    return found


def _status(ads: DiscoveryServer, client: DeltaClient) -> dict[str, Any]:
    conn = ads.connection_for(client.node.id)
    assert conn is not None
    return connection_status(conn, 0.0)


@pytest.fixture
async def ads() -> AsyncIterator[DiscoveryServer]:
    server = DiscoveryServer(
        Ctx("v1", {"a": 1, "b": 1}),
        generate=fake_generate,
        parse_node=lambda node: node.id,
        clock=asyncio.get_running_loop().time,
        debounce=DebounceConfig(quiet=0.01, max_delay=0.1),
    )
    await server.start(f"{HOST}:0")
    yield server
    await server.stop()


@pytest.fixture
async def client(ads: DiscoveryServer) -> AsyncIterator[DeltaClient]:
    c = DeltaClient(f"{HOST}:{ads.port}", "web-v1-abc-1")
    yield c
    await c.close()


async def test_wildcard_clusters_then_named_endpoints(ads, client) -> None:
    await client.send(CLUSTER_TYPE)
    cds = await client.recv()
    assert cds.type_url == CLUSTER_TYPE and _contents(cds) == {"a": 1, "b": 1}
    assert cds.system_version_info == "v1" and cds.nonce
    await client.send(CLUSTER_TYPE, nonce=cds.nonce)  # ACK
    await client.send(ENDPOINT_TYPE, ["a"])
    eds = await client.recv()
    assert [r.name for r in eds.resources] == ["a"]
    await client.send(ENDPOINT_TYPE, ["b"], nonce=eds.nonce)  # ACK + one more name
    more = await client.recv()
    assert [r.name for r in more.resources] == ["b"]  # only the new one
    await client.send(ENDPOINT_TYPE, nonce=more.nonce)
    await client.expect_nothing()
    status = _status(ads, client)
    assert status["types"]["CDS"]["status"] == "SYNCED"


async def test_a_push_sends_only_what_changed_and_what_went_away(ads, client) -> None:
    await client.send(CLUSTER_TYPE)
    cds = await client.recv()
    await client.send(CLUSTER_TYPE, nonce=cds.nonce)
    await client.send(ENDPOINT_TYPE, ["a", "b"])
    eds = await client.recv()
    await client.send(ENDPOINT_TYPE, nonce=eds.nonce)
    ads.update(Ctx("v2", {"b": 7, "c": 1}))
    pushed = await client.recv()
    assert pushed.type_url == CLUSTER_TYPE
    assert _contents(pushed) == {"b": 7, "c": 1}
    assert list(pushed.removed_resources) == ["a"]
    endpoints = await client.recv()  # the same push, without waiting for the ACK
    # a changed cluster warms until its endpoints come again, even unchanged ones
    assert endpoints.type_url == ENDPOINT_TYPE
    assert [r.name for r in endpoints.resources] == ["b"]
    # "a" stays subscribed until the proxy drops it: it holds an empty placeholder
    assert not endpoints.removed_resources
    await client.send(CLUSTER_TYPE, nonce=pushed.nonce)
    await client.send(ENDPOINT_TYPE, [], ["a"], nonce=endpoints.nonce)
    await client.expect_nothing()


async def test_nack_is_recorded_and_the_stream_goes_on(ads, client) -> None:
    await client.send(CLUSTER_TYPE)
    cds = await client.recv()
    await client.send(CLUSTER_TYPE, nonce=cds.nonce, error="cluster b: bad timeout")
    await wait_until(
        lambda: _status(ads, client)["types"]["CDS"].get("error") == "cluster b: bad timeout",
        "the NACK is recorded",
    )
    ads.update(Ctx("v2", {"a": 1, "b": 2}))
    fixed = await client.recv()
    assert _contents(fixed) == {"b": 2}
    await client.send(CLUSTER_TYPE, nonce=fixed.nonce)
    await wait_until(
        lambda: _status(ads, client)["types"]["CDS"]["status"] == "SYNCED",
        "the ACK clears the NACK",
    )


async def test_a_reconnect_gets_only_what_changed_since(ads) -> None:
    first = DeltaClient(f"{HOST}:{ads.port}", "web-v1-abc-2")
    await first.send(CLUSTER_TYPE)
    held = {r.name: r.version for r in (await first.recv()).resources}
    await first.close()
    ads.update(Ctx("v2", {"a": 1, "b": 3}))
    await wait_until(lambda: not ads.push_pending, "the push fired")
    again = DeltaClient(f"{HOST}:{ads.port}", "web-v1-abc-2")
    try:
        await again.send(CLUSTER_TYPE, initial=held)
        reply = await again.recv()
        assert _contents(reply) == {"b": 3}
        assert not reply.removed_resources
    finally:
        await again.close()
