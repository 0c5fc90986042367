"""ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE patches (Istio's ``rc_patch.go``).

A route configuration matches on its port: the number of a sidecar's outbound route
configuration (``"9080"``), of an inbound one (``inbound|9080||``), of a gateway's
(``http.8080``, with ``portName`` and ``gateway`` for ``https.443.<port name>.<gateway>.<ns>``).
pymesh's process-mode tables that gather several ports (``pymesh-outbound``,
``pymesh-inbound``) match each virtual host on the port in its name. A virtual host matches on
``name`` (empty: any); a route on ``name`` and ``action`` (ROUTE, REDIRECT, DIRECT_RESPONSE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilot.envoyfilter.compiled import CompiledPatch
from pilot.envoyfilter.merge import copy_message, merge, replace_items
from pymesh.config.model.networking import ApplyTo, PatchOperation
from pymesh.config.model.networking.envoy_filter import PatchContext, RouteAction

__all__ = ["patch_route_configuration"]

_OP = PatchOperation
_MERGED_TABLES = ("pymesh-outbound", "pymesh-inbound")
_ACTIONS = {
    RouteAction.ROUTE: "route",
    RouteAction.REDIRECT: "redirect",
    RouteAction.DIRECT_RESPONSE: "direct_response",
}


def patch_route_configuration(
    patches: Mapping[ApplyTo, tuple[CompiledPatch, ...]], rc: Any, context: PatchContext
) -> None:
    """Apply every route-level patch for a proxy in ``context`` to ``rc`` in place."""
    for patch in patches.get(ApplyTo.ROUTE_CONFIGURATION, ()):
        if patch.operation is _OP.MERGE and _rc_match(patch, rc, context, None):
            merge(rc, patch.value)
    vhost_patches = patches.get(ApplyTo.VIRTUAL_HOST, ())
    route_patches = patches.get(ApplyTo.HTTP_ROUTE, ())
    kept = []
    for vhost in list(rc.virtual_hosts):
        current: Any | None = vhost
        for patch in vhost_patches:
            if current is None or not _vhost_match(patch, rc, current, context):
                continue
            if patch.operation is _OP.REMOVE:
                current = None
            elif patch.operation is _OP.MERGE:
                merge(current, patch.value)
            elif patch.operation is _OP.REPLACE:
                current.CopyFrom(patch.value)
        if current is not None:
            _patch_routes(route_patches, rc, current, context)
            kept.append(current)
    for patch in vhost_patches:
        if patch.operation is _OP.ADD and _rc_match(patch, rc, context, None):
            added = rc.virtual_hosts.add()
            added.CopyFrom(patch.value)
            kept.append(added)
    replace_items(rc.virtual_hosts, kept)


def _patch_routes(
    patches: tuple[CompiledPatch, ...], rc: Any, vhost: Any, context: PatchContext
) -> None:
    """Removes and merges first, then additions and insertions (Istio's two passes)."""
    mine = [p for p in patches if _vhost_match(p, rc, vhost, context)]
    routes = list(vhost.routes)
    for patch in mine:
        if patch.operation is _OP.REMOVE:
            routes = [r for r in routes if not _route_match(patch, r)]
        elif patch.operation is _OP.MERGE:
            for route in routes:
                if _route_match(patch, route):
                    merge(route, patch.value)
    for patch in mine:
        if patch.operation is _OP.ADD:
            routes.append(copy_message(patch.value))
        elif patch.operation in (_OP.INSERT_BEFORE, _OP.INSERT_AFTER, _OP.INSERT_FIRST):
            routes = _insert(patch, routes)
    replace_items(vhost.routes, routes)


def _insert(patch: CompiledPatch, routes: list[Any]) -> list[Any]:
    """Without a route to match, BEFORE and FIRST insert at the start and AFTER at the end;
    with one, at the first matching route (FIRST: at the start, if any route matches)."""
    operation = patch.operation
    if not _has_route_match(patch):
        return (
            [*routes, copy_message(patch.value)]
            if operation is _OP.INSERT_AFTER
            else [
                copy_message(patch.value),
                *routes,
            ]
        )
    for index, route in enumerate(routes):
        if _route_match(patch, route):
            if operation is _OP.INSERT_FIRST:
                return [copy_message(patch.value), *routes]
            at = index + 1 if operation is _OP.INSERT_AFTER else index
            return [*routes[:at], copy_message(patch.value), *routes[at:]]
    return routes


def _rc_match(patch: CompiledPatch, rc: Any, context: PatchContext, vhost: Any | None) -> bool:
    if not patch.applies_in(context):
        return False
    m = patch.match.route_configuration
    if m is None:
        return True
    if m.name and m.name != rc.name:
        return False
    if context is PatchContext.GATEWAY:
        port, port_name, gateway = _gateway_route_name(rc.name)
        if m.port_name and m.port_name != port_name:
            return False
        if m.gateway and m.gateway != gateway:
            return False
    elif rc.name in _MERGED_TABLES:
        # Every port is in one table: only a virtual host says which port it is for.
        port = _vhost_port(vhost) if vhost is not None else (0 if m.port_number == 0 else -1)
    else:
        port = _sidecar_port(rc.name)
    return not m.port_number or m.port_number == port


def _vhost_match(patch: CompiledPatch, rc: Any, vhost: Any, context: PatchContext) -> bool:
    if not _rc_match(patch, rc, context, vhost):
        return False
    m = patch.match.route_configuration
    if m is None or m.vhost is None:
        return True
    if m.vhost.domain_name and m.vhost.domain_name not in vhost.domains:
        return False
    return not m.vhost.name or m.vhost.name == vhost.name


def _has_route_match(patch: CompiledPatch) -> bool:
    m = patch.match.route_configuration
    return m is not None and m.vhost is not None and m.vhost.route is not None


def _route_match(patch: CompiledPatch, route: Any) -> bool:
    if not _has_route_match(patch):
        return True
    rc = patch.match.route_configuration
    m = rc.vhost.route if rc is not None and rc.vhost is not None else None
    if m is None:
        return True
    if m.name and m.name != route.name:
        return False
    if m.action is RouteAction.ANY:
        return True
    return bool(route.WhichOneof("action") == _ACTIONS[m.action])


def _sidecar_port(name: str) -> int:
    if name.startswith("inbound|"):
        parts = name.split("|")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return int(name) if name.isdigit() else 0


def _vhost_port(vhost: Any) -> int:
    """``reviews.default.svc.cluster.local:9080`` or ``inbound|http|9080`` → 9080."""
    tail = vhost.name.rsplit(":", 1)[-1].rsplit("|", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _gateway_route_name(name: str) -> tuple[int, str, str]:
    """``http.8080`` → (8080, "", ""); ``https.443.https.bookinfo-gateway.default`` →
    (443, "https", "default/bookinfo-gateway")."""
    parts = name.split(".")
    port = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if len(parts) >= 5:
        return port, parts[2], f"{parts[4]}/{parts[3]}"
    return port, "", ""
