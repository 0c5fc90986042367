"""VirtualService HTTP rules → Envoy routes, in order, plus the default route of a service
that no VirtualService covers.

Every route carries Istio's metadata (``istio.config``: the VirtualService) and pymesh's
(``pymesh.rule``: the index of the ``http`` rule), which ``explain`` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pilot.generate.common import (
    SERVICE_PORT_HEADER,
    duration,
    fractional,
    outbound_cluster,
    rule_path,
)
from pilot.generate.policy import hash_policies, merged_policy
from pilot.generate.route_parts import (
    cors_policy,
    direct_response,
    fault_config,
    header_mutations,
    redirect,
    retry_policy,
    route_match,
)
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Service
from pymesh.config.hosts import MESH_GATEWAY, resolve_gateway_name, to_fqdn
from pymesh.config.model.common import Resource, labels_match
from pymesh.config.model.networking import (
    Destination,
    HTTPMatchRequest,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    VirtualService,
)

__all__ = [
    "RouteScope",
    "default_route",
    "destination_cluster",
    "match_applies",
    "virtual_service_routes",
]

_FAULT = "envoy.filters.http.fault"
_CORS = "envoy.filters.http.cors"


@dataclass(frozen=True, slots=True)
class RouteScope:
    """Where routes are built: for which proxy, listener port and gateway (``mesh`` for
    sidecars); ``stamp_port`` adds the process-mode service port header."""

    ctx: PushContext
    node: ProxyNode
    port: int
    gateway: str = MESH_GATEWAY

    @property
    def stamp_port(self) -> bool:
        return self.node.process_mode


def _port_header(port: int) -> dict[str, Any]:
    return {
        "header": {"key": SERVICE_PORT_HEADER, "value": str(port)},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def destination_cluster(scope: RouteScope, dest: Destination, namespace: str) -> tuple[str, int]:
    """The cluster a destination names, and its service port (Istio: the destination's port,
    else the service's only port, else the port being routed)."""
    host = to_fqdn(dest.host, namespace, scope.ctx.domain)
    service = scope.ctx.registry.service_by_host(host)
    if dest.port is not None and dest.port.number:
        port = dest.port.number
    elif service is not None and len(service.ports) == 1:
        port = service.ports[0].port
    else:
        port = scope.port
    return outbound_cluster(port, host, dest.subset), port


def match_applies(
    scope: RouteScope, match: HTTPMatchRequest | L4MatchAttributes, namespace: str
) -> bool:
    """Whether a rule's match holds where the routes are built: port, gateway, source."""
    if match.port and match.port != scope.port:
        return False
    if match.gateways:
        resolved = {resolve_gateway_name(g, namespace) for g in match.gateways}
        if scope.gateway not in resolved:
            return False
    if match.source_labels and not labels_match(match.source_labels, scope.node.labels):
        return False
    return not (match.source_namespace and match.source_namespace != scope.node.namespace)


def _hash_policy(scope: RouteScope, dests: list[HTTPRouteDestination], ns: str) -> list[Any]:
    policies = []
    for d in dests:
        host = to_fqdn(d.destination.host, ns, scope.ctx.domain)
        service = scope.ctx.registry.service_by_host(host)
        if service is None:
            return []
        rule = scope.ctx.destination_rule(scope.node, service)
        _, port = destination_cluster(scope, d.destination, ns)
        found = merged_policy(rule.spec if rule else None, port, d.destination.subset)
        policies.append(hash_policies(found))
    # Envoy hashes per route, so a split only keeps affinity when every backend agrees.
    return policies[0] if policies and all(p == policies[0] for p in policies) else []


def _route_action(
    scope: RouteScope, rule: HTTPRoute, vs: Resource[VirtualService], route: dict[str, Any]
) -> None:
    ns = vs.namespace
    dests = [d for d in rule.route if d.weight > 0] or list(rule.route[:1])
    action: dict[str, Any] = {}
    if len(dests) == 1:
        cluster, port = destination_cluster(scope, dests[0].destination, ns)
        action["cluster"] = cluster
        for key, value in header_mutations(dests[0].headers).items():
            route.setdefault(key, []).extend(value)
        if scope.stamp_port:
            route.setdefault("request_headers_to_add", []).append(_port_header(port))
    else:
        weighted = []
        for d in dests:
            cluster, port = destination_cluster(scope, d.destination, ns)
            entry: dict[str, Any] = {"name": cluster, "weight": d.weight}
            entry.update(header_mutations(d.headers))
            if scope.stamp_port:
                entry.setdefault("request_headers_to_add", []).append(_port_header(port))
            weighted.append(entry)
        action["weighted_clusters"] = {"clusters": weighted}
    action["timeout"] = duration(rule.timeout) if rule.timeout is not None else "0s"
    retries = retry_policy(rule.retries, scope.ctx.mesh)
    if retries is not None:
        action["retry_policy"] = retries
    if rule.rewrite is not None:
        if rule.rewrite.uri_regex_rewrite is not None:
            rr = rule.rewrite.uri_regex_rewrite
            action["regex_rewrite"] = {"pattern": {"regex": rr.match}, "substitution": rr.rewrite}
        elif rule.rewrite.uri:
            action["prefix_rewrite"] = rule.rewrite.uri
        if rule.rewrite.authority:
            action["host_rewrite_literal"] = rule.rewrite.authority
    mirrors = []
    if rule.mirror is not None:
        mirrors.append((rule.mirror, rule.effective_mirror_percentage))
    mirrors.extend(
        (m.destination, m.percentage.value if m.percentage else 100.0) for m in rule.mirrors
    )
    if mirrors:
        action["request_mirror_policies"] = [
            {
                "cluster": destination_cluster(scope, dest, ns)[0],
                "runtime_fraction": {"default_value": fractional(pct)},
            }
            for dest, pct in mirrors
        ]
    hashing = _hash_policy(scope, dests, ns)
    if hashing:
        action["hash_policy"] = hashing
    route["route"] = action


def _metadata(vs: Resource[VirtualService], index: int) -> dict[str, Any]:
    return {"filter_metadata": {"istio": {"config": rule_path(vs)}, "pymesh": {"rule": index}}}


def _translate(
    scope: RouteScope,
    vs: Resource[VirtualService],
    index: int,
    rule: HTTPRoute,
    match: HTTPMatchRequest | None,
    operation: str,
) -> dict[str, Any] | None:
    route: dict[str, Any] = {"match": route_match(match)}
    name = ".".join(n for n in (rule.name, match.name if match else "") if n)
    if name:
        route["name"] = name
    route.update(header_mutations(rule.headers))
    if rule.redirect is not None:
        route["redirect"] = redirect(rule.redirect)
    elif rule.direct_response is not None:
        route["direct_response"] = direct_response(rule.direct_response)
    elif rule.route:
        _route_action(scope, rule, vs, route)
    else:
        return None  # a delegate: pymesh does not follow delegation
    route["metadata"] = _metadata(vs, index)
    route["decorator"] = {"operation": operation}
    per_filter: dict[str, Any] = {}
    if rule.fault is not None and (fault := fault_config(rule.fault)) is not None:
        per_filter[_FAULT] = fault
    if rule.cors_policy is not None:
        per_filter[_CORS] = cors_policy(rule.cors_policy)
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return route


def virtual_service_routes(
    scope: RouteScope, vs: Resource[VirtualService], operation: str
) -> list[dict[str, Any]]:
    """The routes of ``vs`` that apply at ``scope``, in rule order; a rule without match is
    a catch-all and ends the list, as in Istio."""
    routes: list[dict[str, Any]] = []
    for index, rule in enumerate(vs.spec.http):
        if rule.match:
            matches: list[HTTPMatchRequest | None] = [
                m for m in rule.match if match_applies(scope, m, vs.namespace)
            ]
            if not matches:
                continue
        else:
            matches = [None]
        for match in matches:
            route = _translate(scope, vs, index, rule, match, operation)
            if route is not None:
                routes.append(route)
        if not rule.match:
            break
    return routes


def default_route(scope: RouteScope, service: Service, port: int) -> dict[str, Any]:
    """Istio's route for a service no VirtualService covers: all traffic to its cluster."""
    action: dict[str, Any] = {
        "cluster": outbound_cluster(port, service.hostname),
        "timeout": "0s",
    }
    retries = retry_policy(None, scope.ctx.mesh)
    if retries is not None:
        action["retry_policy"] = retries
    rule = scope.ctx.destination_rule(scope.node, service)
    hashing = hash_policies(merged_policy(rule.spec if rule else None, port))
    if hashing:
        action["hash_policy"] = hashing
    route: dict[str, Any] = {
        "name": "default",
        "match": {"prefix": "/"},
        "route": action,
        "decorator": {"operation": f"{service.hostname}:{port}/*"},
    }
    if scope.stamp_port:
        route["request_headers_to_add"] = [_port_header(port)]
    return route
