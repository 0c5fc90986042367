"""Proxy classes: which proxies get the same resources of a type, so one generation serves all.

The generators are pure functions of ``(PushContext, ProxyNode, type)``, but they read only part
of the node. Two proxies that agree on every part a generator reads get byte-identical output,
and the ADS server generates and serialises it once per push (istiod's XdsCache keys its
entries the same way). What each generator reads of the node (audited; a test generates for
nodes that differ in every field and checks that equal keys always mean equal bytes):

* every type — ``type`` (sidecar or router), ``namespace`` and ``labels`` (Sidecar scope,
  exportTo, DestinationRule / PeerAuthentication / AuthorizationPolicy / RequestAuthentication
  selectors, ``sourceLabels``, gateways' selectors, the ``tlsMode`` label for auto mTLS),
  ``PYMESH_MODE`` (process mode) and ``GENERATOR`` (proxyless gRPC) from the metadata, and the
  EnvoyFilter patches that select the node (they may match any metadata key, so the key holds
  which patches apply rather than the metadata);
* CDS and LDS — the service instances the proxy fronts (its inbound side: service, service
  port, target port), found by its ``instance_ips``;
* CDS and LDS in process mode, and a gateway's LDS — ``ip`` (listeners bind the pod's address,
  inbound clusters reach the app on it, outbound clusters bind it as their source).

The node id, pod and workload name, service account, locality and user agent are read by no
generator (the id only appears in warnings logged while generating).
"""

from __future__ import annotations

from collections.abc import Hashable

from pilot.generate.common import CLUSTER_TYPE, LISTENER_TYPE
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext

__all__ = ["proxy_class"]

_INBOUND_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})


def proxy_class(ctx: PushContext, node: ProxyNode, type_url: str) -> Hashable:
    """A key equal for two nodes exactly when the ``type_url`` resources pilot generates for
    them from ``ctx`` are the same."""
    patches = ctx.envoy_filter_patches(node)
    key: tuple[Hashable, ...] = (
        type_url,
        node.type,
        node.namespace,
        tuple(sorted(node.labels.items())),
        repr(node.metadata.get("PYMESH_MODE")),
        repr(node.metadata.get("GENERATOR")),
        tuple((apply_to, tuple(id(p) for p in found)) for apply_to, found in patches.items()),
    )
    if type_url not in _INBOUND_TYPES:
        return key
    inbound = tuple(
        (i.service.hostname, i.service_port, i.endpoint.port)
        for i in ctx.registry.proxy_instances(node)
    )
    binds_ip = node.process_mode or (node.is_router and type_url == LISTENER_TYPE)
    return (*key, inbound, node.ip if binds_ip else None)
