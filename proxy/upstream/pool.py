"""HTTP/1.1 connection pool for one upstream host.

Idle connections are reused LIFO (the most recently used one is least likely to have been
closed by the server). A request that finds no idle connection either opens a new one, if the
cluster's ``max_connections`` allows, or waits in the pending queue, if
``max_pending_requests`` allows; otherwise it overflows (503, ``x-envoy-overloaded``), exactly
the circuit-breaking semantics of Envoy's HTTP/1 pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from proxy.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from proxy.routing.circuit_breaker import ResourceLimits
    from proxy.stats import ClusterStats
    from proxy.upstream.host import Host

__all__ = ["ConnectionPool", "PoolWaiter"]

log = structlog.get_logger(__name__)


class PoolWaiter(Protocol):
    def on_pool_ready(self, conn: UpstreamConnection) -> None: ...
    def on_pool_failure(self, reason: str, local_failure: str) -> None: ...


class ConnectionPool:
    __slots__ = (
        "_connecting",
        "_idle",
        "_loop",
        "_pending",
        "_tasks",
        "active",
        "connect_timeout",
        "host",
        "limits",
        "max_requests_per_connection",
        "on_local_failure",
        "stats",
    )

    def __init__(
        self,
        host: Host,
        *,
        loop: asyncio.AbstractEventLoop,
        stats: ClusterStats,
        limits: ResourceLimits,
        connect_timeout: float,
        max_requests_per_connection: int | None,
        on_local_failure: Callable[[Host, str], None],
    ) -> None:
        self.host = host
        self._loop = loop
        self.stats = stats
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.max_requests_per_connection = max_requests_per_connection
        # Reports connect failures to the cluster (outlier detection counts them).
        self.on_local_failure = on_local_failure
        self._idle: list[UpstreamConnection] = []
        self._pending: deque[PoolWaiter] = deque()
        self._connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.active: set[UpstreamConnection] = set()

    # -- requests -------------------------------------------------------------------------
    def acquire(self, waiter: PoolWaiter) -> UpstreamConnection | str | None:
        """An idle connection, ``None`` when the waiter was queued (it is called back later),
        or ``"overflow"`` when the circuit breaker refused the request."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        # As in Envoy, a request waiting for a connection that is still being opened is
        # pending too, so max_pending_requests bounds it.
        if not self.limits.try_acquire_pending():
            self.stats.upstream_rq_pending_overflow.value += 1
            return "overflow"
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

    def release(self, conn: UpstreamConnection) -> None:
        """The exchange on ``conn`` completed and the connection may be reused."""
        limit = self.max_requests_per_connection
        if limit is not None and conn.requests >= limit:
            conn.close()
            return
        if self._pending:
            self._hand_over(conn)
        else:
            self._idle.append(conn)

    def on_connection_closed(self, conn: UpstreamConnection) -> None:
        if conn in self.active:
            self.active.discard(conn)
            self.limits.release_connection()
            self.stats.upstream_cx_active.value -= 1
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        # A queued request may now open the connection this one freed.
        self._maybe_connect()

    def close(self) -> None:
        """Host removed or pool drained: close idle connections, fail queued requests."""
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        while self._pending:
            self._fail_one("pool closed", "")
        for task in self._tasks:
            task.cancel()

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- internals ----------------------------------------------------------------------------
    def _maybe_connect(self) -> None:
        if self._pending and self._connecting < len(self._pending):
            if self.limits.try_acquire_connection():
                self._connect()
            else:
                self.stats.upstream_cx_overflow.value += 1

    def _hand_over(self, conn: UpstreamConnection) -> None:
        waiter = self._pending.popleft()
        self._release_pending()
        waiter.on_pool_ready(conn)

    def _release_pending(self) -> None:
        self.limits.release_pending()
        self.stats.upstream_rq_pending_active.value -= 1

    def _fail_one(self, reason: str, local_failure: str) -> None:
        waiter = self._pending.popleft()
        self._release_pending()
        waiter.on_pool_failure(reason, local_failure)

    def _connect(self) -> None:
        self._connecting += 1
        self.stats.upstream_cx_total.value += 1
        self.stats.upstream_cx_http1_total.value += 1
        # A Task per *connection*, never per request: connects are rare with keep-alive.
        task = self._loop.create_task(self._open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> None:
        host = self.host
        conn = UpstreamConnection(self)
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: conn, host.address, host.port),
                self.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            self._connecting -= 1
            self.limits.release_connection()
            self._on_connect_failure(exc)
            return
        except asyncio.CancelledError:
            self._connecting -= 1
            self.limits.release_connection()
            raise
        self._connecting -= 1
        self.active.add(conn)
        self.stats.upstream_cx_active.value += 1
        if self._pending:
            self._hand_over(conn)
        else:
            self._idle.append(conn)

    def _on_connect_failure(self, exc: BaseException) -> None:
        # Envoy's reset reasons, as its local replies and access logs spell them.
        # A connection that never opened is destroyed all the same, in Envoy's counts: by us
        # when we gave up waiting, by the peer when it refused.
        if isinstance(exc, TimeoutError):
            self.stats.upstream_cx_connect_timeout.value += 1
            self.stats.upstream_cx_destroy_local.value += 1
            reason = "connection timeout"
        else:
            self.stats.upstream_cx_destroy_remote.value += 1
            reason = "remote connection failure"
        self.stats.upstream_cx_connect_fail.value += 1
        log.debug(
            "upstream connect failed", host=f"{self.host.address}:{self.host.port}", reason=reason
        )
        self.on_local_failure(self.host, "connect_failure")
        if self._pending:
            self.stats.upstream_rq_pending_failure_eject.value += 1
            self._fail_one(reason, "UF")
            self._maybe_connect()
