"""What every generator shares: type URLs, Istio's resource names, and dict → proto.

Resources are written as plain dicts shaped like Envoy's YAML (field names as in the protos,
``@type`` for ``Any``) and parsed once into messages with :func:`to_proto`, so each builder
reads like the config it produces.
"""

from __future__ import annotations

import json
from typing import Any

# Imported for their registration in the descriptor pool: ``@type`` URLs resolve through it.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.config.trace.v3 import zipkin_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as http_ext_authz_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as network_ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.message import Message

from pilot.generate import fastproto

__all__ = [
    "ADS",
    "BLACKHOLE",
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "INBOUND_PASSTHROUGH",
    "LISTENER_TYPE",
    "PASSTHROUGH",
    "PROCESS_INBOUND_ROUTE",
    "PROCESS_OUTBOUND_ROUTE",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "SERVICE_PORT_HEADER",
    "ClusterName",
    "duration",
    "fractional",
    "inbound_cluster",
    "outbound_cluster",
    "parse_cluster_name",
    "rule_path",
    "socket_address",
    "tcp_proxy",
    "to_proto",
    "typed",
]

_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = _PREFIX + listener_pb2.Listener.DESCRIPTOR.full_name
ROUTE_TYPE = _PREFIX + route_pb2.RouteConfiguration.DESCRIPTOR.full_name
CLUSTER_TYPE = _PREFIX + cluster_pb2.Cluster.DESCRIPTOR.full_name
ENDPOINT_TYPE = _PREFIX + endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR.full_name
SECRET_TYPE = _PREFIX + secret_pb2.Secret.DESCRIPTOR.full_name

BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
#: The one route configuration of a process-mode sidecar's HTTP_PROXY listener.
PROCESS_OUTBOUND_ROUTE = "pymesh-outbound"
PROCESS_INBOUND_ROUTE = "pymesh-inbound"
#: Set by a process-mode client sidecar: the service port the request was routed to, which
#: the server sidecar's single inbound listener maps to ``inbound|<targetPort>||``.
SERVICE_PORT_HEADER = "x-pymesh-service-port"

ADS: dict[str, Any] = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}

_MESSAGES: dict[str, type[Message]] = {
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    SECRET_TYPE: secret_pb2.Secret,
}

# Type names used in ``@type``; referencing the modules also keeps the imports meaningful.
TYPES = {
    "hcm": hcm_pb2.HttpConnectionManager,
    "router": router_pb2.Router,
    "fault": fault_pb2.HTTPFault,
    "cors": cors_pb2.Cors,
    "cors_policy": cors_pb2.CorsPolicy,
    "tcp_proxy": tcp_proxy_pb2.TcpProxy,
    "original_dst": original_dst_pb2.OriginalDst,
    "http_inspector": http_inspector_pb2.HttpInspector,
    "tls_inspector": tls_inspector_pb2.TlsInspector,
    "previous_hosts": previous_hosts_pb2.PreviousHostsPredicate,
    "http_options": http_protocol_options_pb2.HttpProtocolOptions,
    "upstream_tls": tls_pb2.UpstreamTlsContext,
    "raw_buffer": raw_buffer_pb2.RawBuffer,
    "downstream_tls": tls_pb2.DownstreamTlsContext,
    "zipkin": zipkin_pb2.ZipkinConfig,
    "als": als_pb2.HttpGrpcAccessLogConfig,
    "tcp_als": als_pb2.TcpGrpcAccessLogConfig,
    "http_rbac": http_rbac_pb2.RBAC,
    "network_rbac": network_rbac_pb2.RBAC,
    "http_ext_authz": http_ext_authz_pb2.ExtAuthz,
    "network_ext_authz": network_ext_authz_pb2.ExtAuthz,
    "jwt_authn": jwt_authn_pb2.JwtAuthentication,
    "uri_template": uri_template_match_pb2.UriTemplateMatchConfig,
}


def typed(kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``Any`` in dict form: ``{"@type": ..., **body}`` for a key of :data:`TYPES`."""
    return {"@type": _PREFIX + TYPES[kind].DESCRIPTOR.full_name, **(body or {})}


def to_proto(type_url: str, body: dict[str, Any], cache: dict[str, Any] | None = None) -> Any:
    """Parse a resource dict into its message (unknown fields are a bug: they raise). With
    ``cache`` (``PushContext.protos``) an equal dict already parsed in this push gives the same
    message object: callers treat generated messages as read-only (EnvoyFilter patches work on
    copies)."""
    if cache is None:
        return fastproto.parse(body, _MESSAGES[type_url]())
    try:
        key = type_url + json.dumps(body, separators=(",", ":"))
    except (TypeError, ValueError):  # not plain JSON data: no sharing
        return fastproto.parse(body, _MESSAGES[type_url]())
    message = cache.get(key)
    if message is None:
        message = cache[key] = fastproto.parse(body, _MESSAGES[type_url]())
    return message


def duration(seconds: float) -> str:
    """Protobuf JSON duration: ``0.5`` -> ``"0.500s"``, ``10`` -> ``"10s"``."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def fractional(percent: float) -> dict[str, Any]:
    """Istio's percentage → ``FractionalPercent`` (per million, so 0.1% steps survive)."""
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def tcp_proxy(
    cluster: str,
    stat_prefix: str | None = None,
    access_log: list[dict[str, Any]] | None = None,
    weights: list[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """A ``tcp_proxy`` to ``cluster``, or split by ``weights`` (cluster, weight) when given."""
    body: dict[str, Any] = {"stat_prefix": stat_prefix or cluster}
    if weights:
        body["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in weights]}
    else:
        body["cluster"] = cluster
    if access_log:
        body["access_log"] = access_log
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": typed("tcp_proxy", body)}


# -- Istio's cluster names ------------------------------------------------------------------
def outbound_cluster(port: int, host: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


ClusterName = tuple[str, int, str, str]


def parse_cluster_name(name: str) -> ClusterName | None:
    """``outbound|9080|v1|reviews...`` -> ``("outbound", 9080, "v1", "reviews...")``."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound") or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def rule_path(rule: Any) -> str:
    """Istio's config reference in metadata: ``/apis/<group>/<version>/namespaces/...``."""
    kind = "".join("-" + c.lower() if c.isupper() else c for c in rule.kind).lstrip("-")
    return f"/apis/{rule.api_version}/namespaces/{rule.namespace}/{kind}/{rule.name}"
