"""HTTP/2 connection pool for one upstream host: many streams per connection, as Envoy's
multiplexed pool.

A request goes on the first connection that can take a stream (under the server's
``SETTINGS_MAX_CONCURRENT_STREAMS``, the cluster's ``max_concurrent_streams`` and
``max_requests_per_connection``). When none can, it waits in the pending queue
(``max_pending_requests``, else 503 overflow) and a connection is opened if those being opened
will not hold the queue (``max_connections``). A connection is ready from the moment it is
connected: its streams queue in the codec until the server's SETTINGS arrive. A GOAWAY, or
the last request a connection may carry, drains it: its streams finish, then it closes.

A pool whose cluster left the configuration drains the same way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from proxy.upstream.h2_connection import H2UpstreamConnection, H2UpstreamStream
from proxy.upstream.interfaces import PoolFailure, PoolWaiter

if TYPE_CHECKING:
    from proxy.codec.h2_settings import H2Settings
    from proxy.routing.circuit_breaker import ResourceLimits
    from proxy.stats import ClusterStats
    from proxy.upstream.host import Host
    from proxy.upstream.pool import Connector

__all__ = ["H2ConnectionPool"]

log = structlog.get_logger(__name__)


class H2ConnectionPool:
    def __init__(
        self,
        host: Host,
        *,
        connector: Connector,
        stats: ClusterStats,
        limits: ResourceLimits,
        connect_timeout: float,
        max_requests_per_connection: int | None,
        settings: H2Settings,
        buffer_limit: int,
        on_local_failure: Callable[[Host, str], None],
        source_address: tuple[str, int] | None = None,
    ) -> None:
        self.host = host
        self._connector = connector
        self.stats = stats
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.max_requests_per_connection = max_requests_per_connection
        self.settings = settings
        self.buffer_limit = buffer_limit
        self.on_local_failure = on_local_failure
        self.source_address = source_address
        self._pending: deque[PoolWaiter] = deque()
        self._connecting = 0
        self._cancels: set[Callable[[], None]] = set()
        # Connected and not closed, in the order they opened: the oldest is filled first.
        self.active: list[H2UpstreamConnection] = []
        self.closed = False

    # -- requests -------------------------------------------------------------------------
    def new_stream(self, waiter: PoolWaiter) -> H2UpstreamStream | PoolFailure | None:
        """A stream already attached to ``waiter``; ``None`` when the waiter was queued; or
        why there will be none."""
        if self.closed:
            return PoolFailure.CLOSED
        for conn in self.active:
            if conn.capacity > 0:
                return conn.new_stream(waiter)
        if not self.limits.try_acquire_pending():
            self.stats.upstream_rq_pending_overflow.value += 1
            return PoolFailure.OVERFLOW
        self.stats.upstream_rq_pending_total.value += 1
        self.stats.upstream_rq_pending_active.value += 1
        self._pending.append(waiter)
        self._maybe_connect()
        return None

    def cancel(self, waiter: PoolWaiter) -> None:
        try:
            self._pending.remove(waiter)
        except ValueError:
            return
        self._release_pending()

    def on_capacity(self, conn: H2UpstreamConnection) -> None:
        """``conn`` may take more streams (or fewer: then queued requests may need a new
        connection)."""
        pending = self._pending
        while pending and conn.capacity > 0:
            waiter = pending.popleft()
            self._release_pending()
            stream = conn.new_stream(waiter)
            waiter.on_pool_ready(stream, stream.local_address)
        if pending:
            self._maybe_connect()

    def on_connection_closed(self, conn: H2UpstreamConnection) -> None:
        if conn in self.active:
            self.active.remove(conn)
            self.limits.release_connection()
            self.stats.upstream_cx_active.value -= 1
        self._maybe_connect()

    def drain(self) -> None:
        """The host or its cluster left the configuration: no new streams; connections close
        once their streams are done."""
        self.closed = True
        for conn in list(self.active):
            conn.remaining_requests = 0
            if not conn.streams:
                conn.close()

    def close(self) -> None:
        self.drain()
        while self._pending:
            self._fail_one(PoolFailure.CLOSED)
        for cancel in list(self._cancels):
            cancel()

    @property
    def idle_count(self) -> int:
        return sum(1 for conn in self.active if not conn.streams)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- internals ----------------------------------------------------------------------------
    def _maybe_connect(self) -> None:
        if not self._pending or self.closed:
            return
        # Connections being opened will each take up to this many of the queued requests.
        expected = min(
            self.settings.max_concurrent_streams, self.max_requests_per_connection or 2**31
        )
        if self._connecting * expected >= len(self._pending):
            return
        if self.limits.try_acquire_connection():
            self._connect()
        else:
            self.stats.upstream_cx_overflow.value += 1

    def _release_pending(self) -> None:
        self.limits.release_pending()
        self.stats.upstream_rq_pending_active.value -= 1

    def _fail_one(self, failure: PoolFailure) -> None:
        waiter = self._pending.popleft()
        self._release_pending()
        waiter.on_pool_failure(failure)

    def _connect(self) -> None:
        self._connecting += 1
        self.stats.upstream_cx_total.value += 1
        self.stats.upstream_cx_http2_total.value += 1
        conn = H2UpstreamConnection(self, self.settings, self.buffer_limit)
        finished = False
        cancel: Callable[[], None] = _nothing

        def done(error: BaseException | None) -> None:
            nonlocal finished
            finished = True
            self._cancels.discard(cancel)
            self._connected(conn, error)

        cancel = self._connector.connect(
            conn, self.host, self.connect_timeout, done, self.source_address
        )
        if not finished:
            self._cancels.add(cancel)

    def _connected(self, conn: H2UpstreamConnection, error: BaseException | None) -> None:
        self._connecting -= 1
        if error is not None:
            self.limits.release_connection()
            if not isinstance(error, asyncio.CancelledError):
                self._on_connect_failure(error)
            return
        self.active.append(conn)
        self.stats.upstream_cx_active.value += 1
        if self.closed:
            conn.close()
            return
        self.on_capacity(conn)

    def _on_connect_failure(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self.stats.upstream_cx_connect_timeout.value += 1
            self.stats.upstream_cx_destroy_local.value += 1
            failure = PoolFailure.TIMEOUT
        else:
            self.stats.upstream_cx_destroy_remote.value += 1
            failure = PoolFailure.CONNECTION_FAILURE
        self.stats.upstream_cx_connect_fail.value += 1
        log.debug("upstream connect failed", host=self.host.address_str, reason=failure.value)
        self.on_local_failure(self.host, "connect_failure")
        # The requests waiting on it fail, as Envoy's pool purges its pending streams when a
        # connection fails (a retry may queue them again; they are failed from a copy so a
        # retry is not failed inline).
        if self._pending:
            waiting = list(self._pending)
            self._pending.clear()
            for waiter in waiting:
                self.stats.upstream_rq_pending_failure_eject.value += 1
                self._release_pending()
                waiter.on_pool_failure(failure)


def _nothing() -> None:
    pass
