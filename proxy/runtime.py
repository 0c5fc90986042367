"""The running configuration as one immutable value: clusters and route tables.

A stream reads :attr:`RuntimeHolder.current` once, when it starts, and uses that
:class:`RuntimeSnapshot` to its end: a push that replaces or removes a cluster never closes
it under a request in flight (the old cluster drains), and route tables and clusters a
request sees always come from the same push. Listeners are captured per connection instead
(a connection keeps the filter chain it was accepted with, as in Envoy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.routing.matcher import RouteTable
    from proxy.upstream.cluster import RuntimeCluster

__all__ = ["RuntimeHolder", "RuntimeSnapshot"]


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RuntimeSnapshot:
    clusters: Mapping[str, RuntimeCluster] = field(default_factory=_empty)  # type: ignore[arg-type]
    route_tables: Mapping[str, RouteTable] = field(default_factory=_empty)  # type: ignore[arg-type]
    version: int = 0


class RuntimeHolder:
    """The current snapshot, swapped whole by the proxy server."""

    __slots__ = ("current",)

    def __init__(self, snapshot: RuntimeSnapshot | None = None) -> None:
        self.current = snapshot if snapshot is not None else RuntimeSnapshot()
