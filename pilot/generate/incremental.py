"""Incremental pushes: which resource types can differ for a proxy between two contexts.

When only endpoints changed (a pod came or went, a WorkloadEntry moved), a proxy needs new
EDS and nothing else, as istiod's incremental EDS push. The registry is read beyond EDS,
though, and a change there needs the other types too (audited):

* CDS, per outbound service port: the inline endpoints of DNS clusters (STRICT_DNS,
  LOGICAL_DNS: every endpoint field), the SPIFFE SANs (the endpoints' namespaces and
  service accounts), auto mTLS (whether some endpoint speaks mTLS: its labels, namespace
  and port against PeerAuthentication), and whether the endpoints are all on loopback (a
  process-mode source address; this also turns when a service gets its first endpoint);
* CDS and LDS, per proxy: the instances it fronts itself (its inbound side);
* RDS and SDS: services only (hosts, ports), never their endpoints.

:func:`affected_types` returns ``{EDS}`` when two contexts differ in nothing else for a proxy,
and None (anything may differ) otherwise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable

from pilot.generate.common import ENDPOINT_TYPE
from pilot.generate.tls import speaks_mtls
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Registry, ServiceInstance

__all__ = ["EDS_ONLY", "affected_types"]

EDS_ONLY = frozenset({ENDPOINT_TYPE})
_VIEW = "incremental.shared_view"


def affected_types(old: PushContext, new: PushContext, node: ProxyNode) -> frozenset[str] | None:
    """The types whose resources for ``node`` may differ between ``old`` and ``new``: the
    empty set, ``{EDS}``, or None for all of them."""
    if old.version == new.version:
        return frozenset()
    if old.config_version != new.config_version:
        return None
    if old.registry.services != new.registry.services:
        return None
    if _shared_view(old.registry) != _shared_view(new.registry):
        return None
    if _inbound(old.registry, node) != _inbound(new.registry, node):
        return None
    return EDS_ONLY


def _inbound(registry: Registry, node: ProxyNode) -> tuple[ServiceInstance, ...]:
    return registry.proxy_instances(node)


def _shared_view(registry: Registry) -> Hashable:
    """What outbound clusters read of the registry's endpoints, per service port."""
    found = registry.derived.get(_VIEW)
    if found is None:
        found = registry.derived[_VIEW] = tuple(
            (key, _port_view(insts)) for key, insts in registry.instances_by_port.items()
        )
    return found


def _port_view(instances: tuple[ServiceInstance, ...]) -> Hashable:
    if any(i.service.resolution != "STATIC" for i in instances):
        # DNS clusters carry their endpoints inline in CDS
        return ("dns", tuple(i.endpoint for i in instances))
    accounts = frozenset((i.endpoint.namespace, i.endpoint.service_account) for i in instances)
    mtls = frozenset(
        (i.endpoint.namespace, tuple(sorted(i.endpoint.labels.items())), i.endpoint.port)
        for i in instances
        if speaks_mtls(i.endpoint.labels)
    )
    return ("eds", accounts, mtls, bool(instances), _all_loopback(instances))


def _all_loopback(instances: tuple[ServiceInstance, ...]) -> bool:
    try:
        return all(ipaddress.ip_address(i.endpoint.address).is_loopback for i in instances)
    except ValueError:
        return False
