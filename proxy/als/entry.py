"""Access-log entries (``envoy.data.accesslog.v3``) from what the proxy knows of a finished
request or connection, filled the way Envoy's gRPC access loggers fill them. Sans-I/O: the
caller hands in the values and the wall-clock offset of the loop's clock.

Header byte counts are Envoy's ``byteSize()`` of a header map: the sum of every name and
value length, pseudo-headers included on the request side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import json_format, struct_pb2, wrappers_pb2

from mixer.peers import PeerInfo
from proxy.als.facts import TcpFacts
from proxy.custom_tags import apply_custom_tags
from proxy.http.headers import get_header

if TYPE_CHECKING:
    from proxy.config.model_bootstrap import Node
    from proxy.config.model_common import CustomTag
    from proxy.config.model_http import GrpcAccessLogService
    from proxy.http.stream_info import ConnectionInfo, StreamInfo

__all__ = ["TcpFacts", "http_entry", "identifier", "node_proto", "tcp_entry"]

Headers = list[tuple[bytes, bytes]]

# Envoy's short response flags -> the ResponseFlags fields they set.
_FLAG_FIELDS = {
    "LH": "failed_local_healthcheck",
    "UH": "no_healthy_upstream",
    "UT": "upstream_request_timeout",
    "LR": "local_reset",
    "UR": "upstream_remote_reset",
    "UF": "upstream_connection_failure",
    "UC": "upstream_connection_termination",
    "UO": "upstream_overflow",
    "NR": "no_route_found",
    "DI": "delay_injected",
    "FI": "fault_injected",
    "RL": "rate_limited",
    "RLSE": "rate_limit_service_error",
    "DC": "downstream_connection_termination",
    "URX": "upstream_retry_limit_exceeded",
    "SI": "stream_idle_timeout",
    "IH": "invalid_envoy_request_headers",
    "DPE": "downstream_protocol_error",
    "UMSDR": "upstream_max_stream_duration_reached",
    "RFCF": "response_from_cache_filter",
    "NFCF": "no_filter_config_found",
    "DT": "duration_timeout",
    "UPE": "upstream_protocol_error",
    "NC": "no_cluster_found",
    "OM": "overload_manager",
    "DF": "dns_resolution_failure",
    "DR": "downstream_remote_reset",
}
_METHODS = {
    v.name.encode(): v.number
    for v in base_pb2.RequestMethod.DESCRIPTOR.values
    if v.name != "METHOD_UNSPECIFIED"
}
_VERSIONS = {
    b"HTTP/1.0": accesslog_pb2.HTTPAccessLogEntry.HTTP10,
    b"HTTP/1.1": accesslog_pb2.HTTPAccessLogEntry.HTTP11,
    b"HTTP/2": accesslog_pb2.HTTPAccessLogEntry.HTTP2,
    b"HTTP/2.0": accesslog_pb2.HTTPAccessLogEntry.HTTP2,
}
_TLS_VERSIONS = {
    "TLSv1": accesslog_pb2.TLSProperties.TLSv1,
    "TLSv1.1": accesslog_pb2.TLSProperties.TLSv1_1,
    "TLSv1.2": accesslog_pb2.TLSProperties.TLSv1_2,
    "TLSv1.3": accesslog_pb2.TLSProperties.TLSv1_3,
}


def _plain(value: object) -> object:
    """Frozen config mappings and tuples as the plain JSON values a Struct is made from."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def node_proto(node: Node) -> base_pb2.Node:
    """The bootstrap's node as Envoy names itself on an access-log stream."""
    proto = base_pb2.Node(id=node.id, cluster=node.cluster)
    if node.metadata:
        json_format.ParseDict(_plain(node.metadata), proto.metadata)
    locality = node.locality
    proto.locality.region = locality.region
    proto.locality.zone = locality.zone
    proto.locality.sub_zone = locality.sub_zone
    if node.user_agent_name:
        proto.user_agent_name = node.user_agent_name
    return proto


def identifier(node: base_pb2.Node, log_name: str) -> als_pb2.StreamAccessLogsMessage.Identifier:
    return als_pb2.StreamAccessLogsMessage.Identifier(node=node, log_name=log_name)


def _set_address(target: Any, address: tuple[str, int] | str | None) -> None:
    if address is None:
        return
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            return
        address = (host.strip("[]"), int(port))
    target.socket_address.address = address[0]
    target.socket_address.port_value = address[1]


