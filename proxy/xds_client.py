"""The proxy's ADS client over state-of-the-world xDS v3 (``ads_config.api_type: GRPC``).

The shared part (warming, whole snapshots, NACKs, reconnects) is :class:`proxy.xds_core.XdsCore`;
this is the wire protocol: one ``DiscoveryRequest`` per type carries the subscription, the
version and nonce it ACKs, and the error of a NACK. Listeners and clusters are state of the
world (what is missing is removed); for endpoints, routes and secrets a response only replaces
the names it carries, and names that are no longer subscribed are dropped, as the xDS protocol
specifies. :func:`ads_client` picks this client or the delta one as Envoy does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from proxy.config.model import ApiType
from proxy.xds_core import XdsCore
from proxy.xds_resources import (
    PROTOS,
    WILDCARD,
    ads_target,
    resource_name,
    translate_named,
    unpack,
)
from pymesh.backoff import Backoff
from pymesh.errors import ConfigError

__all__ = ["Backoff", "XdsClient", "XdsCore", "ads_client", "ads_target"]

_INVALID_ARGUMENT = 3


def ads_client(server: Any, **kw: Any) -> XdsCore:
    """The ADS client the bootstrap asks for: ``DELTA_GRPC`` delta, else state of the world."""
    dynamic = server.bootstrap.dynamic_resources
    ads = dynamic.ads_config if dynamic is not None else None
    if ads is not None and ads.api_type is ApiType.DELTA_GRPC:
        from proxy.xds_delta import DeltaXdsClient

        return DeltaXdsClient(server, **kw)
    return XdsClient(server, **kw)


class XdsClient(XdsCore):
    def _open(self, channel: grpc.aio.Channel, requests: AsyncIterator[Any]) -> Any:
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            requests
        )

    def _send(self, type_url: str, error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self.versions.get(type_url, ""),
            response_nonce=self._nonces.get(type_url, ""),
            resource_names=sorted(self.names.get(type_url, ())),
        )
        request.node.CopyFrom(self.node)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
        self._outbox.put_nowait(request)

    def _hello(self) -> None:
        for type_url in self._first_types():
            self._send(type_url)

    def _subscribe(self, type_url: str, names: frozenset[str]) -> None:
        # The whole subscription goes in every request (which ACKs the last response too).
        self.names[type_url] = names
        self._send(type_url)

    async def _on_response(self, reply: discovery_pb2.DiscoveryResponse) -> None:
        type_url = reply.type_url
        self._nonces[type_url] = reply.nonce
        self._count(type_url, "update_attempt")
        if type_url not in PROTOS:
            self._nack(type_url, reply.version_info, f"unsupported resource type {type_url}")
            return
        try:
            state = self._translate(type_url, reply)
        except ConfigError as exc:
            self._nack(type_url, reply.version_info, str(exc))
            return
        await self._accept(type_url, reply.version_info, state)

    def _translate(self, type_url: str, reply: Any) -> dict[str, Any]:
        wildcard = type_url in WILDCARD
        state: dict[str, Any] = {} if wildcard else dict(self.accepted[type_url])
        seen: set[str] = set()
        for packed in reply.resources:
            message = unpack(type_url, packed)
            name = resource_name(message)
            state[name] = translate_named(type_url, name, message, self.registry, seen)
        if not wildcard:
            wanted = self.names.get(type_url, frozenset())
            state = {n: v for n, v in state.items() if n in wanted}
        return state
