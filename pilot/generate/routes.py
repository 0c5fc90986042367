"""RDS for sidecars: one route configuration per outbound HTTP port (named by the port,
``"9080"``), with a virtual host per service; in process mode also ``pymesh-outbound``, all
of them merged for the single HTTP_PROXY listener, which routes by Host header alone.
"""

from __future__ import annotations

from typing import Any

from pilot.generate.common import PASSTHROUGH, PROCESS_OUTBOUND_ROUTE, ROUTE_TYPE, to_proto
from pilot.generate.http_routes import RouteScope, default_route, virtual_service_routes
from pilot.generate.scope import OutboundPort, outbound_ports
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Service

__all__ = [
    "ALLOW_ANY",
    "BLOCK_ALL",
    "build_sidecar_routes",
    "home_port",
    "service_domains",
    "sidecar_route_configs",
]

ALLOW_ANY = "allow_any"
BLOCK_ALL = "block_all"


def service_domains(service: Service, port: int, node: ProxyNode) -> tuple[list[str], list[str]]:
    """Istio's virtual host domains for a service: the names without port (which a client
    uses on the port it dialled) and the same names with ``:port``."""
    names = [service.hostname]
    if service.origin == "Kubernetes":
        if service.namespace == node.namespace:
            names.append(service.name)
        names.append(f"{service.name}.{service.namespace}")
        names.append(f"{service.name}.{service.namespace}.svc")
    names.extend(a for a in service.addresses if "/" not in a)
    bare = list(dict.fromkeys(names))
    return bare, [f"{n}:{port}" for n in bare]


def home_port(service: Service) -> int:
    """The port a Host header without port means for this service: 80 when it has that
    port, else its lowest HTTP port (pymesh's choice for the merged process-mode config)."""
    http = sorted(p.port for p in service.ports if p.is_http)
    return 80 if 80 in http else http[0]


def _virtual_host(scope: RouteScope, service: Service, domains: list[str]) -> dict[str, Any]:
    ctx, node, port = scope.ctx, scope.node, scope.port
    operation = f"{service.hostname}:{port}/*"
    vs = ctx.virtual_service_for_host(node, service.hostname)
    routes = virtual_service_routes(scope, vs, operation) if vs is not None else []
    if vs is None:
        routes = [default_route(scope, service, port)]
    return {
        "name": f"{service.hostname}:{port}",
        "domains": domains,
        "routes": routes,
        "include_request_attempt_count": True,
    }


def _catch_all(mode: str) -> dict[str, Any]:
    if mode == "REGISTRY_ONLY":
        route: dict[str, Any] = {
            "name": BLOCK_ALL,
            "match": {"prefix": "/"},
            "direct_response": {"status": 502},
        }
        name = BLOCK_ALL
    else:
        route = {
            "name": ALLOW_ANY,
            "match": {"prefix": "/"},
            "route": {"cluster": PASSTHROUGH, "timeout": "0s"},
        }
        name = ALLOW_ANY
    return {
        "name": name,
        "domains": ["*"],
        "routes": [route],
        "include_request_attempt_count": True,
    }


def _port_config(ctx: PushContext, node: ProxyNode, op: OutboundPort, mode: str) -> dict[str, Any]:
    scope = RouteScope(ctx, node, op.port)
    seen: set[str] = set()
    hosts = []
    for service in op.http:
        bare, ported = service_domains(service, op.port, node)
        domains = [d for pair in zip(bare, ported, strict=True) for d in pair if d not in seen]
        seen.update(domains)
        if domains:
            hosts.append(_virtual_host(scope, service, domains))
    hosts.append(_catch_all(mode))
    return {"name": str(op.port), "virtual_hosts": hosts, "validate_clusters": False}


def _merged(
    ctx: PushContext,
    node: ProxyNode,
    ports: tuple[OutboundPort, ...],
    configs: list[dict[str, Any]],
    mode: str,
) -> dict[str, Any]:
    by_port = {op.port: op for op in ports}
    seen: set[str] = set()
    hosts = []
    for config in configs:
        op = by_port[int(config["name"])]
        by_name = {vhost["name"]: vhost for vhost in config["virtual_hosts"]}
        for service in op.http:
            vhost = by_name.get(f"{service.hostname}:{op.port}")
            if vhost is None:
                continue
            bare, ported = service_domains(service, op.port, node)
            wanted = ported + (bare if home_port(service) == op.port else [])
            domains = [d for d in wanted if d not in seen]
            seen.update(domains)
            if domains:
                hosts.append({**vhost, "domains": domains})
    hosts.sort(key=lambda h: h["name"])
    hosts.append(_catch_all(mode))
    return {"name": PROCESS_OUTBOUND_ROUTE, "virtual_hosts": hosts, "validate_clusters": False}


def sidecar_route_configs(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    mode = ctx.sidecar_scope(node).outbound_mode
    ports = tuple(op for op in outbound_ports(ctx, node) if op.http)
    configs = [_port_config(ctx, node, op, mode) for op in ports]
    if node.process_mode:
        configs.append(_merged(ctx, node, ports, configs, mode))
    return configs


def build_sidecar_routes(ctx: PushContext, node: ProxyNode) -> list[Any]:
    return [to_proto(ROUTE_TYPE, body, ctx.protos) for body in sidecar_route_configs(ctx, node)]
