"""The view of a resource set that the analyzers share: services by host, workloads by
labels, and the references a VirtualService makes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymesh.config import hosts
from pymesh.config.model.common import Resource
from pymesh.config.model.kube import Deployment, Pod, PodSpec, Service
from pymesh.config.model.networking import (
    Destination,
    RouteDestination,
    ServiceEntry,
    VirtualService,
    WorkloadEntry,
)

__all__ = [
    "MeshIndex",
    "ServiceView",
    "WorkloadView",
    "destinations",
    "gateway_hosts",
    "gateway_refs",
    "on_mesh",
    "target_ports",
    "visibility",
]


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A Kubernetes Service or ServiceEntry host as the analyzers see it."""

    host: str
    ports: tuple[int, ...]
    visible_to: frozenset[str]  # namespaces, or "*"
    resource: Resource[Any]

    def visible_from(self, namespace: str) -> bool:
        return "*" in self.visible_to or namespace in self.visible_to


@dataclass(frozen=True, slots=True)
class WorkloadView:
    namespace: str
    labels: Mapping[str, str]
    spec: PodSpec | None


def visibility(export_to: Sequence[str], namespace: str) -> frozenset[str]:
    """Namespaces that see a resource; ``*`` is everyone, empty (``~``) is no one."""
    if not export_to:
        return frozenset({"*"})
    return frozenset(namespace if e == "." else e for e in export_to if e != "~")


class MeshIndex:
    def __init__(self, resources: Iterable[Resource[Any]]) -> None:
        self.resources = tuple(resources)
        self.services: list[ServiceView] = []
        self.workloads: list[WorkloadView] = []
        for r in self.resources:
            spec = r.spec
            if isinstance(spec, Service):
                exp = r.annotations.get("networking.istio.io/exportTo", "")
                scopes = [s.strip() for s in exp.split(",") if s.strip()]
                self.services.append(
                    ServiceView(
                        hosts.service_fqdn(r.name, r.namespace),
                        tuple(p.port for p in spec.ports),
                        visibility(scopes, r.namespace),
                        r,
                    )
                )
            elif isinstance(spec, ServiceEntry):
                vis = visibility(spec.export_to, r.namespace)
                ports = tuple(p.number for p in spec.ports)
                for h in spec.hosts:
                    self.services.append(ServiceView(hosts.to_fqdn(h, r.namespace), ports, vis, r))
            elif isinstance(spec, Pod):
                self.workloads.append(WorkloadView(r.namespace, r.labels, spec))
            elif isinstance(spec, Deployment):
                self.workloads.append(
                    WorkloadView(r.namespace, spec.pod_labels, spec.template.spec)
                )
            elif isinstance(spec, WorkloadEntry):
                self.workloads.append(WorkloadView(r.namespace, spec.labels, None))

    def of(self, spec_type: type[Any]) -> Iterator[Resource[Any]]:
        return (r for r in self.resources if isinstance(r.spec, spec_type))

    def lookup(self, host: str, namespace: str) -> ServiceView | None:
        fqdn = hosts.to_fqdn(host, namespace)
        visible = [s for s in self.services if s.visible_from(namespace)]
        exact = next((s for s in visible if s.host == fqdn), None)
        if exact is not None:
            return exact
        return next((s for s in visible if hosts.host_subset_of(fqdn, s.host)), None)


def destinations(vs: VirtualService) -> Iterator[tuple[str, Destination, str]]:
    """``(path, destination, role)`` for every destination; role is "" or "mirror"."""
    for i, http in enumerate(vs.http):
        for j, rd in enumerate(http.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination, ""
        if http.mirror is not None:
            yield f"spec.http[{i}].mirror", http.mirror, "mirror"
        for j, mirror in enumerate(http.mirrors):
            yield f"spec.http[{i}].mirrors[{j}].destination", mirror.destination, "mirror"
    l4: list[tuple[str, tuple[RouteDestination, ...]]] = [
        *((f"spec.tls[{i}]", r.route) for i, r in enumerate(vs.tls)),
        *((f"spec.tcp[{i}]", r.route) for i, r in enumerate(vs.tcp)),
    ]
    for base, routes in l4:
        for j, l4_dest in enumerate(routes):
            yield f"{base}.route[{j}].destination", l4_dest.destination, ""


def on_mesh(vs: VirtualService) -> bool:
    return not vs.gateways or hosts.MESH_GATEWAY in vs.gateways


def gateway_refs(r: Resource[Any]) -> Iterator[tuple[str, str]]:
    vs: VirtualService = r.spec
    for i, gw in enumerate(vs.gateways):
        yield f"spec.gateways[{i}]", gw
    for i, http in enumerate(vs.http):
        for j, m in enumerate(http.match):
            for k, gw in enumerate(m.gateways):
                yield f"spec.http[{i}].match[{j}].gateways[{k}]", gw


def gateway_hosts(gw: Resource[Any], vs_namespace: str) -> list[str]:
    out = []
    for server in gw.spec.servers:
        for h in server.hosts:
            ns, host = hosts.split_namespaced_host(h)
            ns = gw.namespace if ns == "." else ns
            if ns in ("*", vs_namespace):
                out.append(host)
    return out


def target_ports(svc: Service, workload: WorkloadView) -> Iterator[tuple[int, int]]:
    """``(service port, port on the workload)`` for the TCP ports of ``svc``."""
    for p in svc.ports:
        if p.protocol != "TCP":
            continue
        target = p.resolved_target_port
        if isinstance(target, str):
            resolved = workload.spec.container_port(target) if workload.spec else None
            if resolved is None:
                continue
            target = resolved
        yield p.port, target
