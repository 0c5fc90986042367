"""The one entry point: resource type → builder."""

from __future__ import annotations

from typing import Any

from pilot.envoyfilter import apply_patches
from pilot.generate.clusters import build_clusters, outbound_plans
from pilot.generate.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from pilot.generate.endpoints import load_assignments
from pilot.generate.gateway import build_gateway_listeners, build_gateway_routes
from pilot.generate.listeners import build_sidecar_listeners
from pilot.generate.routes import build_sidecar_routes
from pilot.generate.secrets import build_secrets
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext

__all__ = ["TYPE_URLS", "generate"]

#: The types :func:`generate` serves, in the order ADS pushes them (CDS before EDS, LDS
#: before RDS).
TYPE_URLS = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)


def generate(ctx: PushContext, node: ProxyNode, type_url: str) -> list[Any]:
    """Every resource of ``type_url`` for ``node`` (protobuf messages), EnvoyFilter patches
    applied. ValueError for a type pymesh does not serve."""
    resources = _build(ctx, node, type_url)
    patches = ctx.envoy_filter_patches(node)
    if patches:
        # the generated messages may be shared with other proxies (PushContext.protos):
        # patches work on copies
        resources = [_copy(r) for r in resources]
        resources = apply_patches(patches, type_url, resources, gateway=node.is_router)
    return resources


def _copy(message: Any) -> Any:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _build(ctx: PushContext, node: ProxyNode, type_url: str) -> list[Any]:
    if type_url == CLUSTER_TYPE:
        return build_clusters(ctx, node)
    if type_url == ENDPOINT_TYPE:
        return load_assignments(ctx, node, outbound_plans(ctx, node))
    if type_url == LISTENER_TYPE:
        if node.is_router:
            return build_gateway_listeners(ctx, node)
        return build_sidecar_listeners(ctx, node)
    if type_url == ROUTE_TYPE:
        if node.is_router:
            return build_gateway_routes(ctx, node)
        return build_sidecar_routes(ctx, node)
    if type_url == SECRET_TYPE:
        return build_secrets(ctx, node)
    raise ValueError(f"unsupported xDS type {type_url!r}")
