"""Request mirroring (Envoy's shadowing): a copy of a request whose answer is discarded.

A shadow never touches the caller: it has no reference to the stream it copies, its failures
are only counted, and its response is read and dropped.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.codec import Response

if TYPE_CHECKING:
    from proxy.upstream.cluster import RuntimeCluster
    from proxy.upstream.connection import UpstreamConnection
    from proxy.upstream.host import Host

__all__ = ["ShadowRequest", "shadow_authority"]


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
        self._conn: UpstreamConnection | None = None
        self._done = False
        self._timer: asyncio.TimerHandle | None = None

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
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        host = cluster.choose_host(None, None, None)
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
            shadow._timer = loop.call_later(timeout, shadow._on_timeout)
        result = cluster.pool_for(host).acquire(shadow)
        if isinstance(result, str):
            shadow._finish()
        elif result is not None:
            shadow.on_pool_ready(result)

    # PoolWaiter
    def on_pool_ready(self, conn: UpstreamConnection) -> None:
        if self._done:
            self._cluster.pool_for(self._host).release(conn)
            return
        self._conn = conn
        conn.attach(self)
        self._cluster.stats.upstream_rq_total.value += 1
        method, path, headers = self._head
        conn.write_request_head(method, path, headers, False)
        if self._body:
            conn.write(self._body)

    def on_pool_failure(self, reason: str, local_failure: str) -> None:
        self._finish()

    # UpstreamSink
    def on_upstream_response(self, response: Response) -> None:
        self._cluster.stats.response(response.status)

    def on_upstream_data(self, data: bytes) -> None:
        pass

    def on_upstream_end(self) -> None:
        self._conn = None
        self._finish()

    def on_upstream_reset(self, reason: str) -> None:
        self._conn = None
        self._finish()

    def on_upstream_write_paused(self, paused: bool) -> None:
        pass

    def on_upstream_flush(self) -> None:
        pass

    def _on_timeout(self) -> None:
        self._timer = None
        self._cluster.stats.upstream_rq_timeout.value += 1
        if self._conn is not None:
            self._conn.detach_and_close()
            self._conn = None
        else:
            self._cluster.pool_for(self._host).cancel(self)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._cluster.limits.release_request()
