"""Cross-resource checks in the spirit of ``istioctl analyze``: pure functions from a set of
resources to findings, using Istio's message codes where one fits.

Every check only judges what the input can show: checks that need workloads (Pods,
Deployments, WorkloadEntries) stay quiet for services whose workloads are not in the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pymesh.config import hosts
from pymesh.config._mesh_index import (
    MeshIndex,
    destinations,
    gateway_hosts,
    gateway_refs,
    on_mesh,
    target_ports,
    visibility,
)
from pymesh.config.model.common import Resource, labels_match
from pymesh.config.model.kube import Service
from pymesh.config.model.networking import DestinationRule, Gateway, ServerTLSMode, VirtualService

__all__ = [
    "CHECKS",
    "CONFLICTING_MESH_GATEWAY_HOSTS",
    "DESTINATION_PORT_SELECTOR_REQUIRED",
    "GATEWAY_NOT_REFERENCED",
    "GATEWAY_PORT_NOT_ON_SERVICE",
    "REFERENCED_RESOURCE_NOT_FOUND",
    "SUBSET_SELECTS_NO_PODS",
    "UNKNOWN_DESTINATION_RULE_HOST",
    "VS_HOST_NOT_IN_GATEWAY",
    "Finding",
    "Level",
    "MessageType",
    "analyze",
    "conflicting_mesh_gateway_hosts",
    "destination_hosts",
    "destination_rule_hosts",
    "gateway_ports",
    "gateway_references",
    "subset_references",
    "subsets_without_workloads",
    "unreferenced_gateways",
]


class Level(StrEnum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"


@dataclass(frozen=True, slots=True)
class MessageType:
    """An analyzer message: Istio's code, name and level, and its text with ``{}`` slots."""

    code: str
    name: str
    level: Level
    template: str


REFERENCED_RESOURCE_NOT_FOUND = MessageType(
    "IST0101", "ReferencedResourceNotFound", Level.ERROR, "Referenced {} not found: {!r}"
)
CONFLICTING_MESH_GATEWAY_HOSTS = MessageType(
    "IST0109",
    "ConflictingMeshGatewayVirtualServiceHosts",
    Level.ERROR,
    "The VirtualServices {} associated with mesh gateway define the same host {} which can "
    "lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices "
    "into a single resource.",
)
DESTINATION_PORT_SELECTOR_REQUIRED = MessageType(
    "IST0112",
    "VirtualServiceDestinationPortSelectorRequired",
    Level.ERROR,
    "This VirtualService routes to a service {!r} that exposes multiple ports {}. Specifying a "
    "port in the destination is required to disambiguate.",
)
VS_HOST_NOT_IN_GATEWAY = MessageType(
    "IST0132",
    "VirtualServiceHostNotFoundInGateway",
    Level.WARNING,
    "one or more host {} defined in VirtualService {} not found in Gateway {}.",
)
GATEWAY_PORT_NOT_ON_SERVICE = MessageType(
    "IST0162",
    "GatewayPortNotDefinedOnService",
    Level.WARNING,
    "The gateway is listening on a target port (port {}) that is not defined in the Service "
    "associated with its workload instances (Pod selector {}). If you need to access the "
    "gateway port through the gateway Service, it will not be available.",
)
SUBSET_SELECTS_NO_PODS = MessageType(
    "IST0173",
    "DestinationRuleSubsetNotSelectPods",
    Level.ERROR,
    "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to "
    "503 UH (NoHealthyUpstream).",
)
UNKNOWN_DESTINATION_RULE_HOST = MessageType(
    "IST0174",
    "UnknownDestinationRuleHost",
    Level.WARNING,
    "The host {} defined in the DestinationRule does not match any services in the mesh.",
)
#: pymesh's own code: Istio has no message for a Gateway that nothing routes through.
GATEWAY_NOT_REFERENCED = MessageType(
    "PYM0001",
    "GatewayNotReferenced",
    Level.WARNING,
    "Gateway {} is not used by any VirtualService, so its servers route no traffic.",
)


@dataclass(frozen=True, slots=True)
class Finding:
    type: MessageType
    message: str
    resource: Resource[Any]
    path: str | None = None

    @property
    def code(self) -> str:
        return self.type.code

    @property
    def level(self) -> Level:
        return self.type.level

    def __str__(self) -> str:
        origin = f" {self.resource.source}" if self.resource.source else ""
        at = f" {self.path}" if self.path else ""
        return f"{self.level} [{self.code}] ({self.resource.ref}{origin}){at} {self.message}"


