"""Watch the config directory by polling.

Why polling and not inotify: inotify is not in the standard library (it would take ctypes or
a third-party package), it is Linux-only, it misses changes made on network filesystems and
by other hosts on shared volumes, and Kubernetes ConfigMap mounts update through an atomic
swap of a ``..data`` symlink that needs special handling. Listing a config directory and
``stat``-ing its files every 200 ms costs microseconds per file and sees every one of those
cases; the delay it adds is far below the push debounce that follows anyway.

A reload that fails (broken YAML, an invalid field) keeps the last good configuration running
and logs the loader's message; the next change is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog

from pilot.sources.directory import ConfigDirectory, DirectoryLoad, FileStamp, scan
from pymesh.errors import ConfigError

__all__ = ["DirectoryWatcher"]

log = structlog.get_logger(__name__)

OnLoad = Callable[[DirectoryLoad], Awaitable[None]]


class DirectoryWatcher:
    """Keeps ``current`` equal to the last good read of ``directory``.

    ``lock`` serialises every load and every write to the directory (the admin API takes it
    too), so a poll never observes half of an apply.
    """

    def __init__(
        self, directory: ConfigDirectory, on_load: OnLoad, *, interval: float = 0.2
    ) -> None:
        self.directory = directory
        self.on_load = on_load
        self.interval = interval
        self.lock = asyncio.Lock()
        self.current: DirectoryLoad | None = None
        self.last_error: str | None = None
        self._stamps: tuple[FileStamp, ...] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First load (an invalid tree is logged and leaves pilot with no config), then poll."""
        async with self.lock:
            await self._reload()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:
                log.exception("config poll failed")

    async def poll(self) -> bool:
        """Reload if any file changed since the last load; True when a load happened."""
        stamps = await asyncio.to_thread(scan, self.directory.root)
        if stamps == self._stamps:
            return False
        async with self.lock:
            return await self._reload()

    async def reload(self) -> bool:
        """Reload now (caller holds :attr:`lock`); False when the tree is invalid."""
        return await self._reload()

    async def _reload(self) -> bool:
        try:
            load = await asyncio.to_thread(self.directory.load)
        except ConfigError as exc:
            # Remember the stamps anyway: the same broken tree is reported once, not every poll.
            self._stamps = await asyncio.to_thread(scan, self.directory.root)
            if str(exc) != self.last_error:
                log.error("config rejected; keeping the last good configuration", error=str(exc))
            self.last_error = str(exc)
            return False
        self._stamps = load.stamps
        self.last_error = None
        self.current = load
        await self.on_load(load)
        return True

    async def check(self, overlay: Mapping[Path, str | None]) -> DirectoryLoad:
        """The tree as it would be with ``overlay`` (caller holds :attr:`lock`); raises the
        loader's error."""
        return await asyncio.to_thread(self.directory.load, overlay)