def _set_duration(target: Any, seconds: float | None) -> None:
    if seconds is not None:
        target.FromNanoseconds(max(0, int(seconds * 1e9)))


def _tls(
    common: accesslog_pb2.AccessLogCommon,
    connection: ConnectionInfo,
    local_uri_sans: Sequence[str],
) -> None:
    if connection.tls_version is None:
        return
    tls = common.tls_properties
    for uri in local_uri_sans:
        tls.local_certificate_properties.subject_alt_name.add(uri=uri)
    version = _TLS_VERSIONS.get(connection.tls_version)
    if version is not None:
        tls.tls_version = version
    if connection.requested_server_name:
        tls.tls_sni_hostname = connection.requested_server_name
    peer = tls.peer_certificate_properties
    for uri in connection.peer_uri_sans:
        peer.subject_alt_name.add(uri=uri)
    for dns in connection.peer_dns_sans:
        peer.subject_alt_name.add(dns=dns)
    if connection.peer_subject:
        peer.subject = connection.peer_subject


def _flags(common: accesslog_pb2.AccessLogCommon, flags: Sequence[str] | None) -> None:
    for flag in flags or ():
        field = _FLAG_FIELDS.get(flag)
        if field is not None:
            setattr(common.response_flags, field, True)
        elif flag == "UAEX":
            common.response_flags.unauthorized_details.reason = (
                accesslog_pb2.ResponseFlags.Unauthorized.EXTERNAL_SERVICE
            )


def _header_bytes(headers: Headers | None) -> int:
    return sum(len(k) + len(v) for k, v in headers) if headers else 0


def _logged(target: Any, headers: Headers | None, names: Sequence[str]) -> None:
    if not headers:
        return
    for name in names:
        value = get_header(headers, name.encode())
        if value is not None:
            target[name] = value.decode("latin-1")


def http_entry(
    info: StreamInfo,
    request_headers: Headers,
    response_headers: Headers | None,
    config: GrpcAccessLogService,
    wall_offset: float,
    response_trailers: Headers | None = None,
    *,
    local_uri_sans: Sequence[str] = (),
) -> accesslog_pb2.HTTPAccessLogEntry:
    """One request, as ``envoy.access_loggers.http_grpc`` logs it when the stream ends.
    ``wall_offset`` turns the loop times of ``info`` into Unix time."""
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    connection = info.connection
    _set_address(common.downstream_remote_address, info.downstream_remote_address)
    _set_address(common.downstream_direct_remote_address, connection.remote_address)
    _set_address(common.downstream_local_address, connection.original_destination)
    _tls(common, connection, local_uri_sans)
    start = info.start_time
    common.start_time.FromNanoseconds(int((start + wall_offset) * 1e9))
    end = info.end_time
    if info.last_downstream_rx_byte is not None:
        _set_duration(common.time_to_last_rx_byte, info.last_downstream_rx_byte - start)
    if info.first_upstream_rx_byte is not None:
        _set_duration(common.time_to_first_upstream_rx_byte, info.first_upstream_rx_byte - start)
    if end is not None:
        _set_duration(common.time_to_last_downstream_tx_byte, end - start)
        _set_duration(common.duration, end - start)
    _set_address(common.upstream_remote_address, info.upstream_host)
    _set_address(common.upstream_local_address, info.upstream_local_address)
    if info.upstream_cluster:
        common.upstream_cluster = info.upstream_cluster
    if info.route_name:
        common.route_name = info.route_name
    _flags(common, info.response_flags)
    if info.upstream_transport_failure_reason:
        common.upstream_transport_failure_reason = info.upstream_transport_failure_reason
    if info.connection_termination_details:
        common.connection_termination_details = info.connection_termination_details
    common.upstream_request_attempt_count = info.attempt_count
    common.access_log_type = accesslog_pb2.DownstreamEnd
    metadata = info.all_dynamic_metadata
    if metadata:
        for namespace, values in metadata.items():
            json_format.ParseDict(_plain(values), common.metadata.filter_metadata[namespace])
    version = _VERSIONS.get(info.protocol)
    if version is not None:
        entry.protocol_version = version
    _request(entry.request, info, request_headers, config)
    response = entry.response
    if info.response_code:
        response.response_code.value = info.response_code
    if response_headers is not None:
        # with :status, as in Envoy's response header map
        status = len(b":status") + len(str(info.response_code))
        response.response_headers_bytes = _header_bytes(response_headers) + status
    response.response_body_bytes = info.bytes_sent
    if info.response_code_details:
        response.response_code_details = info.response_code_details
    _logged(response.response_headers, response_headers, config.additional_response_headers)
    _logged(response.response_trailers, response_trailers, config.additional_response_trailers)
    if config.filter_state_objects:
        _filter_state(common, info.filter_state, config.filter_state_objects)
    if config.custom_tags:
        apply_custom_tags(
            common.custom_tags, config.custom_tags, request_headers, info.upstream_cluster_metadata
        )
    return entry


