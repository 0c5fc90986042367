"""Incremental (delta) xDS as pure decisions: subscriptions, and what a response must carry.

Envoy's ``DeltaAggregatedResources`` rules (xDS protocol, "Incremental xDS"):

* a client names the resources it wants in ``resource_names_subscribe`` and drops them with
  ``resource_names_unsubscribe``; ``*`` subscribes to every resource of the type. The first
  request for Listener or Cluster with no names at all is a wildcard subscription too (the
  legacy form Envoy still sends);
* each response carries only resources that are new or changed for that client, each with
  its own version, and ``removed_resources`` for names the client holds that no longer exist
  (or that it asked for and that do not exist);
* a reconnecting client reports what it holds in ``initial_resource_versions``, so unchanged
  resources are not sent again;
* a request with ``response_nonce`` ACKs (or, with ``error_detail``, NACKs) that response; it
  needs an answer only if it also changes the subscription.

:class:`DeltaWatch` keeps one type's state for one stream, and :func:`plan` says what to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pilot.xds.resources import Encoded
from pilot.xds.watch import WILDCARD_TYPES

__all__ = ["DeltaPlan", "DeltaWatch", "plan", "record"]


@dataclass(slots=True)
class DeltaWatch:
    """What one delta stream subscribed to of one type and which versions its client holds."""

    type_url: str
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    #: name → version of every resource the client holds (sent, or reported on reconnect)
    held: dict[str, str] = field(default_factory=dict)
    #: subscribed names not answered yet (answered even when they do not exist)
    pending: set[str] = field(default_factory=set)

    def update(
        self,
        subscribe: Iterable[str],
        unsubscribe: Iterable[str],
        *,
        first: bool,
        initial_versions: Mapping[str, str] | None = None,
    ) -> bool:
        """Apply a request's subscription changes; True when the request needs an answer."""
        added, dropped = set(subscribe), set(unsubscribe)
        if first and not added and self.type_url in WILDCARD_TYPES:
            self.wildcard = True
        if "*" in added:
            self.wildcard = True
        if "*" in dropped:
            self.wildcard = False
        added.discard("*")
        dropped.discard("*")
        new = added - self.names
        self.names = (self.names | added) - dropped
        for name in dropped:
            # the client forgets an unsubscribed resource; a wildcard keeps sending it
            if not self.wildcard:
                self.held.pop(name, None)
        if initial_versions:
            self.held.update(initial_versions)
        self.pending |= new
        return first or bool(new) or (self.wildcard and "*" in set(subscribe))

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass(frozen=True, slots=True)
class DeltaPlan:
    """One response's content: indexes into the Encoded resources, and removed names."""

    updated: tuple[int, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)


def plan(watch: DeltaWatch, encoded: Encoded, force: frozenset[str] = frozenset()) -> DeltaPlan:
    """What to send ``watch``'s client of ``encoded`` (everything pilot has of the type for
    this proxy): resources whose version it does not hold (or named in ``force``), and the
    names it holds or awaits that pilot does not have."""
    present: set[str] = set()
    updated = []
    for index, (name, version) in enumerate(zip(encoded.names, encoded.versions, strict=True)):
        if not watch.wants(name):
            continue
        present.add(name)
        if watch.held.get(name) != version or name in force:
            updated.append(index)
    gone = (set(watch.held) | (watch.pending & watch.names)) - present
    return DeltaPlan(tuple(updated), tuple(sorted(gone)))


def record(watch: DeltaWatch, encoded: Encoded, sent: DeltaPlan) -> None:
    """The client now holds what ``sent`` carried and nothing it removed."""
    for index in sent.updated:
        watch.held[encoded.names[index]] = encoded.versions[index]
    for name in sent.removed:
        watch.held.pop(name, None)
    watch.pending.clear()
