"""Who sees what: ``exportTo`` between namespaces and the Sidecar resource's egress scope."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pilot.model.mesh import OutboundMode
from pilot.model.proxy import ProxyNode
from pymesh.config.hosts import host_matches, split_namespaced_host
from pymesh.config.model.common import Resource
from pymesh.config.model.networking import Sidecar

__all__ = ["SidecarScope", "exported_to", "select_sidecar", "sidecar_scope"]


def exported_to(export_to: Sequence[str], owner_namespace: str, client_namespace: str) -> bool:
    """Istio ``exportTo``: empty means everywhere (the mesh default ``*``), ``.`` the owner's
    namespace, ``~`` nowhere, anything else a namespace name."""
    if not export_to:
        return True
    for entry in export_to:
        if entry == "*" or entry == client_namespace:
            return True
        if entry == "." and owner_namespace == client_namespace:
            return True
    return False


@dataclass(frozen=True, slots=True)
class SidecarScope:
    """What one proxy's Sidecar resource (if any) lets it see and do outbound."""

    namespace: str
    outbound_mode: OutboundMode
    resource: Resource[Sidecar] | None = None
    #: ``(namespace, host)`` pairs from every egress listener; empty = no restriction
    egress_hosts: tuple[tuple[str, str], ...] = ()

    def allows(self, namespace: str, hostname: str) -> bool:
        """True when a host defined in ``namespace`` is in this proxy's egress scope."""
        if not self.egress_hosts:
            return True
        for ns, host in self.egress_hosts:
            if ns == "~":
                continue
            if ns == "." and namespace != self.namespace:
                continue
            if ns not in ("*", ".") and ns != namespace:
                continue
            if host == "*" or host_matches(hostname, host):
                return True
        return False


def select_sidecar(
    sidecars: Sequence[Resource[Sidecar]], node: ProxyNode, root_namespace: str
) -> Resource[Sidecar] | None:
    """Istio's precedence: a Sidecar in the proxy's namespace selecting its labels, then the
    namespace's Sidecar without selector, then the root namespace's."""
    local = [s for s in sidecars if s.namespace == node.namespace]
    for s in local:
        selector = s.spec.workload_selector
        if selector is not None and selector.labels and selector.matches(node.labels):
            return s
    for candidates in (local, [s for s in sidecars if s.namespace == root_namespace]):
        for s in candidates:
            if s.spec.workload_selector is None or not s.spec.workload_selector.labels:
                return s
    return None


def sidecar_scope(
    sidecars: Sequence[Resource[Sidecar]],
    node: ProxyNode,
    root_namespace: str,
    mesh_mode: OutboundMode,
) -> SidecarScope:
    resource = None if node.is_router else select_sidecar(sidecars, node, root_namespace)
    if resource is None:
        return SidecarScope(node.namespace, mesh_mode)
    spec: Sidecar = resource.spec
    mode = mesh_mode
    if spec.outbound_traffic_policy is not None:
        mode = spec.outbound_traffic_policy.mode.value
    hosts = tuple(split_namespaced_host(h) for e in spec.egress for h in e.hosts)
    # A Sidecar found in the root namespace applies with "." meaning the proxy's namespace.
    return SidecarScope(node.namespace, mode, resource, hosts)
