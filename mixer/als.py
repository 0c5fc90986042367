"""Envoy's Access Log Service (``envoy.service.accesslog.v3.AccessLogService``) on grpc.aio.

Each proxy opens one ``StreamAccessLogs`` stream per logger; its first message names the
proxy (``identifier.node``), the rest carry batches of HTTP or TCP entries. The stream is
registered with raw bytes in and out, and parsed here, so that a malformed message is counted
and dropped while the stream (and mixer) keeps going; a message too large is dropped the same
way. Nothing here blocks: each entry becomes a :class:`~mixer.report.Report` handed to the
sinks (metrics, recent log, graph) on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge

from mixer.peers import PeerInfo
from mixer.report import Report, ReportContext, http_report, tcp_report

__all__ = ["SERVICE_NAME", "AccessLogService", "AlsStats", "ReportSink"]

log = structlog.get_logger(__name__)

SERVICE_NAME = "envoy.service.accesslog.v3.AccessLogService"


class ReportSink(Protocol):
    def record(self, report: Report) -> None: ...


class AlsStats:
    """Mixer's own counters for its access-log intake, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams = Gauge(
            "mixer_als_streams_active", "Open access-log streams.", registry=registry
        )
        self.entries = Counter(
            "mixer_als_entries", "Access-log entries accepted.", ["type"], registry=registry
        )
        self.dropped = Counter(
            "mixer_als_dropped",
            "Access-log messages or entries dropped, by reason.",
            ["reason"],
            registry=registry,
        )
        self.http = self.entries.labels("http")
        self.tcp = self.entries.labels("tcp")


class AccessLogService:
    """The ``StreamAccessLogs`` handler and its registration (a :class:`MixerService`)."""

    name = "als"

    def __init__(
        self,
        sinks: Sequence[ReportSink],
        stats: AlsStats,
        *,
        domain: str = "cluster.local",
        trust_domain: str = "cluster.local",
        max_message_bytes: int = 4 << 20,
        on_node: Callable[[PeerInfo], None] | None = None,
    ) -> None:
        self.sinks = tuple(sinks)
        self.stats = stats
        self.domain = domain
        self.trust_domain = trust_domain
        self.max_message_bytes = max_message_bytes
        self.on_node = on_node

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handler = grpc.stream_unary_rpc_method_handler(self.stream_access_logs)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"StreamAccessLogs": handler}),)
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def stream_access_logs(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        self.stats.streams.inc()
        ctx: ReportContext | None = None
        try:
            async for raw in requests:
                if len(raw) > self.max_message_bytes:
                    self.stats.dropped.labels("too_large").inc()
                    continue
                try:
                    message = als_pb2.StreamAccessLogsMessage.FromString(raw)
                except DecodeError:
                    self.stats.dropped.labels("malformed").inc()
                    continue
                if message.HasField("identifier") and (ctx is None or message.identifier.node.id):
                    ctx = self._context(message.identifier)
                if ctx is None:
                    # Envoy always names itself first; without a reporter nothing can be labelled.
                    self.stats.dropped.labels("no_identifier").inc()
                    continue
                self.ingest(message, ctx)
        finally:
            self.stats.streams.dec()
        # StreamAccessLogsResponse is empty: its encoding is no bytes at all.
        return b""

    def ingest(self, message: als_pb2.StreamAccessLogsMessage, ctx: ReportContext) -> None:
        sinks = self.sinks
        for http in message.http_logs.log_entry:
            try:
                report = http_report(http, ctx)
            except (ValueError, KeyError, OverflowError):
                self.stats.dropped.labels("bad_entry").inc()
                continue
            self.stats.http.inc()
            for sink in sinks:
                sink.record(report)
        for tcp in message.tcp_logs.log_entry:
            try:
                report = tcp_report(tcp, ctx)
            except (ValueError, KeyError, OverflowError):
                self.stats.dropped.labels("bad_entry").inc()
                continue
            self.stats.tcp.inc()
            for sink in sinks:
                sink.record(report)

    def _context(self, identifier: als_pb2.StreamAccessLogsMessage.Identifier) -> ReportContext:
        node = identifier.node
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        reporter = PeerInfo.from_metadata(metadata, node.id)
        if not reporter.known:
            self.stats.dropped.labels("unknown_reporter").inc()
        elif self.on_node is not None:
            self.on_node(reporter)
        log.debug("access log stream", node=node.id, log_name=identifier.log_name)
        return ReportContext(reporter=reporter, domain=self.domain, trust_domain=self.trust_domain)
