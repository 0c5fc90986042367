"""The gRPC access loggers a snapshot's listeners use, and the streams behind them.

As in Envoy, loggers with the same service configuration share one stream, and the stream
outlives the snapshot that made it: a push that keeps a logger's config keeps its stream (no
reconnect, no lost batch). :class:`GrpcLogStreams` owns them all for the proxy's lifetime.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from envoy.service.accesslog.v3 import als_pb2

from proxy.access_log import passes_filter
from proxy.als.entry import http_entry, identifier, node_proto, tcp_entry
from proxy.als.facts import TcpFacts
from proxy.als.stream import AlsStream, StreamSettings
from proxy.stats import StatsStore
from pymesh.errors import UnsupportedError

if TYPE_CHECKING:
    from envoy.config.core.v3 import base_pb2

    from proxy.config.model_bootstrap import Node
    from proxy.config.model_http import AccessLog, GrpcAccessLogService
    from proxy.http.stream_info import StreamInfo

__all__ = ["GrpcAccessLogger", "GrpcLogStreams", "GrpcTcpAccessLogger"]

Headers = list[tuple[bytes, bytes]]
Pick = Callable[[str], "str | None"]


def _wall_offset() -> float:
    # Loop times are CLOCK_MONOTONIC (asyncio's and uvloop's alike).
    return time.time() - time.monotonic()


class GrpcLogStreams:
    """Every access-log stream of one proxy, by service configuration."""

    def __init__(
        self,
        node: Node,
        pick: Pick,
        *,
        loop: asyncio.AbstractEventLoop,
        stats: StatsStore,
        rng: random.Random,
        settings: StreamSettings | None = None,
    ) -> None:
        self._node = node
        self._node_proto: base_pb2.Node | None = None
        self._pick = pick
        self._loop = loop
        self._stats = stats
        self._rng = rng
        self._settings = settings or StreamSettings()
        self._streams: dict[tuple[object, ...], AlsStream] = {}

    def stream(self, service: GrpcAccessLogService) -> AlsStream:
        key = (
            service.log_name,
            service.cluster_name,
            service.authority,
            service.tcp,
            service.buffer_size_bytes,
            service.buffer_flush_interval,
        )
        found = self._streams.get(key)
        if found is not None:
            return found
        if self._node_proto is None:
            self._node_proto = node_proto(self._node)
        first = als_pb2.StreamAccessLogsMessage(
            identifier=identifier(self._node_proto, service.log_name)
        ).SerializeToString()
        cluster = service.cluster_name
        settings = StreamSettings(
            buffer_size_bytes=service.buffer_size_bytes,
            buffer_flush_interval=service.buffer_flush_interval,
            max_pending_bytes=self._settings.max_pending_bytes,
            backoff_base=self._settings.backoff_base,
            backoff_max=self._settings.backoff_max,
            drain_timeout=self._settings.drain_timeout,
        )
        stream = self._streams[key] = AlsStream(
            identifier=first,
            pick=lambda: self._pick(cluster),
            tcp=service.tcp,
            loop=self._loop,
            stats=self._stats,
            settings=settings,
            rng=self._rng,
            authority=service.authority,
        )
        return stream

    def http_logger(self, config: AccessLog, identity: tuple[str, ...] = ()) -> GrpcAccessLogger:
        assert config.grpc is not None
        if config.grpc.tcp:
            raise UnsupportedError(
                f"access logger '{config.name}': envoy.access_loggers.tcp_grpc logs TCP "
                "connections, not HTTP requests"
            )
        return GrpcAccessLogger(config, self.stream(config.grpc), identity)

    def tcp_logger(self, config: AccessLog, identity: tuple[str, ...] = ()) -> GrpcTcpAccessLogger:
        assert config.grpc is not None
        if not config.grpc.tcp:
            raise UnsupportedError(
                f"access logger '{config.name}': a TCP proxy logs with "
                "envoy.access_loggers.tcp_grpc in pymesh"
            )
        if config.filter is not None:
            raise UnsupportedError(
                f"access logger '{config.name}': filters on TCP access logs are not supported "
                "by pymesh"
            )
        return GrpcTcpAccessLogger(config.grpc, self.stream(config.grpc), identity)

    async def close(self) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        await asyncio.gather(*(s.close() for s in streams))


class GrpcAccessLogger:
    """``envoy.access_loggers.http_grpc``: one entry per finished request."""

    __slots__ = ("_filter", "_identity", "_service", "_stream")

    def __init__(self, config: AccessLog, stream: AlsStream, identity: tuple[str, ...]) -> None:
        assert config.grpc is not None
        self._filter = config.filter
        self._service = config.grpc
        self._stream = stream
        self._identity = identity  # the URI SANs of the listener's own certificate

    def log(self, info: StreamInfo, req: Headers, resp: Headers | None) -> None:
        if self._filter is not None and not passes_filter(self._filter, info, req):
            return
        entry = http_entry(
            info,
            req,
            resp,
            self._service,
            _wall_offset(),
            info.response_trailers,
            local_uri_sans=self._identity,
        )
        self._stream.log(entry.SerializeToString())


class GrpcTcpAccessLogger:
    """``envoy.access_loggers.tcp_grpc``: one entry per closed connection."""

    __slots__ = ("_identity", "_service", "_stream")

    def __init__(
        self, service: GrpcAccessLogService, stream: AlsStream, identity: tuple[str, ...]
    ) -> None:
        self._service = service
        self._stream = stream
        self._identity = identity

    def log_connection(self, facts: TcpFacts) -> None:
        entry = tcp_entry(
            facts,
            _wall_offset(),
            local_uri_sans=self._identity,
            custom_tags=self._service.custom_tags,
        )
        self._stream.log(entry.SerializeToString())
