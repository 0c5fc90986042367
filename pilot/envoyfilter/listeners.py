"""LISTENER, FILTER_CHAIN, NETWORK_FILTER and HTTP_FILTER patches (Istio's
``listener_patch.go``), and route patches on the route configurations listeners carry inline.

Order, as in Istio: per listener its removes and merges, then its filter chains (removes and
merges, then additions), their network filters (insertions, removals, then merges), and the
HTTP filters of each HTTP connection manager; listener additions come last. An insertion
without a filter to match goes to the front (BEFORE, FIRST) or the back (AFTER).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pilot.envoyfilter.compiled import CompiledPatch
from pilot.envoyfilter.merge import copy_message, merge, merge_typed_config, replace_items
from pilot.envoyfilter.routes import patch_route_configuration
from pymesh.config.model.networking import ApplyTo, PatchOperation
from pymesh.config.model.networking.envoy_filter import PatchContext

__all__ = ["HCM", "patch_listeners"]

HCM = "envoy.filters.network.http_connection_manager"
_VIRTUAL = ("virtualInbound", "virtualOutbound")
_OP = PatchOperation
Patches = Mapping[ApplyTo, tuple[CompiledPatch, ...]]


def patch_listeners(
    patches: Patches, listeners: list[Any], context_of: Callable[[Any], PatchContext],
    add_context: PatchContext,
) -> list[Any]:  # fmt: skip
    """The listeners with every patch applied; ``context_of`` gives each listener's patch
    context, ``add_context`` the one listener additions are made for."""
    out = []
    for listener in listeners:
        context = context_of(listener)
        removed = False
        for patch in patches.get(ApplyTo.LISTENER, ()):
            if not (patch.applies_in(context) and _listener_match(patch, listener)):
                continue
            if patch.operation is _OP.REMOVE:
                removed = True
                break
            if patch.operation is _OP.MERGE:
                merge(listener, patch.value)
        if removed:
            continue
        _patch_filter_chains(patches, listener, context)
        out.append(listener)
    for patch in patches.get(ApplyTo.LISTENER, ()):
        if patch.operation is not _OP.ADD:
            continue
        # ADD without a context adds for outbound sidecars and gateways only (as Istio).
        if patch.context is PatchContext.ANY and add_context is PatchContext.SIDECAR_INBOUND:
            continue
        if patch.applies_in(add_context):
            out.append(copy_message(patch.value))
    return out


def _patch_filter_chains(patches: Patches, listener: Any, context: PatchContext) -> None:
    chain_patches = patches.get(ApplyTo.FILTER_CHAIN, ())
    kept = []
    for chain in list(listener.filter_chains):
        if _patch_chain(patches, chain_patches, listener, chain, context):
            kept.append(chain)
    for patch in chain_patches:
        if (
            patch.operation is _OP.ADD
            and patch.applies_in(context)
            and _listener_match(patch, listener)
        ):
            kept.append(copy_message(patch.value))
    replace_items(listener.filter_chains, kept)
    if listener.HasField("default_filter_chain") and not _patch_chain(
        patches, chain_patches, listener, listener.default_filter_chain, context
    ):
        listener.ClearField("default_filter_chain")


def _patch_chain(
    patches: Patches, chain_patches: tuple[CompiledPatch, ...], listener: Any, chain: Any,
    context: PatchContext,
) -> bool:  # fmt: skip
    """Patch one filter chain in place; False when a patch removes it."""
    for patch in chain_patches:
        if not _chain_scope(patch, listener, chain, context):
            continue
        if patch.operation is _OP.REMOVE:
            return False
        if patch.operation is _OP.MERGE:
            merge(chain, patch.value)
    _patch_network_filters(patches, listener, chain, context)
    return True


def _patch_network_filters(
    patches: Patches, listener: Any, chain: Any, context: PatchContext
) -> None:
    mine = [
        p
        for p in patches.get(ApplyTo.NETWORK_FILTER, ())
        if _chain_scope(p, listener, chain, context)
    ]
    filters = _edit_list(mine, list(chain.filters), _network_filter_name)
    for patch in mine:
        if patch.operation is _OP.MERGE:
            for item in filters:
                if _network_filter_match(patch, item):
                    _merge_filter(item, patch.value)
    for item in filters:
        if item.name == HCM and item.HasField("typed_config"):
            _patch_hcm(patches, listener, chain, item, context)
    replace_items(chain.filters, filters)


def _patch_hcm(
    patches: Patches, listener: Any, chain: Any, item: Any, context: PatchContext
) -> None:
    hcm = hcm_pb2.HttpConnectionManager()
    if not item.typed_config.Unpack(hcm):
        return
    mine = [
        p
        for p in patches.get(ApplyTo.HTTP_FILTER, ())
        if _chain_scope(p, listener, chain, context) and _network_filter_match(p, item)
    ]
    filters = _edit_list(mine, list(hcm.http_filters), _http_filter_name)
    for patch in mine:
        if patch.operation is _OP.MERGE:
            for http_filter in filters:
                if _http_filter_match(patch, http_filter):
                    _merge_filter(http_filter, patch.value)
    replace_items(hcm.http_filters, filters)
    if hcm.HasField("route_config"):
        patch_route_configuration(patches, hcm.route_config, context)
    item.typed_config.Pack(hcm)


def _edit_list(
    patches: list[CompiledPatch], items: list[Any], name_of: Callable[[CompiledPatch], str | None]
) -> list[Any]:
    """ADD, INSERT_*, REPLACE and REMOVE over a list of named filters, in patch order."""
    for patch in patches:
        operation = patch.operation
        wanted = name_of(patch)
        value = patch.value
        if operation is _OP.ADD:
            items.append(copy_message(value))
        elif operation is _OP.INSERT_FIRST:
            items.insert(0, copy_message(value))
        elif operation in (_OP.INSERT_BEFORE, _OP.INSERT_AFTER):
            if wanted is None:
                items.insert(
                    0 if operation is _OP.INSERT_BEFORE else len(items), copy_message(value)
                )
                continue
            for index, item in enumerate(items):
                if item.name == wanted:
                    at = index if operation is _OP.INSERT_BEFORE else index + 1
                    items.insert(at, copy_message(value))
                    break
        elif operation is _OP.REPLACE and wanted is not None:
            items = [copy_message(value) if item.name == wanted else item for item in items]
        elif operation is _OP.REMOVE and wanted is not None:
            items = [item for item in items if item.name != wanted]
    return items


def _merge_filter(item: Any, value: Any) -> None:
    """A filter's MERGE: a new name if given, and the typed configs merged field by field."""
    if item.WhichOneof("config_type") != "typed_config":
        return  # Istio skips filters without a typed config
    if value.name:
        item.name = value.name
    if value.HasField("typed_config"):
        merge_typed_config(item.typed_config, value.typed_config)


