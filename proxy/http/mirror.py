"""Request mirroring (Envoy's shadowing): a copy of a request whose answer is discarded.

A shadow never touches the caller: it has no reference to the stream it copies, its failures
are only counted, and its response is read and dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.codec import Response
from proxy.upstream.interfaces import Headers, PoolFailure, RequestEncoder, ResetReason

if TYPE_CHECKING:
    from proxy.http.filter import Timers
    from proxy.upstream.cluster import RuntimeCluster
    from proxy.upstream.host import Host

__all__ = ["ShadowRequest", "send_whole_request", "shadow_authority"]


def shadow_authority(authority: bytes) -> bytes:
    """``reviews:9080`` → ``reviews-shadow:9080``, as Envoy names the mirrored host."""
    host, sep, port = authority.rpartition(b":")
    if sep and port.isdigit():
        return host + b"-shadow:" + port
    return authority + b"-shadow"


class ShadowRequest:
    __slots__ = ("_body", "_cluster", "_conn", "_done", "_head", "_host", "_timer")

    def __init__(
        self,
        cluster: RuntimeCluster,
        host: Host,
        head: tuple[bytes, bytes, list[tuple[bytes, bytes]]],
        body: bytes,
    ) -> None:
        self._cluster = cluster
        self._host = host
        self._head = head
        self._body = body
        self._conn: RequestEncoder | None = None
        self._done = False
        self._timer: object | None = None

    @classmethod
    def send(
        cls,
        cluster: RuntimeCluster,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        timeout: float | None,
        suffix_host: bool,
        timers: Timers,
    ) -> None:
        host = cluster.choose_host(None)
        if host is None:
            return
        copy: list[tuple[bytes, bytes]] = []
        for k, v in headers:
            if k == b"host" and suffix_host:
                v = shadow_authority(v)
            elif k in (b"content-length", b"transfer-encoding"):
                continue
            copy.append((k, v))
        if body or method in (b"POST", b"PUT", b"PATCH"):
            copy.append((b"content-length", b"%d" % len(body)))
        if not cluster.limits.try_acquire_request():
            cluster.stats.upstream_rq_pending_overflow.value += 1
            return
        shadow = cls(cluster, host, (method, path, copy), body)
        if timeout:
            shadow._timer = timers.call_later(timeout, shadow._on_timeout)
        result = cluster.pool_for(host).new_stream(shadow)
        if type(result) is PoolFailure:
            shadow._finish()
        elif result is not None:
            shadow.on_pool_ready(result, None)  # type: ignore[arg-type]

    # PoolCallbacks
    def on_pool_ready(self, encoder: RequestEncoder, local_address: str | None) -> None:
        if self._done:
            encoder.reset()
            return
        self._conn = encoder
        self._cluster.stats.upstream_rq_total.value += 1
        send_whole_request(encoder, self._head, self._body)

    def on_pool_failure(self, failure: PoolFailure) -> None:
        self._finish()

    # UpstreamCallbacks
    def on_upstream_headers(self, response: Response, end_stream: bool) -> None:
        self._cluster.stats.response(response.status)
        if end_stream:  # a headers-only answer (HTTP/2, e.g. gRPC trailers-only)
            self._conn = None
            self._finish()

    def on_upstream_data(self, data: bytes, end_stream: bool) -> None:
        if end_stream:
            self._conn = None
            self._finish()

    def on_upstream_trailers(self, trailers: Headers) -> None:
        self._conn = None
        self._finish()

    def on_upstream_reset(self, reason: ResetReason) -> None:
        self._conn = None
        self._finish()

    def on_upstream_watermark(self, above: bool) -> None:
        pass

    def on_upstream_batch_end(self) -> None:
        pass

    def _on_timeout(self) -> None:
        self._timer = None
        self._cluster.stats.upstream_rq_timeout.value += 1
        if self._conn is not None:
            self._conn.reset()
            self._conn = None
        else:
            self._cluster.pool_for(self._host).cancel(self)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()  # type: ignore[attr-defined]
            self._timer = None
        self._cluster.limits.release_request()


def send_whole_request(
    encoder: RequestEncoder, head: tuple[bytes, bytes, Headers], body: bytes
) -> None:
    """A request whose body is all here (a shadow, a side call): head and body in one go."""
    method, path, headers = head
    if body:
        encoder.encode_headers(method, path, headers, False)
        encoder.encode_data(body, True)
    else:
        encoder.encode_headers(method, path, headers, True)
