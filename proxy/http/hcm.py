"""The HTTP connection manager's configuration, compiled once per snapshot.

:class:`HcmRuntime` is what every stream of a listener's filter chain reads: the filter
factories (the router last), where the route table comes from, stats, access loggers and the
header rules. A connection keeps the one it was accepted with; the route table and clusters
come from the runtime snapshot each stream captures when it starts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.codec.headers import HOP_BY_HOP
from proxy.http.util import DateCache, RequestIdGenerator

if TYPE_CHECKING:
    from proxy.access_log import RequestLogger
    from proxy.config.model_http import HttpConnectionManager
    from proxy.http.filter import HttpFilter
    from proxy.routing.matcher import RouteTable
    from proxy.runtime import RuntimeHolder, RuntimeSnapshot
    from proxy.stats import HttpStats
    from proxy.tracing.tracer import HttpTracer

__all__ = ["HcmRuntime"]


class HcmRuntime:
    """Everything a request on this connection manager needs, resolved once per snapshot."""

    __slots__ = (
        "_inline_table",
        "_rds_name",
        "accept_http_10",
        "access_loggers",
        "allow_absolute_url",
        "buffer_limit",
        "date",
        "filter_factories",
        "generate_request_id",
        "idle_timeout",
        "internal_ranges",
        "max_header_bytes",
        "max_headers",
        "max_stream_duration",
        "model",
        "request_headers_timeout",
        "request_id",
        "response_drop",
        "rng",
        "runtime",
        "server_name",
        "server_transformation",
        "skip_xff_append",
        "stats",
        "stream_idle_timeout",
        "tracer",
        "use_remote_address",
        "xff_num_trusted_hops",
    )

    def __init__(
        self,
        model: HttpConnectionManager,
        *,
        stats: HttpStats,
        runtime: RuntimeHolder,
        inline_table: RouteTable | None,
        filter_factories: tuple[Callable[[], HttpFilter], ...],
        access_loggers: tuple[RequestLogger, ...],
        rng: random.Random,
        date: DateCache,
        buffer_limit: int,
        tracer: HttpTracer | None = None,
    ) -> None:
        self.model = model
        self.tracer = tracer
        self.stats = stats
        self.runtime = runtime
        self._inline_table = inline_table
        self._rds_name = model.rds.route_config_name if model.rds is not None else ""
        # In chain order; the router's factory is the last one.
        self.filter_factories = filter_factories
        self.access_loggers = access_loggers
        self.rng = rng
        self.date = date
        self.request_id = RequestIdGenerator(rng)
        self.buffer_limit = buffer_limit
        self.server_name = model.server_name
        self.server_transformation = model.server_header_transformation.value
        # Dropped from every response in one pass (see ActiveStream._write_headers).
        drop = {*HOP_BY_HOP, b"date"}
        if self.server_transformation == "OVERWRITE":
            drop.add(b"server")
        self.response_drop = frozenset(drop)
        self.generate_request_id = model.generate_request_id
        self.use_remote_address = model.use_remote_address
        self.skip_xff_append = model.skip_xff_append
        self.xff_num_trusted_hops = model.xff_num_trusted_hops
        internal = model.internal_address_config
        self.internal_ranges = internal.cidr_ranges if internal is not None else ()
        self.accept_http_10 = model.http_protocol_options.accept_http_10
        self.allow_absolute_url = model.http_protocol_options.allow_absolute_url
        self.max_header_bytes = model.max_request_headers_kb * 1024
        self.max_headers = model.common_http_protocol_options.max_headers_count
        self.request_headers_timeout = model.request_headers_timeout
        self.idle_timeout = model.common_http_protocol_options.idle_timeout
        self.stream_idle_timeout = model.stream_idle_timeout
        self.max_stream_duration = model.common_http_protocol_options.max_stream_duration

    def route_table(self, runtime: RuntimeSnapshot) -> RouteTable | None:
        """The inline route table, or the RDS one from the stream's snapshot."""
        table = self._inline_table
        if table is not None:
            return table
        return runtime.route_tables.get(self._rds_name)
