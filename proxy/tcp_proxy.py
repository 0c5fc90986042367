"""``envoy.filters.network.tcp_proxy``: bytes both ways between a client and one upstream host.

Used for ports that are not HTTP (Istio's TCP services, TLS passthrough, the passthrough
cluster). Each side pauses reading while the other side's write buffer is full.
"""

from __future__ import annotations

import asyncio
import random
from typing import cast

import structlog

from proxy.config.model_http import TcpProxy
from proxy.upstream.manager import ClusterManager

__all__ = ["TcpProxyConnection"]

log = structlog.get_logger(__name__)


class _Side(asyncio.Protocol):
    """One end of the pipe; ``peer`` is the other end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        # Half-close passes through, so protocols that finish with a FIN keep working.
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class TcpProxyConnection(_Side):
    """The downstream side; it opens the upstream side when the client connects."""

    def __init__(
        self,
        config: TcpProxy,
        clusters: ClusterManager,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        destination: tuple[str, int] | None,
    ) -> None:
        super().__init__()
        self._config = config
        self._clusters = clusters
        self._loop = loop
        self._rng = rng
        self._destination = destination
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()  # until the upstream side exists
        self._task = self._loop.create_task(self._connect())

    def _cluster_name(self) -> str | None:
        config = self._config
        if config.cluster is not None:
            return config.cluster
        total = sum(c.weight for c in config.weighted_clusters)
        if total <= 0:
            return None
        pick = self._rng.random() * total
        for c in config.weighted_clusters:
            pick -= c.weight
            if pick < 0:
                return c.name
        return config.weighted_clusters[-1].name

    async def _connect(self) -> None:
        name = self._cluster_name()
        cluster = self._clusters.get(name) if name else None
        host = None
        if cluster is not None:
            host = (
                cluster.host_for_destination(self._destination)
                if cluster.original_dst
                else cluster.choose_host(None)
            )
        if cluster is None or host is None:
            log.info("tcp proxy: no upstream", cluster=name)
            self._close()
            return
        upstream = _Side()
        cluster.stats.upstream_cx_total.value += 1
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: upstream, host.address, host.port),
                cluster.model.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            cluster.stats.upstream_cx_connect_fail.value += 1
            cluster.report_local_failure(host, "connect_failure")
            log.info("tcp proxy: connect failed", cluster=cluster.name, error=str(exc))
            self._close()
            return
        if self.closed:
            if upstream.transport is not None:
                upstream.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        assert upstream.transport is not None and self.transport is not None
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()
        self.transport.resume_reading()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._task is not None and not self._task.done():
            self._task.cancel()
