"""The Telemetry API, enforced where pymesh makes metrics and keeps logs: in mixer.

Each report is governed by its reporter's policy — the reporting workload's Telemetry for the
direction it reported (``CLIENT`` for reporter ``source``, ``SERVER`` for ``destination``),
resolved by :func:`pymesh.config.telemetry_policy.resolve` and cached per reporter until the
configuration changes. The configuration comes from the directory pilot serves (mixer
watches it too), swapped atomically; a directory that does not load keeps the last good one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from mixer.peers import PeerInfo
from mixer.report import Report
from pymesh.config.model.common import Resource
from pymesh.config.model.telemetry import Telemetry, WorkloadMode
from pymesh.config.telemetry_policy import (
    DEFAULT_METRICS_PROVIDER,
    TelemetryPolicy,
    resolve,
)
from pymesh.errors import ConfigError

__all__ = ["ConfigWatch", "Policies"]

log = structlog.get_logger(__name__)


class Policies:
    """The Telemetry resources in force and the policy of each reporter."""

    def __init__(
        self,
        telemetries: Sequence[Resource[Telemetry]] = (),
        *,
        root_namespace: str = "istio-system",
        default_metrics_providers: Sequence[str] = (DEFAULT_METRICS_PROVIDER,),
    ) -> None:
        self.root_namespace = root_namespace
        self.default_metrics_providers = tuple(default_metrics_providers)
        self._telemetries: tuple[Resource[Telemetry], ...] = tuple(telemetries)
        self._cache: dict[tuple[PeerInfo, WorkloadMode], TelemetryPolicy] = {}

    @property
    def telemetries(self) -> tuple[Resource[Telemetry], ...]:
        return self._telemetries

    def update(self, telemetries: Sequence[Resource[Telemetry]]) -> None:
        self._telemetries = tuple(telemetries)
        self._cache = {}

    def for_report(self, r: Report) -> TelemetryPolicy:
        if r.reporter == "source":
            return self.of(r.source, WorkloadMode.CLIENT)
        return self.of(r.destination, WorkloadMode.SERVER)

    def of(self, peer: PeerInfo, mode: WorkloadMode) -> TelemetryPolicy:
        key = (peer, mode)
        policy = self._cache.get(key)
        if policy is None:
            if not self._telemetries:
                policy = TelemetryPolicy()
            else:
                policy = resolve(
                    self._telemetries,
                    peer.namespace,
                    peer.labels,
                    mode,
                    root_namespace=self.root_namespace,
                    default_metrics_providers=self.default_metrics_providers,
                )
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = policy
        return policy


class ConfigWatch:
    """Polls a config directory; on each change, loads it (in a thread) and hands the
    Telemetry resources to :class:`Policies`."""

    def __init__(
        self,
        root: Path,
        policies: Policies,
        *,
        interval: float = 1.0,
        on_load: Callable[[], Any] | None = None,
    ) -> None:
        from pilot.sources import ConfigDirectory

        self.root = root
        self.policies = policies
        self.interval = interval
        self.on_load = on_load
        self.directory = ConfigDirectory(root)
        self.error: str | None = None
        self._stamps: object = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: config directory does not exist")
        await self.check()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Reload when the directory changed; True when the policies changed."""
        from pilot.sources import scan

        stamps = await asyncio.to_thread(scan, self.root)
        if stamps == self._stamps:
            return False
        try:
            load = await asyncio.to_thread(self.directory.load)
        except (ConfigError, OSError) as exc:
            if self.error != str(exc):
                log.warning("config not loaded; keeping the last good one", error=str(exc))
            self.error = str(exc)
            self._stamps = stamps
            return False
        self.error = None
        self._stamps = stamps
        telemetries = load.snapshot.of_kind(Telemetry)
        if telemetries == self.policies.telemetries:
            return False
        self.policies.update(telemetries)
        log.info("telemetry config loaded", telemetries=len(telemetries))
        if self.on_load is not None:
            self.on_load()
        return True
