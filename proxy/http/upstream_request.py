"""One try of a routed request: the bridge between the router and an upstream connection.

An :class:`UpstreamAttempt` is both the pool's waiter (it is handed a connection) and the
connection's sink (it receives the response); it forwards each event to its router, which
decides what the try's outcome means (retry, answer, reset).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.codec import Response

if TYPE_CHECKING:
    from proxy.http.router import Router
    from proxy.stats import ClusterStats
    from proxy.upstream.connection import UpstreamConnection
    from proxy.upstream.host import Host

__all__ = ["UpstreamAttempt"]


class UpstreamAttempt:
    """One try: a :class:`~proxy.upstream.pool.PoolWaiter` and an
    :class:`~proxy.upstream.connection.UpstreamSink` in one object."""

    __slots__ = (
        "attached",
        "conn",
        "done",
        "host",
        "per_try_handle",
        "router",
        "start_time",
        "stats",
    )

    def __init__(self, router: Router, host: Host, stats: ClusterStats) -> None:
        self.router = router
        self.host = host
        self.stats = stats
        self.attached = False
        self.conn: UpstreamConnection | None = None
        self.per_try_handle: asyncio.TimerHandle | None = None
        self.start_time = router.stream.loop.time()
        self.done = False
        host.active_requests += 1

    def on_pool_ready(self, conn: UpstreamConnection) -> None:
        router = self.router
        if self.done or router.attempt is not self:
            router.cluster.pool_for(self.host).release(conn)  # type: ignore[union-attr]
            return
        self.conn = conn
        conn.attach(self)
        # Envoy counts a request to the cluster when it gets a connection, once per try.
        self.attached = True
        self.stats.upstream_rq_total.value += 1
        self.stats.upstream_rq_active.value += 1
        router.write_request(conn)
        router.on_attempt_ready(self)

    def on_pool_failure(self, reason: str, local_failure: str) -> None:
        if self.done:
            return
        self._finish()
        self.router.on_attempt_failure(self, "connect_failure", reason)
        self.router.stream.conn.flush()

    def on_upstream_response(self, response: Response) -> None:
        self.router.on_attempt_response(self, response)

    def on_upstream_data(self, data: bytes) -> None:
        self.router.stream.encode_data(data)

    def on_upstream_end(self) -> None:
        self._finish()
        self.router.on_attempt_end(self)

    def on_upstream_reset(self, reason: str) -> None:
        if self.done:
            return
        self._finish()
        self.router.on_attempt_failure(self, "reset", reason)
        self.router.stream.conn.flush()

    def on_upstream_write_paused(self, paused: bool) -> None:
        conn = self.router.stream.conn
        if paused:
            conn.pause_reading()
        else:
            conn.resume_reading()

    def on_upstream_flush(self) -> None:
        self.router.stream.conn.flush()

    def cancel_timer(self) -> None:
        handle = self.per_try_handle
        if handle is not None:
            handle.cancel()
            self.per_try_handle = None

    def abandon(self) -> None:
        """Give the try up: its connection is closed (the response may still be in flight)."""
        if self.done:
            return
        self._finish()
        self.cancel_timer()
        conn = self.conn
        if conn is not None:
            conn.detach_and_close()
        else:
            self.router.cluster.pool_for(self.host).cancel(self)  # type: ignore[union-attr]

    def discard_response(self) -> None:
        """Give the try up on a response that ends with its head: the connection reads that
        end and goes back to the pool instead of being closed (Envoy reuses it too)."""
        if self.done:
            return
        self._finish()
        self.cancel_timer()
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.sink = _DiscardSink()

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.host.active_requests -= 1
            if self.attached:
                self.stats.upstream_rq_active.value -= 1


class _DiscardSink:
    """Takes the rest of an exchange nobody waits for any more."""

    __slots__ = ()

    def on_upstream_response(self, response: Response) -> None:
        pass

    def on_upstream_data(self, data: bytes) -> None:
        pass

    def on_upstream_end(self) -> None:
        pass

    def on_upstream_reset(self, reason: str) -> None:
        pass

    def on_upstream_write_paused(self, paused: bool) -> None:
        pass

    def on_upstream_flush(self) -> None:
        pass
