"""HTTP/1.1 connection pool for one upstream host.

Idle connections are reused LIFO (the most recently used one is least likely to have been
closed by the server). A request that finds no idle connection either opens a new one, if the
cluster's ``max_connections`` allows, or waits in the pending queue, if
``max_pending_requests`` allows; otherwise it overflows (503, ``x-envoy-overloaded``), exactly
the circuit-breaking semantics of Envoy's HTTP/1 pool.

A pool whose cluster left the configuration *drains*: requests already holding or waiting for
a connection finish, idle connections close, and a connection released later is closed
instead of being parked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from proxy.transport.upstream_tls import TlsConnectError, TransportSocket, open_connection
from proxy.upstream.connection import UpstreamConnection
from proxy.upstream.interfaces import PoolFailure, PoolWaiter

if TYPE_CHECKING:
    from proxy.routing.circuit_breaker import ResourceLimits
    from proxy.stats import ClusterStats
    from proxy.upstream.host import Host

__all__ = ["ConnectionPool", "Connector", "LoopConnector"]

log = structlog.get_logger(__name__)


class Connector(Protocol):
    """Opens transports: the event loop in the proxy, a fake in unit tests. ``done`` is
    called once, with None on success (``conn.connection_made`` has run) or the error."""

    def connect(
        self,
        conn: asyncio.Protocol,
        host: Host,
        timeout: float,
        done: Callable[[BaseException | None], None],
        source: tuple[str, int] | None = None,
        socket: TransportSocket = None,
    ) -> Callable[[], None]:
        """Start connecting (from ``source`` when given, through ``socket``: None is
        plaintext); returns a function that cancels the attempt."""
        ...


class LoopConnector:
    __slots__ = ("_loop", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()

    def connect(
        self,
        conn: asyncio.Protocol,
        host: Host,
        timeout: float,
        done: Callable[[BaseException | None], None],
        source: tuple[str, int] | None = None,
        socket: TransportSocket = None,
    ) -> Callable[[], None]:
        # A Task per *connection*, never per request: connects are rare with keep-alive.
        task = self._loop.create_task(self._open(conn, host, timeout, done, source, socket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def cancel() -> None:
            task.cancel()

        return cancel

    async def _open(
        self,
        conn: asyncio.Protocol,
        host: Host,
        timeout: float,
        done: Callable[[BaseException | None], None],
        source: tuple[str, int] | None,
        socket: TransportSocket,
    ) -> None:
        try:
            await open_connection(
                self._loop, conn, host.address, host.port, socket, timeout=timeout, source=source
            )
        except (TimeoutError, OSError) as exc:
            done(exc)
            return
        except asyncio.CancelledError:
            done(asyncio.CancelledError())
            raise
        done(None)


class ConnectionPool:
    __slots__ = (
        "_cancels",
        "_connecting",
        "_connector",
        "_idle",
        "_pending",
        "active",
        "closed",
        "connect_timeout",
        "enable_trailers",
        "host",
        "limits",
        "max_requests_per_connection",
        "on_local_failure",
        "socket_for",
        "source_address",
        "stats",
    )

    def __init__(
        self,
        host: Host,
        *,
        connector: Connector,
        stats: ClusterStats,
        limits: ResourceLimits,
        connect_timeout: float,
        max_requests_per_connection: int | None,
        on_local_failure: Callable[[Host, str], None],
        source_address: tuple[str, int] | None = None,
        socket_for: Callable[[Host], TransportSocket] | None = None,
        enable_trailers: bool = False,
    ) -> None:
        self.host = host
        # The cluster's transport socket for this host, asked at every connect so that a
        # rotated certificate serves the next connection (open ones keep theirs).
        self.socket_for = socket_for
        self.enable_trailers = enable_trailers
        self._connector = connector
        self.stats = stats
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.max_requests_per_connection = max_requests_per_connection
        self.source_address = source_address
        # Reports connect failures to the cluster (outlier detection counts them).
        self.on_local_failure = on_local_failure
        self._idle: list[UpstreamConnection] = []
        self._pending: deque[PoolWaiter] = deque()
        self._connecting = 0
        self._cancels: set[Callable[[], None]] = set()
        self.active: set[UpstreamConnection] = set()
        self.closed = False

    # -- requests -------------------------------------------------------------------------
    def new_stream(self, waiter: PoolWaiter) -> UpstreamConnection | PoolFailure | None:
        """A connection already attached to ``waiter``; ``None`` when the waiter was queued
        (``on_pool_ready`` / ``on_pool_failure`` follows); or why there will be none."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.attach(waiter)
                return conn
        if self.closed:
            return PoolFailure.CLOSED
        # As in Envoy, a request waiting for a connection that is still being opened is
        # pending too, so max_pending_requests bounds it.
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

    def release(self, conn: UpstreamConnection) -> None:
        """The exchange on ``conn`` completed and the connection may be reused."""
        limit = self.max_requests_per_connection
        if self.closed or (limit is not None and conn.requests >= limit):
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

    def drain(self) -> None:
        """The host or its cluster left the configuration: close what is idle, let what is
        busy or queued finish, and close every connection as it is released."""
        self.closed = True
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()

    def close(self) -> None:
        """Shut down: close idle connections, fail queued requests, stop connecting."""
        self.drain()
        while self._pending:
            self._fail_one(PoolFailure.CLOSED)
        for cancel in list(self._cancels):
            cancel()

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
        conn.attach(waiter)
        waiter.on_pool_ready(conn, conn.local_address)

    def _release_pending(self) -> None:
        self.limits.release_pending()
        self.stats.upstream_rq_pending_active.value -= 1

    def _fail_one(self, failure: PoolFailure, transport_failure: str = "") -> None:
        waiter = self._pending.popleft()
        self._release_pending()
        if transport_failure:
            waiter.on_pool_failure(failure, transport_failure)
        else:
            waiter.on_pool_failure(failure)

    def _connect(self) -> None:
        self._connecting += 1
        self.stats.upstream_cx_total.value += 1
        self.stats.upstream_cx_http1_total.value += 1
        conn = UpstreamConnection(self)
        finished = False
        cancel: Callable[[], None] = _nothing

        def done(error: BaseException | None) -> None:
            nonlocal finished
            finished = True
            self._cancels.discard(cancel)
            self._connected(conn, error, tls=socket is not None)

        socket = self.socket_for(self.host) if self.socket_for is not None else None
        cancel = self._connector.connect(
            conn, self.host, self.connect_timeout, done, self.source_address, socket
        )
        if not finished:  # a connector may finish before returning (a fake one does)
            self._cancels.add(cancel)

    def _connected(
        self, conn: UpstreamConnection, error: BaseException | None, *, tls: bool
    ) -> None:
        self._connecting -= 1
        if error is not None:
            self.limits.release_connection()
            if not isinstance(error, asyncio.CancelledError):
                self._on_connect_failure(error)
            return
        if tls:
            self.stats.counter("ssl.handshake").value += 1
        self.active.add(conn)
        self.stats.upstream_cx_active.value += 1
        if self._pending:
            self._hand_over(conn)
        elif self.closed:
            conn.close()
        else:
            self._idle.append(conn)

    def _on_connect_failure(self, exc: BaseException) -> None:
        # Envoy's reset reasons, as its local replies and access logs spell them.
        # A connection that never opened is destroyed all the same, in Envoy's counts: by us
        # when we gave up waiting, by the peer when it refused.
        transport_failure = ""
        if isinstance(exc, TlsConnectError):
            transport_failure = exc.reason
            # Envoy counts a refused certificate as that, not also as a connection error.
            self.stats.counter(f"ssl.{exc.stat}").value += 1
        if isinstance(exc, TimeoutError):
            self.stats.upstream_cx_connect_timeout.value += 1
            self.stats.upstream_cx_destroy_local.value += 1
            failure = PoolFailure.TIMEOUT
        else:
            self.stats.upstream_cx_destroy_remote.value += 1
            failure = PoolFailure.CONNECTION_FAILURE
        self.stats.upstream_cx_connect_fail.value += 1
        log.debug(
            "upstream connect failed",
            host=self.host.address_str,
            reason=failure.value,
            transport_failure=transport_failure or None,
        )
        self.on_local_failure(self.host, "connect_failure")
        if self._pending:
            self.stats.upstream_rq_pending_failure_eject.value += 1
            self._fail_one(failure, transport_failure)
            self._maybe_connect()


def _nothing() -> None:
    pass
