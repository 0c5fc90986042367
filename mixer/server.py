"""Mixer, wired: one gRPC server for every gRPC service (Envoy's Access Log Service, the Rate
Limit Service, ...) and one HTTP server per Istio port (metrics 15014, Zipkin API 9411,
dashboard 20001).

A gRPC service is anything with the small :class:`MixerService` shape: it adds its servicer to
the shared ``grpc.aio.Server`` and has a start/stop for what it owns (a watcher, a Redis
pool). Adding one is one call, :meth:`Mixer.add_service`, before :meth:`Mixer.start`;
:func:`build_mixer` is where the built-in services are added.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import grpc
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from pilot.model.mesh import MeshConfig
from pymesh.errors import ControlPlaneError

if TYPE_CHECKING:
    from mixer.telemetry import Telemetry

__all__ = [
    "HttpSite",
    "Mixer",
    "MixerService",
    "MixerSettings",
    "build_mixer",
    "split_address",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class MixerSettings:
    """Where mixer listens (``host:port``; port 0 picks one) and how much it keeps."""

    grpc_address: str = "127.0.0.1:9091"
    metrics_address: str = "127.0.0.1:15014"
    zipkin_address: str = "127.0.0.1:9411"
    dashboard_address: str = "127.0.0.1:20001"
    #: the most spans the trace store holds, and for how long (seconds)
    max_spans: int = 200_000
    span_retention: float = 3600.0
    #: the most access-log entries the recent log holds, and for how long (seconds)
    max_log_entries: int = 50_000
    log_retention: float = 3600.0
    #: a single ALS message larger than this is counted and dropped, in bytes
    max_message_bytes: int = 4 << 20
    #: how long a report waits for its peer's proxy to name itself (seconds)
    peer_wait: float = 3.0
    #: the Prometheus that scrapes the mesh, linked from the dashboard ("" = none)
    prometheus_url: str = ""
    #: the directory pilot serves, for the Telemetry resources ("" = none: Istio's defaults)
    config_dir: str = ""
    #: mesh-wide settings (root namespace, default providers, trust domain)
    mesh: MeshConfig = field(default_factory=MeshConfig)


class MixerService(Protocol):
    """One gRPC service served on mixer's gRPC port."""

    @property
    def name(self) -> str: ...

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Add the servicer(s), e.g. ``add_RateLimitServiceServicer_to_server(s, server)``."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ControlPlaneError(f"{address!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


class HttpSite:
    """One aiohttp application on one address; :attr:`port` is the bound port."""

    def __init__(self, name: str, app: web.Application, address: str) -> None:
        self.name = name
        self.app = app
        self.address = address
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        host, port = split_address(self.address)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ControlPlaneError(
                f"{self.name}: cannot listen on {self.address}: {exc}"
            ) from None
        self._runner = runner
        server = site._server  # aiohttp exposes no public accessor for the bound socket
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Mixer:
    """The process: gRPC services plus HTTP sites, started and stopped together."""

    def __init__(self, settings: MixerSettings, *, registry: CollectorRegistry) -> None:
        self.settings = settings
        #: every Prometheus collector mixer exposes on its metrics port
        self.registry = registry
        self.services: list[MixerService] = []
        self.sites: list[HttpSite] = []
        self.grpc_port = 0
        self.telemetry: Telemetry | None = None
        self._grpc: grpc.aio.Server | None = None

    def add_service(self, service: MixerService) -> None:
        if self._grpc is not None:
            raise RuntimeError(f"{service.name}: mixer is already serving")
        self.services.append(service)

    def add_site(self, site: HttpSite) -> None:
        if self._grpc is not None:
            raise RuntimeError(f"{site.name}: mixer is already serving")
        self.sites.append(site)

    def site(self, name: str) -> HttpSite:
        return next(s for s in self.sites if s.name == name)

    async def start(self) -> None:
        try:
            for service in self.services:
                await service.start()
            server = grpc.aio.server(
                options=[
                    # Larger messages reach the services, which count and drop them; only
                    # this bound makes gRPC itself fail the stream.
                    (
                        "grpc.max_receive_message_length",
                        max(64 << 20, 2 * self.settings.max_message_bytes),
                    ),
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ]
            )
            for service in self.services:
                service.add_to_server(server)
            try:
                port = server.add_insecure_port(self.settings.grpc_address)
            except RuntimeError as exc:
                raise ControlPlaneError(
                    f"mixer gRPC: cannot listen on {self.settings.grpc_address}: {exc}"
                ) from None
            await server.start()
            self._grpc = server
            self.grpc_port = int(port)
            for site in self.sites:
                await site.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "mixer ready",
            grpc_port=self.grpc_port,
            services=[s.name for s in self.services],
            **{f"{s.name}_port": s.port for s in self.sites},
        )

    async def stop(self, grace: float = 1.0) -> None:
        for site in self.sites:
            await site.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        for service in reversed(self.services):
            await service.stop()


def build_mixer(
    settings: MixerSettings,
    *,
    clock: Callable[[], float] = time.time,
    extra_services: Sequence[MixerService] = (),
) -> Mixer:
    """Mixer with its built-in telemetry services and sites, plus ``extra_services``."""
    from mixer.telemetry import Telemetry

    registry = CollectorRegistry(auto_describe=True)
    mixer = Mixer(settings, registry=registry)
    telemetry = Telemetry(settings, registry=registry, clock=clock)
    mixer.add_service(telemetry)
    for service in extra_services:
        mixer.add_service(service)
    for site in telemetry.sites(settings):
        mixer.add_site(site)
    mixer.telemetry = telemetry
    return mixer
