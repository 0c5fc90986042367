"""HTTP filters: the per-request hooks, their statuses, and what a filter sees of its stream.

A filter has two halves, as in Envoy: a *factory* built once per configuration snapshot from
the filter's translated config, and a *filter instance* created per request by calling that
factory. Both come from one registration object per filter,
:class:`proxy.config.translate.FilterEntry` (type URL, config translation, per-route config and
factory together).

Hooks run in chain order on the way in (``decode_*``) and in reverse order on the way out
(``encode_*``); the router is the last filter of every chain. Each hook returns a status that
tells the stream whether to go on:

* ``CONTINUE`` — the next filter runs.
* ``STOP_ITERATION`` (headers) — later filters wait until this one calls
  ``continue_decoding()`` (``continue_encoding()``); data that arrives meanwhile is still
  offered to this filter's data hook, as in Envoy.
* ``STOP_ALL_ITERATION_AND_BUFFER`` (headers) — the same, but the stream buffers the body and
  trailers without showing them to this filter: the right choice for a filter that waits on
  something (a fault delay, an authorization call).
* ``STOP_ITERATION_AND_BUFFER`` (data) — keep this data buffered here and go on buffering;
  ``STOP_ITERATION_NO_BUFFER`` — this filter took the data.

A complete user filter::

    class AddHeader(HttpFilter):
        def __init__(self, value: bytes) -> None:
            self.value = value

        def decode_headers(self, cb, headers, end_stream):
            headers.append((b"x-added", self.value))
            return FilterHeadersStatus.CONTINUE

    registry.register(FilterEntry("example.add_header", Struct, translate,
                                  factory=lambda config, ctx: lambda: AddHeader(b"yes")))
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from proxy.config.model_route import Route, RouteConfiguration, VirtualHost
    from proxy.http.stream_info import StreamInfo
    from proxy.istio.telemetry import IstioTelemetry
    from proxy.runtime import RuntimeSnapshot
    from proxy.stats import Counter, StatsStore

__all__ = [
    "ClusterHosts",
    "DownstreamCallbacks",
    "FilterContext",
    "FilterDataStatus",
    "FilterFactory",
    "FilterHeadersStatus",
    "FilterTrailersStatus",
    "Headers",
    "HttpFilter",
    "Timers",
    "WatermarkListener",
]

Headers = list[tuple[bytes, bytes]]


class FilterHeadersStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1
    STOP_ALL_ITERATION_AND_BUFFER = 2


class FilterDataStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION_AND_BUFFER = 1
    STOP_ITERATION_NO_BUFFER = 2


class FilterTrailersStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1


class Timers(Protocol):
    """The clock and timers a stream runs on (the event loop, or a fake clock in tests)."""

    def time(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> Any: ...
    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> Any: ...


class WatermarkListener(Protocol):
    def on_downstream_watermark(self, above: bool) -> None: ...


class DownstreamCallbacks(Protocol):
    """What the filters and the router see of their stream (Envoy's
    ``StreamDecoderFilterCallbacks`` and ``StreamEncoderFilterCallbacks`` in one): never the
    connection, its transport or its codec."""

    stream_info: StreamInfo
    request_headers: Headers
    method: bytes
    path: bytes
    authority: bytes
    route: Route | None
    vhost: VirtualHost | None
    route_config: RouteConfiguration | None
    runtime: RuntimeSnapshot
    timers: Timers
    response_started: bool
    # The upgrade type the stream was admitted with (``websocket``, ``connect``), else None.
    upgrade: str | None

    # -- iteration --------------------------------------------------------------------------
    def continue_decoding(self) -> None: ...
    def continue_encoding(self) -> None: ...

    # -- answering: through the encoder filters, then the codec ----------------------------
    def encode_headers(self, status: int, headers: Headers, end_stream: bool) -> None: ...
    def encode_data(self, data: bytes, end_stream: bool) -> None: ...
    def encode_trailers(self, trailers: Headers) -> None: ...
    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        flag: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        details: str = "",
        grpc_status: int | None = None,
    ) -> None: ...
    def set_response_status(self, status: int) -> None:
        """From an ``encode_headers`` hook: the status that goes out instead."""

    # -- the connection, through the stream --------------------------------------------------
    def read_disable(self, disable: bool) -> None:
        """Counted: every ``True`` needs its ``False``. The stream undoes what is left when
        it ends."""

    def flush(self) -> None:
        """Write what the stream encoded so far (responses are gathered per event batch)."""

    def reset(self) -> None:
        """Abort the exchange without a clean end."""

    def set_downstream_watermark_listener(self, listener: WatermarkListener | None) -> None:
        """Be told when the client's write buffer fills and drains (the router then stops
        and resumes reading upstream)."""

    def arm_deadline(self, when: float, callback: Callable[[], None]) -> None: ...
    def disarm_deadline(self) -> None: ...
    def expand(self, value: bytes) -> bytes:
        """A header value with ``%COMMAND%`` substitutions rendered for this request."""

    # -- per route and per request ---------------------------------------------------------
    def per_route_config(self, filter_name: str) -> object | None: ...
    def clear_route_cache(self) -> None:
        """Match the route again: a filter changed what routing reads (headers, metadata)."""

    def add_response_flag(self, flag: str) -> None: ...
    def counter(self, name: str) -> Counter: ...
    def on_complete(self, callback: Callable[[], None]) -> None: ...


class HttpFilter:
    """Base class of per-request filter instances; override the hooks you need. The stream
    skips the encode hooks of a filter that overrides none of them, and the decode hooks of
    one that overrides none of those, so a hook nobody wrote costs nothing."""

    __slots__ = ()

    DECODES: ClassVar[bool] = False
    ENCODES: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        base = HttpFilter
        cls.DECODES = any(
            getattr(cls, name) is not getattr(base, name)
            for name in ("decode_headers", "decode_data", "decode_trailers")
        )
        cls.ENCODES = any(
            getattr(cls, name) is not getattr(base, name)
            for name in ("encode_headers", "encode_data", "encode_trailers")
        )

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        return FilterHeadersStatus.CONTINUE

    def decode_data(
        self, cb: DownstreamCallbacks, data: bytes, end_stream: bool
    ) -> FilterDataStatus:
        return FilterDataStatus.CONTINUE

    def decode_trailers(self, cb: DownstreamCallbacks, trailers: Headers) -> FilterTrailersStatus:
        return FilterTrailersStatus.CONTINUE

    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        """May edit ``headers`` in place, and change the status with
        ``cb.set_response_status``."""
        return FilterHeadersStatus.CONTINUE

    def encode_data(
        self, cb: DownstreamCallbacks, data: bytes, end_stream: bool
    ) -> FilterDataStatus:
        return FilterDataStatus.CONTINUE

    def encode_trailers(self, cb: DownstreamCallbacks, trailers: Headers) -> FilterTrailersStatus:
        return FilterTrailersStatus.CONTINUE

    def on_destroy(self) -> None:
        """The stream ended (completed or reset): cancel timers and calls in flight."""


class ClusterHosts(Protocol):
    """How a filter that calls a service of its own (the rate limit service) reaches it: the
    ``host:port`` the named cluster's load balancer picks, or None (no such cluster, no
    healthy host)."""

    def pick_host(self, cluster: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What a filter factory may hold on to: the proxy's clock, RNG and stats, its clusters
    and the node's service cluster (``source_cluster`` in rate limit descriptors)."""

    loop: asyncio.AbstractEventLoop
    rng: random.Random
    clock: Callable[[], float]
    stats: StatsStore
    stat_prefix: str
    # The listener's per_connection_buffer_limit_bytes: what a filter may buffer per stream.
    buffer_limit: int = 1024 * 1024
    clusters: ClusterHosts | None = None
    local_cluster: str = ""
    # The proxy's Istio telemetry (its node's peer metadata and metrics), made on first use.
    istio: Callable[[], IstioTelemetry] | None = None


# (translated config, context) -> per-request instance maker
FilterFactory = Callable[[object, FilterContext], Callable[[], HttpFilter]]
