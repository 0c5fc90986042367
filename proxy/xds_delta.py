"""The proxy's ADS client over delta (incremental) xDS v3 (``ads_config.api_type: DELTA_GRPC``).

The shared part (warming, whole snapshots, NACKs, reconnects) is :class:`proxy.xds_core.XdsCore`;
this is Envoy's ``DeltaAggregatedResources`` protocol:

* a subscription changes by what is added (``resource_names_subscribe``) and dropped
  (``resource_names_unsubscribe``); the first Cluster and Listener request names nothing, a
  wildcard subscription (the form Envoy sends);
* a response carries only the resources that are new or changed, each with its own version,
  and ``removed_resources``: they are applied to the accepted state of the type, which then
  runs as a whole snapshot exactly as a state-of-the-world answer would;
* an ACK is a request with the response's ``response_nonce``, a NACK adds ``error_detail``;
  neither repeats the subscription;
* on a reconnect the first request of each type reports what the proxy holds, by name and
  version, in ``initial_resource_versions``, so the control plane sends only what changed (and
  removes what is gone) while the proxy keeps serving what it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from proxy.xds_core import XdsCore
from proxy.xds_resources import PROTOS, WILDCARD, resource_name, translate_named, unpack
from pymesh.errors import ConfigError

__all__ = ["DeltaXdsClient"]

log = structlog.get_logger(__name__)

_INVALID_ARGUMENT = 3


class DeltaXdsClient(XdsCore):
    def __init__(self, server: Any, **kw: Any) -> None:
        super().__init__(server, **kw)
        #: the version of every accepted resource, by type and name (reported on reconnect)
        self.resource_versions: dict[str, dict[str, str]] = {t: {} for t in PROTOS}

    def _open(self, channel: grpc.aio.Channel, requests: AsyncIterator[Any]) -> Any:
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources(
            requests
        )

    def _request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        request.node.CopyFrom(self.node)
        self._outbox.put_nowait(request)

    def _send(self, type_url: str, error: str | None = None) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, response_nonce=self._nonces.get(type_url, "")
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
        self._request(request)

    def _hello(self) -> None:
        held: dict[str, int] = {}
        for type_url in self._first_types():
            versions = self.resource_versions[type_url]
            if versions:
                held[type_url.rpartition(".")[2]] = len(versions)
            self._request(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url,
                    resource_names_subscribe=sorted(self.names[type_url]),
                    initial_resource_versions=versions,
                )
            )
        if held:
            # A reconnect: the control plane hears what the proxy serves, so it resends
            # only what changed meanwhile.
            log.info("xds delta stream resumed", target=self.target, held=held)

    def _subscribe(self, type_url: str, names: frozenset[str]) -> None:
        before = self.names.get(type_url)
        self.names[type_url] = names
        if before is None:
            added, dropped = names, frozenset[str]()
        else:
            added, dropped = names - before, before - names
        if dropped:
            # The control plane stops sending an unsubscribed resource and sends no removal
            # for it: the proxy forgets it now (the next snapshot no longer carries it).
            self.accepted[type_url] = {
                n: v for n, v in self.accepted[type_url].items() if n not in dropped
            }
            held = self.resource_versions[type_url]
            self.resource_versions[type_url] = {n: v for n, v in held.items() if n not in dropped}
        self._request(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url,
                resource_names_subscribe=sorted(added),
                resource_names_unsubscribe=sorted(dropped),
            )
        )

    async def _on_response(self, reply: discovery_pb2.DeltaDiscoveryResponse) -> None:
        type_url, version = reply.type_url, reply.system_version_info
        self._nonces[type_url] = reply.nonce
        self._count(type_url, "update_attempt")
        if type_url not in PROTOS:
            self._nack(type_url, version, f"unsupported resource type {type_url}")
            return
        try:
            state, versions = self._merge(type_url, reply)
        except ConfigError as exc:
            self._nack(type_url, version, str(exc))
            return
        previous = self.resource_versions[type_url]
        self.resource_versions[type_url] = versions
        if not await self._accept(type_url, version, state):
            self.resource_versions[type_url] = previous

    def _merge(
        self, type_url: str, reply: discovery_pb2.DeltaDiscoveryResponse
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The accepted state of ``type_url`` with the response's changes and removals, and
        the resources' versions; ConfigError naming the first resource that cannot run."""
        state = dict(self.accepted[type_url])
        versions = dict(self.resource_versions[type_url])
        seen: set[str] = set()
        for resource in reply.resources:
            if not resource.HasField("resource"):
                raise ConfigError(f"{resource.name}: the response carries no resource for it")
            message = unpack(type_url, resource.resource, resource.name)
            name = resource_name(message)
            if resource.name and resource.name != name:
                raise ConfigError(f"{resource.name}: the resource it carries is named {name!r}")
            state[name] = translate_named(type_url, name, message, self.registry, seen)
            versions[name] = resource.version
        for name in reply.removed_resources:
            state.pop(name, None)
            versions.pop(name, None)
        if type_url not in WILDCARD:
            # only what is subscribed (a late answer may carry a name dropped since)
            wanted = self.names.get(type_url, frozenset())
            state = {n: v for n, v in state.items() if n in wanted}
            versions = {n: v for n, v in versions.items() if n in wanted}
        return state, versions
