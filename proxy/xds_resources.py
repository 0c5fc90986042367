"""The resources of the proxy's ADS client: protos by type URL, their translation to the
proxy's model, and what the bootstrap says about the stream (target, node)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError

from proxy.config.model import Bootstrap
from proxy.config.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from proxy.config.translate import (
    FilterRegistry,
    translate_cluster,
    translate_cluster_load_assignment,
    translate_listener,
    translate_route_configuration,
    translate_secret,
)
from pymesh import __version__
from pymesh.errors import ConfigError

__all__ = [
    "PROTOS",
    "WILDCARD",
    "ads_target",
    "node_of",
    "resource_name",
    "translate_named",
    "translate_resource",
    "unpack",
]

#: state-of-the-world types: a response holds every resource, absent ones are removed
WILDCARD = (CLUSTER_TYPE, LISTENER_TYPE)


def resource_name(message: Any) -> str:
    return str(
        message.cluster_name
        if isinstance(message, endpoint_pb2.ClusterLoadAssignment)
        else message.name
    )


PROTOS: Mapping[str, Any] = {
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    SECRET_TYPE: secret_pb2.Secret,
}


def unpack(type_url: str, packed: Any, name: str = "") -> Any:
    """The resource in ``packed`` (an Any) of a ``type_url`` response; ConfigError (naming the
    resource when its name is known) when it is of another type or does not decode: a bad
    resource is NACKed, it does not break the stream."""
    label = f"{name}: " if name else ""
    if packed.type_url != type_url:
        raise ConfigError(f"{label}a {type_url} response carries a {packed.type_url or 'nothing'}")
    try:
        return PROTOS[type_url].FromString(packed.value)
    except DecodeError as exc:
        raise ConfigError(f"{label}the {type_url} resource does not decode: {exc}") from None


def ads_target(bootstrap: Bootstrap) -> str:
    """``host:port`` of the first endpoint of the ADS cluster (a static cluster)."""
    dynamic = bootstrap.dynamic_resources
    if dynamic is None or dynamic.ads_config is None:
        raise ConfigError("the bootstrap has no dynamic_resources.ads_config")
    name = dynamic.ads_config.cluster_name
    cluster = next((c for c in bootstrap.static_resources.clusters if c.name == name), None)
    assignment = cluster.load_assignment if cluster is not None else None
    if assignment is None or not assignment.endpoints:
        raise ConfigError(f"ADS cluster '{name}' has no endpoints")
    endpoint = assignment.endpoints[0]
    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    return f"{host}:{endpoint.port}"


def node_of(bootstrap: Bootstrap) -> base_pb2.Node:
    node = bootstrap.node
    proto = base_pb2.Node(
        id=node.id, cluster=node.cluster, user_agent_name="pymesh", user_agent_version=__version__
    )
    if node.metadata:
        json_format.ParseDict(dict(node.metadata), proto.metadata)
    loc = node.locality
    proto.locality.region, proto.locality.zone = loc.region, loc.zone
    proto.locality.sub_zone = loc.sub_zone
    return proto


def translate_resource(type_url: str, message: Any, registry: FilterRegistry) -> Any:
    """One pushed resource in the proxy's model; ConfigError when it cannot run."""
    if type_url == LISTENER_TYPE:
        return translate_listener(message, registry)
    if type_url == ROUTE_TYPE:
        return translate_route_configuration(message, registry)
    if type_url == CLUSTER_TYPE:
        # HTTP/2 clusters serve the proxy's gRPC side calls (access logs, rate limits); a
        # route to one is refused when the snapshot is checked (ProxyServer._validate).
        return translate_cluster(message, allow_http2=True)
    if type_url == ENDPOINT_TYPE:
        return translate_cluster_load_assignment(message)
    return translate_secret(message)


def translate_named(
    type_url: str, name: str, message: Any, registry: FilterRegistry, seen: set[str]
) -> Any:
    """:func:`translate_resource` for the resource ``name`` of a response, whose names so
    far are ``seen``: ConfigError, prefixed with the name, when it cannot run or comes twice."""
    if name in seen:
        raise ConfigError(f"{name}: duplicate resource name in one response")
    seen.add(name)
    try:
        return translate_resource(type_url, message, registry)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
