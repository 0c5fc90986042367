"""The proxy's ADS client: state-of-the-world xDS v3 over gRPC, turned into whole snapshots.

It connects to the static cluster named in ``dynamic_resources.ads_config`` and subscribes the
way Envoy does on start: clusters, then the endpoints of the EDS clusters, then listeners,
then the route tables their connection managers name (and SDS secrets, when referenced).
Each response is translated with the same translators as the bootstrap; the accepted state
of every type, plus the bootstrap's static resources, becomes ONE :class:`ProxySnapshot`
that :meth:`ProxyServer.apply` makes live. A response that does not translate or apply is
NACKed with the error (prefixed with the resource name) and the last good snapshot keeps
running. While pilot is unreachable the proxy keeps serving and reconnects with jittered
exponential backoff.

Listeners and clusters are state of the world (what is missing is removed); for endpoints,
routes and secrets a response only replaces the names it carries, and names that are no
longer subscribed are dropped, as the xDS protocol specifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import grpc
import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.rpc import status_pb2

from proxy.config.model import Bootstrap, Cluster, HttpConnectionManager, Listener
from proxy.config.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    ProxySnapshot,
)
from proxy.config.translate import (
    FilterRegistry,
    default_registry,
    translate_cluster,
    translate_cluster_load_assignment,
    translate_listener,
    translate_route_configuration,
    translate_secret,
)
from proxy.sds_client import AgentSds, agent_secret_names
from pymesh import __version__
from pymesh.backoff import Backoff
from pymesh.errors import ConfigError, ControlPlaneError

__all__ = ["Backoff", "XdsClient", "ads_target"]

log = structlog.get_logger(__name__)

#: state-of-the-world types: a response holds every resource, absent ones are removed
_WILDCARD = (CLUSTER_TYPE, LISTENER_TYPE)
_INVALID_ARGUMENT = 3


def _name(message: Any) -> str:
    return str(
        message.cluster_name
        if isinstance(message, endpoint_pb2.ClusterLoadAssignment)
        else message.name
    )


_PROTOS: Mapping[str, Any] = {
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    SECRET_TYPE: secret_pb2.Secret,
}


def ads_target(bootstrap: Bootstrap) -> str:
    """``host:port`` of the first endpoint of the ADS cluster (a static cluster)."""
    dynamic = bootstrap.dynamic_resources
    if dynamic is None or dynamic.ads_config is None:
        raise ConfigError("the bootstrap has no dynamic_resources.ads_config")
    name = dynamic.ads_config.cluster_name
    cluster = next((c for c in bootstrap.static_resources.clusters if c.name == name), None)
    assignment = cluster.load_assignment if cluster is not None else None
    if assignment is None or not assignment.endpoints:
        raise ConfigError(f"ADS cluster '{name}' has no endpoints")
    endpoint = assignment.endpoints[0]
    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    return f"{host}:{endpoint.port}"


def _node(bootstrap: Bootstrap) -> base_pb2.Node:
    node = bootstrap.node
    proto = base_pb2.Node(
        id=node.id, cluster=node.cluster, user_agent_name="pymesh", user_agent_version=__version__
    )
    if node.metadata:
        json_format.ParseDict(dict(node.metadata), proto.metadata)
    loc = node.locality
    proto.locality.region, proto.locality.zone = loc.region, loc.zone
    proto.locality.sub_zone = loc.sub_zone
    return proto


def _dependencies(
    listeners: Iterable[Listener], clusters: Iterable[Cluster]
) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The EDS, RDS and SDS (over ADS) names the given listeners and clusters need."""
    eds = {c.service_name for c in clusters if c.type.value == "EDS"}
    rds: set[str] = set()
    sds: set[str] = set()

    def secrets(tls: Any) -> None:
        if tls is None:
            return
        common = tls.common
        for ref in (*common.tls_certificate_sds, common.validation_context_sds):
            if ref is not None and ref.config_source is not None and ref.config_source.ads:
                sds.add(ref.name)

    for c in clusters:
        secrets(c.transport_socket)
        for m in c.transport_socket_matches:
            secrets(m.transport_socket)
    for lst in listeners:
        chains = [*lst.filter_chains, lst.default_filter_chain]
        for chain in chains:
            if chain is None:
                continue
            secrets(chain.transport_socket)
            for nf in chain.filters:
                if isinstance(nf.config, HttpConnectionManager) and nf.config.rds is not None:
                    rds.add(nf.config.rds.route_config_name)
    return frozenset(eds), frozenset(rds), frozenset(sds)


