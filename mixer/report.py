"""One reported request or connection, in Istio's vocabulary: an Envoy access-log entry
(``envoy.data.accesslog.v3``) plus the reporter's node, turned into the values Istio's
standard metrics, the recent log and the service graph are made of. Sans-I/O.

The reporter is ``destination`` for entries of an inbound cluster (``inbound|...``) and
``source`` for everything else, gateways included, as in Istio. The peer is the node at the
downstream address (destination's report) or the upstream address (source's report), looked
up by the caller (:class:`mixer.peers.PeerRegistry`); a peer not known yet is left
``unknown`` with :attr:`Report.peer_address` set, so the caller can fill it in later. The
destination service comes from the upstream cluster
(``outbound|9080|v1|reviews.default.svc.cluster.local``, else the ``:authority``) on the
source side. On the destination side it is the first service of the inbound cluster's
``istio.services`` metadata, which pilot has the proxy log as the ``istio.services`` custom
tag, else the reporter's canonical service: never the Host header, which any caller chooses
(Istio 1.10 stopped trusting it there, istio/istio#32756).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format, struct_pb2

from mixer.peers import DOWNSTREAM_PEER, UNKNOWN, UPSTREAM_PEER, PeerInfo
from pymesh.config.model.common import EMPTY_MAP, FrozenMap

__all__ = [
    "SERVICES_TAG",
    "Report",
    "ReportContext",
    "Resolve",
    "ServiceName",
    "http_report",
    "response_flags",
    "tcp_report",
    "with_peer",
]

#: the custom tag carrying an inbound cluster's ``istio.services`` metadata (JSON)
SERVICES_TAG = "istio.services"

Resolve = Callable[[str], "PeerInfo | None"]
"""The node at an address (``ip:port``), None when not known (yet)."""

# ResponseFlags fields -> Envoy's short codes, in Envoy's order.
_FLAG_CODES = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)


# RequestMethod enum numbers -> names (METHOD_UNSPECIFIED logs as "")
_METHODS = {
    v.number: v.name
    for v in accesslog_pb2.HTTPRequestProperties.DESCRIPTOR.fields_by_name[
        "request_method"
    ].enum_type.values
    if v.number
}


@dataclass(frozen=True, slots=True)
class ServiceName:
    host: str = UNKNOWN
    name: str = UNKNOWN
    namespace: str = UNKNOWN


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What mixer knows of the stream an entry came on, and how it finds peers."""

    reporter: PeerInfo
    resolve: Resolve
    domain: str = "cluster.local"


@dataclass(frozen=True, slots=True)
class Report:
    """One request (or TCP connection) as one reporter saw it."""

    reporter: str  # "source" | "destination"
    source: PeerInfo
    destination: PeerInfo
    service: ServiceName
    protocol: str  # http | grpc | tcp
    response_code: int
    grpc_status: str
    flags: str
    security_policy: str  # mutual_tls | none | unknown
    source_principal: str
    destination_principal: str
    start: float  # unix seconds
    duration_ms: float
    request_bytes: int
    response_bytes: int
    # for the recent log and the trace link
    method: str = ""
    path: str = ""
    authority: str = ""
    request_id: str = ""
    trace_id: str = ""
    upstream_cluster: str = ""
    upstream_host: str = ""
    route_name: str = ""
    response_code_details: str = ""
    # TCP connections: opened/closed and bytes of this entry
    tcp_opened: bool = False
    tcp_closed: bool = False
    #: set while the peer at this address is not known: the peer side is ``unknown``
    peer_address: str = ""
    # what Telemetry's CEL expressions may read besides the above
    source_address: str = ""
    destination_address: str = ""
    request_headers: FrozenMap[str, str] = EMPTY_MAP
    response_headers: FrozenMap[str, str] = EMPTY_MAP


def with_peer(r: Report, peer: PeerInfo) -> Report:
    """``r`` with its peer side (the side that is not the reporter) filled in."""
    if r.reporter == "destination":
        return replace(r, source=peer, peer_address="")
    return replace(r, destination=peer, peer_address="")


def response_flags(flags: accesslog_pb2.ResponseFlags) -> str:
    codes = [
        code
        for field, code in _FLAG_CODES
        if (flags.HasField(field) if field == "unauthorized_details" else getattr(flags, field))
    ]
    return ",".join(codes) if codes else "-"


def _seconds(ts: Any) -> float:
    return float(ts.seconds) + float(ts.nanos) / 1e9


def _service_from_cluster(cluster: str, domain: str) -> ServiceName | None:
    parts = cluster.split("|")
    if len(parts) != 4 or parts[0] != "outbound" or not parts[3]:
        return None
    return _service_from_host(parts[3], domain)