# --- matching ------------------------------------------------------------------------------


def _listener_match(patch: CompiledPatch, listener: Any) -> bool:
    m = patch.match.listener
    if m is None:
        return True
    if m.name and m.name != listener.name:
        return False
    # The virtual listeners hold every port: the port is matched per filter chain instead.
    if patch.apply_to is not ApplyTo.LISTENER and listener.name in _VIRTUAL:
        return True
    return not m.port_number or listener.address.socket_address.port_value == m.port_number


def _chain_scope(patch: CompiledPatch, listener: Any, chain: Any, context: PatchContext) -> bool:
    if not (patch.applies_in(context) and _listener_match(patch, listener)):
        return False
    m = patch.match.listener
    if m is None:
        return True
    fcm = chain.filter_chain_match
    if listener.name in _VIRTUAL and m.port_number and fcm.destination_port.value != m.port_number:
        return False
    c = m.filter_chain
    if c is None:
        return True
    if c.name and c.name != chain.name:
        return False
    if c.sni and c.sni not in fcm.server_names:
        return False
    if c.transport_protocol and c.transport_protocol != fcm.transport_protocol:
        return False
    if c.application_protocols and not all(
        p in fcm.application_protocols for p in c.application_protocols.split(",")
    ):
        return False
    return not c.destination_port or fcm.destination_port.value == c.destination_port


def _network_filter_name(patch: CompiledPatch) -> str | None:
    m = patch.match.listener
    if m is None or m.filter_chain is None or m.filter_chain.filter is None:
        return None
    return m.filter_chain.filter.name


def _network_filter_match(patch: CompiledPatch, item: Any) -> bool:
    name = _network_filter_name(patch)
    return name is None or name == item.name


def _http_filter_name(patch: CompiledPatch) -> str | None:
    m = patch.match.listener
    if m is None or m.filter_chain is None or m.filter_chain.filter is None:
        return None
    sub = m.filter_chain.filter.sub_filter
    return None if sub is None else sub.name


def _http_filter_match(patch: CompiledPatch, item: Any) -> bool:
    name = _http_filter_name(patch)
    return name is None or name == item.name
