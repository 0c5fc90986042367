"""Mixer's telemetry half, wired: the access-log intake feeding Istio's metrics, the recent log
and the service graph; the Zipkin span store; and the three HTTP sites that show them
(metrics 15014, Zipkin 9411, dashboard 20001).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from mixer.als import AccessLogService, AlsStats
from mixer.attributes import attributes
from mixer.graph import Graph
from mixer.logstore import RecentLog
from mixer.metrics import IstioMetrics
from mixer.policy import ConfigWatch, Policies
from mixer.report import Report
from mixer.server import HttpSite, MixerSettings
from mixer.traces import TraceStore
from mixer.zipkin_api import ZipkinStats, zipkin_app

__all__ = ["Telemetry", "metrics_app"]


def metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats/prometheus", metrics)
    app.router.add_get("/ready", ready)
    return app


class Telemetry:
    """The telemetry service (a :class:`~mixer.server.MixerService`: it serves the ALS) and
    the stores its sites read. Every report goes through the reporter's Telemetry policy:
    metrics overrides, then the access-log rules for the recent log; the graph sees all."""

    name = "telemetry"

    def __init__(
        self, settings: MixerSettings, *, registry: CollectorRegistry, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.metrics = IstioMetrics()
        registry.register(self.metrics)
        self.recent = RecentLog(settings.max_log_entries, settings.log_retention, clock)
        self.graph = Graph(clock)
        self.traces = TraceStore(settings.max_spans, settings.span_retention, clock)
        mesh = settings.mesh
        self.policies = Policies(
            root_namespace=mesh.root_namespace,
            default_metrics_providers=mesh.default_providers.get("metrics", ("prometheus",)),
        )
        self.watch = (
            ConfigWatch(Path(settings.config_dir), self.policies) if settings.config_dir else None
        )
        # Istio's components each export their build; the mesh dashboard lists them.
        build = Gauge("istio_build", "Build of each mesh component.", ["component", "tag"],
                      registry=registry)  # fmt: skip
        build.labels("mixer", _version()).set(1)
        self.als_stats = AlsStats(registry)
        self.zipkin_stats = ZipkinStats(registry)
        self.als = AccessLogService(
            (self,),
            self.als_stats,
            clock=time.monotonic,
            max_message_bytes=settings.max_message_bytes,
            peer_wait=settings.peer_wait,
        )

    # -- MixerService -------------------------------------------------------------------------
    def add_to_server(self, server: grpc.aio.Server) -> None:
        self.als.add_to_server(server)

    async def start(self) -> None:
        if self.watch is not None:
            await self.watch.start()
        await self.als.start()

    async def stop(self) -> None:
        await self.als.stop()
        if self.watch is not None:
            await self.watch.stop()

    # -- ReportSink ---------------------------------------------------------------------------
    def record(self, report: Report) -> None:
        policy = self.policies.for_report(report)
        self.metrics.record(report, policy.metrics)
        logging = policy.logging
        if not logging.configured or logging.keeps(attributes(report)):
            self.recent.record(report)
        self.graph.record(report)

    def sites(self, settings: MixerSettings) -> list[HttpSite]:
        from mixer.dashboard import dashboard_app

        return [
            HttpSite("metrics", metrics_app(self.registry), settings.metrics_address),
            HttpSite(
                "zipkin",
                zipkin_app(self.traces, self.zipkin_stats),
                settings.zipkin_address,
            ),
            HttpSite(
                "dashboard",
                dashboard_app(self, prometheus_url=settings.prometheus_url),
                settings.dashboard_address,
            ),
        ]


def _version() -> str:
    try:
        return metadata.version("pymesh")
    except metadata.PackageNotFoundError:
        return "dev"
