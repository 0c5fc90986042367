"""One ADS stream: who is on the other end, its watches, and its inbox.

Requests from the proxy and push notifications from pilot meet in one inbox, read by the
stream's own task only, so a stream's responses are always written in order and a slow proxy
only ever delays itself. Pushes are coalesced: while one is waiting, later ones just keep the
earliest start time (for the convergence metric), since every push sends the newest state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.resources import PUSH_ORDER
from pilot.xds.watch import Watch

__all__ = ["Connection", "PushEvent", "Request"]

#: what a stream reads: state-of-the-world or delta requests (one kind per stream)
Request: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest


@dataclass(frozen=True, slots=True)
class PushEvent:
    """Send whatever changed for this proxy; ``started`` is when the triggering change happened."""

    started: float


class Connection:
    __slots__ = (
        "_closed",
        "_push",
        "_requests",
        "_wakeup",
        "connected_at",
        "id",
        "node",
        "peer",
        "proxy",
        "pushed_version",
        "registered",
        "watches",
    )

    def __init__(self, conn_id: str, peer: str, connected_at: float) -> None:
        self.id = conn_id
        self.peer = peer
        self.connected_at = connected_at
        self.node: base_pb2.Node | None = None
        #: the parsed node (``ProxyNode``) once the first request arrived
        self.proxy: Any = None
        self.watches: dict[str, Watch] = {}
        self.pushed_version = ""
        #: set while the proxy waits for the registry to include it (see DiscoveryServer)
        self.registered: asyncio.Event | None = None
        self._requests: deque[Request] = deque()
        self._push: PushEvent | None = None
        self._closed = False
        self._wakeup = asyncio.Event()

    @property
    def proxy_id(self) -> str:
        return self.node.id if self.node is not None else ""

    # -- inbox -------------------------------------------------------------------------------
    def deliver(self, request: Request) -> None:
        self._requests.append(request)
        self._wakeup.set()

    def schedule_push(self, started: float) -> None:
        if self._push is None or started < self._push.started:
            self._push = PushEvent(started)
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def next(self) -> Request | PushEvent | None:
        """The next request (first: they answer what was sent), else the pending push;
        None once the stream is closed."""
        while True:
            if self._closed:
                return None
            if self._requests:
                return self._requests.popleft()
            if self._push is not None:
                push, self._push = self._push, None
                return push
            self._wakeup.clear()
            await self._wakeup.wait()

    # -- views -------------------------------------------------------------------------------
    def ordered_watches(self) -> list[Watch]:
        """Watches in push order (clusters, endpoints, listeners, routes, then the rest)."""
        rank = {t: i for i, t in enumerate(PUSH_ORDER)}
        return sorted(self.watches.values(), key=lambda w: (rank.get(w.type_url, 99), w.type_url))