def _finding(
    kind: MessageType, resource: Resource[Any], path: str | None, *args: object
) -> Finding:
    return Finding(kind, kind.template.format(*args), resource, path)


def _not_found(r: Resource[Any], what: str, value: str, path: str | None = None) -> Finding:
    return _finding(REFERENCED_RESOURCE_NOT_FOUND, r, path, what, value)


def destination_hosts(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """Route and mirror destinations whose host is no Service or ServiceEntry (IST0101), whose
    port the service lacks (IST0101), or that need a port to disambiguate (IST0112)."""
    index, out = MeshIndex(resources), list[Finding]()
    for r in index.of(VirtualService):
        for path, dest, role in destinations(r.spec):
            svc = index.lookup(dest.host, r.namespace)
            if svc is None:
                out.append(_not_found(r, f"{role} host".strip(), dest.host, path))
            elif dest.port is not None:
                if svc.ports and dest.port.number not in svc.ports:
                    out.append(_not_found(r, "host:port", f"{dest.host}:{dest.port.number}", path))
            elif len(svc.ports) > 1:
                kind = DESTINATION_PORT_SELECTOR_REQUIRED
                out.append(_finding(kind, r, path, dest.host, list(svc.ports)))
    return out


def subset_references(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """Destinations naming a subset that no DestinationRule for that host defines (IST0101)."""
    index, out = MeshIndex(resources), list[Finding]()
    defined = {
        (hosts.to_fqdn(r.spec.host, r.namespace), s.name)
        for r in index.of(DestinationRule)
        for s in r.spec.subsets
    }
    for r in index.of(VirtualService):
        for path, dest, role in destinations(r.spec):
            if dest.subset and (hosts.to_fqdn(dest.host, r.namespace), dest.subset) not in defined:
                what = f"{role or 'host'}+subset in destinationrule"
                out.append(_not_found(r, what, f"{dest.host}+{dest.subset}", path))
    return out


def conflicting_mesh_gateway_hosts(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """VirtualServices bound to the mesh defining one host for the same clients (IST0109)."""
    index = MeshIndex(resources)
    by_host: dict[tuple[str, str], list[Resource[Any]]] = {}
    for r in index.of(VirtualService):
        if not on_mesh(r.spec):
            continue
        for scope in sorted(visibility(r.spec.export_to, r.namespace)):
            for h in r.spec.hosts:
                by_host.setdefault((scope, hosts.to_fqdn(h, r.namespace)), []).append(r)
    out: list[Finding] = []
    reported: set[tuple[str, str, str]] = set()
    for (scope, fqdn), group in by_host.items():
        clashing = list(group)
        if scope != "*":
            clashing += [
                v
                for (s, h), vs in by_host.items()
                if s == "*" and hosts.host_matches(fqdn, h)
                for v in vs
                if v not in clashing
            ]
        if len(clashing) < 2:
            continue
        names = ",".join(sorted(f"{v.namespace}/{v.name}" for v in clashing))
        for v in clashing:
            if v.key in reported:
                continue
            reported.add(v.key)
            out.append(_finding(CONFLICTING_MESH_GATEWAY_HOSTS, v, "metadata.name", names, fqdn))
    return out


def gateway_references(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """VirtualServices bound to a Gateway that does not exist (IST0101), or whose hosts that
    Gateway does not serve (IST0132)."""
    index, out = MeshIndex(resources), list[Finding]()
    gateways = {f"{g.namespace}/{g.name}": g for g in index.of(Gateway)}
    for r in index.of(VirtualService):
        for path, name in gateway_refs(r):
            if name == hosts.MESH_GATEWAY:
                continue
            gw = gateways.get(hosts.resolve_gateway_name(name, r.namespace))
            if gw is None:
                out.append(_not_found(r, "gateway", name, path))
                continue
            served = gateway_hosts(gw, r.namespace)
            if path.startswith("spec.gateways") and not any(
                hosts.host_matches(g, h) for g in served for h in r.spec.hosts
            ):
                vs_name, gw_name = f"{r.namespace}/{r.name}", f"{gw.namespace}/{gw.name}"
                hs = list(r.spec.hosts)
                out.append(_finding(VS_HOST_NOT_IN_GATEWAY, r, path, hs, vs_name, gw_name))
    return out


def unreferenced_gateways(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """Gateways that no VirtualService binds (they route nothing), except pure
    AUTO_PASSTHROUGH gateways, which route by SNI without one (PYM0001)."""
    index = MeshIndex(resources)
    used = {
        hosts.resolve_gateway_name(name, r.namespace)
        for r in index.of(VirtualService)
        for _, name in gateway_refs(r)
    }
    out = list[Finding]()
    for g in index.of(Gateway):
        servers = g.spec.servers
        if all(s.tls is not None and s.tls.mode is ServerTLSMode.AUTO_PASSTHROUGH for s in servers):
            continue
        if f"{g.namespace}/{g.name}" not in used:
            out.append(_finding(GATEWAY_NOT_REFERENCED, g, None, f"{g.namespace}/{g.name}"))
    return out


def gateway_ports(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """Gateway server ports that the Service in front of the gateway workloads does not expose
    (IST0162), and selectors that match no workload (IST0101) when workloads are given."""
    index, out = MeshIndex(resources), list[Finding]()
    if not index.workloads:
        return out
    services = list(index.of(Service))
    for g in index.of(Gateway):
        selector = g.spec.selector
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        matched = [w for w in index.workloads if labels_match(selector, w.labels)]
        if not matched:
            out.append(_not_found(g, "selector", text, "spec.selector"))
            continue
        ports: set[int] = set()
        for w in matched:
            for s in services:
                if s.namespace == w.namespace and s.spec.selects(w.labels):
                    for port, target in target_ports(s.spec, w):
                        ports.update((port, target))
        for i, server in enumerate(g.spec.servers):
            if server.port.number not in ports:
                p = f"spec.servers[{i}].port.number"
                out.append(_finding(GATEWAY_PORT_NOT_ON_SERVICE, g, p, server.port.number, text))
    return out


def destination_rule_hosts(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """DestinationRules whose host matches no Service or ServiceEntry (IST0174)."""
    index, out = MeshIndex(resources), list[Finding]()
    for r in index.of(DestinationRule):
        fqdn = hosts.to_fqdn(r.spec.host, r.namespace)
        if not any(hosts.host_matches(fqdn, s.host) for s in index.services):
            out.append(_finding(UNKNOWN_DESTINATION_RULE_HOST, r, "spec.host", r.spec.host))
    return out


def subsets_without_workloads(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """Subsets that select none of the (given) workloads behind their Service (IST0173)."""
    index, out = MeshIndex(resources), list[Finding]()
    services = {hosts.service_fqdn(s.name, s.namespace): s for s in index.of(Service)}
    for r in index.of(DestinationRule):
        svc = services.get(hosts.to_fqdn(r.spec.host, r.namespace))
        if svc is None:
            continue
        backends = [
            w
            for w in index.workloads
            if w.namespace == svc.namespace and svc.spec.selects(w.labels)
        ]
        if not backends:
            continue
        for i, subset in enumerate(r.spec.subsets):
            if not any(labels_match(subset.labels, w.labels) for w in backends):
                p = f"spec.subsets[{i}]"
                out.append(_finding(SUBSET_SELECTS_NO_PODS, r, p, subset.name))
    return out


CHECKS: tuple[Callable[[Iterable[Resource[Any]]], list[Finding]], ...] = (
    destination_hosts,
    subset_references,
    conflicting_mesh_gateway_hosts,
    gateway_references,
    unreferenced_gateways,
    gateway_ports,
    destination_rule_hosts,
    subsets_without_workloads,
)


def analyze(
    resources: Iterable[Resource[Any]],
    checks: Iterable[Callable[[Iterable[Resource[Any]]], list[Finding]]] | None = None,
) -> list[Finding]:
    """Run every check (or the given ones) and return their findings, errors first."""
    if checks is None:
        # The security checks build on this module's types, hence imported here.
        from pymesh.config.analyze_security import SECURITY_CHECKS

        checks = (*CHECKS, *SECURITY_CHECKS)
    items = tuple(resources)
    found = [f for check in checks for f in check(items)]
    order = {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}
    return sorted(found, key=lambda f: order[f.level])
