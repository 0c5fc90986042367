"""EnvoyFilters compiled once per configuration: values parsed into protos, then picked per
proxy in Istio's order.

Selection (Istio's ``PushContext.EnvoyFilters``): the filters of the root namespace whose
selector matches the proxy (no selector: every proxy of the mesh), then those of the proxy's
own namespace; all of them ordered by ``priority``, then by ``name.namespace`` (pymesh keeps
no creation time). A patch whose value Envoy's protos reject is an error of its filter: pilot
refuses to apply it and, read from a file, skips that patch and logs why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from pilot.envoyfilter.values import parse_value, plain
from pymesh.config.model.common import Resource, labels_match
from pymesh.config.model.networking import ApplyTo, EnvoyFilter, PatchOperation
from pymesh.config.model.networking.envoy_filter import (
    EnvoyConfigObjectMatch,
    FilterClass,
    PatchContext,
)
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["CompiledFilter", "CompiledPatch", "compile_envoy_filters", "patches_for"]

VALUE_TYPES: Mapping[ApplyTo, type[Message]] = {
    ApplyTo.LISTENER: listener_pb2.Listener,
    ApplyTo.FILTER_CHAIN: listener_components_pb2.FilterChain,
    ApplyTo.NETWORK_FILTER: listener_components_pb2.Filter,
    ApplyTo.HTTP_FILTER: hcm_pb2.HttpFilter,
    ApplyTo.ROUTE_CONFIGURATION: route_pb2.RouteConfiguration,
    ApplyTo.VIRTUAL_HOST: route_components_pb2.VirtualHost,
    ApplyTo.HTTP_ROUTE: route_components_pb2.Route,
    ApplyTo.CLUSTER: cluster_pb2.Cluster,
}

_OP = PatchOperation
# What each kind of object does with each operation, as Istio's patchers implement them; any
# other pairing would be ignored by Istio, so pymesh refuses it instead of dropping it.
_OPERATIONS: Mapping[ApplyTo, frozenset[PatchOperation]] = {
    ApplyTo.LISTENER: frozenset({_OP.ADD, _OP.REMOVE, _OP.MERGE}),
    ApplyTo.FILTER_CHAIN: frozenset({_OP.ADD, _OP.REMOVE, _OP.MERGE}),
    ApplyTo.NETWORK_FILTER: frozenset(_OP) - {_OP.INVALID},
    ApplyTo.HTTP_FILTER: frozenset(_OP) - {_OP.INVALID},
    ApplyTo.ROUTE_CONFIGURATION: frozenset({_OP.MERGE}),
    ApplyTo.VIRTUAL_HOST: frozenset({_OP.ADD, _OP.REMOVE, _OP.MERGE, _OP.REPLACE}),
    ApplyTo.HTTP_ROUTE: frozenset(_OP) - {_OP.INVALID, _OP.REPLACE},
    ApplyTo.CLUSTER: frozenset({_OP.ADD, _OP.REMOVE, _OP.MERGE, _OP.REPLACE}),
}


@dataclass(frozen=True, slots=True)
class CompiledPatch:
    apply_to: ApplyTo
    operation: PatchOperation
    match: EnvoyConfigObjectMatch
    value: Any  # the Envoy message of VALUE_TYPES[apply_to]; None for REMOVE
    owner: str  # "namespace/name" of its EnvoyFilter, for logs

    @property
    def context(self) -> PatchContext:
        return self.match.context

    def applies_in(self, context: PatchContext) -> bool:
        """Whether the patch is for proxies in ``context`` (ANY is every context)."""
        return self.match.context is PatchContext.ANY or self.match.context is context


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    namespace: str
    name: str
    labels: Mapping[str, str] | None  # the workload selector; None selects every workload
    priority: int
    proxy_version: re.Pattern[str] | None
    proxy_metadata: Mapping[str, str]
    patches: tuple[CompiledPatch, ...]
    errors: tuple[ValidationError, ...]

    def selects(self, labels: Mapping[str, str], metadata: Mapping[str, object]) -> bool:
        if self.labels is not None and not labels_match(self.labels, labels):
            return False
        if self.proxy_version is not None and not self.proxy_version.search(
            str(metadata.get("ISTIO_VERSION", ""))
        ):
            return False
        return all(str(metadata.get(k)) == v for k, v in self.proxy_metadata.items())


def compile_envoy_filters(resources: Iterable[Resource[EnvoyFilter]]) -> tuple[CompiledFilter, ...]:
    return tuple(_compile(res) for res in resources)


def _compile(res: Resource[EnvoyFilter]) -> CompiledFilter:
    spec = res.spec
    owner = f"{res.namespace}/{res.name}"
    patches: list[CompiledPatch] = []
    errors: list[ValidationError] = []
    version: re.Pattern[str] | None = None
    metadata: dict[str, str] = {}

    def fail(exc: ValidationError, base: str) -> None:
        path = f"{base}.{exc.path}" if exc.path else base
        cls = UnsupportedError if isinstance(exc, UnsupportedError) else ValidationError
        errors.append(cls(exc.message, source=res.source, document=res.document, path=path))

    if spec.target_refs is not None:
        fail(
            UnsupportedError("targetRefs is not supported by pymesh yet; use workloadSelector"),
            "spec.targetRefs",
        )
    for index, cp in enumerate(spec.config_patches):
        base = f"spec.configPatches[{index}]"
        match = cp.match or EnvoyConfigObjectMatch()
        if match.proxy is not None:
            if match.proxy.proxy_version:
                version = re.compile(match.proxy.proxy_version)
            metadata.update(match.proxy.metadata)
        try:
            patches.append(_patch(cp.apply_to, cp.patch, match, owner))
        except ValidationError as exc:
            fail(exc, base)
    selector = spec.workload_selector
    return CompiledFilter(
        namespace=res.namespace,
        name=res.name,
        labels=dict(selector.labels) if selector is not None else None,
        priority=spec.priority,
        proxy_version=version,
        proxy_metadata=metadata,
        patches=tuple(patches),
        errors=tuple(errors),
    )


def _patch(
    apply_to: ApplyTo, patch: Any, match: EnvoyConfigObjectMatch, owner: str
) -> CompiledPatch:
    cls = VALUE_TYPES.get(apply_to)
    if cls is None:
        raise UnsupportedError(f"applyTo {apply_to} is not supported by pymesh", path="applyTo")
    operation = patch.operation
    if operation not in _OPERATIONS[apply_to]:
        raise ValidationError(
            f"{operation} has no effect on {apply_to} (Istio ignores it)", path="patch.operation"
        )
    if patch.filter_class is not FilterClass.UNSPECIFIED:
        raise UnsupportedError(
            "filterClass is not supported by pymesh; use INSERT_BEFORE/INSERT_AFTER with a "
            "subFilter",
            path="patch.filterClass",
        )
    value = None
    if operation is not PatchOperation.REMOVE:
        value = parse_value(plain(patch.value or {}), cls, "patch.value")
    return CompiledPatch(apply_to, operation, match, value, owner)


def patches_for(
    filters: Sequence[CompiledFilter],
    namespace: str,
    labels: Mapping[str, str],
    metadata: Mapping[str, object],
    root_namespace: str,
) -> dict[ApplyTo, tuple[CompiledPatch, ...]]:
    """The patches that apply to one proxy, by ``applyTo``, in application order."""
    chosen = [
        f
        for f in filters
        if f.namespace in (root_namespace, namespace) and f.selects(labels, metadata)
    ]
    chosen.sort(key=lambda f: (f.priority, f"{f.name}.{f.namespace}"))
    by_kind: dict[ApplyTo, list[CompiledPatch]] = {}
    for f in chosen:
        for patch in f.patches:
            by_kind.setdefault(patch.apply_to, []).append(patch)
    return {kind: tuple(items) for kind, items in by_kind.items()}
