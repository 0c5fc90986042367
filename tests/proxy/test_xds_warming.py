"""Envoy's warming in the proxy's ADS client, against pilot's ADS server with a scripted
generator and a gated identity agent (SDS on a Unix socket): a changed cluster or listener is
not used until what it needs has arrived, the previous version serves meanwhile, and the
update is ACKed at once (addresses 127.0.51.1-9)."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import json_format

from pilot.xds import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    DebounceConfig,
    DiscoveryServer,
)
from proxy.config.bootstrap import bootstrap_from_dict
from proxy.server import ProxyServer
from proxy.xds_client import Backoff, XdsClient
from tests.auth.envoy_sds import sds_secret, upstream_mtls
from tests.support.envoy import sds_cluster, xds_cluster
from tests.support.httpclient import AsyncConnection, Response, request
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port
from tests.support.upstream import Fixed, Held, Upstream
from tests.support.waiting import wait_until

PILOT = "127.0.51.1"
LISTEN = "127.0.51.2"
UPSTREAM = {"a": "127.0.51.3", "b": "127.0.51.4"}
_ADS = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


@dataclass(frozen=True)
class Mesh:
    """What the scripted generator produces: cluster ``backend`` asks EDS for ``service``
    (``a`` or ``b``, each the upstream of that name); listener ``main`` asks RDS for
    ``route`` (``a`` or ``b``, answering with ``x-config`` set to its name)."""

    version: str
    listen_port: int
    endpoints: Mapping[str, int] = field(default_factory=dict)  # service -> port on its host
    service: str = "a"
    eds_timeout: str = "0s"
    cluster_tls: bool = False
    route: str = "a"
    listener_tls: bool = False
    #: "permissive" or "strict": Istio's inbound shapes, a TLS inspector choosing between a
    #: TLS chain and (permissive only) a plaintext one, both with the same connection manager
    mesh_tls: str | None = None


def _cluster(ctx: Mesh) -> dict[str, Any]:
    eds = {**_ADS, "initial_fetch_timeout": ctx.eds_timeout}
    cluster: dict[str, Any] = {
        "name": "backend",
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": eds, "service_name": ctx.service},
    }
    if ctx.cluster_tls:
        cluster["transport_socket"] = upstream_mtls("backend")
    return cluster


def _listener(ctx: Mesh) -> dict[str, Any]:
    hcm = {
        "@type": _HCM + "HttpConnectionManager",
        "stat_prefix": "main",
        "rds": {"route_config_name": ctx.route, "config_source": _ADS},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    filters = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "DownstreamTlsContext",
            "common_tls_context": {"tls_certificate_sds_secret_configs": [sds_secret("default")]},
        },
    }
    address = {"socket_address": {"address": LISTEN, "port_value": ctx.listen_port}}
    if ctx.mesh_tls is not None:
        tls_match = {"transport_protocol": "tls"}
        chains: list[dict[str, Any]] = [
            {"filter_chain_match": tls_match, "filters": filters, "transport_socket": tls}
        ]
        if ctx.mesh_tls == "permissive":
            plain_match = {"transport_protocol": "raw_buffer"}
            chains.append({"filter_chain_match": plain_match, "filters": filters})
        inspector = {
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
            },
        }
        return {
            "name": "main",
            "address": address,
            "listener_filters": [inspector],
            "filter_chains": chains,
        }
    chain: dict[str, Any] = {"filters": filters}
    if ctx.listener_tls:
        chain["transport_socket"] = tls
    return {"name": "main", "address": address, "filter_chains": [chain]}


def _route(name: str) -> dict[str, Any]:
    route = {
        "match": {"prefix": "/"},
        "route": {"cluster": "backend"},
        "response_headers_to_add": [{"header": {"key": "x-config", "value": name}}],
    }
    return {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}


def generate(ctx: Mesh, proxy: Any, type_url: str) -> list[Any]:
    if type_url == CLUSTER_TYPE:
        return [json_format.ParseDict(_cluster(ctx), cluster_pb2.Cluster())]
    if type_url == ENDPOINT_TYPE:
        return [
            json_format.ParseDict(
                {
                    "cluster_name": service,
                    "endpoints": [
                        {"lb_endpoints": [{"endpoint": {"address": _address(service, port)}}]}
                    ],
                },
                endpoint_pb2.ClusterLoadAssignment(),
            )
            for service, port in ctx.endpoints.items()
        ]
    if type_url == LISTENER_TYPE:
        return [json_format.ParseDict(_listener(ctx), listener_pb2.Listener())]
    if type_url == ROUTE_TYPE:
        return [
            json_format.ParseDict(_route(n), route_pb2.RouteConfiguration()) for n in ("a", "b")
        ]
    return []


def _address(service: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": UPSTREAM[service], "port_value": port}}


class Agent(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    """An identity agent whose answers wait until the test releases them."""

    def __init__(self, pki: MeshPki) -> None:
        self.cert = pki.workload("default", "backend")
        self.root = pki.root_pem
        self.asked = asyncio.Event()
        self.released = asyncio.Event()

    def _secret(self, name: str) -> secret_pb2.Secret:
        if name == "ROOTCA":
            body: dict[str, Any] = {
                "validation_context": {"trusted_ca": {"inline_string": self.root}}
            }
        else:
            chain = {"inline_string": self.cert.chain}
            key = {"inline_string": self.cert.key.decode()}
            body = {"tls_certificate": {"certificate_chain": chain, "private_key": key}}
        return json_format.ParseDict({"name": name, **body}, secret_pb2.Secret())

    async def StreamSecrets(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        nonce = 0
        async for asked in requests:
            if asked.response_nonce or not asked.resource_names:
                continue  # an ACK
            self.asked.set()
            await self.released.wait()
            nonce += 1
            reply = discovery_pb2.DiscoveryResponse(
                version_info="1", nonce=str(nonce), type_url=SECRET_TYPE
            )
            for name in asked.resource_names:
                reply.resources.add().Pack(self._secret(name))
            yield reply


class SlowPilot(DiscoveryServer):
    """Pilot's ADS server answering the types in ``held`` late: not until a push after they
    are released (pilot itself answers every name asked for at once, with an empty resource
    when it has none)."""

    held: set[str]

    async def _send(self, conn: Any, watch: Any, context: Any, **kw: Any) -> bool:
        if watch.type_url in self.held:
            return False
        return bool(await super()._send(conn, watch, context, **kw))


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.pilot_port = free_port(PILOT)
        self.mesh = Mesh("1", free_port(LISTEN))
        self.pki = MeshPki()
        self.agent = Agent(self.pki)
        self.socket = tmp / "agent.sock"
        self.ads: SlowPilot | None = None
        self.grpc: grpc.aio.Server | None = None
        self.server: ProxyServer | None = None
        self.client: XdsClient | None = None

    async def start(self, **mesh: Any) -> ProxyServer:
        self.mesh = replace(self.mesh, **mesh)
        loop = asyncio.get_running_loop()
        self.grpc = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self.agent, self.grpc)
        self.grpc.add_insecure_port(f"unix:{self.socket}")
        await self.grpc.start()
        self.ads = SlowPilot(
            self.mesh,
            generate=generate,
            parse_node=lambda node: node.id,
            clock=loop.time,
            debounce=DebounceConfig(quiet=0.01, max_delay=0.05),
        )
        self.ads.held = set()
        await self.ads.start(f"{PILOT}:{self.pilot_port}")
        source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
        bootstrap = bootstrap_from_dict(
            {
                "node": {"id": "sidecar~127.0.51.2~app-1.default~default.svc.cluster.local"},
                "dynamic_resources": {
                    "ads_config": {
                        "api_type": "GRPC",
                        "transport_api_version": "V3",
                        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                    },
                    "cds_config": source,
                    "lds_config": source,
                },
                "static_resources": {
                    "clusters": [
                        xds_cluster(PILOT, self.pilot_port, http2=False),
                        sds_cluster(self.socket),
                    ]
                },
            }
        )
        self.server = ProxyServer(bootstrap, loop=loop)
        await self.server.start()
        self.client = XdsClient(self.server, backoff=Backoff(random.Random(1), base=0.05, cap=0.2))
        self.client.start()
        return self.server

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        if self.server is not None:
            await self.server.shutdown()
        if self.ads is not None:
            await self.ads.stop(0)
        if self.grpc is not None:
            await self.grpc.stop(0)

    def push(self, **changes: Any) -> None:
        self.mesh = replace(self.mesh, version=str(int(self.mesh.version) + 1), **changes)
        assert self.ads is not None
        self.ads.update(self.mesh)

    def hold(self, type_url: str) -> None:
        assert self.ads is not None
        self.ads.held.add(type_url)

    def release(self) -> None:
        """Held types are answered with the next push."""
        assert self.ads is not None
        self.ads.held.clear()
        self.push()

    async def acked(self, type_url: str) -> None:
        """Until the proxy has ACKed the current version of ``type_url``."""
        assert self.ads is not None
        version = str(self.mesh.version)

        def done() -> bool:
            assert self.ads is not None
            watches = [c.watches.get(type_url) for c in self.ads.connections.values()]
            return any(
                w is not None and w.acked_version == version and w.nack_error is None
                for w in watches
            )

        await wait_until(done, f"{type_url.rpartition('.')[2]} version {version} ACKed", 15)

    def gauge(self, name: str) -> int:
        assert self.server is not None
        return self.server.stats.gauge(name).value

    async def get(self) -> Response:
        return await request(LISTEN, self.mesh.listen_port, "GET", "/", timeout=3.0)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    async with (
        Upstream(UPSTREAM["a"], default=Fixed(200, b"a")) as a,
        Upstream(UPSTREAM["b"], default=Fixed(200, b"b")) as b,
    ):
        h.ports = {"a": a.port, "b": b.port}  # type: ignore[attr-defined]
        h.upstreams = {"a": a, "b": b}  # type: ignore[attr-defined]
        yield h
        await h.stop()


async def _ready(h: Harness, **mesh: Any) -> ProxyServer:
    ports = h.ports  # type: ignore[attr-defined]
    server = await h.start(endpoints=ports, **mesh)
    await wait_until(lambda: server.ready, "the initial config applied", 15)
    return server


async def _body(h: Harness) -> bytes:
    resp = await h.get()
    return resp.body if resp.status == 200 else f"HTTP {resp.status}".encode()


async def test_a_changed_cluster_serves_its_old_version_until_its_endpoints_arrive(
    harness: Harness,
) -> None:
    await _ready(harness)
    assert await _body(harness) == b"a"
    harness.hold(ENDPOINT_TYPE)
    harness.push(service="b")
    await harness.acked(CLUSTER_TYPE)
    assert harness.gauge("cluster_manager.warming_clusters") == 1
    for _ in range(5):
        assert await _body(harness) == b"a", "the old cluster keeps serving while the new warms"
    harness.release()
    await wait_until(lambda: _is(_body(harness), b"b"), "the warmed cluster serves", 15)
    assert harness.gauge("cluster_manager.warming_clusters") == 0
    assert harness.server is not None
    stats = harness.server.stats
    # Envoy counts a CDS update a success when it is accepted, warm or not.
    assert stats.counter("cluster_manager.cds.update_success").value >= 2
    assert stats.counter("cluster_manager.cds.update_rejected").value == 0


async def test_a_cluster_is_used_without_its_endpoints_after_initial_fetch_timeout(
    harness: Harness,
) -> None:
    await _ready(harness)
    harness.hold(ENDPOINT_TYPE)
    started = time.monotonic()
    harness.push(service="b", eds_timeout="1.5s")
    outcomes: list[bytes] = []
    while (outcome := await _body(harness)) == b"a":
        outcomes.append(outcome)
        assert time.monotonic() - started < 20, "the fetch timeout never ended the warming"
        await asyncio.sleep(0.05)
    # Envoy's initial_fetch_timeout: the cluster is used as it is, with no endpoint (503 UH).
    assert outcome == b"HTTP 503"
    assert time.monotonic() - started >= 1.5
    assert harness.server is not None
    assert harness.server.stats.counter("cluster.backend.init_fetch_timeout").value == 1
    assert harness.gauge("cluster_manager.warming_clusters") == 0


async def test_a_cluster_waits_for_the_agents_secrets(harness: Harness) -> None:
    """The cluster changes to mTLS with secrets from the identity agent, which answers late:
    plaintext to ``a`` until then, mTLS to ``b`` after."""
    await _ready(harness)
    b = harness.upstreams["b"]  # type: ignore[attr-defined]
    await b.stop()
    tls = harness.pki.server_context(harness.pki.workload("default", "b"))
    async with Upstream(UPSTREAM["b"], default=Fixed(200, b"b over mTLS"), tls=tls) as secure:
        ports = {**harness.ports, "b": secure.port}  # type: ignore[attr-defined]
        harness.push(service="b", cluster_tls=True, endpoints=ports)
        await harness.acked(CLUSTER_TYPE)
        await wait_until(harness.agent.asked.is_set, "the agent asked for the secrets", 15)
        assert harness.gauge("cluster_manager.warming_clusters") == 1
        assert await _body(harness) == b"a"
        harness.agent.released.set()
        await wait_until(lambda: _is(_body(harness), b"b over mTLS"), "mTLS to b", 15)
        assert harness.gauge("cluster_manager.warming_clusters") == 0


async def test_a_changed_listener_serves_its_old_version_until_its_routes_arrive(
    harness: Harness,
) -> None:
    await _ready(harness)
    assert (await harness.get()).header("x-config") == "a"
    harness.hold(ROUTE_TYPE)
    harness.push(route="b")
    await harness.acked(LISTENER_TYPE)  # ACKed at once, as Envoy: warming is not the ACK's
    assert harness.gauge("listener_manager.total_listeners_warming") == 1
    for _ in range(5):
        assert (await harness.get()).header("x-config") == "a"
    harness.release()
    await wait_until(lambda: _header(harness, "b"), "the warmed listener serves", 15)
    assert harness.gauge("listener_manager.total_listeners_warming") == 0
    assert harness.gauge("listener_manager.total_listeners_active") == 1


async def test_a_listener_waits_for_the_agents_secrets_and_is_acked_meanwhile(
    harness: Harness,
) -> None:
    """The listener changes to TLS with its certificate from the agent, which answers late:
    the LDS update is ACKed at once (a sidecar whose agent is slow is not STALE), plaintext
    is served until the certificate arrives, TLS after."""
    await _ready(harness)
    harness.push(listener_tls=True)
    await harness.acked(LISTENER_TYPE)
    await wait_until(harness.agent.asked.is_set, "the agent asked for the secrets", 15)
    assert harness.gauge("listener_manager.total_listeners_warming") == 1
    assert await _body(harness) == b"a"
    harness.agent.released.set()

    context = _client_tls(harness)

    async def over_tls() -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(LISTEN, harness.mesh.listen_port, ssl=context), 3
            )
        except (OSError, ssl.SSLError, TimeoutError):
            return False
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 3)
        writer.close()
        return answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"a")

    await wait_until(over_tls, "TLS served with the agent's certificate", 15)
    assert harness.gauge("listener_manager.total_listeners_warming") == 0


async def test_a_request_in_flight_finishes_on_the_old_chain_across_a_listener_update(
    harness: Harness,
) -> None:
    """A request in flight when its listener's chain is replaced gets its answer on the old
    chain (with ``connection: close``); a new connection gets the new chain."""
    await _ready(harness)
    upstream = harness.upstreams["a"]  # type: ignore[attr-defined]
    upstream.route("/slow", Held("slow", Fixed(200, b"slow")))
    async with await AsyncConnection.open(LISTEN, harness.mesh.listen_port, timeout=5) as conn:
        assert (await conn.request("GET", "/")).header("x-config") == "a"
        pending = asyncio.create_task(conn.request("GET", "/slow", timeout=10))
        await upstream.wait_for_request("/slow")
        harness.push(route="b")
        await wait_until(lambda: _header(harness, "b"), "new connections get the new chain", 15)
        upstream.release("slow")
        resp = await pending
    assert resp.status == 200 and resp.body == b"slow"
    assert resp.header("x-config") == "a"
    assert resp.will_close


async def _is(value: Any, wanted: object) -> bool:
    return bool(await value == wanted)


async def _header(h: Harness, tag: str) -> bool:
    return (await h.get()).header("x-config") == tag


def _client_tls(h: Harness) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=h.pki.root_pem)
    context.check_hostname = False
    return context


async def test_permissive_to_strict_drains_only_the_plaintext_chain_and_refuses_no_one(
    harness: Harness,
) -> None:
    """Istio's PERMISSIVE to STRICT on an inbound listener with the TLS inspector: the
    socket is never closed (TLS clients connecting throughout are all served), the TLS
    connection open across the update keeps going (its chain did not change), the plaintext
    request in flight on the removed chain finishes with ``connection: close``, and a new
    plaintext connection is refused."""
    harness.agent.released.set()
    await _ready(harness, mesh_tls="permissive")
    upstream = harness.upstreams["a"]  # type: ignore[attr-defined]
    upstream.route("/slow", Held("slow", Fixed(200, b"slow")))
    port, tls = harness.mesh.listen_port, _client_tls(harness)
    assert await _body(harness) == b"a"
    failures: list[str] = []
    served = 0
    stop = asyncio.Event()

    async def new_tls_connections() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                async with await AsyncConnection.open(LISTEN, port, tls=tls) as conn:
                    resp = await conn.request("GET", "/", timeout=5)
                served += 1
                if resp.status != 200:
                    failures.append(f"HTTP {resp.status}")
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                failures.append(repr(exc))
            await asyncio.sleep(0.005)

    async def plaintext_refused() -> bool:
        try:
            await harness.get()
        except Exception:  # refused, reset or closed: whichever way, no answer
            return True
        return False

    async with (
        await AsyncConnection.open(LISTEN, port, tls=tls) as mtls,
        await AsyncConnection.open(LISTEN, port) as plain,
    ):
        assert (await mtls.request("GET", "/")).status == 200
        in_flight = asyncio.create_task(plain.request("GET", "/slow", timeout=10))
        await upstream.wait_for_request("/slow")
        clients = asyncio.create_task(new_tls_connections())
        await wait_until(lambda: served >= 5, "TLS clients served before the update", 15)
        harness.push(mesh_tls="strict")
        await harness.acked(LISTENER_TYPE)
        await wait_until(plaintext_refused, "a new plaintext connection refused", 15)
        before = served
        await wait_until(lambda: served >= before + 5, "TLS clients served after the update", 15)
        stop.set()
        await clients
        upstream.release("slow")
        resp = await in_flight
        assert resp.status == 200 and resp.body == b"slow" and resp.will_close
        again = await mtls.request("GET", "/")
        assert again.status == 200 and not again.will_close
    assert not failures, failures[:10]
