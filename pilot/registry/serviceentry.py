"""ServiceEntries: one registry service per host, with endpoints from the entry's inline
``endpoints``, or from the WorkloadEntries and connected proxies its ``workloadSelector``
picks, or (DNS resolution with neither) the host name itself."""

from __future__ import annotations

from typing import Any

from pilot.model.proxy import ProxyNode
from pilot.registry.kube import node_endpoint, workload_entry_endpoint
from pilot.registry.types import Endpoint, Service, ServiceInstance, ServicePort
from pilot.registry.types import Resolution as ResolutionName
from pymesh.config.hosts import is_wildcard
from pymesh.config.model.common import Resource
from pymesh.config.model.networking import Location, Resolution, ServiceEntry, WorkloadEntry
from pymesh.config.protocol import protocol_of

__all__ = ["service_entry_services"]

_RESOLUTIONS: dict[Resolution, ResolutionName] = {
    Resolution.NONE: "NONE",
    Resolution.STATIC: "STATIC",
    Resolution.DNS: "DNS",
    Resolution.DNS_ROUND_ROBIN: "DNS_ROUND_ROBIN",
    # Dynamic DNS needs Envoy's dynamic forward proxy; plain DNS is the nearest pymesh has.
    Resolution.DYNAMIC_DNS: "DNS",
}


def _port_for(entry: WorkloadEntry | None, sp: ServicePort) -> int:
    if entry is not None and sp.name in entry.ports:
        return entry.ports[sp.name]
    target = sp.target_port
    return target if isinstance(target, int) and target else sp.port


def _endpoints(
    r: Resource[ServiceEntry],
    host: str,
    sp: ServicePort,
    resources: tuple[Resource[Any], ...],
    proxies: tuple[ProxyNode, ...],
) -> list[Endpoint]:
    se = r.spec
    found: list[Endpoint] = []
    if se.endpoints:
        for we in se.endpoints:
            if not we.address or we.address.startswith("unix://"):
                continue
            found.append(workload_entry_endpoint(we, _port_for(we, sp), r.namespace))
        return found
    if se.workload_selector is not None:
        selector = se.workload_selector
        for other in resources:
            spec = other.spec
            if (
                isinstance(spec, WorkloadEntry)
                and other.namespace == r.namespace
                and selector.matches(spec.labels)
                and spec.address
                and not spec.address.startswith("unix://")
            ):
                found.append(
                    workload_entry_endpoint(spec, _port_for(spec, sp), r.namespace, other.name)
                )
        for node in proxies:
            if node.namespace == r.namespace and selector.matches(node.labels):
                found.append(node_endpoint(node, _port_for(None, sp)))
        return found
    if se.resolution in ("DNS", "DNS_ROUND_ROBIN") and not is_wildcard(host):
        found.append(Endpoint(address=host, port=_port_for(None, sp), namespace=r.namespace))
    return found


def service_entry_services(
    resources: tuple[Resource[Any], ...], proxies: tuple[ProxyNode, ...], domain: str
) -> tuple[list[Service], list[ServiceInstance]]:
    del domain  # ServiceEntry hosts are used as written
    services: list[Service] = []
    instances: list[ServiceInstance] = []
    for r in resources:
        se = r.spec
        if not isinstance(se, ServiceEntry):
            continue
        ports = tuple(
            ServicePort(p.number, p.name, protocol_of(p.name, p.protocol), p.target_port or None)
            for p in se.ports
        )
        for host in se.hosts:
            service = Service(
                hostname=host,
                name=host,
                namespace=r.namespace,
                ports=ports,
                addresses=se.addresses,
                resolution=_RESOLUTIONS[se.resolution],
                mesh_external=se.location is Location.MESH_EXTERNAL,
                export_to=se.export_to,
                origin="ServiceEntry",
                labels=r.labels,
            )
            services.append(service)
            for sp in ports:
                for endpoint in _endpoints(r, host, sp, resources, proxies):
                    instances.append(ServiceInstance(service, sp, endpoint))
    return services, instances
