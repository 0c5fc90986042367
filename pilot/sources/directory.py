"""A directory of Istio / Kubernetes YAML as pilot's configuration source.

Any layout is accepted: every ``*.yaml``/``*.yml``/``*.json`` below the root is read (hidden
files and directories are skipped, as :func:`pymesh.config.load_path` does). Files written by
``pymesh apply`` live at ``<Kind>/<namespace>/<name>.yaml``; they are read after every other
file, so an applied object replaces a definition of the same object elsewhere in the tree
(``kubectl apply`` over a manifest).

Parsed files are cached by ``(mtime, size, inode)``: a reload after one file changed parses
that file only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from pilot.model.credentials import TlsCredential, credentials_from_text
from pymesh.config import ConfigSnapshot, ConfigWarning, LoadResult, Resource, load_documents
from pymesh.config.kinds import KINDS
from pymesh.errors import ConfigError, ValidationError

__all__ = [
    "ConfigDirectory",
    "DirectoryLoad",
    "FileStamp",
    "managed_path",
    "scan",
]

log = structlog.get_logger(__name__)

Key = tuple[str, str, str]
_SUFFIXES = (".yaml", ".yml", ".json")
_KIND_DIRS = frozenset(info.kind for info in KINDS.values())
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What the poller compares. The inode changes on every atomic rename, which catches a
    rewrite of the same size within one mtime tick on coarse-timestamp filesystems."""

    path: str
    mtime_ns: int
    size: int
    inode: int


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(_SUFFIXES):
                yield Path(dirpath, name)


def scan(root: Path) -> tuple[FileStamp, ...]:
    """The config files under ``root`` and their stamps, in path order."""
    stamps = []
    for path in _walk(root):
        try:
            st = path.stat()
        except OSError:
            continue  # removed between listing and stat: the next scan sees the new state
        stamps.append(FileStamp(str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


def managed_path(root: Path, kind: str, namespace: str, name: str) -> Path:
    """Where ``pymesh apply`` keeps an object: ``<Kind>/<namespace>/<name>.yaml``
    (``<Kind>/<name>.yaml`` for cluster-scoped kinds)."""
    for part in (kind, namespace, name):
        if part and not _SAFE_NAME.match(part):
            raise ValidationError(f"{part!r} cannot be used as a file name", path="metadata")
    return root / kind / namespace / f"{name}.yaml" if namespace else root / kind / f"{name}.yaml"


def is_managed(root: Path, path: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    return len(parts) in (2, 3) and parts[0] in _KIND_DIRS and parts[-1].endswith(".yaml")


@dataclass(frozen=True, slots=True)
class _Parsed:
    result: LoadResult
    credentials: tuple[TlsCredential, ...]


@dataclass(frozen=True, slots=True)
class DirectoryLoad:
    """One consistent read of the directory."""

    resources: tuple[Resource[Any], ...]
    warnings: tuple[ConfigWarning, ...]
    stamps: tuple[FileStamp, ...]
    #: every file defining each object, in load order (the last one is in effect)
    origins: Mapping[Key, tuple[str, ...]]
    #: TLS Secrets (for Gateway ``credentialName``)
    credentials: tuple[TlsCredential, ...] = ()

    @property
    def snapshot(self) -> ConfigSnapshot:
        return ConfigSnapshot(self.resources)


class ConfigDirectory:
    """Reads the tree under ``root`` into resources; not thread-safe (the watcher serialises
    loads)."""

    def __init__(self, root: Path | str, *, default_namespace: str = "default") -> None:
        self.root = Path(root)
        self.default_namespace = default_namespace
        self._cache: dict[str, tuple[FileStamp, _Parsed]] = {}

    def managed_path(self, kind: str, namespace: str, name: str) -> Path:
        return managed_path(self.root, kind, namespace, name)

    def _order(self, paths: list[str]) -> list[str]:
        managed = [p for p in paths if is_managed(self.root, Path(p))]
        rest = [p for p in paths if p not in set(managed)]
        return sorted(rest) + sorted(managed)

    def _parse(self, text: str, path: str) -> _Parsed:
        result = load_documents(text, path, default_namespace=self.default_namespace)
        for warning in result.warnings:
            log.warning(
                "config_warning",
                source=warning.source,
                document=warning.document,
                path=warning.path,
                line=warning.line,
                message=warning.message,
            )
        # Secrets are not mesh configuration to the loader, but Gateways use TLS ones.
        creds = (
            credentials_from_text(text, path, self.default_namespace) if "Secret" in text else ()
        )
        return _Parsed(result, creds)

    def _load_file(self, stamp: FileStamp) -> _Parsed:
        cached = self._cache.get(stamp.path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            text = Path(stamp.path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"not UTF-8 text: {exc.reason}", source=stamp.path) from None
        except OSError as exc:
            raise ConfigError(f"{stamp.path}: {exc.strerror}") from None
        parsed = self._parse(text, stamp.path)
        self._cache[stamp.path] = (stamp, parsed)
        return parsed

    def load(self, overlay: Mapping[Path, str | None] | None = None) -> DirectoryLoad:
        """Read every file; ``overlay`` replaces (text) or removes (None) files without
        touching the disk, to check a change before it is written. Raises the loader's
        ``ValidationError`` for the first invalid file."""
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: not a directory")
        stamps = scan(self.root)
        by_path = {s.path: s for s in stamps}
        extra = {str(p): t for p, t in (overlay or {}).items()}
        paths = self._order(list({*by_path, *(p for p, t in extra.items() if t is not None)}))
        merged: dict[Key, Resource[Any]] = {}
        origins: dict[Key, tuple[str, ...]] = {}
        warnings: list[ConfigWarning] = []
        credentials: dict[tuple[str, str], TlsCredential] = {}
        for path in paths:
            if path in extra:
                text = extra[path]
                if text is None:
                    continue
                parsed = self._parse(text, path)
            else:
                parsed = self._load_file(by_path[path])
            result = parsed.result
            credentials.update(((c.namespace, c.name), c) for c in parsed.credentials)
            warnings.extend(result.warnings)
            for res in result.resources:
                previous = merged.pop(res.key, None)
                if previous is not None:
                    warnings.append(
                        ConfigWarning(
                            f"{res.ref} is defined again; this definition replaces the one in "
                            f"{previous.source}",
                            res.source,
                            res.document,
                        )
                    )
                merged[res.key] = res
                origins[res.key] = (*origins.get(res.key, ()), path)
        self._cache = {p: v for p, v in self._cache.items() if p in by_path}
        return DirectoryLoad(
            tuple(merged.values()),
            tuple(warnings),
            stamps,
            MappingProxyType(origins),
            tuple(credentials.values()),
        )
