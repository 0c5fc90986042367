"""Access-log entries as Envoy's gRPC access loggers fill them, and the ``http_grpc`` /
``tcp_grpc`` configuration the proxy accepts and refuses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format, struct_pb2

from mixer.peers import DOWNSTREAM_PEER, UPSTREAM_PEER, PeerInfo
from proxy.als.entry import http_entry, node_proto, tcp_entry
from proxy.als.facts import TcpFacts
from proxy.config.model import AccessLogSink, GrpcAccessLogService, HttpConnectionManager, Node
from proxy.config.translate import default_registry, translate_listener
from proxy.config.translate.parse import parse_message
from proxy.http.local_reply import ResponseFlag
from proxy.http.stream_info import ConnectionInfo, StreamInfo
from pymesh.errors import UnsupportedError, ValidationError

_TYPE = "type.googleapis.com/"
HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HTTP_GRPC = _TYPE + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
TCP_GRPC = _TYPE + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
SERVICE = GrpcAccessLogService(
    log_name="outbound",
    cluster_name="mixer",
    additional_request_headers=("content-type", "x-b3-traceid"),
    additional_response_headers=("grpc-status",),
)


def _info() -> StreamInfo:
    connection = ConnectionInfo(
        remote_address=("127.0.1.100", 40000),
        local_address=("127.0.1.1", 15006),
        original_destination=("127.0.1.1", 9080),
        tls_version="TLSv1.3",
        peer_uri_sans=("spiffe://cluster.local/ns/default/sa/sleep",),
    )
    info = StreamInfo(connection, start_time=100.0, method=b"POST", path=b"/reviews/0")
    info.authority = b"reviews:9080"
    info.last_downstream_rx_byte = 100.01
    info.first_upstream_rx_byte = 100.2
    info.end_time = 100.25
    info.response_code = 503
    info.response_code_details = "upstream_reset_before_response_started{connection_failure}"
    info.add_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
    info.add_response_flag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
    info.upstream_cluster = "outbound|9080|v1|reviews.default.svc.cluster.local"
    info.upstream_host = "127.0.1.10:9080"
    info.upstream_local_address = "127.0.1.1:50000"
    info.route_name = "default"
    info.bytes_received = 12
    info.bytes_sent = 34
    info.attempt_count = 3
    info.dynamic_metadata("istio.test")["n"] = 1
    return info


def test_http_entry_carries_what_mixer_reads() -> None:
    request = [
        (b"host", b"reviews:9080"),
        (b"content-type", b"application/json"),
        (b"x-request-id", b"r-1"),
        (b"user-agent", b"curl"),
        (b"x-b3-traceid", b"abc"),
    ]
    response = [(b"content-length", b"34"), (b"grpc-status", b"14")]
    entry = http_entry(_info(), request, response, SERVICE, wall_offset=1_700_000_000.0)
    common = entry.common_properties
    assert common.start_time.ToNanoseconds() == 1_700_000_100 * 10**9
    assert common.duration.ToMilliseconds() == 250
    assert common.time_to_last_rx_byte.ToMilliseconds() == 10
    assert common.time_to_first_upstream_rx_byte.ToMilliseconds() == 200
    assert common.downstream_direct_remote_address.socket_address.address == "127.0.1.100"
    assert common.downstream_local_address.socket_address.port_value == 9080
    assert common.upstream_remote_address.socket_address.port_value == 9080
    assert common.upstream_local_address.socket_address.address == "127.0.1.1"
    assert common.upstream_cluster == "outbound|9080|v1|reviews.default.svc.cluster.local"
    flags = common.response_flags
    assert flags.upstream_retry_limit_exceeded and flags.upstream_connection_failure
    assert not flags.no_route_found
    assert common.tls_properties.tls_version == accesslog_pb2.TLSProperties.TLSv1_3
    [san] = common.tls_properties.peer_certificate_properties.subject_alt_name
    assert san.uri == "spiffe://cluster.local/ns/default/sa/sleep"
    assert common.upstream_request_attempt_count == 3
    assert common.access_log_type == accesslog_pb2.DownstreamEnd
    assert common.metadata.filter_metadata["istio.test"]["n"] == 1
    assert entry.protocol_version == accesslog_pb2.HTTPAccessLogEntry.HTTP11
    req = entry.request
    assert req.request_method == base_pb2.RequestMethod.Value("POST")
    assert (req.authority, req.path, req.request_id, req.user_agent) == (
        "reviews:9080", "/reviews/0", "r-1", "curl",
    )  # fmt: skip
    assert dict(req.request_headers) == {"content-type": "application/json", "x-b3-traceid": "abc"}
    assert req.request_body_bytes == 12
    # the header map as Envoy's: the Host header is :authority, with :method and :path
    assert req.request_headers_bytes == (
        len(":methodPOST:path/reviews/0:authorityreviews:9080")
        + sum(len(k) + len(v) for k, v in request[1:])
    )
    resp = entry.response
    assert resp.response_code.value == 503
    assert resp.response_body_bytes == 34 and resp.response_headers_bytes == 39  # :status too
    assert dict(resp.response_headers) == {"grpc-status": "14"}
    assert resp.response_code_details.startswith("upstream_reset_before_response_started")


def test_the_exchanged_peer_is_logged_as_its_node_metadata() -> None:
    """A peer the metadata exchange learnt goes out as Istio node metadata (a Struct) under
    its filter-state name, when the logger asks for it; mixer reads the same peer back."""
    info = _info()
    peer = PeerInfo.from_metadata(
        {
            "NAMESPACE": "istio-system",
            "WORKLOAD_NAME": "istio-ingressgateway",
            "SERVICE_ACCOUNT": "istio-ingressgateway-service-account",
            "CLUSTER_ID": "Kubernetes",
            "LABELS": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
        }
    )
    info.filter_state[DOWNSTREAM_PEER] = peer
    logging = replace(SERVICE, filter_state_objects=(DOWNSTREAM_PEER, UPSTREAM_PEER))
    entry = http_entry(info, [(b"host", b"x")], None, logging, wall_offset=0.0)
    logged = entry.common_properties.filter_state_objects
    assert set(logged) == {DOWNSTREAM_PEER}  # no upstream peer was learnt
    struct = struct_pb2.Struct()
    assert logged[DOWNSTREAM_PEER].Unpack(struct)
    assert PeerInfo.from_metadata(json_format.MessageToDict(struct)) == peer
    plain = http_entry(info, [(b"host", b"x")], None, SERVICE, wall_offset=0.0)
    assert not plain.common_properties.filter_state_objects


def test_an_unanswered_request_has_no_response_code() -> None:
    info = StreamInfo(ConnectionInfo(), start_time=5.0)
    info.add_response_flag(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION)
    entry = http_entry(info, [], None, SERVICE, wall_offset=0.0)
    assert not entry.response.HasField("response_code")
    assert entry.common_properties.response_flags.downstream_connection_termination
    assert not entry.common_properties.HasField("duration")  # the stream never ended


def test_tcp_entry() -> None:
    facts = TcpFacts(
        connection=ConnectionInfo(remote_address=("127.0.1.100", 4000),
                                  original_destination=("127.0.1.1", 3306)),
        start_time=10.0, end_time=12.5, received_bytes=100, sent_bytes=2000,
        upstream_cluster="inbound|3306||", upstream_host="127.0.1.1:3306",
    )  # fmt: skip
    entry = tcp_entry(facts, wall_offset=0.0)
    assert entry.connection_properties.received_bytes == 100
    assert entry.connection_properties.sent_bytes == 2000
    assert entry.common_properties.duration.ToMilliseconds() == 2500
    assert entry.common_properties.access_log_type == accesslog_pb2.TcpConnectionEnd
    assert entry.common_properties.upstream_cluster == "inbound|3306||"
    assert not entry.common_properties.upstream_transport_failure_reason


def test_tcp_entry_of_a_refused_tls_upstream() -> None:
    reason = "TLS_error:|SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"
    facts = TcpFacts(
        connection=ConnectionInfo(remote_address=("127.0.1.100", 4000)),
        start_time=10.0, end_time=10.1, received_bytes=6, sent_bytes=0,
        upstream_cluster="outbound|3306||db", response_flags=("UF",),
        upstream_transport_failure_reason=reason,
    )  # fmt: skip
    common = tcp_entry(facts, wall_offset=0.0).common_properties
    assert common.upstream_transport_failure_reason == reason
    assert common.response_flags.upstream_connection_failure


SERVICES = [{"host": "reviews.default.svc.cluster.local", "name": "reviews", "port": 9080.0}]
CLUSTER_METADATA = {"istio": {"services": SERVICES, "default_original_port": 9080.0, "on": True}}


def _tag(tag: str, **kind: Any) -> dict[str, Any]:
    return {"tag": tag, **kind}


def _cluster_tag(tag: str, *path: str, default: str = "") -> dict[str, Any]:
    key = {"key": "istio", "path": [{"key": p} for p in path]}
    return _tag(tag, metadata={"kind": {"cluster": {}}, "metadata_key": key,
                               "default_value": default})  # fmt: skip


def test_custom_tags_are_valued_as_envoy_values_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "reviews-v1-x1")
    tags = [
        _tag("literal", literal={"value": "v"}),
        _tag("env", environment={"name": "POD_NAME"}),
        _tag("env-unset", environment={"name": "PYMESH_UNSET_VAR", "default_value": "d"}),
        _tag("header", request_header={"name": "X-Tenant"}),
        _tag("header-missing", request_header={"name": "x-none", "default_value": "none"}),
        _tag("header-empty", request_header={"name": "x-none"}),
        _cluster_tag("services", "services"),
        _cluster_tag("port", "default_original_port"),
        _cluster_tag("on", "on"),
        _cluster_tag("missing", "nothing", default="fallback"),
        _tag("unset-kind", metadata={"metadata_key": {"key": "a", "path": [{"key": "b"}]},
                                     "default_value": "dv"}),
    ]  # fmt: skip
    hcm = _hcm_with(_als({"custom_tags": tags}))
    service = hcm.access_log[0].grpc
    assert service is not None
    info = _info()
    info.upstream_cluster_metadata = CLUSTER_METADATA
    request = [(b"host", b"reviews:9080"), (b"x-tenant", b"t1")]
    logged = dict(http_entry(info, request, None, service, 0.0).common_properties.custom_tags)
    assert logged == {
        "literal": "v",
        "env": "reviews-v1-x1",
        "env-unset": "d",
        "header": "t1",
        "header-missing": "none",
        # compact JSON, whole numbers without a fraction, as protobuf prints a ListValue
        "services": '[{"host":"reviews.default.svc.cluster.local","name":"reviews","port":9080}]',
        "port": "9080",
        "on": "true",
        "missing": "fallback",
        "unset-kind": "dv",
    }
    # a stream that reached no cluster: metadata tags fall back to their defaults
    bare = http_entry(_info(), request, None, service, 0.0).common_properties.custom_tags
    assert "services" not in bare and bare["missing"] == "fallback"


def test_tcp_entry_carries_cluster_metadata_tags() -> None:
    facts = TcpFacts(
        connection=ConnectionInfo(remote_address=("127.0.1.100", 4000)),
        start_time=10.0, end_time=10.1, received_bytes=6, sent_bytes=0,
        upstream_cluster="inbound|9080||", upstream_cluster_metadata=CLUSTER_METADATA,
    )  # fmt: skip
    service = _hcm_with(_als({"custom_tags": [_cluster_tag("s", "services")]}, url=TCP_GRPC))
    assert service.access_log[0].grpc is not None
    tags = service.access_log[0].grpc.custom_tags
    common = tcp_entry(facts, wall_offset=0.0, custom_tags=tags).common_properties
    assert "reviews.default.svc.cluster.local" in common.custom_tags["s"]


def test_node_carries_istio_metadata() -> None:
    node = Node(
        id="sidecar~1.2.3.4~a-1.ns~ns.svc.cluster.local",
        cluster="a.ns",
        metadata={"NAMESPACE": "ns", "LABELS": {"app": "a"}, "INSTANCE_IPS": "1.2.3.4"},
    )
    proto = node_proto(node)
    assert proto.metadata["LABELS"]["app"] == "a" and proto.cluster == "a.ns"


# -- configuration ------------------------------------------------------------------------------
def _hcm_with(access_log: dict[str, Any]) -> HttpConnectionManager:
    data = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "hcm",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "h",
                            "route_config": {"name": "r"},
                            "access_log": [access_log],
                        },
                    }
                ]
            }
        ],
    }
    listener = translate_listener(parse_message(data, listener_pb2.Listener), default_registry())
    config = listener.filter_chains[0].filters[0].config
    assert isinstance(config, HttpConnectionManager)
    return config


def _als(common: dict[str, Any], url: str = HTTP_GRPC, **extra: Any) -> dict[str, Any]:
    base = {"log_name": "outbound", "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}}}
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {"@type": url, "common_config": base | common, **extra},
    }


def test_http_grpc_is_translated_with_envoy_defaults() -> None:
    hcm = _hcm_with(
        _als({"transport_api_version": "V3"}, additional_request_headers_to_log=["X-B3-TraceId"])
    )
    [log] = hcm.access_log
    assert log.sink is AccessLogSink.GRPC and log.text_format is None
    assert log.grpc == GrpcAccessLogService(
        log_name="outbound", cluster_name="mixer", additional_request_headers=("x-b3-traceid",)
    )
    tuned = _hcm_with(_als({"buffer_size_bytes": 100, "buffer_flush_interval": "0.2s"}))
    assert tuned.access_log[0].grpc is not None
    assert tuned.access_log[0].grpc.buffer_size_bytes == 100
    assert tuned.access_log[0].grpc.buffer_flush_interval == pytest.approx(0.2)
    peers = _hcm_with(_als({"filter_state_objects_to_log": ["wasm.downstream_peer"]}))
    assert peers.access_log[0].grpc is not None
    assert peers.access_log[0].grpc.filter_state_objects == ("wasm.downstream_peer",)
    tcp = _hcm_with(_als({}, url=TCP_GRPC))
    assert tcp.access_log[0].grpc is not None and tcp.access_log[0].grpc.tcp


@pytest.mark.parametrize(
    ("common", "error", "where"),
    [
        ({"custom_tags": [{"tag": "t", "metadata": {
            "kind": {"route": {}}, "metadata_key": {"key": "istio", "path": [{"key": "a"}]}}}]},
         UnsupportedError, "custom_tags[0].metadata.kind.route"),
        ({"custom_tags": [{"tag": "t", "literal": {"value": ""}}]}, ValidationError,
         "custom_tags[0].literal.value"),
        ({"custom_tags": [{"tag": "t", "metadata": {
            "kind": {"cluster": {}}, "metadata_key": {"key": "istio"}}}]}, ValidationError,
         "custom_tags[0].metadata.metadata_key.path"),
        ({"transport_api_version": "V2"}, ValidationError, "transport_api_version"),
        ({"grpc_service": {"google_grpc": {"target_uri": "x", "stat_prefix": "s"}}},
         UnsupportedError, "grpc_service"),
        ({"buffer_flush_interval": "0s"}, ValidationError, "buffer_flush_interval"),
    ],
)  # fmt: skip
def test_what_is_not_implemented_is_refused(
    common: dict[str, Any], error: type[Exception], where: str
) -> None:
    with pytest.raises(error) as info:
        _hcm_with(_als(common))
    assert where in str(info.value)


@pytest.mark.parametrize(
    ("tracing", "where"),
    [({"verbose": True}, "verbose"), ({"spawn_upstream_span": True}, "spawn_upstream_span")],
)
def test_tracing_the_tracer_does_not_do_is_refused(tracing: dict[str, Any], where: str) -> None:
    data = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "hcm",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "h",
                            "route_config": {"name": "r"},
                            "tracing": tracing,
                        },
                    }
                ]
            }
        ],
    }
    with pytest.raises(UnsupportedError) as info:
        translate_listener(parse_message(data, listener_pb2.Listener), default_registry())
    assert info.value.path is not None and info.value.path.endswith(f"tracing.{where}")
