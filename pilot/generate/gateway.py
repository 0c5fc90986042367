"""LDS and RDS for gateways (``router`` nodes).

Every port of the Gateway servers selecting the node becomes a listener ``0.0.0.0_<port>``
(Istio's name) bound on the node IP. Plain HTTP servers share one route configuration
``http.<port>``; each TLS-terminating server gets a filter chain with its certificates and
the route configuration ``https.<port>.<portName>.<gateway>.<namespace>``. Virtual hosts come
from the VirtualServices bound to the gateway, one per host. A plain TCP server's listener
forwards with the ``tcp`` rules of those VirtualServices (Istio's TCP traffic shifting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from pilot.generate.common import LISTENER_TYPE, ROUTE_TYPE, socket_address, to_proto, typed
from pilot.generate.hcm import http_connection_manager
from pilot.generate.http_routes import RouteScope, virtual_service_routes
from pilot.generate.security import security_http_filters, security_network_filters
from pilot.generate.tcp_routes import tcp_route_proxy
from pilot.generate.telemetry import observability
from pilot.generate.tls import downstream_tls
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.config.enforcement import gateway_server_served
from pymesh.config.hosts import host_matches, is_wildcard, more_specific, split_namespaced_host
from pymesh.config.model.common import Resource
from pymesh.config.model.networking import Gateway, Server

__all__ = ["GatewayServer", "build_gateway_listeners", "build_gateway_routes", "gateway_servers"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GatewayServer:
    gateway: Resource[Gateway]
    server: Server
    route_name: str
    tls: bool

    @property
    def key(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"


def _tcp_servers(ctx: PushContext, node: ProxyNode) -> dict[int, list[GatewayServer]]:
    """The plain TCP servers of the node's gateways by port (their routes are VirtualService
    ``tcp`` rules, built into the listener)."""
    by_port: dict[int, list[GatewayServer]] = {}
    for gw in ctx.gateways_for(node):
        for server in gw.spec.servers:
            if gateway_server_served(server) == "tcp":
                gs = GatewayServer(gw, server, "", False)
                by_port.setdefault(server.port.number, []).append(gs)
    return by_port


def gateway_servers(ctx: PushContext, node: ProxyNode) -> dict[int, list[GatewayServer]]:
    """The HTTP(S) servers of the node's gateways by port (TCP servers: :func:`_tcp_servers`);
    what pymesh does not serve is logged here and reported when applied."""
    by_port: dict[int, list[GatewayServer]] = {}
    for gw in ctx.gateways_for(node):
        for server in gw.spec.servers:
            port = server.port
            served = gateway_server_served(server)
            if served == "http":
                route = f"http.{port.number}"
            elif served == "https":
                route = f"https.{port.number}.{port.name}.{gw.name}.{gw.namespace}"
            elif served == "tcp":
                continue
            else:
                log.warning(
                    "gateway_server_skipped",
                    gateway=gw.ref,
                    port=port.number,
                    protocol=port.protocol,
                    reason="only HTTP, TCP and terminated TLS are served",
                )
                continue
            gs = GatewayServer(gw, server, route, served == "https")
            by_port.setdefault(port.number, []).append(gs)
    for number, servers in by_port.items():
        if any(s.tls for s in servers) and not all(s.tls for s in servers):
            log.warning("gateway_plaintext_on_tls_port", port=number)
            by_port[number] = [s for s in servers if s.tls]
    return by_port


def _server_hosts(gs: GatewayServer, vs_namespace: str) -> list[str]:
    hosts = []
    for raw in gs.server.hosts:
        ns, host = split_namespaced_host(raw)
        if ns in ("*", vs_namespace) or (ns == "." and vs_namespace == gs.gateway.namespace):
            hosts.append(host)
    return hosts


def _intersect(vs_host: str, server_host: str) -> str | None:
    if not host_matches(vs_host, server_host):
        return None
    return (
        vs_host if more_specific(vs_host, server_host) or vs_host == server_host else (server_host)
    )


def _route_config(
    ctx: PushContext, node: ProxyNode, name: str, port: int, servers: list[GatewayServer]
) -> dict[str, Any]:
    hosts: dict[str, dict[str, Any]] = {}
    for gs in servers:
        scope = RouteScope(ctx, node, port, gs.key)
        for vs in ctx.virtual_services_for(node, gs.key):
            allowed = _server_hosts(gs, vs.namespace)
            for vs_host in ctx.vs_hosts(vs):
                for server_host in allowed:
                    host = _intersect(vs_host, server_host)
                    if host is None:
                        continue
                    routes = virtual_service_routes(scope, vs, f"{host}:{port}/*")
                    vhost = hosts.setdefault(
                        host,
                        {
                            "name": f"{host}:{port}",
                            "domains": [host] if host == "*" else [host, f"{host}:*"],
                            "routes": [],
                            "include_request_attempt_count": True,
                        },
                    )
                    # Several VirtualServices for one host are merged, as on Istio gateways.
                    if routes and routes[0] not in vhost["routes"]:
                        vhost["routes"].extend(routes)
                    if gs.server.tls is not None and gs.server.tls.https_redirect:
                        vhost["require_tls"] = "ALL"
                    break
    vhosts = sorted(hosts.values(), key=lambda v: (is_wildcard(v["name"]), v["name"]))
    if not vhosts:
        vhosts = [
            {
                "name": f"blackhole:{port}",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "default",
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 404},
                    }
                ],
                "include_request_attempt_count": True,
            }
        ]
    return {"name": name, "virtual_hosts": vhosts, "validate_clusters": False}


def gateway_route_configs(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    configs = []
    for port, servers in sorted(gateway_servers(ctx, node).items()):
        by_route: dict[str, list[GatewayServer]] = {}
        for gs in servers:
            by_route.setdefault(gs.route_name, []).append(gs)
        for name, group in by_route.items():
            configs.append(_route_config(ctx, node, name, port, group))
    return configs


def gateway_listeners(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    listeners = []
    security = security_http_filters(ctx, node)
    served = gateway_servers(ctx, node)
    taken = set(served)
    for port, servers in sorted(served.items()):
        stat_prefix = f"outbound_0.0.0.0_{port}"
        chains: list[dict[str, Any]] = []
        seen_names: set[tuple[str, ...]] = set()
        for gs in servers:
            hcm = http_connection_manager(
                ctx.mesh,
                stat_prefix=stat_prefix,
                rds=gs.route_name,
                use_remote_address=True,
                observe=observability(ctx, node),
                security_filters=security,
            )
            if not gs.tls:
                if not chains:
                    chains.append({"filters": [hcm]})
                continue
            assert gs.server.tls is not None
            names = tuple(sorted({split_namespaced_host(h)[1] for h in gs.server.hosts} - {"*"}))
            if names in seen_names:
                log.warning("gateway_duplicate_tls_server", gateway=gs.gateway.ref, port=port)
                continue
            seen_names.add(names)
            chain: dict[str, Any] = {"filters": [hcm]}
            if names:
                chain["filter_chain_match"] = {"server_names": list(names)}
            socket = downstream_tls(gs.server.tls)
            if socket is not None:
                chain["transport_socket"] = socket
            chains.append(chain)
        listener: dict[str, Any] = {
            "name": f"0.0.0.0_{port}",
            "address": socket_address(node.ip, port),
            "traffic_direction": "OUTBOUND",
            "filter_chains": chains,
        }
        if any(gs.tls for gs in servers):
            listener["listener_filters"] = [
                {
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": typed("tls_inspector"),
                }
            ]
        listeners.append(listener)
    for port, servers in sorted(_tcp_servers(ctx, node).items()):
        if port in taken:
            log.warning("gateway_tcp_port_shadowed_by_http", port=port)
        elif (tcp := _tcp_listener(ctx, node, port, servers)) is not None:
            listeners.append(tcp)
    return sorted(listeners, key=lambda body: int(body["name"].rsplit("_", 1)[1]))


def _tcp_listener(
    ctx: PushContext, node: ProxyNode, port: int, servers: list[GatewayServer]
) -> dict[str, Any] | None:
    """A TCP server's listener: the first VirtualService bound to one of its gateways with a
    ``tcp`` rule for the port. None when no VirtualService routes it (istiod builds no filter
    chain then, so nothing listens)."""
    for gs in servers:
        scope = RouteScope(ctx, node, port, gs.key)
        bound = tuple(
            vs
            for vs in ctx.virtual_services_for(node, gs.key)
            if any(
                _intersect(h, server_host)
                for h in ctx.vs_hosts(vs)
                for server_host in _server_hosts(gs, vs.namespace)
            )
        )
        proxy = tcp_route_proxy(
            scope, bound, None, access_log=observability(ctx, node).tcp_access_log(False)
        )
        if proxy is not None:
            return {
                "name": f"0.0.0.0_{port}",
                "address": socket_address(node.ip, port),
                "traffic_direction": "OUTBOUND",
                "filter_chains": [{"filters": [*security_network_filters(ctx, node), proxy]}],
            }
    log.warning("gateway_tcp_server_unrouted", port=port, gateways=[gs.key for gs in servers])
    return None


def build_gateway_listeners(ctx: PushContext, node: ProxyNode) -> list[Any]:
    return [to_proto(LISTENER_TYPE, body, ctx.protos) for body in gateway_listeners(ctx, node)]


def build_gateway_routes(ctx: PushContext, node: ProxyNode) -> list[Any]:
    return [to_proto(ROUTE_TYPE, body, ctx.protos) for body in gateway_route_configs(ctx, node)]
