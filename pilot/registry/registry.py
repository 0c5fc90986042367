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
from typing import Any

from pilot.model.proxy import ProxyNode
from pilot.registry.kube import kube_services
from pilot.registry.serviceentry import service_entry_services
from pilot.registry.types import Endpoint, Resolution, Service, ServiceInstance, ServicePort
from pymesh.config.model.common import FrozenMap, Resource

__all__ = [
    "Endpoint",
    "Registry",
    "Resolution",
    "Service",
    "ServiceInstance",
    "ServicePort",
    "as_resources",
]


def as_resources(config: Any) -> tuple[Resource[Any], ...]:
    """The resources of a ``ConfigSnapshot``, a ``LoadResult`` or any iterable of them."""
    resources = getattr(config, "resources", config)
    return tuple(resources)


def _sort_key(s: Service) -> tuple[int, str, str]:
    # Kubernetes services shadow ServiceEntries for the same host, as in Istio.
    return (0 if s.origin == "Kubernetes" else 1, s.hostname, s.namespace)


class Registry:
    """Services by host and instances by (host, port). Build with :meth:`build`."""

    __slots__ = (
        "_by_address",
        "_by_host",
        "_instances",
        "_proxies",
        "derived",
        "services",
        "version",
    )

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
        # Every proxy asks for its own instances on every push: index them by address once.
        by_address: dict[str, list[ServiceInstance]] = {}
        for insts in self._instances.values():
            for inst in insts:
                by_address.setdefault(inst.endpoint.address, []).append(inst)
        self._by_address = by_address
        self._proxies: tuple[ProxyNode, ...] = tuple(sorted(proxies, key=lambda p: p.id))
        self.version: str = self._digest()
        #: views computed from this (immutable) registry once, by whoever needs them
        self.derived: dict[str, Any] = {}

    @classmethod
    def build(
        cls, config: Any, proxies: Iterable[ProxyNode] = (), *, domain: str = "cluster.local"
    ) -> Registry:
        """The registry for ``config`` (snapshot, load result or resources) and the proxies
        connected now."""
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
    def instances_by_port(self) -> Mapping[tuple[str, int], tuple[ServiceInstance, ...]]:
        """Every instance, by (hostname, service port)."""
        return self._instances

    @property
    def proxies(self) -> tuple[ProxyNode, ...]:
        return self._proxies

    def proxy_by_ip(self, ip: str) -> ProxyNode | None:
        return next((p for p in self._proxies if ip in p.addresses), None)

    def proxy_instances(self, node: ProxyNode) -> tuple[ServiceInstance, ...]:
        """The service instances a proxy fronts (its inbound side), by service and port."""
        found = [
            inst
            for address in dict.fromkeys(node.addresses)
            for inst in self._by_address.get(address, ())
            if not inst.endpoint.namespace or inst.endpoint.namespace == node.namespace
        ]
        return tuple(
            sorted(
                found,
                key=lambda i: (
                    i.service.hostname,
                    i.service_port.port,
                    i.endpoint.address,
                    i.endpoint.port,
                ),
            )
        )

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