class XdsClient:
    def __init__(
        self,
        server: Any,
        *,
        rng: random.Random | None = None,
        registry: FilterRegistry | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.server = server
        self.bootstrap: Bootstrap = server.bootstrap
        self.target = ads_target(self.bootstrap)
        self.node = _node(self.bootstrap)
        self.registry = registry or server.registry or default_registry()
        self.backoff = backoff or Backoff(rng or random.Random())
        self.static = ProxySnapshot.from_bootstrap(self.bootstrap)
        dynamic = self.bootstrap.dynamic_resources
        assert dynamic is not None
        self.types = tuple(
            t
            for t, source in (
                (CLUSTER_TYPE, dynamic.cds_config),
                (LISTENER_TYPE, dynamic.lds_config),
            )
            if source is not None
        )
        timeouts = [s.initial_fetch_timeout for s in (dynamic.cds_config, dynamic.lds_config) if s]
        self.initial_fetch_timeout = 0.0 if not timeouts or 0 in timeouts else max(timeouts)
        # accepted state, by type and name; survives reconnects
        self.accepted: dict[str, dict[str, Any]] = {t: {} for t in _PROTOS}
        self.versions: dict[str, str] = {}
        self.names: dict[str, frozenset[str]] = {}
        self.received: set[str] = set()
        self.applied = False
        self.connected = asyncio.Event()
        self.updates = 0
        self.rejects = 0
        self._nonces: dict[str, str] = {}
        self._outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False  # the stream broke and no response came since
        # SDS from the identity agent (merged into every snapshot's secrets).
        self.agent = AgentSds(self.bootstrap, self.node, self._agent_changed, self.server.stats)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="xds-client")
        if self.initial_fetch_timeout > 0:
            self._timer = loop.call_later(self.initial_fetch_timeout, self._initial_timeout)

    async def stop(self) -> None:
        await self.agent.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _initial_timeout(self) -> None:
        if not self.server.ready:
            log.warning("initial xDS fetch timed out; serving what is there", target=self.target)
            self.server.ready = True

    async def _run(self) -> None:
        while True:
            got_response = False
            try:
                async for _ in self._stream():
                    if not got_response:
                        got_response = True
                        self.backoff.reset()
                        if self._lost:
                            self._lost = False
                            log.info("xds stream re-established", target=self.target)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except ControlPlaneError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug: keep the traceback
                log.exception("xds stream failed", target=self.target)
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            delay = self.backoff.next()
            # A pilot restart is routine: one warning when the stream is lost, no traceback,
            # and the retries until pilot is back at debug level.
            report = log.warning if got_response or not self._lost else log.debug
            self._lost = True
            report(
                "xds stream lost; reconnecting",
                target=self.target,
                error=reason,
                in_seconds=round(delay, 2),
            )
            await asyncio.sleep(delay)

    # -- one stream --------------------------------------------------------------------------
    async def _stream(self) -> AsyncIterator[None]:
        self._nonces = {}
        self._outbox = asyncio.Queue()
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources(self._requests())
            self._subscribe_initial()
            async for reply in call:
                self.connected.set()
                await self._on_response(reply)
                yield None
            raise ControlPlaneError("pilot closed the xDS stream")

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    def _send(self, type_url: str, error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self.versions.get(type_url, ""),
            response_nonce=self._nonces.get(type_url, ""),
            resource_names=sorted(self.names.get(type_url, ())),
        )
        request.node.CopyFrom(self.node)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
        self._outbox.put_nowait(request)

    def _subscribe_initial(self) -> None:
        """On a (re)connect: what was subscribed before, else the first type (Envoy: CDS)."""
        order = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
        subscribed = [t for t in order if t in self.names]
        if not subscribed and self.types:
            first = self.types[0]
            self.names[first] = frozenset()
            subscribed = [first]
        for type_url in subscribed:
            self._send(type_url)

    def _resubscribe(self, type_url: str, names: frozenset[str]) -> None:
        if type_url not in self.names and not names:
            return  # never subscribed and nothing to ask for
        if self.names.get(type_url) != names:
            self.names[type_url] = names
            self._send(type_url)

    async def _on_response(self, reply: discovery_pb2.DiscoveryResponse) -> None:
        type_url = reply.type_url
        self._nonces[type_url] = reply.nonce
        proto = _PROTOS.get(type_url)
        if proto is None:
            self._nack(type_url, reply, f"unsupported resource type {type_url}")
            return
        try:
            state = self._translate(type_url, proto, reply)
        except ConfigError as exc:
            self._nack(type_url, reply, str(exc))
            return
        previous, previous_version = self.accepted[type_url], self.versions.get(type_url)
        self.accepted[type_url] = state
        self.versions[type_url] = reply.version_info
        self.received.add(type_url)
        bind_errors: list[str] = []
        if self._complete() or self.applied:
            try:
                bind_errors = await self._apply()
            except ConfigError as exc:
                self.accepted[type_url] = previous
                if previous_version is None:
                    self.versions.pop(type_url, None)
                else:
                    self.versions[type_url] = previous_version
                self._nack(type_url, reply, str(exc))
                return
        if bind_errors and type_url == LISTENER_TYPE:
            # As Envoy: the listeners that bound serve, the update is NACKed with the reason.
            self._nack(type_url, reply, "; ".join(bind_errors))
        else:
            self._send(type_url)  # ACK
        self._follow_up(type_url)

    def _translate(self, type_url: str, proto: Any, reply: Any) -> dict[str, Any]:
        wildcard = type_url in _WILDCARD
        state: dict[str, Any] = {} if wildcard else dict(self.accepted[type_url])
        seen: set[str] = set()
        for packed in reply.resources:
            if packed.type_url != type_url:
                raise ConfigError(f"a {type_url} response carries a {packed.type_url}")
            message = proto.FromString(packed.value)
            name = _name(message)
            if name in seen:
                raise ConfigError(f"{name}: duplicate resource name in one response")
            seen.add(name)
            try:
                state[name] = self._translate_one(type_url, message)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if not wildcard:
            wanted = self.names.get(type_url, frozenset())
            state = {n: v for n, v in state.items() if n in wanted}
        return state

    def _translate_one(self, type_url: str, message: Any) -> Any:
        if type_url == LISTENER_TYPE:
            return translate_listener(message, self.registry)
        if type_url == ROUTE_TYPE:
            return translate_route_configuration(message, self.registry)
        if type_url == CLUSTER_TYPE:
            # HTTP/2 clusters serve the proxy's gRPC side calls (access logs, rate limits); a
            # route to one is refused when the snapshot is checked (ProxyServer._validate).
            return translate_cluster(message, allow_http2=True)
        if type_url == ENDPOINT_TYPE:
            return translate_cluster_load_assignment(message)
        return translate_secret(message)

    def _nack(self, type_url: str, reply: Any, message: str) -> None:
        self.rejects += 1
        log.warning(
            "xds rejected",
            type=type_url.rpartition(".")[2],
            version=reply.version_info,
            error=message,
        )
        self._send(type_url, error=message)

    def _follow_up(self, type_url: str) -> None:
        """After clusters: their endpoints; after listeners: their routes (Envoy's order);
        the first listener request goes out once clusters (and endpoints) are in."""
        listeners = [*self.accepted[LISTENER_TYPE].values(), *self.static.listeners.values()]
        clusters = [*self.accepted[CLUSTER_TYPE].values(), *self.static.clusters.values()]
        eds, rds, sds = _dependencies(listeners, clusters)
        if type_url == CLUSTER_TYPE:
            self._resubscribe(ENDPOINT_TYPE, eds)
            self._resubscribe(SECRET_TYPE, sds)
        if type_url == LISTENER_TYPE:
            self._resubscribe(ROUTE_TYPE, rds)
            self._resubscribe(SECRET_TYPE, sds)
        if type_url in (CLUSTER_TYPE, LISTENER_TYPE):
            self.agent.subscribe(agent_secret_names(listeners, clusters))
        clusters_ready = CLUSTER_TYPE not in self.types or (
            CLUSTER_TYPE in self.received and (not eds or ENDPOINT_TYPE in self.received)
        )
        if LISTENER_TYPE in self.types and LISTENER_TYPE not in self.names and clusters_ready:
            self.names[LISTENER_TYPE] = frozenset()
            self._send(LISTENER_TYPE)

    async def _agent_changed(self) -> None:
        """The agent delivered secrets: live at once, or with the first complete snapshot."""
        if self.applied or self._complete():
            await self._apply()

    # -- the snapshot ------------------------------------------------------------------------
    def _complete(self) -> bool:
        """Every subscribed type answered and every dependency present (initial fetch)."""
        if any(t not in self.received for t in self.types):
            return False
        for type_url in (ENDPOINT_TYPE, ROUTE_TYPE, SECRET_TYPE):
            if not self.names.get(type_url, frozenset()) <= set(self.accepted[type_url]):
                return False
        listeners = [*self.accepted[LISTENER_TYPE].values(), *self.static.listeners.values()]
        clusters = [*self.accepted[CLUSTER_TYPE].values(), *self.static.clusters.values()]
        eds, rds, sds = _dependencies(listeners, clusters)
        # As Envoy with Istio's initial_fetch_timeout 0: what uses the agent's certificates
        # waits for them.
        agent = agent_secret_names(listeners, clusters)
        return (
            eds <= set(self.accepted[ENDPOINT_TYPE]) | set(self.static.load_assignments)
            and rds <= set(self.accepted[ROUTE_TYPE])
            and sds <= set(self.accepted[SECRET_TYPE]) | set(self.static.secrets)
            and self.agent.has(agent)
        )

    def snapshot(self) -> ProxySnapshot:
        """Static resources (which pushed ones cannot replace, as in Envoy) plus the accepted
        dynamic ones."""
        s, a = self.static, self.accepted

        def merged(dynamic: Mapping[str, Any], static: Mapping[str, Any]) -> Mapping[str, Any]:
            return MappingProxyType({**dynamic, **static})

        return ProxySnapshot(
            versions=MappingProxyType(dict(self.versions)),
            listeners=merged(a[LISTENER_TYPE], s.listeners),
            route_configurations=merged(a[ROUTE_TYPE], s.route_configurations),
            clusters=merged(a[CLUSTER_TYPE], s.clusters),
            load_assignments=merged(a[ENDPOINT_TYPE], s.load_assignments),
            secrets=merged(
                {**self.agent.secrets(), **a[SECRET_TYPE]},
                s.secrets,
            ),
        )

    async def _apply(self) -> list[str]:
        """Apply the snapshot; returns the listeners that could not bind."""
        errors: list[str] = await self.server.apply(self.snapshot())
        self.updates += 1
        if errors:
            log.error("xds config applied with errors", errors=errors)
        if not self.applied:
            self.applied = True
            self.server.ready = True
            log.info("xds initial config applied", versions=dict(self.versions))
        return errors
