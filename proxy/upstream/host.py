"""A runtime upstream host: an endpoint plus the mutable state the data path keeps on it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.upstream.interfaces import UpstreamPool

__all__ = ["Host"]

_NONE: Mapping[str, object] = MappingProxyType({})


class Host:
    """Satisfies the load balancers' host protocol (``address``, ``port``, ``weight``,
    ``healthy``, ``active_requests``). ``healthy`` is kept as a plain attribute, recomputed
    when one of its inputs changes, because the load balancer reads it on every pick."""

    __slots__ = (
        "active_requests",
        "address",
        "address_str",
        "eds_healthy",
        "ejected",
        "h2_pool",
        "healthy",
        "hostname",
        "locality",
        "pool",
        "port",
        "priority",
        "socket_match",
        "weight",
    )

    def __init__(
        self,
        address: str,
        port: int,
        *,
        weight: int = 1,
        eds_healthy: bool = True,
        hostname: str = "",
        priority: int = 0,
        locality: str = "",
    ) -> None:
        self.address = address
        self.port = port
        self.address_str = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.weight = weight
        self.hostname = hostname
        self.priority = priority
        self.locality = locality
        self.eds_healthy = eds_healthy
        self.ejected = False
        self.healthy = eds_healthy
        self.active_requests = 0
        # The HTTP/2 pool (a cluster speaking HTTP/2, or the downstream's protocol); ``pool``
        # is the HTTP/1.1 one.
        self.pool: UpstreamPool | None = None
        self.h2_pool: UpstreamPool | None = None
        # The endpoint's ``envoy.transport_socket_match`` metadata (Istio's ``tlsMode``).
        self.socket_match: Mapping[str, object] = _NONE

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __repr__(self) -> str:
        return f"Host({self.address}:{self.port})"

    def set_ejected(self, ejected: bool) -> None:
        self.ejected = ejected
        self._update()

    def set_eds_healthy(self, healthy: bool) -> None:
        self.eds_healthy = healthy
        self._update()

    def _update(self) -> None:
        self.healthy = self.eds_healthy and not self.ejected
