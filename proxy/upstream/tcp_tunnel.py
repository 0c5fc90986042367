"""A terminated CONNECT's way upstream: a plain TCP connection per tunnel.

A route whose CONNECT ``upgrade_configs`` entry has ``connect_config`` makes the proxy the
CONNECT's end: it answers the client with 200 once the TCP connection to the chosen host is
open, and carries the tunnel's bytes over it as they are, with no HTTP on the upstream side.
:class:`TcpTunnelPool` is a one-shot :class:`~proxy.upstream.interfaces.UpstreamPool` (one
connection for one tunnel, never reused) and :class:`TcpTunnelConnection` that connection's
:class:`~proxy.upstream.interfaces.RequestEncoder`.

Half-close: the end of the client's side (an HTTP/2 client's END_STREAM) shuts the upstream
connection's write side and the tunnel goes on reading; the upstream's FIN ends the tunnel
(the client sees the end of the response), as a TCP proxy does once the server is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from proxy.codec import Response
from proxy.transport.flow_control import FlowControl
from proxy.upstream.interfaces import Headers, PoolFailure, PoolWaiter, ResetReason

if TYPE_CHECKING:
    from proxy.upstream.cluster import RuntimeCluster
    from proxy.upstream.host import Host
    from proxy.upstream.interfaces import UpstreamCallbacks

__all__ = ["TcpTunnelConnection", "TcpTunnelPool"]

# What the client hears once the tunnel is open: Envoy's answer carries no fields of its own.
_ESTABLISHED = Response(200, b"OK", [], b"1.1", False, None, False)


class TcpTunnelPool:
    __slots__ = ("_cancel", "active", "cluster", "host")

    def __init__(self, cluster: RuntimeCluster, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.active: set[TcpTunnelConnection] = set()
        self._cancel: Callable[[], None] | None = None

    def new_stream(self, waiter: PoolWaiter) -> PoolFailure | None:
        cluster = self.cluster
        stats = cluster.stats
        if not cluster.limits.try_acquire_connection():
            stats.upstream_cx_overflow.value += 1
            return PoolFailure.OVERFLOW
        stats.upstream_cx_total.value += 1
        conn = TcpTunnelConnection(self)
        socket = cluster.socket_for(self.host)

        def done(error: BaseException | None) -> None:
            self._cancel = None
            if error is None:
                self.active.add(conn)
                stats.upstream_cx_active.value += 1
                conn.attach(waiter)
                waiter.on_pool_ready(conn, conn.local_address)
                return
            cluster.limits.release_connection()
            if isinstance(error, asyncio.CancelledError):
                return
            stats.upstream_cx_connect_fail.value += 1
            cluster.report_local_failure(self.host, "connect_failure")
            if isinstance(error, TimeoutError):
                stats.upstream_cx_connect_timeout.value += 1
                waiter.on_pool_failure(PoolFailure.TIMEOUT)
            else:
                waiter.on_pool_failure(PoolFailure.CONNECTION_FAILURE)

        cancel = cluster.connector.connect(
            conn,
            self.host,
            cluster.model.connect_timeout,
            done,
            cluster.model.source_address,
            socket,
        )
        if conn.transport is None and not conn.closed:
            self._cancel = cancel
        return None

    def cancel(self, waiter: PoolWaiter) -> None:
        self._cancel_connect()

    def _cancel_connect(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def on_connection_closed(self, conn: TcpTunnelConnection) -> None:
        if conn in self.active:
            self.active.discard(conn)
            self.cluster.limits.release_connection()
            self.cluster.stats.upstream_cx_active.value -= 1

    def drain(self) -> None:
        pass  # one tunnel, never reused: it ends when its stream does

    def close(self) -> None:
        self._cancel_connect()
        for conn in list(self.active):
            conn.reset()


class TcpTunnelConnection(asyncio.Protocol):
    chunks_bodies = False

    __slots__ = ("_flow", "callbacks", "closed", "local_address", "pool", "transport")

    def __init__(self, pool: TcpTunnelPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.callbacks: UpstreamCallbacks | None = None
        self.closed = False
        self.local_address: str | None = None
        self._flow: FlowControl | None = None

    def attach(self, callbacks: UpstreamCallbacks) -> None:
        self.callbacks = callbacks

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._flow = FlowControl(self.transport)
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local_address = f"{local[0]}:{local[1]}"

    def data_received(self, data: bytes) -> None:
        self.pool.cluster.stats.upstream_cx_rx_bytes_total.value += len(data)
        cb = self.callbacks
        if cb is not None:
            cb.on_upstream_data(data, False)
            cb.on_upstream_batch_end()

    def eof_received(self) -> bool | None:
        cb, self.callbacks = self.callbacks, None
        if cb is not None:
            cb.on_upstream_data(b"", True)
            cb.on_upstream_batch_end()
        return None  # the tunnel is over: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.cluster.stats.upstream_cx_destroy_remote.value += 1
        self.pool.on_connection_closed(self)
        cb, self.callbacks = self.callbacks, None
        if cb is not None:
            cb.on_upstream_reset(ResetReason.CONNECTION_TERMINATION)
            cb.on_upstream_batch_end()

    def pause_writing(self) -> None:
        if self.callbacks is not None:
            self.callbacks.on_upstream_watermark(True)

    def resume_writing(self) -> None:
        if self.callbacks is not None:
            self.callbacks.on_upstream_watermark(False)

    # -- RequestEncoder ------------------------------------------------------------------------
    def encode_headers(
        self, method: bytes, path: bytes, headers: Headers, end_stream: bool
    ) -> None:
        """The CONNECT head stops here: the open connection is the answer."""
        cb = self.callbacks
        if cb is not None:
            cb.on_upstream_headers(_ESTABLISHED, False)
            cb.on_upstream_batch_end()
        if end_stream:
            self._shutdown_write()

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        transport = self.transport
        if data and transport is not None and not self.closed:
            self.pool.cluster.stats.upstream_cx_tx_bytes_total.value += len(data)
            transport.write(data)
        if end_stream:
            self._shutdown_write()

    def encode_trailers(self, trailers: Headers) -> None:
        self._shutdown_write()

    def read_disable(self, disable: bool) -> None:
        if self._flow is not None:
            self._flow.read_disable(disable)

    def reset(self) -> None:
        self.callbacks = None
        if not self.closed:
            self.closed = True
            self.pool.cluster.stats.upstream_cx_destroy_local.value += 1
            if self.transport is not None:
                self.transport.abort()

    def discard_response(self) -> None:
        self.reset()

    def _shutdown_write(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed and transport.can_write_eof():
            transport.write_eof()
