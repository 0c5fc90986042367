"""The proxy's delta ADS client (``api_type: DELTA_GRPC``), in process, against pilot's ADS
server with the scripted generator of the state-of-the-world tests, and against a scripted
delta server for what pilot never sends; real requests go to a loopback upstream
(addresses 127.0.60.10-19)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2

from pilot.xds import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxy.config.bootstrap import bootstrap_from_dict
from proxy.config.model import ApiType
from proxy.server import ProxyServer
from proxy.xds_client import Backoff, ads_client
from proxy.xds_delta import DeltaXdsClient
from pymesh.errors import UnsupportedError
from tests.proxy.test_xds_client import Harness, Mesh, _is, bootstrap_dict, generate
from tests.support.httpclient import request
from tests.support.procs import free_port
from tests.support.upstream import Fixed, Upstream

PILOT = "127.0.60.10"
LISTEN = "127.0.60.11"
UPSTREAM = "127.0.60.12"
SCRIPTED = "127.0.60.13"
TIMEOUT = 5.0


@dataclass(frozen=True)
class DeltaMesh(Mesh):
    #: a second cluster, "extra", while set
    extra: bool = False


class DeltaHarness(Harness):
    api_type = "DELTA_GRPC"

    def __init__(self) -> None:
        super().__init__(PILOT, LISTEN, UPSTREAM)
        self.mesh = DeltaMesh(**{f: getattr(self.mesh, f) for f in Mesh.__dataclass_fields__})

    def _generate(self, ctx: Mesh, proxy: Any, type_url: str) -> list[Any]:
        found = super()._generate(ctx, proxy, type_url)
        if type_url == CLUSTER_TYPE and isinstance(ctx, DeltaMesh) and ctx.extra:
            found.append(static_cluster("extra", ctx.upstream, ctx.upstream_port))
        return found

    @property
    def delta(self) -> DeltaXdsClient:
        assert isinstance(self.client, DeltaXdsClient)
        return self.client


def static_cluster(name: str, host: str, port: int) -> cluster_pb2.Cluster:
    endpoint = endpoint_components_pb2.LbEndpoint()
    address = endpoint.endpoint.address.socket_address
    address.address, address.port_value = host, port
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )


@pytest.fixture
async def harness() -> AsyncIterator[DeltaHarness]:
    h = DeltaHarness()
    async with Upstream(UPSTREAM, default=Fixed(200, b"hello\n")) as up:
        h.mesh = replace(h.mesh, upstream_port=up.port)
        yield h
        await h.stop()


async def _ready(h: DeltaHarness) -> ProxyServer:
    await h.wait(lambda: h.server is not None and h.server.ready)
    assert h.server is not None
    return h.server


async def test_delta_bootstrap_converges_in_envoy_order(harness: DeltaHarness) -> None:
    ads = await harness.start_pilot()
    await harness.start_proxy()
    server = await _ready(harness)
    assert harness.types_seen == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
    assert harness.delta.updates == 1, "the whole initial state is applied as one snapshot"
    resp = await harness.get()
    assert resp.status == 200 and resp.body == b"hello\n" and resp.header("x-config") == "v1"
    assert {"xds-grpc", "backend"} <= set(server.holder.current.clusters)
    assert set(server.holder.current.versions) == {
        CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE,
    }  # fmt: skip
    # each resource with its own version, as a delta response carries them
    held = harness.delta.resource_versions
    assert set(held[CLUSTER_TYPE]) == {"backend"} and held[CLUSTER_TYPE]["backend"]
    assert set(held[ROUTE_TYPE]) == {"main"}
    conn = next(iter(ads.connections.values()))
    for type_url in (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE):
        await harness.wait(lambda t=type_url: conn.watches[t].status.value == "SYNCED")
    assert server.stats.counter("cluster_manager.cds.update_success").value == 1


async def test_a_changed_route_arrives_alone_and_is_acked(harness: DeltaHarness) -> None:
    ads = await harness.start_pilot()
    await harness.start_proxy()
    await _ready(harness)
    cluster = harness.delta.accepted[CLUSTER_TYPE]["backend"]
    harness.push(tag="v2")
    await harness.wait(lambda: _is(harness.tag(), "v2"))
    conn = next(iter(ads.connections.values()))
    await harness.wait(lambda: conn.watches[ROUTE_TYPE].status.value == "SYNCED")
    # The unchanged cluster was not sent again: the proxy still holds the one it translated.
    assert harness.delta.accepted[CLUSTER_TYPE]["backend"] is cluster


async def test_a_removed_cluster_disappears(harness: DeltaHarness) -> None:
    await harness.start_pilot()
    await harness.start_proxy()
    server = await _ready(harness)
    harness.push(extra=True)
    await harness.wait(lambda: "extra" in server.holder.current.clusters)
    backend = harness.delta.accepted[CLUSTER_TYPE]["backend"]
    harness.push(extra=False)
    await harness.wait(lambda: "extra" not in server.holder.current.clusters)
    assert "extra" not in harness.delta.resource_versions[CLUSTER_TYPE]
    assert harness.delta.accepted[CLUSTER_TYPE]["backend"] is backend
    assert (await harness.get()).status == 200


async def test_invalid_push_is_nacked_and_the_old_config_keeps_serving(
    harness: DeltaHarness,
) -> None:
    ads = await harness.start_pilot()
    await harness.start_proxy()
    server = await _ready(harness)
    harness.push(broken_listener=True)
    conn = next(iter(ads.connections.values()))
    await harness.wait(lambda: conn.watches[LISTENER_TYPE].nack_error is not None)
    error = conn.watches[LISTENER_TYPE].nack_error or ""
    assert error.startswith("main: ") and "nonexistent" in error, error
    assert harness.delta.rejects == 1
    counters = {
        name: server.stats.counter(f"listener_manager.lds.{name}").value
        for name in ("update_attempt", "update_success", "update_rejected")
    }
    assert counters == {"update_attempt": 2, "update_success": 1, "update_rejected": 1}
    resp = await harness.get()
    assert resp.status == 200 and resp.header("x-config") == "v1"
    harness.push(broken_listener=False, tag="v3")
    await harness.wait(lambda: conn.watches[LISTENER_TYPE].nack_error is None)
    await harness.wait(lambda: _is(harness.tag(), "v3"))


async def test_reconnects_with_what_it_holds_and_keeps_serving(harness: DeltaHarness) -> None:
    await harness.start_pilot()
    await harness.start_proxy()
    await _ready(harness)
    client = harness.delta
    cluster = client.accepted[CLUSTER_TYPE]["backend"]
    with structlog.testing.capture_logs() as logs:
        await harness.stop_pilot()
        await harness.wait(lambda: not client.connected.is_set())
        assert (await harness.get()).header("x-config") == "v1"
        harness.mesh = replace(harness.mesh, version="50", tag="after-restart")
        await harness.start_pilot()
        await harness.wait(lambda: client.connected.is_set())
        await harness.wait(lambda: _is(harness.tag(), "after-restart"))
    resumed = [e for e in logs if e["event"] == "xds delta stream resumed"]
    held = {"Cluster": 1, "ClusterLoadAssignment": 1, "Listener": 1, "RouteConfiguration": 1}
    assert resumed and resumed[0]["held"] == held, logs
    # The restarted pilot heard the versions the proxy holds: the unchanged cluster is not
    # sent again (the proxy still runs the object it translated before the restart).
    assert client.accepted[CLUSTER_TYPE]["backend"] is cluster
    assert set(client.resource_versions[ENDPOINT_TYPE]) == {"backend"}


# -- a scripted delta server: what pilot never sends ------------------------------------------


class ScriptedDelta(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Answers the delta stream with what the test queues, and hands it the requests."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self.responses: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()

    async def DeltaAggregatedResources(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async def read() -> None:
            async for message in request_iterator:
                await self.requests.put(message)

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await self.responses.get()
        finally:
            reader.cancel()

    async def next(self) -> discovery_pb2.DeltaDiscoveryRequest:
        return await asyncio.wait_for(self.requests.get(), TIMEOUT)

    def send(self, type_url: str, nonce: str, *resources: tuple[str, str, any_pb2.Any]) -> None:
        reply = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, nonce=nonce, system_version_info=nonce
        )
        for name, version, packed in resources:
            reply.resources.add(name=name, version=version, resource=packed)
        self.responses.put_nowait(reply)


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


async def test_unknown_types_and_undecodable_resources_are_nacked_by_name() -> None:
    script = ScriptedDelta()
    grpc_server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(script, grpc_server)
    port = grpc_server.add_insecure_port(f"{SCRIPTED}:{free_port(SCRIPTED)}")
    await grpc_server.start()
    boot = bootstrap_dict(port, api_type="DELTA_GRPC", pilot=SCRIPTED)
    server = ProxyServer(bootstrap_from_dict(boot), loop=asyncio.get_running_loop())
    client = ads_client(server, backoff=Backoff(random.Random(1), base=0.05, cap=0.2))
    assert isinstance(client, DeltaXdsClient)
    try:
        async with Upstream(UPSTREAM, default=Fixed(200, b"hello\n")) as up:
            await server.start()
            client.start()
            first = await script.next()
            assert first.type_url == CLUSTER_TYPE and not first.resource_names_subscribe
            assert first.node.id.startswith("sidecar~")

            async def nacked(nonce: str) -> str:
                request = await script.next()
                assert request.response_nonce == nonce and request.HasField("error_detail")
                return str(request.error_detail.message)

            unknown = "type.googleapis.com/envoy.config.unknown.v3.Thing"
            script.send(unknown, "n1")
            assert unknown in await nacked("n1")
            garbage = any_pb2.Any(type_url=CLUSTER_TYPE, value=b"\xff\xff\xff")
            script.send(CLUSTER_TYPE, "n2", ("backend", "c0", garbage))
            error = await nacked("n2")
            assert error.startswith("backend: ") and "does not decode" in error, error
            wrong = _packed(endpoint_pb2.ClusterLoadAssignment(cluster_name="backend"))
            script.send(CLUSTER_TYPE, "n3", ("backend", "c0", wrong))
            error = await nacked("n3")
            assert error.startswith("backend: ") and "ClusterLoadAssignment" in error, error

            cluster = static_cluster("backend", UPSTREAM, up.port)
            script.send(CLUSTER_TYPE, "n4", ("backend", "c1", _packed(cluster)))
            ack = await script.next()
            assert ack.response_nonce == "n4" and not ack.HasField("error_detail")
            listeners = await script.next()
            assert listeners.type_url == LISTENER_TYPE and not listeners.response_nonce
            mesh = Mesh("1", free_port(LISTEN), up.port, "v1", False, "inline", LISTEN, UPSTREAM)
            [listener] = generate(mesh, None, LISTENER_TYPE)
            script.send(LISTENER_TYPE, "n5", ("main", "l1", _packed(listener)))
            ack = await script.next()
            assert ack.response_nonce == "n5" and not ack.HasField("error_detail")
            assert server.ready
            assert set(server.holder.current.clusters) == {"xds-grpc", "backend"}

            # A bad update of what runs: NACKed by name, nothing lost.
            garbage = any_pb2.Any(type_url=LISTENER_TYPE, value=b"\x0a\xff")
            script.send(LISTENER_TYPE, "n6", ("main", "l2", garbage))
            error = await nacked("n6")
            assert error.startswith("main: "), error
            assert client.resource_versions[LISTENER_TYPE] == {"main": "l1"}
            assert client.resource_versions[CLUSTER_TYPE] == {"backend": "c1"}
            assert "main" in server.holder.current.listeners
            resp = await request(LISTEN, mesh.listen_port, "GET", "/", timeout=3.0)
            assert resp.status == 200 and resp.header("x-config") == "inline"
            rejected = server.stats.counter("cluster_manager.cds.update_rejected").value
            assert rejected == 2 and client.rejects == 4
    finally:
        await client.stop()
        await server.shutdown()
        await grpc_server.stop(0)


@pytest.mark.parametrize("api_type", ["REST", "AGGREGATED_DELTA_GRPC"])
def test_only_grpc_and_delta_grpc_are_accepted(api_type: str) -> None:
    delta = bootstrap_from_dict(bootstrap_dict(15010, api_type="DELTA_GRPC", pilot=SCRIPTED))
    assert delta.dynamic_resources is not None and delta.dynamic_resources.ads_config is not None
    assert delta.dynamic_resources.ads_config.api_type is ApiType.DELTA_GRPC
    with pytest.raises(UnsupportedError) as refused:
        bootstrap_from_dict(bootstrap_dict(15010, api_type=api_type, pilot=SCRIPTED))
    assert refused.value.path == "dynamic_resources.ads_config.api_type", refused.value
    assert api_type in str(refused.value)
