"""Kubernetes Services and the endpoints behind them.

A Service's endpoints are the workloads its selector picks in its namespace: connected proxies
(auto-registration: the node IP is the pod IP) and WorkloadEntries. Deployments and Pods in the
configuration give no address (there is no pod status in YAML), but they tell which container
port a named ``targetPort`` means and which service account the pods run as.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from pilot.model.proxy import ProxyNode
from pilot.registry.types import Endpoint, Service, ServiceInstance, ServicePort
from pymesh.config.hosts import service_fqdn
from pymesh.config.model import kube
from pymesh.config.model.common import Resource, labels_match
from pymesh.config.model.networking import WorkloadEntry
from pymesh.config.protocol import protocol_of

__all__ = [
    "EXPORT_TO_ANNOTATION",
    "export_to",
    "kube_services",
    "node_endpoint",
    "workload_entry_endpoint",
]

log = structlog.get_logger(__name__)

EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"


@dataclass(frozen=True, slots=True)
class _Workload:
    namespace: str
    name: str
    labels: Mapping[str, str]
    spec: kube.PodSpec
    is_pod: bool


def _workloads(resources: Iterable[Resource[Any]]) -> tuple[_Workload, ...]:
    found = []
    for r in resources:
        if isinstance(r.spec, kube.Pod):
            found.append(_Workload(r.namespace, r.name, r.labels, r.spec, True))
        elif isinstance(r.spec, kube.Deployment):
            found.append(
                _Workload(r.namespace, r.name, r.spec.pod_labels, r.spec.template.spec, False)
            )
    return tuple(found)


def _workload_of(node: ProxyNode, workloads: tuple[_Workload, ...]) -> _Workload | None:
    """The Pod named like the node, else the Deployment whose template labels it carries."""
    in_ns = [w for w in workloads if w.namespace == node.namespace]
    pod = next((w for w in in_ns if w.is_pod and w.name == node.pod_name), None)
    if pod is not None:
        return pod
    return next(
        (w for w in in_ns if not w.is_pod and w.labels and labels_match(w.labels, node.labels)),
        None,
    )


def node_endpoint(
    node: ProxyNode, port: int, service_account: str = "", workload: str = ""
) -> Endpoint:
    return Endpoint(
        address=node.ip,
        port=port,
        labels=node.labels,
        service_account=service_account or node.service_account,
        namespace=node.namespace,
        locality=node.locality,
        workload=workload or node.workload_name,
        sidecar="process" if node.process_mode else "iptables",
        fronted=node.process_mode and node.app_port(port) != port,
    )


def workload_entry_endpoint(
    entry: WorkloadEntry, port: int, namespace: str, name: str = ""
) -> Endpoint:
    return Endpoint(
        address=entry.address,
        port=port,
        labels=entry.labels,
        service_account=entry.service_account,
        namespace=namespace,
        locality=entry.locality,
        weight=entry.weight,
        workload=name,
    )


def _target(port: kube.KubeServicePort, spec: kube.PodSpec | None) -> int | None:
    target = port.resolved_target_port
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    return spec.container_port(target) if spec is not None else None


def export_to(annotations: Mapping[str, str]) -> tuple[str, ...]:
    raw = annotations.get(EXPORT_TO_ANNOTATION, "")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def kube_services(
    resources: tuple[Resource[Any], ...], proxies: tuple[ProxyNode, ...], domain: str
) -> tuple[list[Service], list[ServiceInstance]]:
    workloads = _workloads(resources)
    entries = [r for r in resources if isinstance(r.spec, WorkloadEntry)]
    services: list[Service] = []
    instances: list[ServiceInstance] = []
    for r in resources:
        spec = r.spec
        if not isinstance(spec, kube.Service) or spec.type == "ExternalName":
            continue
        ports = tuple(
            ServicePort(p.port, p.name, protocol_of(p.name, p.app_protocol), p.target_port)
            for p in spec.ports
            if p.protocol.upper() == "TCP"
        )
        vip = spec.cluster_ip if spec.cluster_ip not in ("", "None") else ""
        service = Service(
            hostname=service_fqdn(r.name, r.namespace, domain),
            name=r.name,
            namespace=r.namespace,
            ports=ports,
            addresses=(vip,) if vip else (),
            export_to=export_to(r.annotations),
            labels=r.labels,
        )
        services.append(service)
        if not spec.selector:
            continue
        by_number = {p.port: p for p in spec.ports}
        for node in proxies:
            if node.namespace != r.namespace or not spec.selects(node.labels):
                continue
            workload = _workload_of(node, workloads)
            pod_spec = workload.spec if workload is not None else None
            account = pod_spec.service_account if pod_spec is not None else ""
            for sp in ports:
                target = _target(by_number[sp.port], pod_spec)
                if target is None:
                    log.warning(
                        "unresolved_target_port",
                        service=service.hostname,
                        port=sp.port,
                        node=node.id,
                    )
                    continue
                endpoint = node_endpoint(node, target, account)
                instances.append(ServiceInstance(service, sp, endpoint))
        for entry in entries:
            we: WorkloadEntry = entry.spec
            if entry.namespace != r.namespace or not labels_match(spec.selector, we.labels):
                continue
            for sp in ports:
                number = we.ports.get(sp.name) or _target(by_number[sp.port], None)
                if number is None or not we.address or we.address.startswith("unix://"):
                    continue
                instances.append(
                    ServiceInstance(
                        service, sp, workload_entry_endpoint(we, number, r.namespace, entry.name)
                    )
                )
    return services, instances
