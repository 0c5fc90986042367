"""A request of the proxy's own to a cluster (Envoy's ``AsyncClient``): a JWKS fetch, an
HTTP authorization check. It takes a host from the cluster's load balancer and a connection
from that host's pool, like a routed request, counts in the cluster's stats and circuit
breakers, and hands the whole response (or why there is none) to its callback once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from proxy.codec import Response
from proxy.http.mirror import send_whole_request
from proxy.upstream.interfaces import Headers, PoolFailure, RequestEncoder, ResetReason

if TYPE_CHECKING:
    from proxy.http.filter import Timers
    from proxy.upstream.cluster import RuntimeCluster
    from proxy.upstream.host import Host

__all__ = ["MAX_RESPONSE_BYTES", "HttpCall", "HttpCallCallbacks"]

#: A response body larger than this fails the call instead of filling memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class HttpCallCallbacks(Protocol):
    def on_call_response(self, status: int, headers: Headers, body: bytes) -> None: ...
    def on_call_failure(self, reason: str) -> None:
        """No response: no host, overflow, connect failure, reset or timeout (``reason``
        says which, in Envoy's words)."""


class HttpCall:
    __slots__ = (
        "_body",
        "_callbacks",
        "_chunks",
        "_cluster",
        "_conn",
        "_done",
        "_head",
        "_host",
        "_response",
        "_size",
        "_timer",
    )

    def __init__(
        self,
        cluster: RuntimeCluster,
        host: Host,
        head: tuple[bytes, bytes, Headers],
        body: bytes,
        callbacks: HttpCallCallbacks,
    ) -> None:
        self._cluster = cluster
        self._host = host
        self._head = head
        self._body = body
        self._callbacks = callbacks
        self._conn: RequestEncoder | None = None
        self._done = False
        self._timer: object | None = None
        self._response: Response | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    @classmethod
    def send(
        cls,
        cluster: RuntimeCluster,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: bytes,
        *,
        timeout: float | None,
        timers: Timers,
        callbacks: HttpCallCallbacks,
    ) -> HttpCall | None:
        """Start the call; None when it failed at once (``on_call_failure`` was called)."""
        host = cluster.choose_host(None)
        if host is None:
            cluster.stats.upstream_cx_none_healthy.value += 1
            callbacks.on_call_failure("no healthy upstream")
            return None
        if not cluster.limits.try_acquire_request():
            cluster.stats.upstream_rq_pending_overflow.value += 1
            callbacks.on_call_failure(ResetReason.OVERFLOW.value)
            return None
        out = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
        # What Envoy's async client tells the service: its deadline, and that the request
        # comes from the proxy itself.
        if timeout:
            out.append((b"x-envoy-expected-rq-timeout-ms", b"%d" % int(timeout * 1000)))
        out.append((b"x-envoy-internal", b"true"))
        out.append((b"content-length", b"%d" % len(body)))
        call = cls(cluster, host, (method, path, out), body, callbacks)
        if timeout:
            call._timer = timers.call_later(timeout, call._on_timeout)
        result = cluster.pool_for(host).new_stream(call)
        if type(result) is PoolFailure:
            call._fail(result.value)
            return None
        if result is not None:
            call.on_pool_ready(result, None)  # type: ignore[arg-type]
        return call

    def cancel(self) -> None:
        """The caller went away: drop the call, its answer is not wanted."""
        if self._done:
            return
        if self._conn is not None:
            self._conn.reset()
            self._conn = None
        else:
            self._cluster.pool_for(self._host).cancel(self)
        self._finish()

    # -- PoolCallbacks ----------------------------------------------------------------------
    def on_pool_ready(self, encoder: RequestEncoder, local_address: str | None) -> None:
        if self._done:
            encoder.reset()
            return
        self._conn = encoder
        self._cluster.stats.upstream_rq_total.value += 1
        send_whole_request(encoder, self._head, self._body)

    def on_pool_failure(self, failure: PoolFailure, transport_failure: str = "") -> None:
        self._fail(failure.value)

    # -- UpstreamCallbacks ------------------------------------------------------------------
    def on_upstream_headers(self, response: Response, end_stream: bool) -> None:
        self._cluster.stats.response(response.status)
        self._response = response
        if end_stream:
            self._complete()

    def on_upstream_data(self, data: bytes, end_stream: bool) -> None:
        if self._done:
            return
        self._size += len(data)
        if self._size > MAX_RESPONSE_BYTES:
            self.cancel_with("response body too large")
            return
        if data:
            self._chunks.append(data)
        if end_stream:
            self._complete()

    def on_upstream_trailers(self, trailers: Headers) -> None:
        self._complete()

    def on_upstream_reset(self, reason: ResetReason) -> None:
        self._conn = None
        self._fail(reason.value)

    def on_upstream_watermark(self, above: bool) -> None:
        pass

    def on_upstream_batch_end(self) -> None:
        pass

    # -- endings ------------------------------------------------------------------------------
    def cancel_with(self, reason: str) -> None:
        if self._done:
            return
        self.cancel()
        self._callbacks.on_call_failure(reason)

    def _on_timeout(self) -> None:
        self._timer = None
        self._cluster.stats.upstream_rq_timeout.value += 1
        self.cancel_with("timeout")

    def _complete(self) -> None:
        if self._done:
            return
        self._conn = None
        response = self._response
        assert response is not None
        body = b"".join(self._chunks)
        self._finish()
        self._callbacks.on_call_response(response.status, response.headers, body)

    def _fail(self, reason: str) -> None:
        if self._done:
            return
        self._finish()
        self._callbacks.on_call_failure(reason)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()  # type: ignore[attr-defined]
            self._timer = None
        self._cluster.limits.release_request()
