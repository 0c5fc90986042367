"""One ``DeltaAggregatedResources`` stream: requests and pushes in, delta responses out.

The decisions are :mod:`pilot.xds.delta`'s; this keeps the stream's per-type state, writes
the responses, and keeps a :class:`~pilot.xds.watch.Watch` per type up to date so that
``proxy-status`` and ``proxy-config`` read delta streams as they read state-of-the-world ones
(sent and ACKed nonces, the NACK error, the resources the proxy holds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog
from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.cache import GenerationCache
from pilot.xds.connection import Connection, PushEvent
from pilot.xds.delta import DeltaWatch, plan, record
from pilot.xds.metrics import XdsMetrics, short_type
from pilot.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, PUSH_ORDER
from pilot.xds.watch import Watch

__all__ = ["DeltaHost", "DeltaStream"]

log = structlog.get_logger(__name__)


class DeltaHost(Protocol):
    """What a delta stream needs of the ADS server."""

    ctx: Any
    cache: GenerationCache
    metrics: XdsMetrics
    identifier: str
    clock: Callable[[], float]

    def next_nonce(self) -> str: ...

    def unchanged(self, watch: Watch, ctx: Any, proxy: Any) -> bool: ...

    async def admit(self, conn: Connection, request: Any, context: Any) -> None: ...


class DeltaStream:
    def __init__(self, host: DeltaHost, conn: Connection, context: Any) -> None:
        self.host = host
        self.conn = conn
        self.context = context
        self.watches: dict[str, DeltaWatch] = {}

    async def request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        conn = self.conn
        if conn.node is None:
            await self.host.admit(conn, request, self.context)
        type_url = request.type_url
        delta = self.watches.get(type_url)
        first = delta is None
        if delta is None:
            delta = self.watches[type_url] = DeltaWatch(type_url)
        watch = conn.watches.setdefault(type_url, Watch(type_url))
        nonce = request.response_nonce
        if nonce and nonce == watch.sent_nonce:
            if request.HasField("error_detail"):
                watch.nacked(request.error_detail.message)
                self.host.metrics.rejected(type_url)
                log.warning(
                    "xds rejected",
                    node_id=conn.proxy_id,
                    type=short_type(type_url),
                    delta=True,
                    error=request.error_detail.message,
                )
            else:
                watch.acked(watch.sent_version, nonce)
        answer = delta.update(
            request.resource_names_subscribe,
            request.resource_names_unsubscribe,
            first=first,
            initial_versions=dict(request.initial_resource_versions) if first else None,
        )
        watch.names, watch.wildcard = frozenset(delta.names), delta.wildcard
        if answer:
            await self._send(delta, watch, always=True)

    async def push(self, push: PushEvent) -> None:
        rank = {t: i for i, t in enumerate(PUSH_ORDER)}
        changed_clusters: frozenset[str] = frozenset()
        sent_any = False
        for type_url in sorted(self.watches, key=lambda t: (rank.get(t, 99), t)):
            # A changed cluster warms until it gets its endpoints again, even unchanged ones.
            force = changed_clusters if type_url == ENDPOINT_TYPE else frozenset()
            sent = await self._send(
                self.watches[type_url],
                self.conn.watches[type_url],
                always=False,
                force=force,
                started=push.started,
            )
            if type_url == CLUSTER_TYPE:
                changed_clusters = sent
            sent_any = sent_any or bool(sent)
        if sent_any:
            self.host.metrics.convergence.observe(max(0.0, self.host.clock() - push.started))

    async def _send(
        self,
        delta: DeltaWatch,
        watch: Watch,
        *,
        always: bool,
        force: frozenset[str] = frozenset(),
        started: float | None = None,
    ) -> frozenset[str]:
        """Send what changed for one type; the names of the resources sent (updated)."""
        host, ctx, type_url = self.host, self.host.ctx, delta.type_url
        version = str(ctx.version)
        if not always and not force and self.host.unchanged(watch, ctx, self.conn.proxy):
            return frozenset()
        names = None if delta.wildcard else frozenset(delta.names)
        try:
            encoded = host.cache.encoded(ctx, self.conn.proxy, type_url, names)
        except Exception:
            host.metrics.pushes[f"{short_type(type_url)}_builderr"] += 1
            log.exception("xds generation failed", node_id=self.conn.proxy_id, type=type_url)
            return frozenset()
        watch.generated_version, watch.generated_ctx = version, ctx
        todo = plan(delta, encoded, force)
        if not todo and not always:
            return frozenset()
        nonce = host.next_nonce()
        reply = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=type_url, nonce=nonce
        )
        for index in todo.updated:
            reply.resources.add(
                name=encoded.names[index],
                version=encoded.versions[index],
                resource=encoded.resources[index],
            )
        reply.removed_resources.extend(todo.removed)
        reply.control_plane.identifier = host.identifier
        record(delta, encoded, todo)
        held = tuple(
            m for n, m in zip(encoded.names, encoded.messages, strict=True) if n in delta.held
        )
        watch.sent(
            version=version,
            nonce=nonce,
            digest=encoded.digest,
            resources=held,
            at=host.clock(),
            push_started=started,
        )
        self.conn.pushed_version = version
        await self.context.write(reply)
        host.metrics.pushed(type_url)
        log.debug(
            "xds delta sent",
            node_id=self.conn.proxy_id,
            type=short_type(type_url),
            version=version,
            updated=len(todo.updated),
            removed=len(todo.removed),
        )
        return frozenset(encoded.names[i] for i in todo.updated)
