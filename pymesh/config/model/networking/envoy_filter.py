"""``networking.istio.io/v1alpha3`` EnvoyFilter: patches applied to the Envoy configuration pilot
generates for the selected workloads.

The patch ``value`` is free-form (a ``google.protobuf.Struct``): it is an Envoy resource
fragment, checked against Envoy's own protos where the patch is applied, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import (
    EMPTY_MAP,
    FrozenMap,
    Oneofs,
    PolicyTargetReference,
    Struct,
    spec_field,
)
from pymesh.config.model.networking.service_entry import WorkloadSelector

__all__ = [
    "ApplyTo",
    "ClusterMatch",
    "EnvoyConfigObjectMatch",
    "EnvoyConfigObjectPatch",
    "EnvoyFilter",
    "FilterChainMatch",
    "FilterClass",
    "FilterMatch",
    "ListenerMatch",
    "Patch",
    "PatchContext",
    "PatchOperation",
    "ProxyMatch",
    "RouteAction",
    "RouteConfigurationMatch",
    "RouteMatch",
    "SubFilterMatch",
    "VirtualHostMatch",
]


class ApplyTo(StrEnum):
    INVALID = "INVALID"
    LISTENER = "LISTENER"
    FILTER_CHAIN = "FILTER_CHAIN"
    NETWORK_FILTER = "NETWORK_FILTER"
    HTTP_FILTER = "HTTP_FILTER"
    ROUTE_CONFIGURATION = "ROUTE_CONFIGURATION"
    VIRTUAL_HOST = "VIRTUAL_HOST"
    HTTP_ROUTE = "HTTP_ROUTE"
    CLUSTER = "CLUSTER"
    EXTENSION_CONFIG = "EXTENSION_CONFIG"
    BOOTSTRAP = "BOOTSTRAP"
    LISTENER_FILTER = "LISTENER_FILTER"


class PatchContext(StrEnum):
    ANY = "ANY"
    SIDECAR_INBOUND = "SIDECAR_INBOUND"
    SIDECAR_OUTBOUND = "SIDECAR_OUTBOUND"
    GATEWAY = "GATEWAY"


class PatchOperation(StrEnum):
    INVALID = "INVALID"
    MERGE = "MERGE"
    ADD = "ADD"
    REMOVE = "REMOVE"
    INSERT_BEFORE = "INSERT_BEFORE"
    INSERT_AFTER = "INSERT_AFTER"
    INSERT_FIRST = "INSERT_FIRST"
    REPLACE = "REPLACE"


class FilterClass(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    AUTHN = "AUTHN"
    AUTHZ = "AUTHZ"
    STATS = "STATS"


class RouteAction(StrEnum):
    ANY = "ANY"
    ROUTE = "ROUTE"
    REDIRECT = "REDIRECT"
    DIRECT_RESPONSE = "DIRECT_RESPONSE"


@dataclass(frozen=True, slots=True)
class ProxyMatch:
    """Which proxies: ``proxy_version`` is a regular expression over the version."""

    proxy_version: str = ""
    metadata: FrozenMap[str, str] = EMPTY_MAP


@dataclass(frozen=True, slots=True)
class SubFilterMatch:
    name: str = ""


@dataclass(frozen=True, slots=True)
class FilterMatch:
    name: str = ""
    sub_filter: SubFilterMatch | None = None


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    name: str = ""
    sni: str = ""
    transport_protocol: str = ""
    application_protocols: str = ""
    filter: FilterMatch | None = None
    destination_port: int = spec_field(0, unsigned=True)


@dataclass(frozen=True, slots=True)
class ListenerMatch:
    port_number: int = spec_field(0, unsigned=True)
    port_name: str = spec_field("", deprecated="match on portNumber or the listener name")
    filter_chain: FilterChainMatch | None = None
    listener_filter: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    name: str = ""
    action: RouteAction = RouteAction.ANY


@dataclass(frozen=True, slots=True)
class VirtualHostMatch:
    name: str = ""
    domain_name: str = ""
    route: RouteMatch | None = None


@dataclass(frozen=True, slots=True)
class RouteConfigurationMatch:
    port_number: int = spec_field(0, unsigned=True)
    port_name: str = ""
    gateway: str = ""
    vhost: VirtualHostMatch | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class ClusterMatch:
    port_number: int = spec_field(0, unsigned=True)
    service: str = ""
    subset: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class EnvoyConfigObjectMatch:
    """Where a patch applies; at most one of listener, route configuration and cluster."""

    ONEOFS: ClassVar[Oneofs] = (("listener", "route_configuration", "cluster"),)

    context: PatchContext = PatchContext.ANY
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None


@dataclass(frozen=True, slots=True)
class Patch:
    operation: PatchOperation = PatchOperation.INVALID
    value: Struct | None = None
    filter_class: FilterClass = FilterClass.UNSPECIFIED


@dataclass(frozen=True, slots=True)
class EnvoyConfigObjectPatch:
    apply_to: ApplyTo = ApplyTo.INVALID
    match: EnvoyConfigObjectMatch | None = None
    patch: Patch | None = None


@dataclass(frozen=True, slots=True)
class EnvoyFilter:
    """Patches for the selected workloads' Envoy configuration, applied in ``priority`` order
    (then creation order); in the root namespace without a selector they apply mesh-wide."""

    KIND: ClassVar[str] = "EnvoyFilter"
    ONEOFS: ClassVar[Oneofs] = (("workload_selector", "target_refs"),)

    workload_selector: WorkloadSelector | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    config_patches: tuple[EnvoyConfigObjectPatch, ...] = ()
    priority: int = 0
