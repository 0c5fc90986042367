"""The security filters of a proxy's inbound (sidecar) or gateway listeners, in Istio's order:
authentication (``jwt_authn``) before authorization (CUSTOM, AUDIT, DENY, ALLOW).

pymesh proxies (``user_agent_name: pymesh``) do not run these filters yet and would refuse
(NACK) every listener carrying one, freezing all their configuration; they get none until they
do, and applying a policy says so (``pymesh.config.enforcement``). Envoy sidecars and gateways
get them all.
"""

from __future__ import annotations

from typing import Any

from pilot.generate.authn import jwt_authn_filter
from pilot.generate.authz import authz_http_filters, authz_network_filters
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext

__all__ = [
    "PYMESH_USER_AGENT",
    "enforces_policy",
    "security_http_filters",
    "security_network_filters",
]

PYMESH_USER_AGENT = "pymesh"


def enforces_policy(node: ProxyNode) -> bool:
    return node.user_agent != PYMESH_USER_AGENT


def security_http_filters(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    if not enforces_policy(node):
        return []
    jwt = jwt_authn_filter(ctx, node)
    return [*([jwt] if jwt is not None else []), *authz_http_filters(ctx, node)]


def security_network_filters(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    if not enforces_policy(node):
        return []
    return authz_network_filters(ctx, node)
