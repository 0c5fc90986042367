"""Envoy's Access Log Service (``envoy.service.accesslog.v3.AccessLogService``) on grpc.aio.

Each proxy opens one ``StreamAccessLogs`` stream per logger; its first message names the
proxy (``identifier.node``), the rest carry batches of HTTP or TCP entries. The stream is
registered with raw bytes in and out, and parsed here, so that a malformed message is counted
and dropped while the stream (and mixer) keeps going; a message too large is dropped the same
way. Nothing here blocks: each entry becomes a :class:`~mixer.report.Report` handed to the
sinks (metrics, recent log, graph) on the event loop.

Each stream's node joins the :class:`~mixer.peers.PeerRegistry`. The two sidecars of a call
report it at about the same time, so the first report of a sidecar's peer can arrive before
that peer has named itself: such a report waits (at most ``peer_wait`` seconds, at most
``max_pending`` of them) for its peer to show up, then goes out with the peer ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge

from mixer.peers import PeerInfo, PeerRegistry, node_addresses
from mixer.report import Report, ReportContext, http_report, tcp_report, with_peer

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
        self.unknown_peers = Counter(
            "mixer_als_unknown_peers",
            "Entries whose peer never named itself on an access-log stream.",
            registry=registry,
        )
        self.nodes = Gauge("mixer_als_nodes", "Proxies known by address.", registry=registry)
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
        clock: Callable[[], float],
        peers: PeerRegistry | None = None,
        domain: str = "cluster.local",
        max_message_bytes: int = 4 << 20,
        peer_wait: float = 3.0,
        max_pending: int = 10_000,
    ) -> None:
        self.sinks = tuple(sinks)
        self.stats = stats
        self.clock = clock
        self.peers = peers or PeerRegistry()
        self.domain = domain
        self.max_message_bytes = max_message_bytes
        self.peer_wait = peer_wait
        self._pending: deque[tuple[float, Report]] = deque(maxlen=max_pending)
        self._sweeper: asyncio.Task[None] | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handler = grpc.stream_unary_rpc_method_handler(self.stream_access_logs)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"StreamAccessLogs": handler}),)
        )

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self.sweep(force=True)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.peer_wait / 2))
            self.sweep()

    def sweep(self, *, force: bool = False) -> None:
        """Send the waiting reports whose peer is now known, or that waited long enough."""
        if not self._pending:
            return
        now = self.clock()
        waiting = self._pending
        self._pending = deque(maxlen=waiting.maxlen)
        for deadline, report in waiting:
            peer = self.peers.get(report.peer_address)
            if peer is not None:
                self._emit(with_peer(report, peer))
            elif force or now >= deadline:
                self.stats.unknown_peers.inc()
                self._emit(report)
            else:
                self._pending.append((deadline, report))

    def _emit(self, report: Report) -> None:
        for sink in self.sinks:
            sink.record(report)

    def _hold(self, report: Report) -> None:
        pending = self._pending
        if len(pending) == pending.maxlen:
            # full: the oldest goes out now with its peer unknown, rather than being lost
            _, oldest = pending.popleft()
            self.stats.unknown_peers.inc()
            self._emit(oldest)
        pending.append((self.clock() + self.peer_wait, report))

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
        for entries, build, counter in (
            (message.http_logs.log_entry, http_report, self.stats.http),
            (message.tcp_logs.log_entry, tcp_report, self.stats.tcp),
        ):
            for entry in entries:
                try:
                    report = build(entry, ctx)
                except (ValueError, KeyError, OverflowError):
                    self.stats.dropped.labels("bad_entry").inc()
                    continue
                counter.inc()
                if report.peer_address:
                    self._hold(report)
                else:
                    self._emit(report)

    def _context(self, identifier: als_pb2.StreamAccessLogsMessage.Identifier) -> ReportContext:
        node = identifier.node
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        reporter = PeerInfo.from_metadata(metadata, node.id)
        if reporter.known and self.peers.add(reporter, node_addresses(node.id, metadata)):
            self.stats.nodes.set(len(self.peers))
            self.sweep()
        log.debug("access log stream", node=node.id, log_name=identifier.log_name)
        return ReportContext(reporter=reporter, resolve=self.peers.get, domain=self.domain)