def _service_from_host(host: str, domain: str) -> ServiceName:
    host = host.lower()
    if host.startswith("["):
        host = host.partition("]")[0] + "]"
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    labels = host.split(".")
    suffix = f"svc.{domain}"
    if host.endswith("." + suffix) and len(labels) >= 4:
        return ServiceName(host, labels[0], labels[1])
    if len(labels) == 2 and not labels[1].isdigit():
        return ServiceName(f"{host}.{suffix}", labels[0], labels[1])
    if len(labels) == 3 and labels[2] == "svc":
        return ServiceName(f"{host}.{domain}", labels[0], labels[1])
    return ServiceName(host, host, UNKNOWN)


def _inbound_service(common: accesslog_pb2.AccessLogCommon, ctx: ReportContext) -> ServiceName:
    """Istio's server-side ``destination_service``: the inbound cluster's first service, else
    the reporter's canonical service; the namespace is always the reporter's."""
    namespace = ctx.reporter.namespace
    try:
        services = json.loads(common.custom_tags.get(SERVICES_TAG, "[]"))
        first = services[0] if isinstance(services, list) and services else {}
    except ValueError:
        first = {}
    host = first.get("host") if isinstance(first, dict) else None
    if isinstance(host, str) and host:
        name = first.get("name")
        short = name if isinstance(name, str) and name else host.partition(".")[0]
        return ServiceName(host, short, namespace)
    canonical = ctx.reporter.canonical_service
    return ServiceName(canonical, canonical, namespace)


def _address(addr: Any) -> str:
    sock = addr.socket_address
    if not sock.address:
        return ""
    return f"{sock.address}:{sock.port_value}"


def _inbound_destination(common: accesslog_pb2.AccessLogCommon) -> str:
    """The workload's address and the port the call was for: the inbound cluster's port
    (``inbound|9080||``), since in process mode the connection came to the sidecar's own
    port, and with iptables the listener port is 15006 anyway."""
    host = common.downstream_local_address.socket_address.address
    port = common.upstream_cluster.split("|")[1]
    if not port.isdigit():
        return _address(common.downstream_local_address)
    return f"{host}:{port}"


def _headers(logged: Any) -> FrozenMap[str, str]:
    return FrozenMap(logged.items()) if logged else EMPTY_MAP


def _san_uri(cert: Any) -> str:
    for san in cert.subject_alt_name:
        if san.uri:
            return str(san.uri)
    return ""


def _peer_address(common: accesslog_pb2.AccessLogCommon, inbound: bool) -> str:
    if not inbound:
        return _address(common.upstream_remote_address)
    # the socket's peer, not an address taken from X-Forwarded-For
    if common.HasField("downstream_direct_remote_address"):
        return _address(common.downstream_direct_remote_address)
    return _address(common.downstream_remote_address)


def _peers(
    common: accesslog_pb2.AccessLogCommon, inbound: bool, ctx: ReportContext
) -> tuple[PeerInfo, PeerInfo, str]:
    """(source, destination, unresolved peer address or "")."""
    address = _peer_address(common, inbound)
    peer = ctx.resolve(address) if address else None
    if peer is None:
        peer = _exchanged_peer(common, inbound)
    pending = address if peer is None and address else ""
    peer = peer or PeerInfo()
    return (peer, ctx.reporter, pending) if inbound else (ctx.reporter, peer, pending)


def _exchanged_peer(common: accesslog_pb2.AccessLogCommon, inbound: bool) -> PeerInfo | None:
    """The peer the reporting proxy learnt by metadata exchange, when its access log carries
    it (Istio's ``wasm.downstream_peer`` / ``wasm.upstream_peer`` filter state): what names a
    caller whose address is no proxy's, such as a gateway on a host whose connections to
    pods leave from another address than its own."""
    logged = common.filter_state_objects.get(DOWNSTREAM_PEER if inbound else UPSTREAM_PEER)
    struct = struct_pb2.Struct()
    if logged is None or not logged.Unpack(struct):
        return None
    peer = PeerInfo.from_metadata(json_format.MessageToDict(struct))
    return peer if peer.known else None


