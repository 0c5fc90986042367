"""The security filters of a proxy's inbound (sidecar) or gateway listeners, in Istio's order:
authentication (``jwt_authn``) before authorization (CUSTOM, AUDIT, DENY, ALLOW). Envoy and
pymesh proxies get the same filters."""

from __future__ import annotations

from typing import Any

from pilot.generate.authn import jwt_authn_filter
from pilot.generate.authz import authz_http_filters, authz_network_filters
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext

__all__ = ["security_http_filters", "security_network_filters"]


def security_http_filters(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    jwt = jwt_authn_filter(ctx, node)
    return [*([jwt] if jwt is not None else []), *authz_http_filters(ctx, node)]


def security_network_filters(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    return authz_network_filters(ctx, node)
