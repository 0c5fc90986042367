"""CLUSTER patches (Istio's ``cluster_patch.go``): a cluster matches by ``name``, else by the
service, subset and port of its ``outbound|port|subset|host`` name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilot.envoyfilter.compiled import CompiledPatch
from pilot.envoyfilter.merge import copy_message, merge
from pymesh.config.model.networking import ApplyTo, PatchOperation
from pymesh.config.model.networking.envoy_filter import PatchContext

__all__ = ["patch_clusters"]

_OP = PatchOperation


def patch_clusters(
    patches: Mapping[ApplyTo, tuple[CompiledPatch, ...]], clusters: list[Any], gateway: bool
) -> list[Any]:
    mine = patches.get(ApplyTo.CLUSTER, ())
    if not mine:
        return clusters
    out = []
    for cluster in clusters:
        context = _context_of(cluster, gateway)
        keep = True
        for patch in mine:
            if not (patch.applies_in(context) and _cluster_match(patch, cluster)):
                continue
            if patch.operation is _OP.REMOVE:
                keep = False
                break
            if patch.operation is _OP.MERGE:
                merge(cluster, patch.value)
            elif patch.operation is _OP.REPLACE:
                cluster.CopyFrom(patch.value)
        if keep:
            out.append(cluster)
    add_context = PatchContext.GATEWAY if gateway else PatchContext.SIDECAR_OUTBOUND
    out.extend(
        copy_message(p.value) for p in mine if p.operation is _OP.ADD and p.applies_in(add_context)
    )
    return out


def _context_of(cluster: Any, gateway: bool) -> PatchContext:
    if gateway:
        return PatchContext.GATEWAY
    if cluster.name.startswith("inbound|"):
        return PatchContext.SIDECAR_INBOUND
    return PatchContext.SIDECAR_OUTBOUND


def _cluster_match(patch: CompiledPatch, cluster: Any) -> bool:
    m = patch.match.cluster
    if m is None:
        return True
    if m.name:
        return bool(m.name == cluster.name)
    parts = cluster.name.split("|")
    if len(parts) != 4:
        return not (m.service or m.subset or m.port_number)
    _, port, subset, host = parts
    if m.subset and m.subset != subset:
        return False
    if m.service and m.service != host:
        return False
    return not m.port_number or str(m.port_number) == port