def http_report(entry: accesslog_pb2.HTTPAccessLogEntry, ctx: ReportContext) -> Report:
    """Raises ValueError for an entry with nothing to report (no start time)."""
    common = entry.common_properties
    request = entry.request
    response = entry.response
    cluster = common.upstream_cluster
    inbound = cluster.startswith("inbound|")
    source, destination, pending = _peers(common, inbound, ctx)
    if inbound:
        service = _inbound_service(common, ctx)
    else:
        service = _service_from_cluster(cluster, ctx.domain) or _service_from_host(
            request.authority, ctx.domain
        )
        if cluster in ("PassthroughCluster", "BlackHoleCluster", "InboundPassthroughClusterIpv4"):
            service = ServiceName(service.host, cluster, UNKNOWN)
    content_type = request.request_headers.get("content-type", "")
    grpc = content_type.startswith("application/grpc")
    grpc_status = ""
    if grpc:
        grpc_status = response.response_trailers.get("grpc-status") or (
            response.response_headers.get("grpc-status", "")
        )
    policy, src_principal, dst_principal = _security(common, inbound, ctx)
    code = response.response_code.value if response.HasField("response_code") else 0
    duration = common.duration if common.HasField("duration") else None
    if duration is None and common.HasField("time_to_last_downstream_tx_byte"):
        duration = common.time_to_last_downstream_tx_byte
    return Report(
        reporter="destination" if inbound else "source",
        source=source,
        destination=destination,
        service=service,
        protocol="grpc" if grpc else "http",
        response_code=code,
        grpc_status=grpc_status,
        flags=response_flags(common.response_flags),
        security_policy=policy,
        source_principal=src_principal,
        destination_principal=dst_principal,
        start=_seconds(common.start_time),
        duration_ms=_seconds(duration) * 1000.0 if duration is not None else 0.0,
        request_bytes=request.request_headers_bytes + request.request_body_bytes,
        response_bytes=response.response_headers_bytes + response.response_body_bytes,
        method=_METHODS.get(request.request_method, ""),
        path=request.original_path or request.path,
        authority=request.authority,
        request_id=request.request_id,
        trace_id=request.request_headers.get("x-b3-traceid", ""),
        upstream_cluster=cluster,
        upstream_host=_address(common.upstream_remote_address),
        route_name=common.route_name,
        response_code_details=response.response_code_details,
        peer_address=pending,
        source_address=_address(common.downstream_remote_address),
        destination_address=(
            _inbound_destination(common) if inbound else _peer_address(common, False)
        ),
        request_headers=_headers(request.request_headers),
        response_headers=_headers(response.response_headers),
    )


def tcp_report(entry: accesslog_pb2.TCPAccessLogEntry, ctx: ReportContext) -> Report:
    common = entry.common_properties
    cluster = common.upstream_cluster
    inbound = cluster.startswith("inbound|")
    source, destination, pending = _peers(common, inbound, ctx)
    service = (
        _inbound_service(common, ctx)
        if inbound
        else _service_from_cluster(cluster, ctx.domain) or ServiceName()
    )
    policy, src_principal, dst_principal = _security(common, inbound, ctx)
    duration = common.duration if common.HasField("duration") else None
    props = entry.connection_properties
    # Envoy logs a TCP connection once when it ends, and (with an intermediate interval)
    # periodically while it lasts: only the final entry closes it, only the first opens it.
    intermediate = common.intermediate_log_entry or common.access_log_type in (
        accesslog_pb2.TcpPeriodic,
        accesslog_pb2.TcpUpstreamConnected,
    )
    return Report(
        reporter="destination" if inbound else "source",
        source=source,
        destination=destination,
        service=service,
        protocol="tcp",
        response_code=0,
        grpc_status="",
        flags=response_flags(common.response_flags),
        security_policy=policy,
        source_principal=src_principal,
        destination_principal=dst_principal,
        start=_seconds(common.start_time),
        duration_ms=_seconds(duration) * 1000.0 if duration is not None else 0.0,
        request_bytes=props.received_bytes,
        response_bytes=props.sent_bytes,
        upstream_cluster=cluster,
        upstream_host=_address(common.upstream_remote_address),
        tcp_opened=common.access_log_type != accesslog_pb2.TcpPeriodic,
        tcp_closed=not intermediate,
        peer_address=pending,
    )


def _security(
    common: accesslog_pb2.AccessLogCommon, inbound: bool, ctx: ReportContext
) -> tuple[str, str, str]:
    """(connection_security_policy, source_principal, destination_principal).

    As in Istio, only the destination knows how its connection was secured: the source
    reports ``unknown``. Principals come from the certificates' SPIFFE URIs."""
    if not inbound:
        return UNKNOWN, UNKNOWN, UNKNOWN
    tls = common.tls_properties
    peer = _san_uri(tls.peer_certificate_properties) if common.HasField("tls_properties") else ""
    local = _san_uri(tls.local_certificate_properties) if common.HasField("tls_properties") else ""
    if peer:
        return "mutual_tls", peer, local or UNKNOWN
    return "none", UNKNOWN, local or UNKNOWN
