"""One proxy's view of the mesh, shared by the listener, route and cluster builders: which
services it reaches on which port (HTTP or TCP), and which ports it serves inbound."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Service, ServiceInstance, ServicePort
from pymesh.config.protocol import TLS_PROTOCOLS, UNSUPPORTED

__all__ = ["InboundPort", "OutboundPort", "inbound_ports", "outbound_ports"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboundPort:
    """Services the proxy reaches on one port number, split by how the port is served."""

    port: int
    http: tuple[Service, ...] = ()
    tcp: tuple[Service, ...] = ()

    @property
    def tls(self) -> tuple[Service, ...]:
        return tuple(s for s in self.tcp if _port(s, self.port).protocol in TLS_PROTOCOLS)

    @property
    def sniffed(self) -> tuple[Service, ...]:
        """The services among ``http`` whose port names no protocol: HTTP or TCP is told per
        connection (Istio's protocol sniffing)."""
        return tuple(s for s in self.http if _port(s, self.port).protocol == UNSUPPORTED)


def _port(service: Service, number: int) -> ServicePort:
    found = service.port(number)
    assert found is not None
    return found


def outbound_ports(ctx: PushContext, node: ProxyNode) -> tuple[OutboundPort, ...]:
    """Ports in service-number order. A port carrying HTTP for some services keeps its TCP
    services only when they have a VIP of their own to be told apart by."""
    by_port: dict[int, tuple[list[Service], list[Service]]] = {}
    for service in ctx.services_for(node):
        for sp in service.ports:
            if sp.protocol == "UDP":
                continue
            http, tcp = by_port.setdefault(sp.port, ([], []))
            (http if sp.is_http else tcp).append(service)
    result = []
    for port in sorted(by_port):
        http, tcp = by_port[port]
        if http and any(not s.address for s in tcp):
            dropped = [s.hostname for s in tcp if not s.address]
            log.warning("tcp_port_shadowed_by_http", port=port, services=dropped, node=node.id)
            tcp = [s for s in tcp if s.address]
        result.append(OutboundPort(port, tuple(http), tuple(tcp)))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class InboundPort:
    """One port the proxy's workload listens on, and the service ports that lead to it."""

    target_port: int
    instances: tuple[ServiceInstance, ...]

    @property
    def service_ports(self) -> tuple[int, ...]:
        return tuple(sorted({i.service_port.port for i in self.instances}))

    @property
    def is_http(self) -> bool:
        return any(i.service_port.is_http for i in self.instances)

    @property
    def sniffed(self) -> bool:
        """No service port leading here names a protocol: HTTP or TCP is told per
        connection."""
        return all(i.service_port.protocol == UNSUPPORTED for i in self.instances)


def inbound_ports(ctx: PushContext, node: ProxyNode) -> tuple[InboundPort, ...]:
    grouped: dict[int, list[ServiceInstance]] = {}
    for inst in ctx.registry.proxy_instances(node):
        grouped.setdefault(inst.endpoint.port, []).append(inst)
    return tuple(InboundPort(port, tuple(grouped[port])) for port in sorted(grouped))
