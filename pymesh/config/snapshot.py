"""An immutable, indexed set of resources with a content version, and an atomic holder for it.

Pilot and the proxy read ``holder.current`` once at the start of a push or request and keep that
snapshot; writers build a new snapshot and swap it in whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pymesh.config.codec import encode
from pymesh.config.model.common import EMPTY_MAP, FrozenMap, Resource

__all__ = ["ConfigSnapshot", "SnapshotHolder"]

S = TypeVar("S")

Key = tuple[str, str, str]


def _content_version(resources: tuple[Resource[Any], ...]) -> str:
    digest = hashlib.sha256()
    for r in resources:
        body = [r.api_version, r.kind, r.namespace, r.name, r.labels, r.annotations, r.spec]
        digest.update(json.dumps(encode(body), sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Resources indexed by ``(kind, namespace, name)``, ordered by that key.

    Duplicates keep the last one given. ``version`` is a hash of the content (not of where it
    came from), so reloading unchanged files gives the same version and no push.
    """

    resources: tuple[Resource[Any], ...] = ()
    version: str = dataclasses.field(init=False)
    _by_key: FrozenMap[Key, Resource[Any]] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _by_kind: FrozenMap[str, tuple[Resource[Any], ...]] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_key = {r.key: r for r in self.resources}
        ordered = tuple(by_key[k] for k in sorted(by_key))
        by_kind: dict[str, list[Resource[Any]]] = {}
        for r in ordered:
            by_kind.setdefault(r.kind, []).append(r)
        # The only place a frozen snapshot is written: completing it during construction.
        object.__setattr__(self, "resources", ordered)
        object.__setattr__(self, "_by_key", FrozenMap(by_key) if by_key else EMPTY_MAP)
        object.__setattr__(self, "_by_kind", FrozenMap((k, tuple(v)) for k, v in by_kind.items()))
        object.__setattr__(self, "version", _content_version(ordered))

    def __len__(self) -> int:
        return len(self.resources)

    def __iter__(self) -> Iterator[Resource[Any]]:
        return iter(self.resources)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, kind: str, namespace: str, name: str) -> Resource[Any] | None:
        return self._by_key.get((kind, namespace, name))

    @overload
    def of_kind(self, kind: type[S], namespace: str | None = None) -> tuple[Resource[S], ...]: ...

    @overload
    def of_kind(self, kind: str, namespace: str | None = None) -> tuple[Resource[Any], ...]: ...

    def of_kind(
        self, kind: type[Any] | str, namespace: str | None = None
    ) -> tuple[Resource[Any], ...]:
        """Resources of a kind, given as a name (``"VirtualService"``) or spec class."""
        name = kind if isinstance(kind, str) else kind.KIND
        found = self._by_kind.get(name, ())
        if namespace is None:
            return found
        return tuple(r for r in found if r.namespace == namespace)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._by_kind)

    def updated(
        self, upserts: Iterable[Resource[Any]] = (), deletes: Iterable[Key] = ()
    ) -> ConfigSnapshot:
        """A new snapshot with ``upserts`` added or replaced and ``deletes`` removed."""
        by_key = dict(self._by_key)
        for key in deletes:
            by_key.pop(key, None)
        for r in upserts:
            by_key[r.key] = r
        return ConfigSnapshot(tuple(by_key.values()))


class SnapshotHolder:
    """Holds the current :class:`ConfigSnapshot`; reads are lock-free, swaps are atomic.

    Reading ``current`` is a single attribute load, so a reader always sees one whole snapshot.
    Writers are serialised so that :meth:`update` and :meth:`compare_and_swap` never lose a
    concurrent change.
    """

    __slots__ = ("_current", "_lock")

    def __init__(self, initial: ConfigSnapshot | None = None) -> None:
        self._current = initial if initial is not None else ConfigSnapshot()
        self._lock = threading.Lock()

    @property
    def current(self) -> ConfigSnapshot:
        return self._current

    def swap(self, snapshot: ConfigSnapshot) -> ConfigSnapshot:
        """Install ``snapshot``; returns the one it replaced."""
        with self._lock:
            previous, self._current = self._current, snapshot
        return previous

    def compare_and_swap(self, expected: ConfigSnapshot, snapshot: ConfigSnapshot) -> bool:
        """Install ``snapshot`` only if ``expected`` is still current."""
        with self._lock:
            if self._current is not expected:
                return False
            self._current = snapshot
        return True

    def update(self, change: Callable[[ConfigSnapshot], ConfigSnapshot]) -> ConfigSnapshot:
        """Apply ``change`` to the current snapshot and install the result atomically."""
        with self._lock:
            self._current = change(self._current)
            return self._current
