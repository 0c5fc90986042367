"""The registry's values: services, their ports, endpoints, and instances (service port +
endpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pymesh.config.model.common import EMPTY_MAP
from pymesh.config.protocol import is_http

__all__ = ["Endpoint", "Resolution", "Service", "ServiceInstance", "ServicePort"]

Resolution = Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"]


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
    ``iptables`` that the proxy intercepts ``port``; "" that no proxy is known. ``fronted``
    (process mode): the proxy itself listens on ``address:port``, the app elsewhere.
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
    fronted: bool = False


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    service: Service
    service_port: ServicePort
    endpoint: Endpoint
