"""``envoy.filters.network.tcp_proxy``: bytes both ways between a client and one upstream host.

Used for ports that are not HTTP (Istio's TCP services, TLS passthrough, the passthrough
cluster). Each side pauses reading while the other side's write buffer is full. The cluster
is picked per connection (``weighted_clusters``: Istio's TCP traffic shifting); the connection
ends after ``idle_timeout`` without a byte either way, or after
``max_downstream_connection_duration``; ``max_connect_attempts`` tries other hosts. Stats are
Envoy's ``tcp.<stat_prefix>.*`` and the cluster's ``upstream_cx_*``.

A half-close passes through in both directions, and the connection closes once both have
ended. Over TLS (a TLS upstream, or a TLS listener chain) both sides run on
:class:`~proxy.transport.tls_transport.TlsTransport`, where the half-close is a
``close_notify``, so the same ``write_eof`` path serves plaintext and TLS.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import cast

import structlog

from proxy.als.facts import ConnectionLogger, TcpFacts
from proxy.config.model_http import TcpProxy
from proxy.http.stream_info import ConnectionInfo, connection_info
from proxy.network_filter import ReadFilterChain, ReadFilterFactory
from proxy.stats import ClusterStats, StatsStore
from proxy.transport.upstream_tls import TlsConnectError, UpstreamTlsSocket, open_connection
from proxy.upstream.manager import ClusterManager

__all__ = ["TcpProxyConnection", "TcpProxyStats"]

log = structlog.get_logger(__name__)


class TcpProxyStats:
    """``tcp.<stat_prefix>.*``, shared by every connection of one filter chain."""

    __slots__ = (
        "downstream_cx_no_route",
        "downstream_cx_rx_bytes_total",
        "downstream_cx_total",
        "downstream_cx_tx_bytes_total",
        "idle_timeout",
        "max_downstream_connection_duration",
        "upstream_cx_connect_attempts_exceeded",
    )

    def __init__(self, store: StatsStore, stat_prefix: str) -> None:
        p = f"tcp.{stat_prefix}."
        c = store.counter
        self.downstream_cx_total = c(p + "downstream_cx_total")
        self.downstream_cx_no_route = c(p + "downstream_cx_no_route")
        self.downstream_cx_rx_bytes_total = c(p + "downstream_cx_rx_bytes_total")
        self.downstream_cx_tx_bytes_total = c(p + "downstream_cx_tx_bytes_total")
        self.idle_timeout = c(p + "idle_timeout")
        self.max_downstream_connection_duration = c(p + "max_downstream_connection_duration")
        self.upstream_cx_connect_attempts_exceeded = c(p + "upstream_cx_connect_attempts_exceeded")


def _count(stats: ClusterStats, name: str) -> None:
    stats.counter(name).value += 1


class _Side(asyncio.Protocol):
    """One end of the pipe; ``peer`` is the other end, ``owner`` the connection it belongs to
    (which counts bytes and notes activity for the idle timer)."""

    def __init__(self, owner: TcpProxyConnection | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.owner = owner
        self.pending: list[bytes] = []
        self.closed = False
        self.read_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.on_bytes(self, len(data))
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        # Half-close passes through, so protocols that finish with a FIN keep working.
        self.read_eof = True
        peer = self.peer
        if peer is None and self.owner is not self:
            return True  # an upstream that spoke first: its FIN follows its bytes on pairing
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            if peer.read_eof:
                # Both directions have ended: the connection is over (Envoy closes it then;
                # half-closed sockets would otherwise wait for the idle timeout).
                peer.transport.close()
                return False
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
        stats: TcpProxyStats,
        *,
        read_filters: tuple[ReadFilterFactory, ...] = (),
        connection_id: int = 0,
        access_loggers: tuple[ConnectionLogger, ...] = (),
    ) -> None:
        super().__init__()
        self.owner = self
        self._loggers = access_loggers
        self._info: ConnectionInfo | None = None
        self._started = 0.0
        self._rx = self._tx = 0
        self._upstream: tuple[str | None, str | None, tuple[str, int] | None] = (None, None, None)
        self._cluster_metadata: Mapping[str, object] | None = None
        self._flag: str | None = None
        self._transport_failure = ""
        self._read_filters = read_filters
        self._connection_id = connection_id
        # The network filters before this one (RBAC), when the chain has any.
        self._filters: ReadFilterChain | None = None
        # The client's FIN, when it came before its bytes could go on (the upstream not yet
        # connected, a network filter still holding them).
        self._eof_pending = False
        self._config = config
        self._clusters = clusters
        self._loop = loop
        self._rng = rng
        self._destination = destination
        self._stats = stats
        self._task: asyncio.Task[None] | None = None
        self._cluster_stats: ClusterStats | None = None
        self._active = False
        self._last_activity = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._lifetime: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self._started = self._loop.time()
        if self._read_filters or self._loggers:
            info = self._info = connection_info(
                transport,
                scheme=b"tcp",
                original_destination=self._destination,
                connection_id=self._connection_id,
            )
        if self._read_filters:
            self._filters = ReadFilterChain(self._read_filters, info, self._deliver, self._close)
        self._stats.downstream_cx_total.value += 1
        self.transport.pause_reading()  # until the upstream side exists
        self._task = self._loop.create_task(self._connect())
        config = self._config
        if config.max_downstream_connection_duration:
            self._lifetime = self._loop.call_later(
                config.max_downstream_connection_duration, self._lifetime_over
            )

    def data_received(self, data: bytes) -> None:
        filters = self._filters
        if filters is None:
            super().data_received(data)
        else:
            filters.on_data(data)

    def _deliver(self, data: bytes) -> None:
        """What the network filters let through."""
        super().data_received(data)
        self._forward_eof()

    def eof_received(self) -> bool:
        filters = self._filters
        if self.peer is None or (filters is not None and filters.holding):
            # Half-closed before its bytes could go on: the FIN follows them.
            self._eof_pending = True
            return True
        return super().eof_received()

    def _forward_eof(self) -> None:
        filters = self._filters
        if self._eof_pending and self.peer is not None and not (filters and filters.holding):
            self._eof_pending = False
            if not super().eof_received() and self.transport is not None:
                self.transport.close()  # what asyncio does when eof_received says so

    def on_bytes(self, side: _Side, count: int) -> None:
        # One clock read per read: the idle timer is re-armed lazily when it fires.
        self._last_activity = self._loop.time()
        stats = self._cluster_stats
        if side is self:
            self._rx += count
            self._stats.downstream_cx_rx_bytes_total.value += count
            if stats is not None:
                stats.upstream_cx_tx_bytes_total.value += count
        else:
            self._tx += count
            self._stats.downstream_cx_tx_bytes_total.value += count
            if stats is not None:
                stats.upstream_cx_rx_bytes_total.value += count

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
        if cluster is None:
            self._flag = "NC"
            self._stats.downstream_cx_no_route.value += 1
            log.info("tcp proxy: no route", cluster=name)
            self._close()
            return
        upstream = _Side(self)
        stats = cluster.stats
        for _ in range(max(1, self._config.max_connect_attempts)):
            host = (
                cluster.host_for_destination(self._destination)
                if cluster.original_dst
                else cluster.choose_host(None)
            )
            self._upstream = (cluster.name, host.address_str if host else None, None)
            self._cluster_metadata = cluster.model.metadata
            if host is None:
                self._flag = "UH"
                cluster.stats.upstream_cx_none_healthy.value += 1
                log.info("tcp proxy: no healthy upstream", cluster=cluster.name)
                self._close()
                return
            stats.upstream_cx_total.value += 1
            socket = cluster.socket_for(host)
            try:
                await open_connection(
                    self._loop,
                    upstream,
                    host.address,
                    host.port,
                    socket,
                    timeout=cluster.model.connect_timeout,
                    source=cluster.model.source_address,
                    # A half-close crosses TLS as close_notify, as in Envoy's SSL socket.
                    half_close=True,
                    on_error=lambda _: _count(stats, "ssl.connection_error"),
                )
                if isinstance(socket, UpstreamTlsSocket):
                    _count(stats, "ssl.handshake")
                break
            except (OSError, TimeoutError) as exc:
                if isinstance(exc, TlsConnectError):
                    _count(stats, f"ssl.{exc.stat}")
                    self._transport_failure = exc.reason
                stats.upstream_cx_connect_fail.value += 1
                cluster.report_local_failure(host, "connect_failure")
                log.info("tcp proxy: connect failed", cluster=cluster.name, error=str(exc))
                if self.closed:
                    return
        else:
            self._flag = "UF"
            self._stats.upstream_cx_connect_attempts_exceeded.value += 1
            self._close()
            return
        if self.closed:
            if upstream.transport is not None:
                upstream.transport.close()
            return
        if self._loggers and upstream.transport is not None:
            local = upstream.transport.get_extra_info("sockname")
            if isinstance(local, tuple):
                self._upstream = (*self._upstream[:2], (str(local[0]), int(local[1])))
        self._cluster_stats = cluster.stats
        cluster.stats.upstream_cx_active.value += 1
        self._active = True
        upstream.peer, self.peer = self, upstream
        assert upstream.transport is not None and self.transport is not None
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()
        # A server that speaks first (SMTP, MySQL) may have sent bytes, even its FIN, before
        # the two sides were paired.
        for data in upstream.pending:
            self.transport.write(data)
        upstream.pending.clear()
        if upstream.read_eof and self.transport.can_write_eof():
            self.transport.write_eof()
        self._forward_eof()
        self.transport.resume_reading()
        if self._config.idle_timeout:
            self._last_activity = self._loop.time()
            self._idle = self._loop.call_later(self._config.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        timeout = self._config.idle_timeout
        assert timeout
        due = self._last_activity + timeout
        now = self._loop.time()
        if now < due:
            self._idle = self._loop.call_at(due, self._idle_check)
            return
        self._idle = None
        self._stats.idle_timeout.value += 1
        self._close()

    def _lifetime_over(self) -> None:
        self._lifetime = None
        self._stats.max_downstream_connection_duration.value += 1
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._filters is not None:
            self._filters.on_close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for timer in (self._idle, self._lifetime):
            if timer is not None:
                timer.cancel()
        if self._active and self._cluster_stats is not None:
            self._active = False
            self._cluster_stats.upstream_cx_active.value -= 1
        if self._loggers and self._info is not None:
            self._log()

    def _log(self) -> None:
        assert self._info is not None
        cluster, host, local = self._upstream
        facts = TcpFacts(
            connection=self._info,
            start_time=self._started,
            end_time=self._loop.time(),
            received_bytes=self._rx,
            sent_bytes=self._tx,
            upstream_cluster=cluster,
            upstream_cluster_metadata=self._cluster_metadata,
            upstream_host=host,
            upstream_local_address=local,
            response_flags=(self._flag,) if self._flag else (),
            upstream_transport_failure_reason=self._transport_failure,
        )
        self._info = None  # logged once
        for logger in self._loggers:
            logger.log_connection(facts)
