"""VirtualService ``tcp`` rules → the upstream of a ``tcp_proxy`` (Istio's TCP traffic shifting).

A sidecar's outbound TCP listener for a service, and a gateway's TCP server, forward each
connection as the first ``tcp`` rule whose match applies says: one destination becomes
``cluster``, several become ``weighted_clusters`` (a 0 % destination is left out, as istiod
leaves it; Envoy refuses a weight of 0). No VirtualService, or no rule that applies, leaves the
caller's default.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pilot.generate.common import tcp_proxy
from pilot.generate.http_routes import RouteScope, destination_cluster, match_applies
from pymesh.config.model.common import Resource
from pymesh.config.model.networking import L4MatchAttributes, VirtualService

__all__ = ["tcp_route_proxy"]


def _subnets_match(match: L4MatchAttributes, address: str | None) -> bool:
    if not match.destination_subnets:
        return True
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(s, strict=False) for s in match.destination_subnets)


def _upstream(
    scope: RouteScope, vs: Resource[VirtualService], address: str | None
) -> list[tuple[str, int]] | None:
    """(cluster, weight) of the first applicable rule's destinations, or None."""
    for rule in vs.spec.tcp:
        if rule.match and not any(
            match_applies(scope, m, vs.namespace) and _subnets_match(m, address) for m in rule.match
        ):
            continue
        return [
            (destination_cluster(scope, d.destination, vs.namespace)[0], d.weight)
            for d in rule.route
            if d.weight or len(rule.route) == 1
        ]
    return None


def tcp_route_proxy(
    scope: RouteScope,
    virtual_services: tuple[Resource[VirtualService], ...],
    default: str | None,
    *,
    address: str | None = None,
    access_log: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The ``tcp_proxy`` filter for connections on ``scope.port``: routed by the first of
    ``virtual_services`` with an applicable ``tcp`` rule, else to ``default`` (None: no
    filter). ``address`` is the destination the listener serves (a service VIP), for
    ``destinationSubnets``."""
    for vs in virtual_services:
        found = _upstream(scope, vs, address)
        if not found:
            continue
        first = found[0][0]
        weights = found if len(found) > 1 else None
        return tcp_proxy(first, access_log=access_log, weights=weights)
    if default is None:
        return None
    return tcp_proxy(default, access_log=access_log)
