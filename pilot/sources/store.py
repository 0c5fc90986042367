"""What ``apply`` and ``delete`` do to the config directory, planned before anything is written.

:func:`plan_apply` validates a YAML body with the loader and turns each object into one file
``<Kind>/<namespace>/<name>.yaml`` (or ``unchanged`` when the running config already has an
equal object); :func:`plan_delete` finds the file to remove for each object named. The caller
checks the planned tree as a whole, then :func:`commit` writes it: temp file, fsync, rename,
fsync of the directory, so a reader never sees a partial file and a crash leaves the old one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from pilot.sources.directory import ConfigDirectory, DirectoryLoad, Key, is_managed
from pymesh.config import ConfigSnapshot, Resource, load_documents
from pymesh.config.issues import ConfigWarning
from pymesh.config.kinds import kind_info
from pymesh.errors import ValidationError

__all__ = ["Action", "Change", "commit", "plan_apply", "plan_delete", "write_atomic"]

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class Action(Enum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    NOT_FOUND = "not found"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Change:
    """One object of a request and what happens to it. ``text`` is the file to write
    (None with ``path`` set: remove the file)."""

    kind: str
    namespace: str
    name: str
    action: Action
    api_version: str = ""
    path: str | None = None
    text: str | None = None
    message: str = ""
    #: what the loader warned about this object (kubectl prints these as ``Warning:`` lines)
    warnings: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)

    @property
    def writes(self) -> bool:
        return self.action in (Action.CREATED, Action.CONFIGURED, Action.DELETED)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "apiVersion": self.api_version,
            "namespace": self.namespace,
            "name": self.name,
            "action": self.action.value,
        }
        if self.path is not None:
            out["path"] = self.path
        if self.message:
            out["message"] = self.message
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _objects(body: str) -> Iterator[dict[str, Any]]:
    """Every object of a body (``kind: *List`` unpacked). Only called after the loader
    accepted the body, so the YAML is well-formed."""
    for doc in yaml.load_all(body, Loader=_LOADER):
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            yield from (item for item in doc["items"] or [] if isinstance(item, dict))
        else:
            yield doc


def _warning_text(warning: ConfigWarning) -> str:
    # The object was re-read on its own: its document index and lines are not the user's.
    return f"{warning.path}: {warning.message}" if warning.path else warning.message


def _dump(obj: Mapping[str, Any]) -> str:
    text: str = yaml.dump(dict(obj), Dumper=_DUMPER, sort_keys=False, default_flow_style=False)
    return text


def check_namespace(obj: Any, namespace: str | None, source: str, index: int) -> None:
    """kubectl's rule for ``-n``: it is the namespace of objects that name none, and an
    object naming another one is an error."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    named = meta.get("namespace") if isinstance(meta, dict) else None
    if namespace and named and named != namespace:
        raise ValidationError(
            f'the namespace from the provided object "{named}" does not match the namespace '
            f"\"{namespace}\". You must pass '--namespace={named}' to perform this operation.",
            source=source,
            document=index,
        )


def plan_apply(
    directory: ConfigDirectory,
    body: str,
    current: ConfigSnapshot,
    source: str = "<apply>",
    namespace: str | None = None,
) -> list[Change]:
    """The changes applying ``body`` makes; ``namespace`` is kubectl's ``-n``. Raises the
    loader's ``ValidationError`` (located in ``body``) when any object is invalid; nothing
    is planned then."""
    default_namespace = namespace or directory.default_namespace
    checked = load_documents(body, source, default_namespace=default_namespace)
    if not checked.resources and not checked.skipped:
        raise ValidationError("no objects to apply", source=source)
    changes: list[Change] = []
    for index, obj in enumerate(_objects(body)):
        check_namespace(obj, namespace, source, index)
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        single = load_documents(_dump(obj), source, default_namespace=default_namespace)
        if not single.resources:
            reason = single.skipped[0].reason if single.skipped else "not mesh configuration"
            changes.append(Change(kind, "", name, Action.SKIPPED, api_version, message=reason))
            continue
        res: Resource[Any] = single.resources[0]
        stored = dict(obj)
        if res.namespace:
            stored["metadata"] = {**meta, "namespace": res.namespace}
        stored.pop("status", None)
        path = directory.managed_path(res.kind, res.namespace, res.name)
        existing = current.get(*res.key)
        if existing is not None and existing == res:
            action = Action.UNCHANGED
        else:
            action = Action.CONFIGURED if existing is not None else Action.CREATED
        changes.append(
            Change(
                res.kind,
                res.namespace,
                res.name,
                action,
                res.api_version,
                str(path),
                _dump(stored) if action is not Action.UNCHANGED else None,
                warnings=tuple(_warning_text(w) for w in single.warnings),
            )
        )
    return changes


def _keys(
    body: str, directory: ConfigDirectory, source: str, default_namespace: str | None = None
) -> Iterator[tuple[str, str, str]]:
    try:
        docs = list(_objects(body))
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {exc}", source=source) from None
    for index, obj in enumerate(docs):
        kind = obj.get("kind")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        name = meta.get("name")
        if not isinstance(kind, str) or not isinstance(name, str) or not name:
            raise ValidationError(
                "an object needs kind and metadata.name", source=source, document=index
            )
        check_namespace(obj, default_namespace, source, index)
        info = kind_info(str(obj.get("apiVersion", "")), kind)
        namespaced = info.namespaced if info is not None else True
        fallback = default_namespace or directory.default_namespace
        namespace = str(meta.get("namespace") or fallback) if namespaced else ""
        yield kind, namespace, name


def plan_delete(
    directory: ConfigDirectory,
    load: DirectoryLoad,
    *,
    body: str | None = None,
    keys: Iterable[Key] = (),
    source: str = "<delete>",
    namespace: str | None = None,
) -> list[Change]:
    """Removing the named objects (given as a YAML body, with kubectl's ``-n`` as
    ``namespace``, or as keys). An object pilot only has from a file it did not write is
    refused: that file is the user's to edit."""
    from_body = list(_keys(body, directory, source, namespace)) if body is not None else []
    wanted = list(keys) + from_body
    changes: list[Change] = []
    for kind, namespace, name in wanted:
        origins = load.origins.get((kind, namespace, name), ())
        if not origins:
            changes.append(Change(kind, namespace, name, Action.NOT_FOUND))
            continue
        path = directory.managed_path(kind, namespace, name)
        if str(path) not in origins:
            changes.append(
                Change(
                    kind, namespace, name, Action.REFUSED,
                    message=f"defined in {origins[-1]}, which pymesh apply did not write; "
                    "edit or remove that file",
                )
            )  # fmt: skip
            continue
        others = [o for o in origins if o != str(path)]
        note = f"still defined in {others[-1]}" if others else ""
        changes.append(Change(kind, namespace, name, Action.DELETED, path=str(path), message=note))
    return changes


def overlay(changes: Iterable[Change]) -> dict[Path, str | None]:
    """The planned files: text to write, or None to remove."""
    return {Path(c.path): c.text for c in changes if c.writes and c.path is not None}


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, whole. The
    temp file is hidden, so the watcher never loads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(directory: ConfigDirectory, changes: Iterable[Change]) -> None:
    """Write the planned files (removing empty managed directories left behind)."""
    for path, text in overlay(changes).items():
        if text is not None:
            write_atomic(path, text)
            continue
        if not is_managed(directory.root, path):
            raise ValidationError(f"{path}: refusing to remove a file pymesh did not write")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _fsync_dir(path.parent)
        for parent in (path.parent, path.parent.parent):
            if parent != directory.root:
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only succeeds when empty
