"""One try of a routed request: the bridge between the router and an upstream connection.

An :class:`UpstreamAttempt` is the pool's :class:`~proxy.upstream.interfaces.PoolWaiter`: it
is handed a :class:`~proxy.upstream.interfaces.RequestEncoder` and receives the response as
:class:`~proxy.upstream.interfaces.UpstreamCallbacks`. It forwards each event to its router,
which decides what the try's outcome means (retry, answer, reset). The read-disables it asks
of either side are counted here and undone when the try ends, so a retry never inherits them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.codec import Response
from proxy.upstream.interfaces import Headers, PoolFailure, RequestEncoder, ResetReason

if TYPE_CHECKING:
    from proxy.http.filter import Timers
    from proxy.http.router import Router
    from proxy.stats import ClusterStats
    from proxy.upstream.host import Host
    from proxy.upstream.interfaces import UpstreamPool

__all__ = ["UpstreamAttempt"]


class UpstreamAttempt:
    __slots__ = (
        "_held_downstream",
        "_held_upstream",
        "attached",
        "conn",
        "done",
        "host",
        "per_try_handle",
        "pool",
        "router",
        "start_time",
        "stats",
    )

    def __init__(
        self, router: Router, host: Host, pool: UpstreamPool, stats: ClusterStats, timers: Timers
    ) -> None:
        self.router = router
        self.host = host
        self.pool = pool
        self.stats = stats
        self.attached = False
        self.conn: RequestEncoder | None = None
        self.per_try_handle: object | None = None
        self.start_time = timers.time()
        self.done = False
        self._held_downstream = 0
        self._held_upstream = 0
        host.active_requests += 1

    # -- PoolCallbacks ----------------------------------------------------------------------
    def on_pool_ready(self, encoder: RequestEncoder, local_address: str | None) -> None:
        router = self.router
        if self.done or router.attempt is not self:
            encoder.reset()
            return
        self.conn = encoder
        # Envoy counts a request to the cluster when it gets a connection, once per try.
        self.attached = True
        self.stats.upstream_rq_total.value += 1
        self.stats.upstream_rq_active.value += 1
        router.cb.stream_info.upstream_local_address = local_address
        if self._held_downstream:
            self.hold_downstream(False)  # the body that waited for this connection may flow
        router.write_request(self)
        router.on_attempt_ready(self)

    def on_pool_failure(self, failure: PoolFailure) -> None:
        if self.done:
            return
        self.finish()
        self.router.on_attempt_failure(self, "connect_failure", failure.reset_reason)
        self.router.cb.flush()

    # -- UpstreamCallbacks ---------------------------------------------------------------------
    def on_upstream_headers(self, response: Response, end_stream: bool) -> None:
        # A head that ends the response (HTTP/2 HEADERS with END_STREAM: a gRPC trailers-only
        # answer) goes downstream as one, so the client sees the same framing.
        self.router.on_attempt_response(self, response, end_stream)

    def on_upstream_data(self, data: bytes, end_stream: bool) -> None:
        if end_stream:
            self.finish()
            self.router.on_attempt_end(self, data)
        else:
            self.router.cb.encode_data(data, False)

    def on_upstream_trailers(self, trailers: Headers) -> None:
        self.finish()
        self.cancel_timer()
        self.router.attempt = None
        self.router.cb.encode_trailers(trailers)

    def on_upstream_reset(self, reason: ResetReason) -> None:
        if self.done:
            return
        self.finish()
        self.router.on_attempt_failure(self, "reset", reason)

    def on_upstream_watermark(self, above: bool) -> None:
        # The upstream connection's write buffer is full: stop reading the client.
        self.hold_downstream(above)

    def on_upstream_batch_end(self) -> None:
        self.router.cb.flush()

    # -- read-disables, counted per try ---------------------------------------------------------
    def wait_for_connection(self) -> None:
        """The body outgrew the buffer before a connection came: stop reading the client
        until ``on_pool_ready``."""
        if not self._held_downstream:
            self.hold_downstream(True)

    def hold_downstream(self, hold: bool) -> None:
        if hold:
            self._held_downstream += 1
        elif self._held_downstream:
            self._held_downstream -= 1
        else:
            return
        self.router.cb.read_disable(hold)

    def hold_upstream(self, hold: bool) -> None:
        conn = self.conn
        if conn is None or self.done:
            return
        if hold:
            self._held_upstream += 1
        elif self._held_upstream:
            self._held_upstream -= 1
        else:
            return
        conn.read_disable(hold)

    # -- the router's side ------------------------------------------------------------------
    def cancel_timer(self) -> None:
        handle = self.per_try_handle
        if handle is not None:
            handle.cancel()  # type: ignore[attr-defined]
            self.per_try_handle = None

    def abandon(self) -> None:
        """Give the try up: its connection is closed (the response may still be in flight)."""
        if self.done:
            return
        self.finish()
        self.cancel_timer()
        conn = self.conn
        if conn is not None:
            conn.reset()
        else:
            self.pool.cancel(self)

    def discard_response(self) -> None:
        """Give the try up on a response that ends with its head: the connection reads that
        end and goes back to the pool instead of being closed (Envoy reuses it too)."""
        if self.done:
            return
        self.finish()
        self.cancel_timer()
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.discard_response()

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.host.active_requests -= 1
            if self.attached:
                self.stats.upstream_rq_active.value -= 1
            while self._held_downstream:
                self.hold_downstream(False)
            # Reads of the upstream connection belong to the exchange: the connection clears
            # them itself when it is reused, and a connection given up is closed.
            self._held_upstream = 0
