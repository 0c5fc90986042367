"""The service registry: services, their ports, and the endpoints behind each port.

Built from configuration (Kubernetes Services, Deployments and Pods, WorkloadEntries,
ServiceEntries) plus the proxies connected right now: with no pod IP in the configuration, a
connected sidecar whose ``LABELS`` match a Service selector in its namespace *is* an endpoint
of that Service (auto-registration, address = the node IP). Immutable; a change builds a new
registry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pilot.model.proxy import ProxyNode
from pilot.registry.protocol import is_http
from pymesh.config.model.common import EMPTY_MAP, FrozenMap, Resource

__all__ = [
    "Endpoint",
    "Registry",
    "Resolution",
    "Service",
    "ServiceInstance",
    "ServicePort",
    "as_resources",
]

Resolution = Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"]


def as_resources(config: Any) -> tuple[Resource[Any], ...]:
    """The resources of a ``ConfigSnapshot``, a ``LoadResult`` or any iterable of them."""
    resources = getattr(config, "resources", config)
    return tuple(resources)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A service port; ``protocol`` is Istio's (HTTP, HTTP2, GRPC, HTTPS, TLS, TCP, ...).

    ``target_port`` is a number, a container port name, or None for "same as port".
    """

    port: int
    name: str = ""
    protocol: str = "HTTP"
    target_port: int | str | None = None

    @property
    def is_http(self) -> bool:
        return is_http(self.protocol)


@dataclass(frozen=True, slots=True)
class Service:
    """A host in the registry: a Kubernetes Service or one host of a ServiceEntry."""

    hostname: str
    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    addresses: tuple[str, ...] = ()
    resolution: Resolution = "STATIC"
    mesh_external: bool = False
    #: namespaces the service is visible from ("*" everywhere, "." its own); empty = all
    export_to: tuple[str, ...] = ()
    origin: Literal["Kubernetes", "ServiceEntry"] = "Kubernetes"
    labels: Mapping[str, str] = EMPTY_MAP

    @property
    def address(self) -> str:
        """The first VIP (cluster IP or ServiceEntry address), "" when there is none."""
        return self.addresses[0] if self.addresses else ""

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one instance of a service port listens.

    ``sidecar`` is the mode of the proxy in front of the workload: ``process`` means mesh
    traffic goes to that proxy's inbound listener (``<address>:15006``), not to ``port``;
    ``iptables`` that the proxy intercepts ``port``; "" that no proxy is known.
    """

    address: str
    port: int
    labels: Mapping[str, str] = EMPTY_MAP
    service_account: str = ""
    namespace: str = ""
    locality: str = ""
    healthy: bool = True
    weight: int = 0
    workload: str = ""
    sidecar: Literal["", "process", "iptables"] = ""


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    service: Service
    service_port: ServicePort
    endpoint: Endpoint


def _sort_key(s: Service) -> tuple[int, str, str]:
    # Kubernetes services shadow ServiceEntries for the same host, as in Istio.
    return (0 if s.origin == "Kubernetes" else 1, s.hostname, s.namespace)


class Registry:
    """Services by host and instances by (host, port). Build with :meth:`build`."""

    __slots__ = ("_by_host", "_instances", "_proxies", "services", "version")

    def __init__(
        self,
        services: Iterable[Service] = (),
        instances: Iterable[ServiceInstance] = (),
        proxies: Iterable[ProxyNode] = (),
    ) -> None:
        by_host: dict[str, Service] = {}
        for service in sorted(services, key=_sort_key):
            by_host.setdefault(service.hostname, service)
        self.services: tuple[Service, ...] = tuple(by_host[h] for h in sorted(by_host))
        self._by_host: FrozenMap[str, Service] = FrozenMap(by_host)
        grouped: dict[tuple[str, int], list[ServiceInstance]] = {}
        for inst in instances:
            if by_host.get(inst.service.hostname) is inst.service:
                grouped.setdefault((inst.service.hostname, inst.service_port.port), []).append(inst)
        self._instances: FrozenMap[tuple[str, int], tuple[ServiceInstance, ...]] = FrozenMap(
            (key, tuple(sorted(v, key=lambda i: (i.endpoint.address, i.endpoint.port))))
            for key, v in sorted(grouped.items())
        )
        self._proxies: tuple[ProxyNode, ...] = tuple(sorted(proxies, key=lambda p: p.id))
        self.version: str = self._digest()

    @classmethod
    def build(
        cls, config: Any, proxies: Iterable[ProxyNode] = (), *, domain: str = "cluster.local"
    ) -> Registry:
        """The registry for ``config`` (snapshot, load result or resources) and the proxies
        connected now."""
        from pilot.registry.kube import kube_services
        from pilot.registry.serviceentry import service_entry_services

        resources = as_resources(config)
        nodes = tuple(proxies)
        services, instances = kube_services(resources, nodes, domain)
        se_services, se_instances = service_entry_services(resources, nodes, domain)
        return cls([*services, *se_services], [*instances, *se_instances], nodes)

    def service_by_host(self, hostname: str) -> Service | None:
        return self._by_host.get(hostname)

    def instances(self, service: Service | str, port: int) -> tuple[ServiceInstance, ...]:
        """Instances of ``service`` (object or hostname) behind service port ``port``."""
        host = service if isinstance(service, str) else service.hostname
        return self._instances.get((host, port), ())

    @property
    def proxies(self) -> tuple[ProxyNode, ...]:
        return self._proxies

    def proxy_by_ip(self, ip: str) -> ProxyNode | None:
        return next((p for p in self._proxies if ip in p.addresses), None)

    def proxy_instances(self, node: ProxyNode) -> tuple[ServiceInstance, ...]:
        """The service instances a proxy fronts (its inbound side), by service and port."""
        found = [
            inst
            for insts in self._instances.values()
            for inst in insts
            if inst.endpoint.address in node.addresses
            and (not inst.endpoint.namespace or inst.endpoint.namespace == node.namespace)
        ]
        return tuple(sorted(found, key=lambda i: (i.service.hostname, i.service_port.port)))

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for service in self.services:
            digest.update(repr(service).encode())
        for key, insts in self._instances.items():
            digest.update(repr(key).encode())
            for inst in insts:
                digest.update(repr(inst.endpoint).encode())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Registry(services={len(self.services)}, version={self.version!r})"
