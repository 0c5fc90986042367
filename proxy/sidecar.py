"""The whole sidecar: proxy runtime, admin interface and (with ADS) the xDS client, with
one start and one graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from proxy.admin import AdminServer
from proxy.config.model import Bootstrap
from proxy.server import ProxyServer

if TYPE_CHECKING:
    from proxy.xds_core import XdsCore

__all__ = ["Sidecar"]

log = structlog.get_logger(__name__)


class Sidecar:
    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        loop: asyncio.AbstractEventLoop,
        drain_time: float = 5.0,
        inbound_drain: bool = False,
        exit_on_zero: bool = True,
    ) -> None:
        self.server = ProxyServer(bootstrap, loop=loop)
        self.server.drain_timeout = drain_time
        self.drain_time = drain_time
        self.inbound_drain = inbound_drain
        self.exit_on_zero = exit_on_zero
        self.on_quit: Callable[[], None] = lambda: None
        self.admin: AdminServer | None = None
        self.xds: XdsCore | None = None
        if bootstrap.admin is not None and bootstrap.admin.address is not None:
            self.admin = AdminServer(self.server, bootstrap.admin.address, on_quit=self._quit)

    def _quit(self) -> None:
        log.info("quit requested on the admin port")
        self.on_quit()

    async def start(self) -> None:
        # The admin port first, as Envoy opens it: a static listener may route to it (Istio's
        # readiness port does), and must not find it closed while the rest starts.
        if self.admin is not None:
            await self.admin.start()
        try:
            await self.server.start()
        except BaseException:
            if self.admin is not None:
                await self.admin.stop()
            raise
        dynamic = self.server.bootstrap.dynamic_resources
        if dynamic is not None and dynamic.ads_config is not None:
            from proxy.xds_client import ads_client  # gRPC is only loaded for ADS bootstraps

            self.xds = ads_client(self.server)
            self.xds.start()
        log.info("proxy started", node=self.server.bootstrap.node.id or None)

    async def stop(self) -> None:
        if self.xds is not None:
            await self.xds.stop()
        log.info("draining", seconds=self.drain_time, inbound_only=self.inbound_drain)
        await self.server.drain(
            self.drain_time, inbound_only=self.inbound_drain, exit_on_zero=self.exit_on_zero
        )
        await self.server.shutdown()
        if self.admin is not None:
            await self.admin.stop()
        log.info("proxy stopped")
