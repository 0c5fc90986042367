"""Resources for gRPC's proxyless xDS clients (node metadata ``GENERATOR: grpc``), after Istio's
``grpcgen``: an API listener per ``host:port`` a client may dial (``xds:///reviews:9080``),
a route configuration of the same name, EDS clusters and their endpoints.

gRPC speaks HTTP/2 straight to the server, so endpoints are the apps' own ports even when the
server has a process-mode sidecar; route timeouts become ``max_stream_duration`` (gRFC A31)
and only the fault and router filters are used (gRPC rejects the others).
"""

from __future__ import annotations

from typing import Any

from pilot.generate.clusters import outbound_plans
from pilot.generate.common import (
    ADS,
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    socket_address,
    to_proto,
    typed,
)
from pilot.generate.http_routes import RouteScope, default_route, virtual_service_routes
from pilot.generate.routes import service_domains
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Service, ServicePort
from pymesh.config.hosts import is_ip
from pymesh.config.model.common import labels_match

__all__ = ["generate", "is_proxyless"]

_FAULT = "envoy.filters.http.fault"


def is_proxyless(node: ProxyNode) -> bool:
    """Istio's mark of a proxyless gRPC client: node metadata ``GENERATOR: grpc``."""
    return node.metadata.get("GENERATOR") == "grpc"


def _targets(ctx: PushContext, node: ProxyNode) -> list[tuple[Service, ServicePort]]:
    return [
        (service, port)
        for service in ctx.services_for(node)
        for port in service.ports
        if port.is_http and service.resolution != "NONE"
    ]


def _names(service: Service, port: ServicePort, node: ProxyNode) -> list[str]:
    _, ported = service_domains(service, port.port, node)
    return ported


def _grpc_route(route: dict[str, Any]) -> dict[str, Any]:
    route = dict(route)
    per_filter = {k: v for k, v in route.get("typed_per_filter_config", {}).items() if k == _FAULT}
    route.pop("typed_per_filter_config", None)
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    action = route.get("route")
    if action is not None:
        action = dict(action)
        timeout = action.pop("timeout", "0s")
        if timeout != "0s":
            action["max_stream_duration"] = {"max_stream_duration": timeout}
        route["route"] = action
    return route


def _listeners(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    found = []
    for service, port in _targets(ctx, node):
        for name in _names(service, port, node):
            hcm = {
                "rds": {"config_source": ADS, "route_config_name": name},
                "http_filters": [
                    {"name": _FAULT, "typed_config": typed("fault")},
                    {"name": "envoy.filters.http.router", "typed_config": typed("router")},
                ],
            }
            found.append({"name": name, "api_listener": {"api_listener": typed("hcm", hcm)}})
    return found


def _routes(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    found = []
    for service, port in _targets(ctx, node):
        scope = RouteScope(ctx, node, port.port)
        vs = ctx.virtual_service_for_host(node, service.hostname)
        operation = f"{service.hostname}:{port.port}/*"
        routes = (
            virtual_service_routes(scope, vs, operation)
            if vs is not None
            else [default_route(scope, service, port.port)]
        )
        for name in _names(service, port, node):
            found.append(
                {
                    "name": name,
                    "virtual_hosts": [
                        {
                            "name": f"{service.hostname}:{port.port}",
                            "domains": [name, "*"],
                            "routes": [_grpc_route(r) for r in routes],
                        }
                    ],
                }
            )
    return found


def _clusters(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    return [
        {
            "name": plan.name,
            "type": "EDS",
            "eds_cluster_config": {"eds_config": ADS, "service_name": plan.name},
            "lb_policy": "ROUND_ROBIN",
        }
        for plan in outbound_plans(ctx, node)
        if plan.kind == "EDS" and plan.port.is_http
    ]


def _endpoints(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    found = []
    for plan in outbound_plans(ctx, node):
        if plan.kind != "EDS" or not plan.port.is_http:
            continue
        lbs = [
            {
                "endpoint": {"address": socket_address(i.endpoint.address, i.endpoint.port)},
                "health_status": "HEALTHY",
            }
            for i in ctx.registry.instances(plan.service, plan.port.port)
            if labels_match(plan.labels, i.endpoint.labels) and is_ip(i.endpoint.address)
        ]
        body: dict[str, Any] = {"cluster_name": plan.name}
        if lbs:
            # gRPC drops localities without a weight (its weighted_target policy needs one).
            body["endpoints"] = [
                {"locality": {}, "lb_endpoints": lbs, "load_balancing_weight": len(lbs)}
            ]
        found.append(body)
    return found


_BUILDERS = {
    LISTENER_TYPE: _listeners,
    ROUTE_TYPE: _routes,
    CLUSTER_TYPE: _clusters,
    ENDPOINT_TYPE: _endpoints,
}


def generate(ctx: PushContext, node: ProxyNode, type_url: str) -> list[Any]:
    """Every resource of ``type_url`` for a proxyless gRPC client; none for other types."""
    builder = _BUILDERS.get(type_url)
    if builder is None:
        return []
    return [to_proto(type_url, body) for body in builder(ctx, node)]
