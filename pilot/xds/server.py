"""The ADS server: ``StreamAggregatedResources`` over grpc.aio, state of the world.

The generators are pure (``generate(ctx, proxy, type_url)``); this module only keeps streams,
decides when to answer (:mod:`pilot.xds.watch`), hashes what a proxy would get so that only
changed types are sent, and fans debounced pushes out to every stream.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

from pilot.xds.cache import Classify, GenerationCache
from pilot.xds.connection import Connection, PushEvent
from pilot.xds.debounce import Batch, DebounceConfig, Debouncer
from pilot.xds.delta_stream import DeltaStream
from pilot.xds.metrics import XdsMetrics, short_type
from pilot.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    response,
)
from pilot.xds.watch import Verdict, Watch, classify, requested_names
from pymesh.errors import ConfigError, ControlPlaneError

__all__ = ["ContextLike", "DiscoveryServer", "Generate", "ParseNode", "Rebuild"]

log = structlog.get_logger(__name__)


class ContextLike(Protocol):
    """What the server needs of a PushContext: a version to put in responses."""

    @property
    def version(self) -> str: ...


Generate = Callable[[Any, Any, str], Sequence[Message]]
"""``generate(ctx, proxy, type_url) -> resources`` (``pilot.generate.generate``)."""
ParseNode = Callable[[base_pb2.Node], Any]
"""``ProxyNode.from_node``: raises ``ValidationError`` for a node pilot cannot serve."""
Rebuild = Callable[[Sequence[Any]], Any]
"""A new PushContext for the given connected proxies (called when proxies come and go)."""
Incremental = Callable[[Any, Any, Any], frozenset[str] | None]
"""``affected_types(old_ctx, new_ctx, proxy)``: the types that may differ (None: all)."""
Registers = Callable[[Any], bool]
"""Whether a proxy's workload is an endpoint of some service (it changes the registry)."""

#: The longest a registering proxy waits for its first answer (the debounce fires within its
#: max delay; this only matters if a rebuild fails).
_REGISTRATION_WAIT = 3.0


class DiscoveryServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        ctx: Any,
        *,
        generate: Generate,
        parse_node: ParseNode,
        classify: Classify | None = None,
        incremental: Incremental | None = None,
        rebuild: Rebuild | None = None,
        registers: Registers | None = None,
        clock: Callable[[], float],
        debounce: DebounceConfig | None = None,
        metrics: XdsMetrics | None = None,
        identifier: str = "pymesh-pilot",
    ) -> None:
        self.ctx = ctx
        self.generate = generate
        #: proxies of one class (``classify``) share one generation per push
        self.cache = GenerationCache(generate, classify)
        self.incremental = incremental
        self.parse_node = parse_node
        self.rebuild = rebuild
        self.registers = registers
        self.clock = clock
        self.metrics = metrics or XdsMetrics()
        self.identifier = identifier
        self.connections: dict[str, Connection] = {}
        self._debouncer = Debouncer(self._fire, debounce or DebounceConfig(), clock=clock)
        self._proxies_dirty = False
        self._ids = itertools.count(1)
        self._nonce_prefix = secrets.token_hex(3)
        self._nonces = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, address: str) -> int:
        """Serve on ``host:port`` (port 0 picks one); returns the bound port."""
        self._debouncer.start()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ControlPlaneError(f"xDS: cannot listen on {address}: {exc}") from None
        if port == 0:
            raise ControlPlaneError(f"xDS: cannot listen on {address}")
        await server.start()
        self._server = server
        self.port = int(port)
        log.info("xds listening", address=address, port=port)
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        for conn in list(self.connections.values()):
            conn.close()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self._debouncer.close()

    # -- state from pilot --------------------------------------------------------------------
    def update(self, ctx: Any, reason: str = "config") -> None:
        """Install a new PushContext and schedule a (debounced) push to every proxy."""
        self.ctx = ctx
        self.metrics.triggers[reason] += 1
        self._debouncer.trigger(reason)

    def proxies(self) -> tuple[Any, ...]:
        """The parsed nodes of the connected proxies, one per proxy id (newest stream wins)."""
        latest: dict[str, Connection] = {}
        for conn in self.connections.values():
            if conn.proxy is not None:
                latest[conn.proxy_id] = conn
        return tuple(c.proxy for c in latest.values())

    def nodes(self) -> dict[str, base_pb2.Node]:
        """The Envoy nodes of the connected proxies, by proxy id (newest stream wins)."""
        latest = sorted(
            (c for c in self.connections.values() if c.node is not None),
            key=lambda c: c.connected_at,
        )
        return {c.proxy_id: c.node for c in latest}

    def proxies_changed(self, reason: str) -> None:
        """The set of proxies the registry is built from changed without a stream coming or
        going (a remembered proxy expired): rebuild and push, debounced."""
        self._proxies_changed(reason)

    def connection_for(self, proxy_id: str) -> Connection | None:
        found = [c for c in self.connections.values() if c.proxy_id == proxy_id]
        return max(found, key=lambda c: c.connected_at) if found else None

    @property
    def push_pending(self) -> bool:
        return self._debouncer.pending

    async def _fire(self, batch: Batch) -> None:
        if self._proxies_dirty and self.rebuild is not None:
            self._proxies_dirty = False
            self.ctx = self.rebuild(self.proxies())
        for conn in list(self.connections.values()):
            if conn.registered is not None:
                conn.registered.set()  # its first requests are answered from this context
            conn.schedule_push(batch.first)

    def _proxies_changed(self, reason: str) -> None:
        if self.rebuild is None:
            return
        self._proxies_dirty = True
        self.metrics.triggers[reason] += 1
        self._debouncer.trigger(reason)

    # -- the stream --------------------------------------------------------------------------
    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        conn = Connection(str(next(self._ids)), context.peer(), self.clock())
        reader = asyncio.get_running_loop().create_task(self._read(request_iterator, conn))
        try:
            while (item := await conn.next()) is not None:
                if isinstance(item, PushEvent):
                    await self._push(conn, item, context)
                else:
                    await self._request(conn, item, context)
        finally:
            reader.cancel()
            self._disconnect(conn)

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        conn = Connection(str(next(self._ids)), context.peer(), self.clock())
        stream = DeltaStream(self, conn, context)
        reader = asyncio.get_running_loop().create_task(self._read(request_iterator, conn))
        try:
            while (item := await conn.next()) is not None:
                if isinstance(item, PushEvent):
                    await stream.push(item)
                else:
                    await stream.request(item)
        finally:
            reader.cancel()
            self._disconnect(conn)

    async def _read(self, requests: AsyncIterator[Any], conn: Connection) -> None:
        try:
            async for request in requests:
                conn.deliver(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-message
            log.debug("xds stream read ended", conn=conn.id, error=str(exc))
        finally:
            conn.close()

    def _connect(self, conn: Connection, node: base_pb2.Node) -> None:
        conn.proxy = self.parse_node(node)
        conn.node = node
        if self.rebuild is not None and self.registers is not None and self.registers(conn.proxy):
            # Auto-registration: the workload behind this proxy serves a service, and its own
            # config (inbound listeners) depends on the registry knowing it. Its first answer
            # waits for the next (debounced) rebuild instead of being generated without it and
            # corrected a moment later; a burst of connecting proxies still costs one rebuild.
            conn.registered = asyncio.Event()
        self.connections[conn.id] = conn
        self.metrics.connected = len(self.connections)
        log.info("proxy connected", node_id=node.id, conn=conn.id, peer=conn.peer)
        self._proxies_changed("proxy")

    def _disconnect(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        self.metrics.connected = len(self.connections)
        log.info("proxy disconnected", node_id=conn.proxy_id, conn=conn.id)
        self._proxies_changed("proxy")

    async def admit(self, conn: Connection, request: Any, context: Any) -> None:
        """A stream's first request: its node is parsed and the proxy counted as connected
        (the stream is aborted for a node pilot cannot serve); a proxy that registers waits
        for the registry to include it."""
        if not request.HasField("node") or not request.node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing node id")
        try:
            self._connect(conn, request.node)
        except (ConfigError, ValueError) as exc:
            log.warning("proxy refused", node_id=request.node.id, error=str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid node: {exc}")
        if conn.registered is not None:
            try:
                await asyncio.wait_for(conn.registered.wait(), _REGISTRATION_WAIT)
            except TimeoutError:
                log.warning("registration not pushed in time", node_id=conn.proxy_id)

    def next_nonce(self) -> str:
        return f"{self._nonce_prefix}-{next(self._nonces)}"

    async def _request(
        self,
        conn: Connection,
        request: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext,
    ) -> None:
        if conn.node is None:
            await self.admit(conn, request, context)
        type_url = request.type_url
        names, wildcard = requested_names(type_url, list(request.resource_names))
        watch = conn.watches.get(type_url)
        verdict = classify(
            watch,
            nonce=request.response_nonce,
            has_error=request.HasField("error_detail"),
            names=names,
            wildcard=wildcard,
        )
        if verdict is Verdict.STALE:
            return
        if watch is None:
            watch = conn.watches[type_url] = Watch(type_url)
        if verdict is Verdict.NACK:
            watch.nacked(request.error_detail.message)
            self.metrics.rejected(type_url)
            log.warning(
                "xds rejected",
                node_id=conn.proxy_id,
                type=short_type(type_url),
                version=request.version_info,
                error=request.error_detail.message,
            )
            return
        if verdict in (Verdict.ACK, Verdict.RESUBSCRIBE):
            watch.acked(request.version_info, request.response_nonce)
            if verdict is Verdict.ACK:
                return
        watch.subscribe(names, wildcard)
        await self._send(conn, watch, context, force=True)

    async def _push(
        self, conn: Connection, push: PushEvent, context: grpc.aio.ServicerContext
    ) -> None:
        sent_any = clusters_sent = False
        for watch in conn.ordered_watches():
            # A changed cluster warms until it gets its endpoints again, even unchanged ones.
            force = watch.type_url == ENDPOINT_TYPE and clusters_sent
            sent = await self._send(conn, watch, context, force=force, started=push.started)
            clusters_sent = clusters_sent or (sent and watch.type_url == CLUSTER_TYPE)
            sent_any = sent_any or sent
        if sent_any:
            self.metrics.convergence.observe(max(0.0, self.clock() - push.started))

    def unchanged(self, watch: Watch, ctx: Any, proxy: Any) -> bool:
        """Whether ``watch``'s type cannot differ for ``proxy`` between the context it was
        last generated from and ``ctx`` (then ``ctx`` counts as generated)."""
        version = str(ctx.version)
        if watch.generated_version == version:
            # Generators are pure functions of (context, node) and the version is a hash of
            # the context's content: the same version cannot give other resources. This makes
            # pushes after a proxy connects (which rarely changes the registry) nearly free.
            return True
        last = watch.generated_ctx
        if self.incremental is None or last is None or str(last.version) != watch.generated_version:
            return False
        types = self.incremental(last, ctx, proxy)
        if types is None or watch.type_url in types:
            return False
        # Only other types changed (an endpoint-only change: EDS alone goes out).
        watch.generated_version, watch.generated_ctx = version, ctx
        return True

    async def _send(
        self,
        conn: Connection,
        watch: Watch,
        context: grpc.aio.ServicerContext,
        *,
        force: bool,
        started: float | None = None,
    ) -> bool:
        ctx = self.ctx
        type_url = watch.type_url
        version = str(ctx.version)
        if not force and self.unchanged(watch, ctx, conn.proxy):
            return False
        try:
            names = None if watch.wildcard else watch.names
            encoded = self.cache.encoded(ctx, conn.proxy, type_url, names)
        except Exception:
            self.metrics.pushes[f"{short_type(type_url)}_builderr"] += 1
            log.exception("xds generation failed", node_id=conn.proxy_id, type=type_url)
            return False
        watch.generated_version, watch.generated_ctx = version, ctx
        if not force and encoded.digest == watch.sent_hash:
            return False
        nonce = self.next_nonce()
        reply = response(
            type_url, encoded, version=version, nonce=nonce, identifier=self.identifier
        )
        watch.sent(
            version=version,
            nonce=nonce,
            digest=encoded.digest,
            resources=encoded.messages,
            at=self.clock(),
            push_started=started,
        )
        conn.pushed_version = version
        await context.write(reply)
        self.metrics.pushed(type_url)
        log.debug(
            "xds sent",
            node_id=conn.proxy_id,
            type=short_type(type_url),
            version=version,
            resources=len(encoded.resources),
        )
        return True
