"""Where the service's config comes from: files, reloaded when they change.

``path`` is a file or a directory. In a directory every regular, non-hidden file below it is
read (the layout of a ConfigMap mounted into the reference service's pod, whose ``..data``
symlink farm is hidden). A file holds rate limit documents, or Kubernetes ConfigMaps whose
``data`` entries are rate limit documents. With ``config_map`` set, only the ConfigMap of
that name is read and every other document is skipped, so the service can follow a
directory of mixed manifests (pilot's config directory) the way the pod follows its mounted
ConfigMap.

Reloads poll file stamps (see ``pilot.sources.watcher`` for why polling). A config that does
not load is refused whole: the last good one keeps serving, ``config_load_error`` counts it
and the error is logged once; a good one is swapped in atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from mixer.ratelimit.config import ConfigFile, RateLimitConfig, load_config
from mixer.ratelimit.stats import RateLimitStats
from pymesh.errors import ConfigError, ValidationError

__all__ = ["ConfigSource", "ConfigWatcher", "read_files"]

log = structlog.get_logger(__name__)

_Stamp = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class ConfigSource:
    path: Path
    config_map: str | None = None

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        found: list[Path] = []
        for root, dirs, names in os.walk(self.path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root, n) for n in sorted(names) if not n.startswith("."))
        return [f for f in found if f.is_file()]

    def stamps(self) -> tuple[_Stamp, ...]:
        out = []
        for file in self.files():
            with contextlib.suppress(OSError):
                stat = file.stat()
                out.append((str(file), stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def load(self) -> RateLimitConfig:
        """Read and check every file; ``ValidationError`` names the file and field."""
        return load_config(read_files(self))


def read_files(source: ConfigSource) -> list[ConfigFile]:
    if not source.path.exists():
        raise ValidationError("no such file or directory", source=str(source.path))
    files = []
    for path in source.files():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read: {exc}", source=str(path)) from exc
        if source.config_map is not None:
            text = _select_config_map(text, str(path), source.config_map)
            if not text:
                continue
        files.append(ConfigFile(str(path), text))
    return files


def _select_config_map(text: str, name: str, config_map: str) -> str:
    """The ConfigMap named ``config_map`` in ``text`` (as YAML), or "" when absent. A file
    that is not YAML at all is skipped here: it belongs to whoever else reads the directory."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        log.debug("skipping a file that is not YAML", file=name)
        return ""
    for doc in documents:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "ConfigMap"
            and isinstance(doc.get("metadata"), dict)
            and doc["metadata"].get("name") == config_map
        ):
            return yaml.safe_dump(doc)
    return ""


class ConfigWatcher:
    """Keeps :attr:`current` equal to the last good load of ``source``."""

    def __init__(
        self, source: ConfigSource, stats: RateLimitStats, *, interval: float = 0.5
    ) -> None:
        self.source = source
        self.stats = stats
        self.interval = interval
        self.current = RateLimitConfig()
        self.last_error: str | None = None
        self.loads = 0
        self._stamps: tuple[_Stamp, ...] | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Load once (a bad first config leaves the service with no limits, logged), then
        poll."""
        await self.poll()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ratelimit-config")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll(self) -> bool:
        """Reload when a file changed; True when a new config was swapped in."""
        stamps = await asyncio.to_thread(self.source.stamps)
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            config = await asyncio.to_thread(self.source.load)
        except ConfigError as exc:
            self.stats.inc("config_load_error")
            message = str(exc)
            if message != self.last_error:
                log.error("rate limit config refused; keeping the last good one", error=message)
            self.last_error = message
            self._notify()
            return False
        self.current = config
        self.last_error = None
        self.loads += 1
        self.stats.inc("config_load_success")
        log.info(
            "rate limit config loaded", domains=sorted(config.domains), files=len(config.sources)
        )
        self._notify()
        return True

    def changed(self) -> Coroutine[Any, Any, bool]:
        """Await the result to wait for the next load attempt (good or refused) after this
        call."""
        return self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:
                log.exception("rate limit config poll failed")
