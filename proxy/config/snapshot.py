"""The proxy's live configuration: an immutable ``ProxySnapshot`` in a ``SnapshotHolder``.

The xDS client (or the bootstrap loader) builds a new snapshot and swaps it in whole; a request
reads ``holder.current`` once at its start and keeps that snapshot to its end, so it never
sees configuration change under it (Envoy's ``RouteConfigProvider::config() const``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

import structlog

from proxy.config.model import (
    Bootstrap,
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
    Secret,
)

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "ProxySnapshot",
    "SnapshotCallback",
    "SnapshotHolder",
]

log = structlog.get_logger(__name__)

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

_T = TypeVar("_T")


def _frozen(items: Mapping[str, _T] | None = None) -> Mapping[str, _T]:
    return MappingProxyType(dict(items or {}))


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    """Every resource the proxy runs with, by name. ``versions`` maps an xDS type URL (the
    ``*_TYPE`` constants) to the version of the last accepted push of that type; ``""`` (or
    absent) for static configuration. Load assignments are keyed by EDS service name, which
    is the cluster name unless the cluster sets ``eds_service_name``; static clusters carry
    their own ``load_assignment`` and also appear here under their name."""

    versions: Mapping[str, str] = field(default_factory=_empty)
    listeners: Mapping[str, Listener] = field(default_factory=_empty)
    route_configurations: Mapping[str, RouteConfiguration] = field(default_factory=_empty)
    clusters: Mapping[str, Cluster] = field(default_factory=_empty)
    load_assignments: Mapping[str, ClusterLoadAssignment] = field(default_factory=_empty)
    secrets: Mapping[str, Secret] = field(default_factory=_empty)

    @classmethod
    def from_bootstrap(cls, bootstrap: Bootstrap) -> ProxySnapshot:
        """The static part of a bootstrap (dynamic resources arrive later through ``with_*``)."""
        static = bootstrap.static_resources
        return cls(
            listeners=_frozen({item.name: item for item in static.listeners}),
            clusters=_frozen({item.name: item for item in static.clusters}),
            load_assignments=_frozen(
                {
                    item.service_name: item.load_assignment
                    for item in static.clusters
                    if item.load_assignment is not None
                }
            ),
            secrets=_frozen({item.name: item for item in static.secrets}),
        )

    def load_assignment_for(self, cluster: Cluster) -> ClusterLoadAssignment | None:
        """The endpoints of ``cluster``: pushed over EDS, or its own static assignment."""
        found = self.load_assignments.get(cluster.service_name)
        return found if found is not None else cluster.load_assignment

    def _with_version(self, type_url: str, version: str) -> Mapping[str, str]:
        return _frozen({**self.versions, type_url: version})

    def with_listeners(self, listeners: Iterable[Listener], version: str) -> ProxySnapshot:
        """A copy whose listeners are exactly ``listeners`` (state-of-the-world replace)."""
        return replace(
            self,
            listeners=_frozen({item.name: item for item in listeners}),
            versions=self._with_version(LISTENER_TYPE, version),
        )

    def with_route_configurations(
        self, routes: Iterable[RouteConfiguration], version: str, *, merge: bool = False
    ) -> ProxySnapshot:
        """RDS resources replace only the names pushed when ``merge`` (RDS is not
        state-of-the-world across subscriptions); otherwise the whole set."""
        base = dict(self.route_configurations) if merge else {}
        base.update({item.name: item for item in routes})
        return replace(
            self,
            route_configurations=_frozen(base),
            versions=self._with_version(ROUTE_TYPE, version),
        )

    def with_clusters(self, clusters: Iterable[Cluster], version: str) -> ProxySnapshot:
        return replace(
            self,
            clusters=_frozen({item.name: item for item in clusters}),
            versions=self._with_version(CLUSTER_TYPE, version),
        )

    def with_load_assignments(
        self, assignments: Iterable[ClusterLoadAssignment], version: str, *, merge: bool = False
    ) -> ProxySnapshot:
        base = dict(self.load_assignments) if merge else {}
        base.update({item.cluster_name: item for item in assignments})
        return replace(
            self,
            load_assignments=_frozen(base),
            versions=self._with_version(ENDPOINT_TYPE, version),
        )

    def with_secrets(
        self, secrets: Iterable[Secret], version: str, *, merge: bool = False
    ) -> ProxySnapshot:
        base = dict(self.secrets) if merge else {}
        base.update({item.name: item for item in secrets})
        return replace(
            self,
            secrets=_frozen(base),
            versions=self._with_version(SECRET_TYPE, version),
        )


SnapshotCallback = Callable[[ProxySnapshot, ProxySnapshot], None]
"""Called as ``callback(old, new)`` after each swap."""


class SnapshotHolder:
    """Holds the current snapshot; ``swap`` replaces it atomically and tells subscribers.

    Reading ``current`` is a single attribute load, safe from any thread. Swaps and their
    notifications are serialised by one re-entrant lock, so subscribers see swaps in order
    (and a subscriber may itself swap).
    """

    __slots__ = ("_callbacks", "_current", "_lock")

    def __init__(self, initial: ProxySnapshot | None = None) -> None:
        self._current = initial if initial is not None else ProxySnapshot()
        self._callbacks: list[SnapshotCallback] = []
        self._lock = threading.RLock()

    @property
    def current(self) -> ProxySnapshot:
        return self._current

    def swap(self, new: ProxySnapshot) -> ProxySnapshot:
        """Install ``new``, notify subscribers, and return the snapshot it replaced."""
        with self._lock:
            old = self._current
            self._current = new
            _notify(tuple(self._callbacks), old, new)
        return old

    def update(self, change: Callable[[ProxySnapshot], ProxySnapshot]) -> ProxySnapshot:
        """Swap in ``change(current)``; returns the new snapshot."""
        with self._lock:
            old = self._current
            new = change(old)
            self._current = new
            _notify(tuple(self._callbacks), old, new)
        return new

    def subscribe(self, callback: SnapshotCallback) -> Callable[[], None]:
        """Call ``callback(old, new)`` after every swap; returns a function that unsubscribes."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe


def _notify(callbacks: Iterable[SnapshotCallback], old: ProxySnapshot, new: ProxySnapshot) -> None:
    for callback in callbacks:
        try:
            callback(old, new)
        except Exception:
            # One broken subscriber must not stop the others from seeing the swap.
            log.exception("snapshot subscriber failed", callback=repr(callback))
