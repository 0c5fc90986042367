"""EnvoyFilter (``networking.istio.io/v1alpha3``): patches over the xDS resources pilot
generates, applied per proxy as the last, pure step of generation.

* :mod:`~pilot.envoyfilter.values` — patch values parsed into Envoy protos, with paths.
* :mod:`~pilot.envoyfilter.compiled` — filters compiled per configuration, selected per proxy.
* :mod:`~pilot.envoyfilter.listeners`, :mod:`~pilot.envoyfilter.routes`,
  :mod:`~pilot.envoyfilter.clusters` — the patchers, one per kind of resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilot.envoyfilter.clusters import patch_clusters
from pilot.envoyfilter.compiled import (
    CompiledFilter,
    CompiledPatch,
    compile_envoy_filters,
    patches_for,
)
from pilot.envoyfilter.listeners import patch_listeners
from pilot.envoyfilter.routes import patch_route_configuration
from pymesh.config.model.networking import ApplyTo
from pymesh.config.model.networking.envoy_filter import PatchContext

__all__ = [
    "CompiledFilter",
    "CompiledPatch",
    "apply_patches",
    "compile_envoy_filters",
    "patches_for",
]

_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def apply_patches(
    patches: Mapping[ApplyTo, tuple[CompiledPatch, ...]],
    type_url: str,
    resources: list[Any],
    *,
    gateway: bool,
) -> list[Any]:
    """``resources`` of ``type_url`` (fresh messages, patched in place) with ``patches``
    applied; types EnvoyFilter does not patch come back unchanged."""
    if not patches:
        return resources
    if type_url == _CLUSTER:
        return patch_clusters(patches, resources, gateway)
    if type_url == _LISTENER:
        return patch_listeners(
            patches,
            resources,
            (lambda _: PatchContext.GATEWAY) if gateway else _sidecar_listener_context,
            PatchContext.GATEWAY if gateway else PatchContext.SIDECAR_OUTBOUND,
        )
    if type_url == _ROUTE:
        context = PatchContext.GATEWAY if gateway else PatchContext.SIDECAR_OUTBOUND
        for rc in resources:
            patch_route_configuration(patches, rc, context)
    return resources


def _sidecar_listener_context(listener: Any) -> PatchContext:
    # traffic_direction INBOUND is 1 in envoy.config.core.v3.TrafficDirection
    if listener.traffic_direction == 1:
        return PatchContext.SIDECAR_INBOUND
    return PatchContext.SIDECAR_OUTBOUND
