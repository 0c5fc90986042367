"""Pilot, wired: the watched config directory, the PushContext built from it and the connected
proxies, the ADS server that pushes it, and the admin API that changes it.

Everything runs on one event loop. The directory watcher's lock serialises every change (a
poll, an apply, a delete), so the running configuration always comes from one whole read of
the directory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from auth.server import CaOptions, CaServer, open_ca, serving_names
from pilot.generate import generate, proxyless
from pilot.generate.classes import proxy_class
from pilot.generate.incremental import affected_types
from pilot.model import MeshConfig, ProxyNode, PushContext
from pilot.registry import Registry
from pilot.registry.known import KnownProxies
from pilot.sources import (
    Action,
    Change,
    ConfigDirectory,
    DirectoryLoad,
    DirectoryWatcher,
    commit,
    plan_apply,
    plan_delete,
)
from pilot.sources.store import overlay
from pilot.xds import DebounceConfig, DiscoveryServer
from pymesh.config import ConfigSnapshot
from pymesh.errors import ConfigError, ValidationError

__all__ = ["KNOWN_PROXIES_FILE", "Pilot", "PilotSettings", "select_generator"]

log = structlog.get_logger(__name__)

#: in the config directory (hidden files are not config): the proxies of the last run
KNOWN_PROXIES_FILE = ".pymesh-proxies.json"


@dataclass(frozen=True, slots=True)
class PilotSettings:
    config_dir: Path
    xds_address: str = "127.0.0.1:15010"
    api_address: str = "127.0.0.1:15080"
    mesh: MeshConfig = field(default_factory=MeshConfig)
    #: the admin API's bearer token; None: ``PYMESH_TOKEN`` or ``<config_dir>/.pymesh-token``
    token: str | None = None
    poll_interval: float = 0.2
    debounce: DebounceConfig = field(default_factory=DebounceConfig)
    domain: str = "cluster.local"
    #: run the CA (Istio's istiod serves it on 15012) with these options; None: no CA
    ca: CaOptions | None = None
    ca_address: str = "127.0.0.1:15012"
    #: how long a proxy connected before a restart counts as connected without reconnecting
    #: (longer than a proxy's largest reconnect backoff, 30 s); 0: forget them on restart
    registration_grace: float = 30.0


def select_generator(ctx: PushContext, proxy: ProxyNode, type_url: str) -> Sequence[Any]:
    """Envoy sidecars get pilot's generators; gRPC's proxyless clients (node metadata
    ``GENERATOR: grpc``, as Istio marks them) get API listeners named ``host:port``."""
    if proxyless.is_proxyless(proxy):
        return proxyless.generate(ctx, proxy, type_url)
    return generate(ctx, proxy, type_url)


class Pilot:
    def __init__(
        self,
        settings: PilotSettings,
        *,
        clock: Callable[[], float] | None = None,
        generator: Callable[[Any, Any, str], Sequence[Any]] = select_generator,
    ) -> None:
        self.settings = settings
        self.clock = clock or time.monotonic
        self.directory = ConfigDirectory(settings.config_dir)
        self.watcher = DirectoryWatcher(
            self.directory, self._on_load, interval=settings.poll_interval
        )
        self.load: DirectoryLoad | None = None
        grace = settings.registration_grace
        self.known = KnownProxies(
            settings.config_dir / KNOWN_PROXIES_FILE if grace > 0 else None,
            grace=grace,
            clock=self.clock,
        )
        self.ctx = self._build(ConfigSnapshot(), (), ())
        self.discovery = DiscoveryServer(
            self.ctx,
            generate=generator,
            parse_node=ProxyNode.from_node,
            classify=proxy_class if generator is select_generator else None,
            incremental=affected_types if generator is select_generator else None,
            rebuild=self._rebuild,
            registers=self._registers,
            clock=self.clock,
            debounce=settings.debounce,
        )
        self.api: Any = None
        self.ca: CaServer | None = None
        self.xds_port = 0
        self.api_port = 0
        self.ca_port = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from pilot.api import AdminApi, ensure_token

        if not self.settings.config_dir.is_dir():
            raise ConfigError(f"{self.settings.config_dir}: config directory does not exist")
        token = (
            self.settings.token
            or os.environ.get("PYMESH_TOKEN")
            or ensure_token(self.settings.config_dir)
        )
        if self.settings.ca is not None:
            await self._start_ca(self.settings.ca)
        # Nothing is served before the registry and the configuration are whole (as istiod
        # waits for its caches to sync): the proxies of the last run, then the directory.
        if self.known.load():
            asyncio.get_running_loop().call_later(
                self.known.grace, self.discovery.proxies_changed, "registration-grace"
            )
        await self.watcher.start()
        self.xds_port = await self.discovery.start(self.settings.xds_address)
        self.api = AdminApi(self, token)
        self.api_port = await self.api.start(self.settings.api_address)
        log.info(
            "pilot ready",
            config_dir=str(self.settings.config_dir),
            xds_port=self.xds_port,
            api_port=self.api_port,
            resources=len(self.snapshot),
        )

    async def _start_ca(self, options: CaOptions) -> None:
        import time

        service, _ = open_ca(options, time.time)
        self.ca = CaServer(service, names=serving_names(options.root_namespace, options.domain))
        self.ca_port = await self.ca.start(self.settings.ca_address)

    async def stop(self) -> None:
        self.known.frozen = True  # closing every stream is not every proxy leaving
        if self.ca is not None:
            await self.ca.stop()
        await self.watcher.stop()
        if self.api is not None:
            await self.api.stop()
        await self.discovery.stop()

    # -- building ----------------------------------------------------------------------------
    @property
    def snapshot(self) -> ConfigSnapshot:
        return self.ctx.config

    def _build(
        self, config: ConfigSnapshot, proxies: Sequence[ProxyNode], credentials: Sequence[Any]
    ) -> PushContext:
        s = self.settings
        registry = Registry.build(config, proxies, domain=s.domain)
        return PushContext.build(config, registry, s.mesh, credentials=credentials, domain=s.domain)

    def _credentials(self) -> tuple[Any, ...]:
        return self.load.credentials if self.load is not None else ()

    def _registers(self, proxy: ProxyNode) -> bool:
        """Whether ``proxy`` is an endpoint of some service: a registry of this proxy alone
        (cost independent of how many proxies are connected)."""
        alone = Registry.build(self.ctx.config, (proxy,), domain=self.settings.domain)
        return bool(alone.proxy_instances(proxy))

    def _proxies(self) -> tuple[ProxyNode, ...]:
        return self.known.merged(self.discovery.proxies())

    def _rebuild(self, proxies: Sequence[Any]) -> PushContext:
        self.ctx = self._build(self.ctx.config, self.known.merged(proxies), self._credentials())
        self.known.record(self.discovery.nodes())
        return self.ctx

    async def _on_load(self, load: DirectoryLoad) -> None:
        previous = self.load
        self.load = load
        snapshot = load.snapshot
        if (
            previous is not None
            and snapshot.version == self.ctx.config.version
            and load.credentials == previous.credentials
        ):
            return  # the files changed, the configuration did not: no push
        self.ctx = self._build(snapshot, self._proxies(), load.credentials)
        log.info("config loaded", version=snapshot.version, resources=len(snapshot))
        for envoy_filter in self.ctx.envoy_filters:
            for error in envoy_filter.errors:
                log.error("EnvoyFilter patch skipped", error=str(error))
        self.discovery.update(self.ctx)

    # -- changes from the API ----------------------------------------------------------------
    async def apply(
        self,
        body: str,
        source: str = "<apply>",
        namespace: str | None = None,
        *,
        dry_run: bool = False,
    ) -> list[Change]:
        """Validate, store and activate ``body``. Returns once the files are written and the
        new PushContext is built; the push itself follows (debounced). Raises
        ``ValidationError`` and changes nothing when anything is wrong. ``dry_run``: every
        check, nothing stored."""
        async with self.watcher.lock:
            changes = plan_apply(self.directory, body, self.snapshot, source, namespace)
            await self._commit(changes, dry_run=dry_run)
            return changes

    async def delete(
        self,
        *,
        body: str | None = None,
        keys: Sequence[tuple[str, str, str]] = (),
        source: str = "<delete>",
        namespace: str | None = None,
    ) -> list[Change]:
        async with self.watcher.lock:
            load = self.load or await self.watcher.check({})
            changes = plan_delete(
                self.directory, load, body=body, keys=keys, source=source, namespace=namespace
            )
            if any(c.action is Action.REFUSED for c in changes):
                return changes  # nothing is removed when any part is refused
            await self._commit(changes)
            return changes

    async def _commit(self, changes: list[Change], *, dry_run: bool = False) -> None:
        planned = overlay(changes)
        if not planned:
            return
        # The whole tree with the change must load and build before anything is written.
        candidate = await self.watcher.check(planned)
        try:
            ctx = self._build(candidate.snapshot, self._proxies(), candidate.credentials)
        except (ConfigError, ValueError) as exc:
            raise ValidationError(f"pilot cannot use this configuration: {exc}") from None
        _refuse_bad_envoy_filters(ctx, {c.key for c in changes if c.writes})
        if dry_run:
            return
        await asyncio.to_thread(commit, self.directory, changes)
        if not await self.watcher.reload():
            raise ConfigError(f"configuration stored but not loaded: {self.watcher.last_error}")


def _refuse_bad_envoy_filters(ctx: PushContext, changed: set[tuple[str, str, str]]) -> None:
    """An applied EnvoyFilter whose patch Envoy's protos reject is refused, the field named."""
    for envoy_filter in ctx.envoy_filters:
        key = ("EnvoyFilter", envoy_filter.namespace, envoy_filter.name)
        if key in changed and envoy_filter.errors:
            error = envoy_filter.errors[0]
            raise type(error)(
                error.message,
                source=f"EnvoyFilter {envoy_filter.namespace}/{envoy_filter.name}",
                path=error.path,
            )
