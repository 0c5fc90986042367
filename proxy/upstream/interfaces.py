"""The seams of the upstream side, as small Protocols and enums.

``proxy/upstream`` imports nothing from ``proxy/http``: the router reaches a host through
these types only.

* :class:`LbContext` — what a load balancer may know about the request (Envoy's
  ``LoadBalancerContext``): the hash key, the original destination, the request headers and
  the hosts a retry wants to avoid.
* :class:`PoolCallbacks` — told when a connection is ready for the request, or why none will
  be (:class:`PoolFailure`).
* :class:`RequestEncoder` — one request's way out on an upstream connection: headers, data and
  trailers with ``end_stream``, read-disable and reset. An HTTP/2 pool hands out one per
  stream; the HTTP/1.1 pool hands out the connection itself.
* :class:`UpstreamCallbacks` — where that request's response goes (Envoy's
  ``ResponseDecoder`` plus stream callbacks): headers, data, trailers, a reset with its
  :class:`ResetReason`, and the write-buffer watermarks.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.codec import Response

__all__ = [
    "Headers",
    "LbContext",
    "PoolCallbacks",
    "PoolFailure",
    "PoolWaiter",
    "RequestEncoder",
    "ResetReason",
    "UpstreamCallbacks",
    "UpstreamPool",
]

Headers = list[tuple[bytes, bytes]]


class ResetReason(enum.StrEnum):
    """Why an upstream exchange ended without a complete response; the values are the words
    Envoy puts in its local replies (``reset reason: connection termination``)."""

    CONNECTION_FAILURE = "remote connection failure"
    CONNECTION_TIMEOUT = "connection timeout"
    CONNECTION_TERMINATION = "connection termination"
    PROTOCOL_ERROR = "protocol error"
    OVERFLOW = "overflow"
    LOCAL_RESET = "local reset"
    REMOTE_RESET = "remote reset"
    REMOTE_REFUSED_STREAM = "remote refused stream reset"
    POOL_CLOSED = "pool closed"

    @property
    def detail(self) -> str:
        """As Envoy writes it into response code details (no spaces)."""
        return self.value.replace(" ", "_")


class PoolFailure(enum.Enum):
    """Why a pool will not hand out a connection."""

    OVERFLOW = "overflow"  # circuit breaker: max_pending_requests
    CONNECTION_FAILURE = "remote connection failure"
    TIMEOUT = "connection timeout"
    CLOSED = "pool closed"

    @property
    def reset_reason(self) -> ResetReason:
        return _POOL_RESET[self]


_POOL_RESET = {
    PoolFailure.OVERFLOW: ResetReason.OVERFLOW,
    PoolFailure.CONNECTION_FAILURE: ResetReason.CONNECTION_FAILURE,
    PoolFailure.TIMEOUT: ResetReason.CONNECTION_TIMEOUT,
    PoolFailure.CLOSED: ResetReason.POOL_CLOSED,
}


class LbContext(Protocol):
    """What a cluster's host selection may read (the router implements it, no allocation)."""

    @property
    def hash_key(self) -> int | None: ...
    @property
    def original_destination(self) -> tuple[str, int] | None: ...
    @property
    def downstream_headers(self) -> Headers | None: ...
    @property
    def excluded_hosts(self) -> AbstractSet[object] | None: ...
    @property
    def host_selection_attempts(self) -> int: ...


class RequestEncoder(Protocol):
    """One request's way out. ``end_stream`` marks the last frame of the request;
    ``local_address`` is the connection's own address (``%UPSTREAM_LOCAL_ADDRESS%``);
    ``chunks_bodies`` is True when a body without a content-length goes chunked (HTTP/1.1),
    False when the protocol frames it anyway (HTTP/2)."""

    local_address: str | None
    chunks_bodies: bool

    def encode_headers(
        self, method: bytes, path: bytes, headers: Headers, end_stream: bool
    ) -> None: ...
    def encode_data(self, data: bytes, end_stream: bool) -> None: ...
    def encode_trailers(self, trailers: Headers) -> None: ...
    def read_disable(self, disable: bool) -> None: ...
    def reset(self) -> None:
        """Give the exchange up: the response, if any still comes, is not wanted."""

    def discard_response(self) -> None:
        """Give the exchange up but let the rest of the response be read and dropped, so the
        connection can be reused (a retry on a response that ends with its head)."""


class UpstreamCallbacks(Protocol):
    """Where a response goes. Every event of one read arrives before ``on_upstream_batch_end``,
    so the downstream side can write once per read."""

    def on_upstream_headers(self, response: Response, end_stream: bool) -> None: ...
    def on_upstream_data(self, data: bytes, end_stream: bool) -> None: ...
    def on_upstream_trailers(self, trailers: Headers) -> None: ...
    def on_upstream_reset(self, reason: ResetReason) -> None: ...
    def on_upstream_watermark(self, above: bool) -> None:
        """The connection's write buffer went above (or back below) its high-water mark."""

    def on_upstream_batch_end(self) -> None: ...


class PoolCallbacks(Protocol):
    def on_pool_ready(self, encoder: RequestEncoder, local_address: str | None) -> None: ...
    def on_pool_failure(self, failure: PoolFailure) -> None: ...


class PoolWaiter(UpstreamCallbacks, PoolCallbacks, Protocol):
    """A request waiting for a connection: the pool attaches it as the connection's
    :class:`UpstreamCallbacks` before ``on_pool_ready``."""


class UpstreamPool(Protocol):
    """One host's connections (HTTP/1.1 or HTTP/2): what the router and the cluster use."""

    @property
    def active(self) -> Collection[object]: ...
    def new_stream(self, waiter: PoolWaiter) -> RequestEncoder | PoolFailure | None:
        """An encoder already attached to ``waiter`` (its ``local_address`` says where from);
        None when the waiter was queued; or why there will be none."""

    def cancel(self, waiter: PoolWaiter) -> None: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...