def _filter_state(
    common: accesslog_pb2.AccessLogCommon, state: Mapping[str, object], names: Sequence[str]
) -> None:
    """The logged filter state objects. A peer learned by metadata exchange goes out as its
    node metadata (a Struct): the collector then knows the caller even when its address
    names no proxy (a gateway on the host, whose connections leave from the bridge)."""
    for name in names:
        value = state.get(name)
        if isinstance(value, PeerInfo):
            struct = struct_pb2.Struct()
            struct.update(value.to_metadata())
            common.filter_state_objects[name].Pack(struct)
        elif isinstance(value, str):
            common.filter_state_objects[name].Pack(wrappers_pb2.StringValue(value=value))


def _request(
    request: accesslog_pb2.HTTPRequestProperties,
    info: StreamInfo,
    headers: Headers,
    config: GrpcAccessLogService,
) -> None:
    method = _METHODS.get(info.method)
    if method is not None:
        request.request_method = method
    request.scheme = info.connection.scheme.decode("latin-1")
    request.authority = info.authority.decode("latin-1")
    request.path = info.original_path.decode("latin-1")
    for field, name in (
        ("user_agent", b"user-agent"),
        ("referer", b"referer"),
        ("forwarded_for", b"x-forwarded-for"),
        ("request_id", b"x-request-id"),
        ("original_path", b"x-envoy-original-path"),
    ):
        value = get_header(headers, name)
        if value is not None:
            setattr(request, field, value.decode("latin-1"))
    # Envoy's map holds :method, :path and :authority (the Host header, moved there).
    host = get_header(headers, b"host")
    pseudo = (
        len(b":method") + len(info.method) + len(b":path") + len(info.original_path)
        + len(b":authority") + len(info.authority)
    )  # fmt: skip
    own = _header_bytes(headers) - (len(b"host") + len(host) if host is not None else 0)
    request.request_headers_bytes = own + pseudo
    request.request_body_bytes = info.bytes_received
    _logged(request.request_headers, headers, config.additional_request_headers)


def tcp_entry(
    facts: TcpFacts,
    wall_offset: float,
    *,
    local_uri_sans: Sequence[str] = (),
    custom_tags: Sequence[CustomTag] = (),
) -> accesslog_pb2.TCPAccessLogEntry:
    """One connection, as ``envoy.access_loggers.tcp_grpc`` logs it when it closes."""
    entry = accesslog_pb2.TCPAccessLogEntry()
    common = entry.common_properties
    connection = facts.connection
    _set_address(common.downstream_remote_address, connection.remote_address)
    _set_address(common.downstream_direct_remote_address, connection.remote_address)
    _set_address(common.downstream_local_address, connection.original_destination)
    _tls(common, connection, local_uri_sans)
    common.start_time.FromNanoseconds(int((facts.start_time + wall_offset) * 1e9))
    if facts.end_time is not None:
        _set_duration(common.duration, facts.end_time - facts.start_time)
    _set_address(common.upstream_remote_address, facts.upstream_host)
    _set_address(common.upstream_local_address, facts.upstream_local_address)
    if facts.upstream_cluster:
        common.upstream_cluster = facts.upstream_cluster
    _flags(common, facts.response_flags)
    if facts.upstream_transport_failure_reason:
        common.upstream_transport_failure_reason = facts.upstream_transport_failure_reason
    common.access_log_type = accesslog_pb2.TcpConnectionEnd
    entry.connection_properties.received_bytes = facts.received_bytes
    entry.connection_properties.sent_bytes = facts.sent_bytes
    if custom_tags:
        apply_custom_tags(common.custom_tags, custom_tags, None, facts.upstream_cluster_metadata)
    return entry
